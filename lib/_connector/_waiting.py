"""Driving libpq's non-blocking state machines with anyio's socket waits (asyncio or trio).

psycopg's generators yield what they wait for (`Wait.R`, `Wait.W`, `Wait.RW`); `drive` runs
one to completion on a socket, `poll_libpq` runs libpq's connect and cancel polling. POSIX
only: `_ready_now` asks `select.poll`, which Windows lacks.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from time import monotonic
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from psycopg import errors as e
from psycopg import pq
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

RV = TypeVar("RV")

WAIT_R = Wait.R
WAIT_W = Wait.W
READY_R = Ready.R
READY_W = Ready.W

POLL_OK = pq.PollingStatus.OK
POLL_READING = pq.PollingStatus.READING
POLL_WRITING = pq.PollingStatus.WRITING
POLL_FAILED = pq.PollingStatus.FAILED

# A run of steps that never wait on the socket (writes to a writable socket,
# generators that finish at once) gives the scheduler a turn after this long,
# so that executemany() or COPY cannot starve other tasks.
MAX_BUSY_TIME = 0.005


class _SchedulerTurns:
    """When this thread's connections last let the scheduler run (shared by all of them)."""

    last = 0.0


_turns = _SchedulerTurns()


def _ready_now(fileno: int, s: int) -> int:
    """Readiness of `fileno` for the `Wait` state `s`, without blocking."""
    p = select.poll()
    p.register(fileno, (select.POLLIN if s & WAIT_R else 0) | (select.POLLOUT if s & WAIT_W else 0))
    ready = 0
    for _, ev in p.poll(0):
        if ev & (select.POLLERR | select.POLLHUP):
            # Report what was asked: libpq will find the error itself.
            return (READY_R if s & WAIT_R else 0) | (READY_W if s & WAIT_W else 0)
        if ev & select.POLLIN:
            ready |= READY_R
        if ev & select.POLLOUT:
            ready |= READY_W
    return ready


async def _wait_rw(fileno: int) -> int:
    """Wait until `fileno` is readable or writable (whichever comes first).

    Rare path: only taken when the send buffer is full while libpq also wants
    to read (big queries, pipeline mode, COPY).
    """
    ready = 0
    error: BaseException | None = None

    async with anyio.create_task_group() as tg:

        async def waiter(fn: Callable[[int], Any], flag: int) -> None:
            nonlocal ready, error
            try:
                await fn(fileno)
                ready |= flag
            except (anyio.ClosedResourceError, OSError) as ex:
                error = ex  # re-raised bare, not wrapped in an ExceptionGroup
            tg.cancel_scope.cancel()

        tg.start_soon(waiter, anyio.wait_readable, READY_R)
        tg.start_soon(waiter, anyio.wait_writable, READY_W)
    if error is not None:
        raise error
    return ready


async def drive(gen: PQGen[RV], fileno: int) -> RV:
    """Run a psycopg generator to completion, waiting on `fileno` with anyio.

    `gen` may be fresh or suspended at a yield: psycopg's generators loop on
    ``while not (yield state)``, so ``next(gen)`` on a suspended one re-yields
    the state it is waiting for.  This is what lets `AnyioConnection._recover` resume a
    generator that a cancellation interrupted.
    """
    try:
        s = next(gen)
        while True:
            if s == WAIT_R:
                await anyio.wait_readable(fileno)
                _turns.last = monotonic()
                s = gen.send(READY_R)
                continue
            # W or RW: a socket asked for writing is nearly always writable and a
            # zero-timeout poll is far cheaper than a scheduler round trip.
            if ready := _ready_now(fileno, s):
                if monotonic() - _turns.last >= MAX_BUSY_TIME:
                    await anyio.lowlevel.checkpoint()
                    _turns.last = monotonic()
                s = gen.send(ready)
                continue
            if s == WAIT_W:
                await anyio.wait_writable(fileno)
                ready = READY_W
            else:
                ready = await _wait_rw(fileno)
            _turns.last = monotonic()
            s = gen.send(ready)
    except StopIteration as ex:
        if monotonic() - _turns.last >= MAX_BUSY_TIME:
            # Finished without waiting: give others a turn, but don't raise a
            # cancellation for an operation that has completed.
            await anyio.lowlevel.cancel_shielded_checkpoint()
            _turns.last = monotonic()
        return ex.value  # type: ignore[no-any-return]


async def poll_libpq(
    poll: Callable[[], int], socket: Callable[[], int], what: str, first: int = POLL_WRITING
) -> None:
    """Drive a libpq PQconnectPoll-style state machine (connect or cancel)."""
    status = first
    while True:
        if status == POLL_READING:
            await anyio.wait_readable(socket())
        elif status == POLL_WRITING:
            await anyio.wait_writable(socket())
        elif status == POLL_OK:
            return
        elif status == POLL_FAILED:
            raise e.OperationalError(f"{what} failed")  # caller adds libpq's message
        else:
            raise e.InternalError(f"unexpected {what} poll status: {status}")
        status = poll()


_COPY_STATES = (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH)


def drain_results(pgconn: pq.abc.PGconn) -> PQGen[None]:
    """Generator discarding the results of the command in flight.

    Stops at the end of the command, or at a COPY state (not drained: the
    caller then finds the connection still ACTIVE and closes it).
    """
    while True:
        while pgconn.is_busy():
            while not (yield WAIT_R):
                pass
            pgconn.consume_input()
            while n := pgconn.notifies():  # keep psycopg's notify backlog fed
                if pgconn.notify_handler:
                    pgconn.notify_handler(n)
        res = pgconn.get_result()
        if res is None or res.status in _COPY_STATES:
            return


async def in_thread_of_its_own(blocking: Callable[..., RV], *args: Any) -> RV:
    """Run a blocking libpq step (name resolution, PQcancel) in a worker thread.

    Not under anyio's default thread limiter, which sync jobs fill: with every token held
    by running (or, on trio, abandoned) sync jobs, the worker could not reconnect or cancel.
    """
    return await anyio.to_thread.run_sync(
        blocking, *args, abandon_on_cancel=True, limiter=anyio.CapacityLimiter(1)
    )
