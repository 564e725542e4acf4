"""AnyioConnection against real PostgreSQL, on asyncio and on Trio.

Queries, transactions, LISTEN/NOTIFY, cancellation, lost connections, connecting and the
bulk (pipeline, COPY) paths: everything psycopg's AsyncConnection does through asyncio,
done here through anyio.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from time import monotonic
from typing import Any

import anyio
import psycopg
import pytest
from psycopg import errors as e
from psycopg import pq, sql
from psycopg.abc import Params, Query
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from dawdle._connector._connection import AnyioConnection
from tests.durability.proxy import tcp_proxy

pytestmark = pytest.mark.anyio


class BoomError(Exception):
    """An application error raised inside a transaction block."""


@asynccontextmanager
async def connected(dsn: str, **kwargs: Any) -> AsyncIterator[AnyioConnection]:
    """An AnyioConnection to `dsn`, closed at the end."""
    c = await AnyioConnection.connect(dsn, **kwargs)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def conn(database_dsn: str) -> AsyncIterator[AnyioConnection]:
    """The connection under test, in autocommit."""
    async with connected(database_dsn, autocommit=True) as c:
        yield c


@pytest.fixture
async def tx_conn(database_dsn: str) -> AsyncIterator[AnyioConnection]:
    """The connection under test, not in autocommit (psycopg's default)."""
    async with connected(database_dsn) as c:
        yield c


@pytest.fixture
async def other(database_dsn: str) -> AsyncIterator[AnyioConnection]:
    """A second connection, to watch and to disturb the one under test."""
    async with connected(database_dsn, autocommit=True) as c:
        yield c


@pytest.fixture
async def table(other: AnyioConnection) -> AsyncIterator[sql.Identifier]:
    """A new empty table (id int primary key, data jsonb), dropped after the test."""
    name = sql.Identifier(f"anyio_conn_{uuid.uuid4().hex[:12]}")
    await other.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, data jsonb)").format(name))
    try:
        yield name
    finally:
        await other.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that completes the handshake but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(5)
        yield s.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A TCP port bound but not listening: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def fetchval(c: AnyioConnection, query: Query, params: Params | None = None) -> Any:
    cur = await c.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


def q(template: str, *identifiers: sql.Identifier) -> sql.Composed:
    """`template` with each {} replaced by a quoted identifier."""
    return sql.SQL(template).format(*identifiers)


async def backend_state(other: AnyioConnection, pid: int) -> str:
    return str(
        await fetchval(
            other,
            "SELECT coalesce(max(state), 'gone') FROM pg_stat_activity WHERE pid = %s",
            (pid,),
        )
    )


async def until_sleeping(other: AnyioConnection, pid: int) -> None:
    """Return once backend `pid` runs pg_sleep, so a cancel request will interrupt it.

    The server gives no event for this, so this polls (each poll is one round trip).
    """
    query = "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s AND wait_event = 'PgSleep')"
    with anyio.fail_after(10):
        while not await fetchval(other, query, (pid,)):
            pass


@asynccontextmanager
async def cancelled_once_sleeping(
    other: AnyioConnection, conn: AnyioConnection
) -> AsyncIterator[anyio.CancelScope]:
    """A cancel scope around the body, cancelled as soon as `conn`'s backend is in pg_sleep."""
    pid = conn.info.backend_pid
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:

            async def cancel_when_sleeping() -> None:
                await until_sleeping(other, pid)
                scope.cancel()

            tg.start_soon(cancel_when_sleeping)
            yield scope


# -- basics ---------------------------------------------------------------


async def test_select_1(conn: AnyioConnection) -> None:
    """A plain query works, and the connection's lock is anyio's, not asyncio's."""
    assert await fetchval(conn, "SELECT 1") == 1
    assert isinstance(conn.lock, anyio.Lock)


async def test_params_json_dict_row(conn: AnyioConnection) -> None:
    """Parameters, Jsonb and dict_row cursors round-trip values, unicode and quotes intact."""
    payload = {"a": [1, 2, {"b": None}], "s": "é\u2603", "n": 1.5}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT %(j)s::jsonb AS j, %(i)s::int + 1 AS i, %(t)s::text AS t",
            {"j": Jsonb(payload), "i": 41, "t": "x'y"},
        )
        assert await cur.fetchone() == {"j": payload, "i": 42, "t": "x'y"}
        await cur.execute("SELECT g AS n FROM generate_series(1, 3) g")
        assert await cur.fetchall() == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_concurrent_tasks_share_connection(conn: AnyioConnection) -> None:
    """Tasks querying one connection at once take turns on its lock and each get their row."""
    results: list[int] = []

    async def query(i: int) -> None:
        results.append(await fetchval(conn, "SELECT %s::int FROM pg_sleep(0.05)", (i,)))

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(query, i)
    assert sorted(results) == list(range(5))


# -- transactions ---------------------------------------------------------


async def test_transaction_commit(
    conn: AnyioConnection, other: AnyioConnection, table: sql.Identifier
) -> None:
    """transaction() keeps its writes invisible to others until it commits on exit."""
    async with conn.transaction():
        await conn.execute(q("INSERT INTO {} VALUES (1, %s)", table), [Jsonb({"k": 1})])
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert await fetchval(other, q("SELECT count(*) FROM {}", table)) == 0
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(other, q("SELECT data FROM {}", table)) == {"k": 1}


async def test_transaction_rollback(
    conn: AnyioConnection, other: AnyioConnection, table: sql.Identifier
) -> None:
    """transaction() rolls back on an exception (re-raised) and on psycopg.Rollback (swallowed)."""
    with pytest.raises(BoomError):
        async with conn.transaction():
            await conn.execute(q("INSERT INTO {} VALUES (1, null)", table))
            raise BoomError
    async with conn.transaction():
        await conn.execute(q("INSERT INTO {} VALUES (2, null)", table))
        raise psycopg.Rollback
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(other, q("SELECT count(*) FROM {}", table)) == 0


async def test_implicit_transaction_commit_rollback(
    tx_conn: AnyioConnection, other: AnyioConnection, table: sql.Identifier
) -> None:
    """Outside autocommit, rollback() discards and commit() keeps the implicit transaction."""
    await tx_conn.execute(q("INSERT INTO {} VALUES (1, null)", table))
    await tx_conn.rollback()
    await tx_conn.execute(q("INSERT INTO {} VALUES (2, null)", table))
    await tx_conn.commit()
    assert await fetchval(other, q("SELECT array_agg(id) FROM {}", table)) == [2]


# -- LISTEN / NOTIFY ------------------------------------------------------


async def test_listen_notify(conn: AnyioConnection, other: AnyioConnection) -> None:
    """A task blocked in notifies() wakes for each notification, with channel, payload and pid."""
    chan = f"ch_{uuid.uuid4().hex[:8]}"
    await conn.execute(q("LISTEN {}", sql.Identifier(chan)))
    received: list[tuple[str, str, int]] = []

    async def listen() -> None:
        received.extend(
            [(n.channel, n.payload, n.pid) async for n in conn.notifies(timeout=10, stop_after=2)]
        )

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.wait_all_tasks_blocked()  # the listener waits on its socket
            await other.execute("SELECT pg_notify(%s, 'one'), pg_notify(%s, 'two')", (chan, chan))
    assert [(c, p) for c, p, _ in received] == [(chan, "one"), (chan, "two")]
    assert received[0][2] == other.info.backend_pid


async def test_notifies_timeout_and_backlog(conn: AnyioConnection, other: AnyioConnection) -> None:
    """notifies(timeout) ends empty on time; one read during a query waits in the backlog."""
    chan = f"ch_{uuid.uuid4().hex[:8]}"
    await conn.execute(q("LISTEN {}", sql.Identifier(chan)))
    t0 = monotonic()
    assert [n async for n in conn.notifies(timeout=0.2)] == []
    assert 0.15 < monotonic() - t0 < 2
    # The server sends the notification before the query's ReadyForQuery at the latest,
    # so libpq reads it while running the query, outside any notifies().
    await other.execute("SELECT pg_notify(%s, 'late')", (chan,))
    assert await fetchval(conn, "SELECT 1") == 1
    with anyio.fail_after(5):
        got = [n.payload async for n in conn.notifies(timeout=2, stop_after=1)]
    assert got == ["late"]


# -- cancellation ---------------------------------------------------------


async def test_cancel_then_reuse_autocommit(conn: AnyioConnection, other: AnyioConnection) -> None:
    """Cancelling a task in pg_sleep stops the server promptly and leaves the connection usable."""
    pid = conn.info.backend_pid
    t0 = monotonic()
    async with cancelled_once_sleeping(other, conn) as scope:
        await conn.execute("SELECT pg_sleep(10)")
    assert scope.cancelled_caught
    assert monotonic() - t0 < 3
    assert not conn.broken
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await backend_state(other, pid) == "idle"  # the server stopped sleeping
    assert await fetchval(conn, "SELECT 42") == 42


async def test_cancel_inside_transaction_block(
    conn: AnyioConnection, other: AnyioConnection, table: sql.Identifier
) -> None:
    """A cancelled transaction() block still runs its ROLLBACK, then the connection is reusable."""
    async with cancelled_once_sleeping(other, conn) as scope, conn.transaction():
        await conn.execute(q("INSERT INTO {} VALUES (1, null)", table))
        await conn.execute("SELECT pg_sleep(10)")
    assert scope.cancelled_caught
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(other, q("SELECT count(*) FROM {}", table)) == 0
    async with conn.transaction():
        await conn.execute(q("INSERT INTO {} VALUES (2, null)", table))
    assert await fetchval(other, q("SELECT array_agg(id) FROM {}", table)) == [2]


async def test_cancel_in_implicit_transaction(
    tx_conn: AnyioConnection, other: AnyioConnection
) -> None:
    """A cancelled query outside autocommit leaves a failed transaction that rollback() clears."""
    async with cancelled_once_sleeping(other, tx_conn) as scope:
        await tx_conn.execute("SELECT pg_sleep(10)")
    assert scope.cancelled_caught
    assert tx_conn.info.transaction_status == pq.TransactionStatus.INERROR
    with pytest.raises(e.InFailedSqlTransaction):
        await tx_conn.execute("SELECT 1")
    await tx_conn.rollback()
    assert await fetchval(tx_conn, "SELECT 1") == 1


async def test_cancel_stream_then_reuse(conn: AnyioConnection) -> None:
    """Cancelling a stream() mid-result drains the rest and leaves the connection idle."""
    rows = []
    with anyio.CancelScope() as scope:
        cur = conn.cursor()
        # Rows wider than the server output buffer (8 kB) are flushed one by one, and the
        # server-side pg_sleep paces them: the query is still running when the scope is cancelled.
        query = "SELECT g, repeat('x', 10000), pg_sleep(0.01) FROM generate_series(1, 10000) g"
        async for row in cur.stream(query):
            rows.append(row)
            if len(rows) == 3:
                scope.cancel()
    assert scope.cancelled_caught
    assert 3 <= len(rows) < 10000
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(conn, "SELECT 7") == 7


async def test_cancel_not_honoured_marks_broken(
    conn: AnyioConnection, other: AnyioConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the server ignores the cancel past cleanup_timeout, the connection is closed as broken."""

    async def no_cancel() -> None:  # the cancel request "gets lost"
        pass

    pid = conn.info.backend_pid
    monkeypatch.setattr(conn, "_send_cancel", no_cancel)
    conn.cleanup_timeout = 0.3
    t0 = monotonic()
    async with cancelled_once_sleeping(other, conn):
        await conn.execute("SELECT pg_sleep(10)")
    assert monotonic() - t0 < 2
    assert conn.broken
    assert conn.closed
    with pytest.raises(psycopg.OperationalError):
        await conn.execute("SELECT 1")
    await other.execute("SELECT pg_cancel_backend(%s)", (pid,))


async def test_cancel_safe(conn: AnyioConnection, other: AnyioConnection) -> None:
    """cancel_safe() from another task makes the running query raise QueryCanceled."""

    async def cancel_when_sleeping() -> None:
        await until_sleeping(other, conn.info.backend_pid)
        await conn.cancel_safe(timeout=5)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when_sleeping)
            with pytest.raises(e.QueryCanceled):
                await conn.execute("SELECT pg_sleep(10)")
    assert await fetchval(conn, "SELECT 1") == 1


# -- broken connections ---------------------------------------------------


async def test_terminated_backend_raises_promptly(
    conn: AnyioConnection, other: AnyioConnection
) -> None:
    """A query on a connection whose backend was terminated raises and marks it broken."""
    # The two-argument form returns once the backend has exited.
    pid = conn.info.backend_pid
    assert await fetchval(other, "SELECT pg_terminate_backend(%s, 5000)", (pid,)) is True
    with anyio.fail_after(5), pytest.raises(psycopg.OperationalError):
        await conn.execute("SELECT 1")
    assert conn.broken
    with pytest.raises(psycopg.OperationalError):
        await conn.execute("SELECT 1")


async def test_terminated_backend_wakes_listener(
    conn: AnyioConnection, other: AnyioConnection
) -> None:
    """A task blocked in notifies() gets OperationalError when its backend is terminated."""
    await conn.execute("LISTEN whatever")

    async def terminate() -> None:
        await anyio.wait_all_tasks_blocked()  # the listener waits on its socket
        await other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(terminate)
            with pytest.raises(psycopg.OperationalError):
                async for _ in conn.notifies():
                    pass
    assert conn.broken


async def test_close_wakes_blocked_task(conn: AnyioConnection) -> None:
    """close() from another task wakes a task waiting for a result, with OperationalError."""

    async def close_soon() -> None:
        await anyio.wait_all_tasks_blocked()  # the query task waits on its socket
        await conn.close()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(close_soon)
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("SELECT pg_sleep(10)")
    assert conn.closed
    assert not conn.broken


# -- connecting -----------------------------------------------------------


async def test_bad_port(closed_port: int) -> None:
    """A refused connection raises OperationalError naming libpq's reason and the port tried."""
    with anyio.fail_after(10), pytest.raises(psycopg.OperationalError) as ei:
        await AnyioConnection.connect(f"host=127.0.0.1 port={closed_port} user=postgres")
    assert "Connection refused" in str(ei.value)
    assert f"port: '{closed_port}'" in str(ei.value)


async def test_bad_database(database_dsn: str) -> None:
    """Connecting to a missing database raises OperationalError with the server's message."""
    with pytest.raises(psycopg.OperationalError) as ei:
        await AnyioConnection.connect(database_dsn, dbname="no_such_db_anyio")
    assert 'database "no_such_db_anyio" does not exist' in str(ei.value)


async def test_hostname_resolution(database_dsn: str) -> None:
    """A host name (not an address) is resolved and connected to, on both runtimes."""
    # Through a TCP relay, as the embedded test server only listens on a Unix socket.
    async with (
        tcp_proxy(database_dsn) as (_, proxy_dsn),
        await AnyioConnection.connect(proxy_dsn, host="localhost") as c,
    ):
        assert await fetchval(c, "SELECT 1") == 1
        assert c.info.host == "localhost"
        assert c.info.hostaddr == "127.0.0.1"


async def test_connect_timeout(silent_server: int) -> None:
    """connect_timeout on a server that never answers raises ConnectionTimeout on time."""
    t0 = monotonic()
    with pytest.raises(e.ConnectionTimeout) as ei:
        await AnyioConnection.connect(
            f"host=127.0.0.1 port={silent_server} user=postgres connect_timeout=2"
        )
    assert 1.9 < monotonic() - t0 < 5
    assert "no answer from 127.0.0.1:" in str(ei.value)
    assert "within 2 s (connect_timeout=2)" in str(ei.value)
    assert isinstance(ei.value, psycopg.OperationalError)


async def test_connect_cancelled(silent_server: int) -> None:
    """A connection attempt to a server that never answers can be cancelled promptly."""
    t0 = monotonic()
    with anyio.move_on_after(0.2) as scope:
        await AnyioConnection.connect(f"host=127.0.0.1 port={silent_server} user=postgres")
    assert scope.cancelled_caught
    assert monotonic() - t0 < 2


# -- bulk paths (pipeline mode, COPY): read+write waits -------------------


async def test_executemany_and_copy(
    conn: AnyioConnection, other: AnyioConnection, table: sql.Identifier
) -> None:
    """executemany() and COPY in and out move ~40 MB intact, through read-and-write waits."""
    big = "x" * 20_000  # ~40 MB in total: the socket fills up, waits go RW
    async with conn.cursor() as cur:
        await cur.executemany(
            q("INSERT INTO {} VALUES (%s, %s)", table),
            [(i, Jsonb({"s": big})) for i in range(2000)],
        )
        async with cur.copy(q("COPY {} (id) FROM STDIN", table)) as copy:
            for i in range(2000, 2100):
                await copy.write_row((i,))
        async with cur.copy(q("COPY (SELECT id FROM {} ORDER BY id) TO STDOUT", table)) as copy:
            ids = [int(row[0]) async for row in copy.rows()]
    assert ids == list(range(2100))
    count = q("SELECT count(*) FROM {} WHERE data->>'s' = %s", table)
    assert await fetchval(other, count, (big,)) == 2000


async def test_other_async_api(tx_conn: AnyioConnection) -> None:
    """Setters, pipeline() and server-side cursors all work through the anyio lock and wait()."""
    await tx_conn.set_autocommit(True)
    await tx_conn.set_read_only(True)
    async with tx_conn.pipeline():
        c1 = await tx_conn.execute("SELECT 1")
        c2 = await tx_conn.execute("SELECT 2")
    assert (await c1.fetchone(), await c2.fetchone()) == ((1,), (2,))
    await tx_conn.set_autocommit(False)
    async with tx_conn.transaction(), tx_conn.cursor("named") as cur:
        await cur.execute("SELECT g FROM generate_series(1, 5) g")
        assert await cur.fetchmany(2) == [(1,), (2,)]
        assert [r async for r in cur] == [(3,), (4,), (5,)]
