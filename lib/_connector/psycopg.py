"""PsycopgConnector: Procrastinate's connector interface on psycopg, native to asyncio and Trio."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing, asynccontextmanager
from typing import Any, LiteralString, TypeVar

import anyio
import anyio.to_thread
import psycopg
from procrastinate import connector, exceptions
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_dumps, set_json_loads

from dawdle._connector._arguments import connection_options
from dawdle._connector._connection import AnyioConnection
from dawdle._connector._factory import Configure, ConnectionFactory
from dawdle._connector._failures import database_errors
from dawdle._connector._params import DEFAULT_MAX_PAYLOAD_BYTES, JobLimits, query_params
from dawdle._connector._pool import Pool, connect_with_retries
from dawdle._connector._pooler import (
    Pooler,
    Preparing,
    check_pooler,
    check_prepare_threshold,
    prepared_statement_lost,
)
from dawdle._connector._sync import SyncConnector
from dawdle._errors import ConfigurationError, DatabaseUnavailable
from dawdle._validate import integer, number
from dawdle.backoff import DecorrelatedJitter, RetryPolicy

logger = logging.getLogger("dawdle.connector")

T = TypeVar("T")

# Errors with which the server ends a session without committing what it was running, so
# a statement that met one on a pooled connection is safe to send again on another.
SERVER_CLOSED_THE_SESSION = (
    psycopg.errors.AdminShutdown,
    psycopg.errors.CrashShutdown,
    psycopg.errors.IdleSessionTimeout,
)

# A listening connection that heard nothing for this long checks that it is still alive.
LISTEN_TIMEOUT = connector.LISTEN_TIMEOUT


async def _no_rows(cursor: psycopg.AsyncCursor[DictRow]) -> None:
    return None


async def _first_row(cursor: psycopg.AsyncCursor[DictRow]) -> dict[str, Any]:
    row = await cursor.fetchone()
    if row is None:
        raise exceptions.NoResult
    return row


async def _all_rows(cursor: psycopg.AsyncCursor[DictRow]) -> list[dict[str, Any]]:
    return await cursor.fetchall()


class PsycopgConnector(connector.BaseAsyncConnector):
    """Procrastinate's `BaseAsyncConnector` on psycopg, for asyncio and Trio alike.

    Queries run on a pool of at most `max_size` autocommit connections (each of
    Procrastinate's queries is one statement); a query that finds none free for `timeout`
    seconds raises `PoolTimeout` (psycopg_pool's argument and default). Without `conninfo`,
    the database is DAWDLE_DSN, else libpq's environment, else an embedded server. A
    connection attempt that gets no answer for `connect_timeout` seconds (libpq's option, in
    the conninfo or `kwargs`; 5 s unless set) fails; after a server restart or a terminated
    backend, new connections are made with backoff for up to `reconnect_timeout` seconds
    before `DatabaseUnavailable` is raised.

    A job's arguments are at most `max_payload_bytes` of JSON (1 MiB unless set; None: up to
    jsonb's own 255 MB), refused at defer with `UnsupportedValue`, so that no single job can
    exhaust a worker's memory.

    As with Procrastinate's connector, `kwargs` are connection options for every connection
    and `configure(conn)` is awaited on every new connection (pooled, LISTEN, reconnected)
    before its first use. `name` identifies the connector in its repr, as psycopg's pool
    name does in its logs. Other keywords are connection options too; psycopg pool arguments
    that dawdle does not honour are refused by name.

    Behind a connection pooler, `pooler="transaction"` (PgBouncer's `pool_mode =
    transaction`) turns psycopg's prepared statements off unless `prepare_threshold` is given
    (PgBouncer 1.21+ with `max_prepared_statements` keeps them) and says that LISTEN cannot
    work: workers then poll, unless `listen_conninfo` names a direct connection, which is
    then used for LISTEN alone. Without it, a statement the server refuses as a lost
    prepared statement switches preparing off on this connector (logged once) and is resent.
    """

    def __init__(
        self,
        *,
        conninfo: str | None = None,
        kwargs: dict[str, Any] | None = None,
        configure: Configure | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        reconnect_timeout: float = 60.0,
        max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES,
        name: str | None = None,
        listen_conninfo: str | None = None,
        pooler: Pooler | None = None,
        json_dumps: Callable[[Any], str] | None = None,
        json_loads: Callable[[str | bytes], Any] | None = None,
        **connect_kwargs: Any,
    ) -> None:
        integer("PsycopgConnector: min_size", min_size, at_least=0)
        integer("PsycopgConnector: max_size", max_size, at_least=1)
        number("PsycopgConnector: timeout", timeout, at_least=0)
        self._limits = JobLimits("PsycopgConnector", max_payload_bytes)
        if min_size > max_size:
            raise ConfigurationError(
                f"PsycopgConnector: min_size={min_size} exceeds max_size={max_size}"
            )
        self._pooler = check_pooler(pooler)
        options = connection_options(kwargs, connect_kwargs)
        check_prepare_threshold(options, self._pooler)
        self._listen_connect = (
            None
            if listen_conninfo is None
            else ConnectionFactory(
                conninfo=listen_conninfo,
                options=dict(options),
                configure=configure,
                json_dumps=json_dumps,
                json_loads=json_loads,
            )
        )
        self._connect = ConnectionFactory(
            conninfo=conninfo,
            options=options,
            configure=configure,
            json_dumps=json_dumps,
            json_loads=json_loads,
            session_settings=self._pooler != "transaction",
        )
        self._preparing = Preparing(self._connect.options)
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._name = name
        self._reconnect = RetryPolicy(
            backoff=DecorrelatedJitter(0.05, max_delay=2.0),
            max_attempts=None,
            deadline=reconnect_timeout,
            retry_on=(DatabaseUnavailable,),
        )
        self.json_dumps = json_dumps
        self.json_loads = json_loads
        self._pool: Pool[AnyioConnection] | None = None
        self._sync_connector: SyncConnector | None = None

    @property
    def pool(self) -> Pool[AnyioConnection]:
        """The open pool; Procrastinate's AppNotOpen before `open_async`."""
        if self._pool is None:
            raise exceptions.AppNotOpen
        return self._pool

    async def open_async(self, pool: connector.Pool | None = None) -> None:
        """Resolve the database and open `min_size` connections; fail at once if unreachable."""
        if self._pool is not None:
            return
        if pool is not None:
            raise ConfigurationError(
                "PsycopgConnector makes its own pool: pass conninfo, min_size and max_size"
            )
        await self._connect.resolve()
        new_pool = Pool(
            self._connect,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            reconnect=self._reconnect,
        )
        await new_pool.open()
        self._pool = new_pool

    async def close_async(self) -> None:
        """Close the pool (and the synchronous connector, if sync code used one)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        sync, self._sync_connector = self._sync_connector, None
        if sync is not None:
            await anyio.to_thread.run_sync(sync.close)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AnyioConnection]:
        """Borrow a pooled connection, e.g. to defer jobs inside your own transaction.

        ``async with conn.transaction(): await task.configure(connection=conn).defer_async()``
        makes the job exist only if that transaction commits.
        """
        async with self.pool.connection() as conn:
            yield conn

    async def _execute(
        self,
        connection: psycopg.AsyncConnection[Any] | None,
        query: LiteralString,
        arguments: dict[str, Any],
        fetch: Callable[[psycopg.AsyncCursor[DictRow]], Awaitable[T]],
    ) -> T:
        params = query_params(arguments, self._limits, self.json_dumps)
        with database_errors():
            if connection is not None:
                async with connection.cursor(row_factory=dict_row) as cursor:
                    self._configure_json(cursor)
                    await cursor.execute(query, params)
                    return await fetch(cursor)
            # Every pooled connection may have been closed by the server at once (restart,
            # pg_terminate_backend) before the pool could notice: one more try than the pool holds.
            for tries_left in reversed(range(self._max_size + 1)):
                try:
                    async with (
                        self.pool.connection() as conn,
                        conn.cursor(row_factory=dict_row) as cursor,
                    ):
                        self._preparing.follow(conn)
                        await cursor.execute(query, params)
                        return await fetch(cursor)
                except SERVER_CLOSED_THE_SESSION as exc:
                    if not tries_left:
                        raise
                    logger.info("a pooled connection was closed by the server (%s); retrying", exc)
                except psycopg.Error as exc:
                    # Refused before it ran: sent again, unprepared (as from now on everywhere).
                    if not tries_left or not prepared_statement_lost(exc):
                        raise
                    self._preparing.stop(exc)
        raise AssertionError("unreachable: the last try returns or raises")

    def _configure_json(self, cursor: psycopg.AsyncCursor[DictRow]) -> None:
        # A caller's own connection does not have our JSON functions installed.
        if self.json_dumps is not None:
            set_json_dumps(self.json_dumps, cursor)
        if self.json_loads is not None:
            set_json_loads(self.json_loads, cursor)

    async def execute_query_async(self, query: LiteralString, **arguments: Any) -> None:
        """Run a statement whose result is not needed."""
        await self._execute(None, query, arguments, _no_rows)

    async def execute_query_one_async(
        self, query: LiteralString, **arguments: Any
    ) -> dict[str, Any]:
        """Run a query and return its first row (Procrastinate's NoResult if none)."""
        return await self._execute(None, query, arguments, _first_row)

    async def execute_query_all_async(
        self, query: LiteralString, **arguments: Any
    ) -> list[dict[str, Any]]:
        """Run a query and return all its rows."""
        return await self._execute(None, query, arguments, _all_rows)

    async def execute_query_one_async_with_connection(
        self, connection: Any, query: LiteralString, **arguments: Any
    ) -> dict[str, Any]:
        """Like `execute_query_one_async`, on the caller's connection (and transaction)."""
        return await self._execute(connection, query, arguments, _first_row)

    async def execute_query_all_async_with_connection(
        self, connection: Any, query: LiteralString, **arguments: Any
    ) -> list[dict[str, Any]]:
        """Like `execute_query_all_async`, on the caller's connection (and transaction)."""
        return await self._execute(connection, query, arguments, _all_rows)

    async def listen_notify(
        self,
        on_notification: connector.Notify,
        channels: Iterable[str],
        *,
        on_listening: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """LISTEN on `channels` until cancelled, on a connection of its own (`listen_conninfo`'s).

        `on_listening` is awaited each time LISTEN is in place: at start and after every
        reconnect (a dropped connection is replaced with backoff). Notifications sent
        before that moment are lost, so that is when the caller should poll.
        """
        if not self.can_listen:
            raise ConfigurationError(
                "PsycopgConnector: LISTEN cannot work through a transaction-mode pooler "
                "(pooler='transaction'): pass listen_conninfo= (a direct connection)"
            )
        connect = self._connect if self._listen_connect is None else self._listen_connect
        channels = list(channels)
        while True:
            conn = await connect_with_retries(connect, self._reconnect)
            try:
                for channel in channels:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                if on_listening is not None:
                    await on_listening()
                await self._relay(conn, on_notification)
            except psycopg.OperationalError:
                logger.warning("lost the LISTEN connection; reconnecting", exc_info=True)
            finally:
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def _relay(self, conn: AnyioConnection, on_notification: connector.Notify) -> None:
        while True:
            # psycopg's generator holds the connection's lock while it waits. Closed here, in
            # this task, whatever ends the loop (the callback raising, a cancellation), it
            # releases the lock in the task that took it; left to the garbage collector, it
            # would be finalised in another task and fail to release it.
            async with aclosing(conn.notifies(timeout=LISTEN_TIMEOUT)) as notifies:
                async for notify in notifies:
                    await on_notification(channel=notify.channel, payload=notify.payload)
            # Quiet for a while: a query proves the connection is alive (or raises).
            await conn.execute("SELECT 1")

    @property
    def can_listen(self) -> bool:
        """False behind a transaction-mode pooler without `listen_conninfo`: poll instead."""
        return self._pooler != "transaction" or self._listen_connect is not None

    def get_sync_connector(self) -> connector.BaseConnector:
        """A thread-safe synchronous connector on the same database, for sync code.

        Its connections get the same connection options (`kwargs`, the connect timeout); an
        async `configure` cannot set up synchronous connections, so with one this raises
        ConfigurationError. Its queries (a sync task's `defer()`) get the same job checks
        and one-line errors as the async ones.
        """
        configure = self._connect.configure
        if configure is not None:
            raise ConfigurationError(
                f"PsycopgConnector: configure={configure!r} is async and cannot set up "
                "the synchronous connections that sync code (e.g. defer() in a sync task) "
                "needs: defer from async code, or set connections up through kwargs= "
                "(e.g. kwargs={'options': '-c search_path=jobs'})"
            )
        if self._sync_connector is None:
            conninfo = self._connect.conninfo
            if conninfo is None:
                conninfo = self._connect.default_conninfo()
            sync = SyncConnector(
                limits=self._limits,
                conninfo=conninfo,
                min_size=0,
                max_size=self._max_size,
                timeout=self._timeout,
                kwargs={"autocommit": True, **self._connect.options},
                json_dumps=self.json_dumps,
                json_loads=self.json_loads,
            )
            sync.open()
            self._sync_connector = sync
        return self._sync_connector

    def execute_query(self, query: LiteralString, **arguments: Any) -> None:
        """Run a statement from synchronous code, through the sync connector."""
        self.get_sync_connector().execute_query(query, **arguments)

    def execute_query_one(self, query: LiteralString, **arguments: Any) -> dict[str, Any]:
        """Run a query from synchronous code and return its first row."""
        return self.get_sync_connector().execute_query_one(query, **arguments)

    def execute_query_all(self, query: LiteralString, **arguments: Any) -> list[dict[str, Any]]:
        """Run a query from synchronous code and return all its rows."""
        return self.get_sync_connector().execute_query_all(query, **arguments)

    def __repr__(self) -> str:
        name = "" if self._name is None else f" {self._name!r}"
        return f"<PsycopgConnector{name} {self._connect.describe()} max_size={self._max_size}>"

    @property
    def conninfo(self) -> str | None:
        """The connection string in use; None before `open_async` resolves the default."""
        return self._connect.conninfo
