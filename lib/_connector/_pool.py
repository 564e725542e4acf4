"""A bounded, fair connection pool on anyio: safe under cancellation, healed after faults."""

from __future__ import annotations

import logging
import select
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import psycopg
from psycopg import pq

from dawdle._errors import PoolTimeout
from dawdle.backoff import RetryPolicy, retrying

logger = logging.getLogger("dawdle.connector")

C = TypeVar("C", bound=psycopg.AsyncConnection[object])

# How long returning a connection may spend rolling back an abandoned transaction.
RESET_TIMEOUT = 5.0


def has_gone_bad(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> bool:
    """True if an idle connection can no longer be trusted.

    An idle connection that does not LISTEN receives nothing from the server unless the
    server is going away (pg_terminate_backend, shutdown): readable means dead or dying.
    """
    if conn.closed or conn.broken or conn.pgconn.status != pq.ConnStatus.OK:
        return True
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


async def connect_with_retries(connect: Callable[[], Awaitable[C]], policy: RetryPolicy) -> C:
    """A new connection, retrying failures as `policy` allows; the last failure if it gives up."""
    async for attempt in retrying(policy):
        with attempt:
            return await connect()
    raise AssertionError("unreachable: retrying re-raises the last connection error")


class Pool(Generic[C]):
    """At most `max_size` connections; waiters are served first come, first served.

    A connection goes back to the pool only if it is idle (no transaction, no query in
    flight); anything else is rolled back or closed, so the next user never inherits a
    half-used connection. New connections are made with `reconnect`'s backoff. A caller that
    waits `timeout` seconds for a free connection gets PoolTimeout, as with psycopg_pool.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        *,
        min_size: int,
        max_size: int,
        timeout: float,
        reconnect: RetryPolicy,
    ) -> None:
        self._connect = connect
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._reconnect = reconnect
        # fast_acquire: no scheduler turn when a slot is free; the query that follows yields.
        self._slots = anyio.Semaphore(max_size, max_value=max_size, fast_acquire=True)
        self._idle: list[C] = []
        self._closed = False

    @property
    def idle_count(self) -> int:
        """How many connections wait, open, in the pool."""
        return len(self._idle)

    async def open(self) -> None:
        """Open `min_size` connections now, failing at once if the first cannot be made."""
        while len(self._idle) < self._min_size:
            self._idle.append(await self._connect())

    async def close(self) -> None:
        """Close the idle connections; connections in use are closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[C]:
        """Borrow a connection for the block; waiting for one honours cancellation."""
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        await self._wait_for_a_slot()
        try:
            conn = await self._take()
            try:
                yield conn
            finally:
                if not self._keep_if_idle(conn):
                    with anyio.CancelScope(shield=True):
                        await self._reset_or_close(conn)
        finally:
            self._slots.release()

    async def _wait_for_a_slot(self) -> None:
        """Take one of the `max_size` slots, or raise PoolTimeout after `timeout` seconds."""
        try:
            self._slots.acquire_nowait()  # the common case: no cancel scope to set up
        except anyio.WouldBlock:
            pass
        else:
            return
        with anyio.move_on_after(self._timeout) as waiting:
            await self._slots.acquire()
        # Caught only if the acquire itself was cancelled by the deadline: no slot is held.
        if waiting.cancelled_caught:
            raise PoolTimeout(
                f"no database connection free after {self._timeout:g} s: all {self._max_size} "
                f"of the pool's connections are in use (max_size={self._max_size}, "
                f"timeout={self._timeout:g})"
            )

    async def _take(self) -> C:
        while self._idle:
            conn = self._idle.pop()
            if not has_gone_bad(conn):
                return conn
            logger.info("discarding a pooled connection that the server closed")
            await conn.close()
        return await connect_with_retries(self._connect, self._reconnect)

    def _keep_if_idle(self, conn: C) -> bool:
        """Put an idle, healthy connection back at once (the common case, no await)."""
        if (
            self._closed
            or conn.closed
            or conn.broken
            or conn.info.transaction_status != pq.TransactionStatus.IDLE
        ):
            return False
        self._idle.append(conn)
        return True

    async def _reset_or_close(self, conn: C) -> None:
        if not conn.closed and not conn.broken and not self._closed:
            status = conn.info.transaction_status
            if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
                with anyio.move_on_after(RESET_TIMEOUT):
                    try:
                        await conn.rollback()
                    except psycopg.Error:
                        logger.debug("rollback of a returned connection failed", exc_info=True)
                if self._keep_if_idle(conn):
                    return
        await conn.close()
