"""How PsycopgConnector makes each connection: to which database, with which options, set up how."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import psycopg
from psycopg import pq
from psycopg.types.json import set_json_dumps, set_json_loads

from dawdle._connector._arguments import (
    TARGET_OPTIONS,
    describe_target,
    parse_conninfo,
    with_default_connect_timeout,
)
from dawdle._connector._connection import AnyioConnection
from dawdle._connector.embedded import default_conninfo
from dawdle._errors import ConfigurationError, DatabaseUnavailable

Configure = Callable[[AnyioConnection], Awaitable[None]]

# JIT off for the session unless the client, the role or the database chose a setting. dawdle's
# statements are short, but the planner prices the claim's per-job lock check at every job it
# may pass over, so a claim of 50 on a queue of 200,000 jobs crossed jit_above_cost: 30-60 ms
# of compiling per claim on a server built with LLVM (a worker drained 721 jobs/s, against
# 4,880-6,292 with JIT off). An unknown parameter (no row) changes nothing.
JIT_OFF_UNLESS_CHOSEN = """
SELECT set_config('jit', 'off', false)
  FROM pg_settings
 WHERE name = 'jit' AND source NOT IN ('client', 'database', 'user', 'database user')
"""


class ConnectionFactory:
    """Makes the connector's autocommit connections, pooled or LISTEN alike.

    Each gets JIT off (`JIT_OFF_UNLESS_CHOSEN`) before `configure`, unless `session_settings`
    is False: behind a transaction-mode pooler a session setting would land on whichever
    server connection ran it, another client's.

    `conninfo` is None until `resolve()`: then it is the default database, unless the
    options name one themselves (as Procrastinate's `conninfo=""` with Django's `kwargs`).
    A connection string is checked where it is first known (here, or in `resolve()`), and
    gets DEFAULT_CONNECT_TIMEOUT unless it sets a connect_timeout.
    """

    def __init__(
        self,
        *,
        conninfo: str | None,
        options: dict[str, Any],
        configure: Configure | None,
        json_dumps: Callable[[Any], str] | None,
        json_loads: Callable[[str | bytes], Any] | None,
        session_settings: bool = True,
    ) -> None:
        if configure is not None and not callable(configure):
            raise ConfigurationError(
                f"PsycopgConnector: configure={configure!r} is not callable; expected an "
                "async function taking the new connection"
            )
        self.conninfo = conninfo
        self.options = options
        if conninfo is not None:
            self._settle(conninfo)
        self.configure = configure
        self._json_dumps = json_dumps
        self._json_loads = json_loads
        self._session_settings = session_settings

    def default_conninfo(self) -> str:
        """The conninfo when none was given (blocking: it may start the embedded server)."""
        if TARGET_OPTIONS & self.options.keys():
            return ""
        return default_conninfo()

    async def resolve(self) -> None:
        """Settle `conninfo`, in a worker thread since the default may start a server."""
        if self.conninfo is None:
            conninfo = await anyio.to_thread.run_sync(self.default_conninfo)
            self._settle(conninfo)
            self.conninfo = conninfo

    def _settle(self, conninfo: str) -> None:
        """Refuse a malformed connection string (password masked); add the connect timeout."""
        with_default_connect_timeout(parse_conninfo(conninfo, self.options), self.options)

    def describe(self) -> str:
        """Host, port, database and user, never the password."""
        if self.conninfo is None:
            return "the default database"
        return describe_target(self.conninfo, self.options)

    async def __call__(self) -> AnyioConnection:
        """A new autocommit connection: the JSON functions, JIT off, then `configure`."""
        assert self.conninfo is not None  # noqa: S101 (resolve() comes first)
        try:
            conn = await AnyioConnection.connect(self.conninfo, autocommit=True, **self.options)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        if self._json_dumps is not None:
            set_json_dumps(self._json_dumps, conn)
        if self._json_loads is not None:
            set_json_loads(self._json_loads, conn)
        try:
            await self._set_up(conn)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.close()
            raise
        return conn

    async def _set_up(self, conn: AnyioConnection) -> None:
        """JIT off, then `configure`; a lost connection is retried like a failed connect."""
        if self._session_settings:
            try:
                # Never prepared: once per connection, and a pooler may share the name space.
                await conn.execute(JIT_OFF_UNLESS_CHOSEN, prepare=False)
            except psycopg.OperationalError as exc:
                raise self._unavailable(exc) from exc
        if self.configure is not None:
            await self._run_configure(conn, self.configure)

    async def _run_configure(self, conn: AnyioConnection, configure: Configure) -> None:
        """Await `configure(conn)`; a lost connection is retried like a failed connect."""
        try:
            await configure(conn)
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from exc
        status = conn.info.transaction_status
        if status != pq.TransactionStatus.IDLE:
            # As psycopg's pool does: a connection must start its first use outside a transaction.
            raise ConfigurationError(
                f"PsycopgConnector: configure={configure!r} left the connection "
                f"{status.name} instead of idle: end its transaction (or use "
                "`async with conn.transaction():`)"
            )

    def _unavailable(self, exc: psycopg.OperationalError) -> DatabaseUnavailable:
        reason = " ".join(str(exc).split())
        return DatabaseUnavailable(f"cannot connect to PostgreSQL at {self.describe()}: {reason}")
