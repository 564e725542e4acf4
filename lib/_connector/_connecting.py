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

    The error of a failure (one line) names each host, port and address tried.
    `connect_timeout` applies per attempt with psycopg's rules (unset or 0: 130 s, at least
    2 s); PsycopgConnector sets one by default.
    """
    timeout = timeout_from_conninfo(params)
    # psycopg's sync resolver (socket.getaddrinfo) in a worker thread; the async one is
    # bound to asyncio's loop.getaddrinfo.
    attempts = await in_thread_of_its_own(conninfo_attempts, params)
    errors: list[e.Error] = []
    for attempt in attempts:
        try:
            return await _open_one(make_conninfo("", **attempt), timeout)
        except TimeoutError:
            address = f"{attempt.get('hostaddr') or attempt.get('host')}:{attempt.get('port')}"
            errors.append(
                e.ConnectionTimeout(
                    f"no answer from {address} within {timeout} s (connect_timeout={timeout})"
                )
            )
        except e.Error as exc:
            tried = (
                f"host: {attempt.get('host')!r}, port: {attempt.get('port')!r}, "
                f"hostaddr: {attempt.get('hostaddr')!r}"
            )
            errors.append(type(exc)(f"{_one_line(exc)} ({tried})"))
    if len(errors) == 1:
        raise errors[0]
    failures = "; ".join(_one_line(error) for error in errors)
    raise type(errors[-1])(f"every address failed: {failures}")


def _one_line(error: e.Error) -> str:
    """The message of libpq (often two lines with a tab-indented hint) on one line."""
    return " ".join(str(error).split())


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
