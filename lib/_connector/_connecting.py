"""Opening a libpq connection through anyio: each host of the conninfo in turn, with a deadline."""

from __future__ import annotations

from typing import Any

import anyio
from psycopg import errors as e
from psycopg import pq
from psycopg.conninfo import conninfo_attempts, make_conninfo, timeout_from_conninfo

from dawdle._connector._waiting import in_thread_of_its_own, poll_libpq


async def open_pgconn(params: dict[str, Any]) -> pq.abc.PGconn:
    """A non-blocking libpq connection to the first host that answers.

    The error of a failure names each host, port and address tried. `connect_timeout`
    applies per attempt with psycopg's rules (unset or 0: 130 s, at least 2 s).
    """
    timeout = timeout_from_conninfo(params)
    # psycopg's sync resolver (socket.getaddrinfo) in a worker thread; the async one is
    # bound to asyncio's loop.getaddrinfo.
    attempts = await in_thread_of_its_own(conninfo_attempts, params)
    errors: list[tuple[e.Error, str]] = []
    for attempt in attempts:
        tried = (
            f"host: {attempt.get('host')!r}, port: {attempt.get('port')!r}, "
            f"hostaddr: {attempt.get('hostaddr')!r}"
        )
        try:
            return await _open_one(make_conninfo("", **attempt), timeout)
        except TimeoutError:
            errors.append(
                (e.ConnectionTimeout(f"connection timeout expired after {timeout}s"), tried)
            )
        except e.Error as exc:
            errors.append((exc, tried))
    last = errors[-1][0]
    if len(errors) == 1:
        raise type(last)(f"{last} ({errors[0][1]})").with_traceback(None)
    lines = [str(last), "Multiple connection attempts failed. All failures were:"]
    lines += [f"- {tried}: {error}" for error, tried in errors]
    raise type(last)("\n".join(lines)).with_traceback(None)


async def _open_one(conninfo: str, time_limit: float) -> pq.abc.PGconn:
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    if pgconn.status == pq.ConnStatus.BAD:
        raise _connection_failed(pgconn)
    try:
        with anyio.fail_after(time_limit):
            await poll_libpq(pgconn.connect_poll, lambda: pgconn.socket, "connection")
    except e.OperationalError:
        raise _connection_failed(pgconn) from None
    except BaseException:
        pgconn.finish()
        raise
    pgconn.nonblocking = 1
    return pgconn


def _connection_failed(pgconn: pq.abc.PGconn) -> e.OperationalError:
    """Close a connection attempt that libpq gave up on; the error carries libpq's reason."""
    message = pgconn.get_error_message()
    pgconn.finish()
    return e.OperationalError(f"connection failed: {message}")
