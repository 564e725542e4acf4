"""A psycopg 3 async connection that waits through anyio (asyncio or trio).

`AnyioConnection` subclasses `psycopg.AsyncConnection`, so the whole async query
API (AsyncCursor, dict_row, Jsonb, transaction(), notifies(), executemany,
server cursors, COPY with the default writer) works unchanged.  What is replaced
is every place where AsyncConnection talks to asyncio:

- ``wait()``: drives psycopg's non-blocking generators with
  ``anyio.wait_readable`` / ``anyio.wait_writable`` instead of
  ``loop.add_reader``; on cancellation it sends a cancel request and drains the
  in-flight command, or marks the connection broken.
- ``lock``: an ``anyio.Lock`` instead of ``asyncio.Lock``.
- ``connect()`` (in ``_connecting``): libpq's ``PQconnectStart``/``PQconnectPoll`` state machine
  driven by anyio, with ``connect_timeout`` enforced by ``anyio.fail_after``;
  host name resolution runs psycopg's sync resolver in a worker thread
  (psycopg's async one calls ``loop.getaddrinfo``).
- ``cancel_safe()``: libpq >= 17 ``PGcancelConn`` polled through anyio, else the
  blocking ``PQcancel`` in ``anyio.to_thread`` (psycopg uses asyncio.to_thread).
- ``close()``: calls ``anyio.notify_closing`` so a task blocked on the socket
  wakes up with OperationalError instead of waiting on a dead fd.
- ``transaction()`` and ``__aexit__``: the closing COMMIT/ROLLBACK runs in a
  shielded scope with a deadline, because anyio cancellation is level
  triggered: an unshielded ROLLBACK in a cancelled scope would never run.

The waiting itself (psycopg's generators and libpq's polling on the socket) is in `_waiting`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import anyio
import psycopg
from psycopg import errors as e
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.rows import tuple_row
from psycopg.transaction import AsyncTransaction

from dawdle._connector._connecting import open_pgconn
from dawdle._connector._waiting import drain_results, drive, in_thread_of_its_own, poll_libpq

__all__ = ["AnyioConnection"]

logger = logging.getLogger(__name__)

RV = TypeVar("RV")

OK = pq.ConnStatus.OK
ACTIVE = pq.TransactionStatus.ACTIVE


class AnyioConnection(psycopg.AsyncConnection[Any]):
    """psycopg AsyncConnection that runs on any anyio backend (asyncio, trio)."""

    #: Max time to cancel and drain a query interrupted by a cancellation, and
    #: for the COMMIT/ROLLBACK closing a transaction() block. Past it the
    #: connection is closed and reported as `broken`.
    cleanup_timeout: float = 5.0

    def __init__(self, pgconn: pq.abc.PGconn, row_factory: Any = tuple_row):
        super().__init__(pgconn, row_factory)
        # Replaces the asyncio.Lock set by AsyncConnection.__init__.
        # fast_acquire: no scheduler round trip when uncontended; every query
        # checkpoints anyway while waiting for the server's reply.
        self.lock = anyio.Lock(fast_acquire=True)  # type: ignore[assignment]

    # -- connection ---------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        context: Any = None,
        row_factory: Any = None,
        cursor_factory: Any = None,
        **kwargs: Any,
    ) -> AnyioConnection:
        """Connect without asyncio; errors name the host, port and address tried.

        ``connect_timeout`` applies per attempt with psycopg's rules (unset or 0: 130 s,
        at least 2 s) and raises `psycopg.errors.ConnectionTimeout`.
        """
        params = await cls._get_connection_params(conninfo, **kwargs)
        rv = cls(await open_pgconn(params))
        rv._autocommit = bool(autocommit)
        if row_factory:
            rv.row_factory = row_factory
        if cursor_factory:
            rv.cursor_factory = cursor_factory
        if context:
            rv._adapters = psycopg.adapt.AdaptersMap(context.adapters)
        rv.prepare_threshold = prepare_threshold
        return rv

    async def close(self) -> None:
        """Close the connection; a task blocked on it gets OperationalError."""
        if self.closed:
            return
        try:
            fileno = self.pgconn.socket
        except e.OperationalError:
            pass
        else:
            # No checkpoint between this and finish() (trio's rule for closing fds).
            anyio.notify_closing(fileno)
        await super().close()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self.closed:
            return
        try:
            with anyio.move_on_after(self.cleanup_timeout, shield=True):
                if exc_type:
                    try:
                        await self.rollback()
                    except psycopg.Error as ex:
                        logger.warning("error ignored in rollback on %s: %s", self, ex)
                else:
                    await self.commit()
        finally:
            await self.close()

    # -- waiting ------------------------------------------------------------

    async def wait(
        self,
        gen: PQGen[RV],
        interval: float | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (psycopg's signature, which cursors call)
    ) -> RV:
        """Consume a psycopg generator, waiting on the socket with anyio.

        Raise ``psycopg.errors._WaitTimeout`` if `timeout` expires (used by
        `notifies()`).  If interrupted (cancellation, KeyboardInterrupt) while a
        command is in flight, cancel it server side and drain it (shielded, at
        most `cleanup_timeout`), else close the connection: it is never left
        half-used.
        """
        fileno = self.pgconn.socket  # OperationalError if the connection is lost
        try:
            if timeout is None:
                return await drive(gen, fileno)
            with anyio.move_on_after(timeout):
                return await drive(gen, fileno)
            await self._recover(gen)
            raise e._WaitTimeout("wait timeout expired")
        except anyio.ClosedResourceError:
            raise e.OperationalError("the connection was closed while in use") from None
        except OSError as ex:
            raise e.OperationalError("connection socket closed") from ex
        except (anyio.get_cancelled_exc_class(), KeyboardInterrupt, SystemExit):
            await self._recover(gen)
            raise

    async def _recover(self, gen: PQGen[Any]) -> None:
        """Bring the connection back to idle after `gen` was interrupted.

        Called with the cancellation (or timeout) already delivered; runs
        shielded, bounded by `cleanup_timeout`. Outcome: the connection is idle
        (reusable) or closed (`broken` is True), never busy.
        """
        pgconn = self.pgconn
        if pgconn.status != OK or pgconn.transaction_status != ACTIVE:
            gen.close()  # nothing in flight: nothing to drain
            return
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(self.cleanup_timeout):
                try:
                    await self._send_cancel()
                except e.Error as ex:
                    # The command may still end by itself within the deadline.
                    logger.warning("query cancellation failed: %s", ex)
                fileno = pgconn.socket
                try:
                    # Resume the interrupted generator first: it may be half way
                    # through sending the query, and it keeps psycopg's state
                    # (transaction counters, prepared statements) consistent.
                    await drive(gen, fileno)
                except e.Error as ex:
                    # QueryCanceled is the expected outcome; any other error
                    # from the command is fine as long as we end up idle.
                    logger.debug("interrupted command ended with: %r", ex)
                if pgconn.status == OK and pgconn.transaction_status == ACTIVE:
                    # e.g. stream(): the generator fetched one row of many.
                    await drive(drain_results(pgconn), fileno)
        except Exception as ex:  # noqa: BLE001 (any failure here ends in the check below)
            logger.debug("while recovering an interrupted connection: %r", ex)
        except BaseException:
            self._mark_broken("interrupted again while cancelling")
            raise
        finally:
            gen.close()
        if pgconn.status != OK or pgconn.transaction_status == ACTIVE:
            self._mark_broken("query not terminated after cancellation")

    def _mark_broken(self, why: str) -> None:
        if self.pgconn.status != pq.ConnStatus.BAD:
            logger.warning("%s: closing connection %s", why, self)
        # Sets `broken`: status BAD but not closed by close().
        self.pgconn.finish()

    # -- cancellation -------------------------------------------------------

    async def _send_cancel(self) -> None:
        if self.closed:
            return
        if psycopg.capabilities.has_cancel_safe():
            cancel_conn = self.pgconn.cancel_conn()
            try:
                cancel_conn.start()
                try:
                    await poll_libpq(cancel_conn.poll, lambda: cancel_conn.socket, "cancel")
                except e.OperationalError:
                    raise e.OperationalError(
                        f"cancellation failed: {cancel_conn.get_error_message()}"
                    ) from None
            finally:
                cancel_conn.finish()
        else:
            # libpq < 17: blocking PQcancel, in a worker thread.
            await in_thread_of_its_own(self.cancel)

    async def cancel_safe(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (psycopg's)
        """Ask the server to cancel the current command (anyio version)."""
        try:
            with anyio.fail_after(timeout or None):
                await self._send_cancel()
        except TimeoutError:
            raise e.CancellationTimeout("cancellation timeout expired") from None

    # -- transactions -------------------------------------------------------

    @asynccontextmanager
    async def transaction(
        self,
        savepoint_name: str | None = None,
        force_rollback: bool = False,  # noqa: FBT001, FBT002 (psycopg's signature)
    ) -> AsyncIterator[AsyncTransaction]:
        """Like AsyncConnection.transaction(), with BEGIN and COMMIT/ROLLBACK shielded.

        anyio's cancellation is level-triggered: an unshielded ROLLBACK in a cancelled scope
        would never run. The shield is bounded by `cleanup_timeout`.
        """
        if self._pipeline:  # not reworked: psycopg's version, unshielded
            async with super().transaction(savepoint_name, force_rollback) as tx:
                yield tx
            return
        tx = AsyncTransaction(self, savepoint_name, force_rollback)
        with anyio.move_on_after(self.cleanup_timeout, shield=True) as scope:
            await tx.__aenter__()
        if scope.cancelled_caught:
            raise e.OperationalError("timed out starting the transaction")
        try:
            yield tx
        except BaseException as ex:
            suppress = False
            with anyio.move_on_after(self.cleanup_timeout, shield=True):
                suppress = await tx.__aexit__(type(ex), ex, ex.__traceback__)
            if not suppress:
                raise
        else:
            with anyio.move_on_after(self.cleanup_timeout, shield=True) as scope:
                await tx.__aexit__(None, None, None)
            if scope.cancelled_caught:
                raise e.OperationalError("timed out ending the transaction")
