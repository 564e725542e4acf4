"""Tests for anyio_conn.AnyioConnection, each run on asyncio and on trio.

Needs PostgreSQL at $DAWDLE_TEST_DSN (default: 127.0.0.1:5432, user postgres,
database test, trust auth).
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from time import monotonic

import anyio
import psycopg
import pytest
from psycopg import errors as e
from psycopg import pq
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).parent))
from anyio_conn import AnyioConnection  # noqa: E402

DSN = os.environ.get("DAWDLE_TEST_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def conn() -> AsyncIterator[AnyioConnection]:
    c = await AnyioConnection.connect(DSN, autocommit=True)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def tx_conn() -> AsyncIterator[AnyioConnection]:
    """A connection not in autocommit (psycopg's default)."""
    c = await AnyioConnection.connect(DSN)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def other() -> AsyncIterator[AnyioConnection]:
    c = await AnyioConnection.connect(DSN, autocommit=True)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def table(other: AnyioConnection) -> AsyncIterator[str]:
    name = f"anyio_conn_{uuid.uuid4().hex[:12]}"
    await other.execute(f"create table {name} (id int primary key, data jsonb)")
    try:
        yield name
    finally:
        await other.execute(f"drop table if exists {name}")


async def fetchval(c: AnyioConnection, query: str, params: tuple = ()) -> object:  # type: ignore[type-arg]
    cur = await c.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def backend_state(other: AnyioConnection, pid: int) -> str | None:
    return await fetchval(  # type: ignore[return-value]
        other, "select coalesce(max(state), 'gone') from pg_stat_activity where pid = %s", (pid,)
    )


# -- basics ---------------------------------------------------------------


async def test_select_1(conn: AnyioConnection) -> None:
    assert await fetchval(conn, "select 1") == 1
    assert isinstance(conn.lock, anyio.Lock)


async def test_params_json_dict_row(conn: AnyioConnection) -> None:
    payload = {"a": [1, 2, {"b": None}], "s": "é\u2603", "n": 1.5}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "select %(j)s::jsonb as j, %(i)s::int + 1 as i, %(t)s::text as t",
            {"j": Jsonb(payload), "i": 41, "t": "x'y"},
        )
        assert await cur.fetchone() == {"j": payload, "i": 42, "t": "x'y"}
        await cur.execute("select g as n from generate_series(1, 3) g")
        assert await cur.fetchall() == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_concurrent_tasks_share_connection(conn: AnyioConnection) -> None:
    results = []

    async def q(i: int) -> None:
        results.append(await fetchval(conn, "select %s::int from pg_sleep(0.05)", (i,)))

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(q, i)
    assert sorted(results) == list(range(5))  # type: ignore[type-var]


# -- transactions ---------------------------------------------------------


async def test_transaction_commit(
    conn: AnyioConnection, other: AnyioConnection, table: str
) -> None:
    async with conn.transaction():
        await conn.execute(f"insert into {table} values (1, %s)", [Jsonb({"k": 1})])
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert await fetchval(other, f"select count(*) from {table}") == 0
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(other, f"select data from {table}") == {"k": 1}


async def test_transaction_rollback(
    conn: AnyioConnection, other: AnyioConnection, table: str
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with conn.transaction():
            await conn.execute(f"insert into {table} values (1, null)")
            1 / 0  # noqa: B018
    async with conn.transaction():
        await conn.execute(f"insert into {table} values (2, null)")
        raise psycopg.Rollback
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(other, f"select count(*) from {table}") == 0


async def test_implicit_transaction_commit_rollback(
    tx_conn: AnyioConnection, other: AnyioConnection, table: str
) -> None:
    await tx_conn.execute(f"insert into {table} values (1, null)")
    await tx_conn.rollback()
    await tx_conn.execute(f"insert into {table} values (2, null)")
    await tx_conn.commit()
    assert await fetchval(other, f"select array_agg(id) from {table}") == [2]


# -- LISTEN / NOTIFY ------------------------------------------------------


async def test_listen_notify(conn: AnyioConnection, other: AnyioConnection) -> None:
    chan = f"ch_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"listen {chan}")
    received = []

    async def listen() -> None:
        async for n in conn.notifies(timeout=10, stop_after=2):
            received.append((n.channel, n.payload, n.pid))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.wait_all_tasks_blocked()  # the listener waits on its socket
            await other.execute("select pg_notify(%s, 'one'), pg_notify(%s, 'two')", (chan, chan))
    assert [(c, p) for c, p, _ in received] == [(chan, "one"), (chan, "two")]
    assert received[0][2] == other.info.backend_pid


async def test_notifies_timeout_and_backlog(conn: AnyioConnection, other: AnyioConnection) -> None:
    chan = f"ch_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"listen {chan}")
    t0 = monotonic()
    assert [n async for n in conn.notifies(timeout=0.2)] == []
    assert 0.15 < monotonic() - t0 < 2
    # A notification arriving while the connection runs a query is kept in the
    # backlog and delivered by the next notifies().
    await other.execute("select pg_notify(%s, 'late')", (chan,))
    await fetchval(conn, "select pg_sleep(0.1)")
    with anyio.fail_after(5):
        got = [n.payload async for n in conn.notifies(timeout=2, stop_after=1)]
    assert got == ["late"]


# -- cancellation ---------------------------------------------------------


async def test_cancel_then_reuse_autocommit(conn: AnyioConnection, other: AnyioConnection) -> None:
    pid = conn.info.backend_pid
    t0 = monotonic()
    with anyio.move_on_after(0.2) as scope:
        await conn.execute("select pg_sleep(10)")
    assert scope.cancelled_caught
    assert monotonic() - t0 < 3
    assert not conn.broken
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await backend_state(other, pid) == "idle"  # the server stopped sleeping
    assert await fetchval(conn, "select 42") == 42


async def test_cancel_inside_transaction_block(
    conn: AnyioConnection, other: AnyioConnection, table: str
) -> None:
    with anyio.move_on_after(0.2) as scope:
        async with conn.transaction():
            await conn.execute(f"insert into {table} values (1, null)")
            await conn.execute("select pg_sleep(10)")
    assert scope.cancelled_caught
    # The ROLLBACK ran despite the cancelled scope.
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(other, f"select count(*) from {table}") == 0
    async with conn.transaction():
        await conn.execute(f"insert into {table} values (2, null)")
    assert await fetchval(other, f"select array_agg(id) from {table}") == [2]


async def test_cancel_in_implicit_transaction(tx_conn: AnyioConnection) -> None:
    with anyio.move_on_after(0.2):
        await tx_conn.execute("select pg_sleep(10)")
    # A clear state: the transaction failed, psycopg wants a rollback.
    assert tx_conn.info.transaction_status == pq.TransactionStatus.INERROR
    with pytest.raises(e.InFailedSqlTransaction):
        await tx_conn.execute("select 1")
    await tx_conn.rollback()
    assert await fetchval(tx_conn, "select 1") == 1


async def test_cancel_stream_then_reuse(conn: AnyioConnection) -> None:
    rows = []
    with anyio.move_on_after(0.3) as scope:
        cur = conn.cursor()
        # Rows wider than the server output buffer (8 kB) are flushed one by one.
        q = "select g, repeat('x', 10000), pg_sleep(0.02) from generate_series(1, 10000) g"
        async for row in cur.stream(q):
            rows.append(row)
    assert scope.cancelled_caught
    assert 0 < len(rows) < 10000
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await fetchval(conn, "select 7") == 7


async def test_cancel_not_honoured_marks_broken(
    conn: AnyioConnection, other: AnyioConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_cancel() -> None:  # the cancel request "gets lost"
        pass

    pid = conn.info.backend_pid
    monkeypatch.setattr(conn, "_send_cancel", no_cancel)
    conn.cleanup_timeout = 0.3
    t0 = monotonic()
    with anyio.move_on_after(0.2):
        await conn.execute("select pg_sleep(3)")
    assert monotonic() - t0 < 2
    assert conn.broken and conn.closed
    with pytest.raises(psycopg.OperationalError):
        await conn.execute("select 1")
    await other.execute("select pg_cancel_backend(%s)", (pid,))


async def test_cancel_safe(conn: AnyioConnection, other: AnyioConnection) -> None:
    async def cancel_soon() -> None:
        await anyio.wait_all_tasks_blocked()
        await conn.cancel_safe(timeout=5)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            with pytest.raises(e.QueryCanceled):
                await conn.execute("select pg_sleep(10)")
    assert await fetchval(conn, "select 1") == 1


# -- broken connections ---------------------------------------------------


async def test_terminated_backend_raises_promptly(
    conn: AnyioConnection, other: AnyioConnection
) -> None:
    await other.execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with anyio.fail_after(5):
        with pytest.raises(psycopg.OperationalError):
            await conn.execute("select 1")
    assert conn.broken
    with pytest.raises(psycopg.OperationalError):
        await conn.execute("select 1")


async def test_terminated_backend_wakes_listener(
    conn: AnyioConnection, other: AnyioConnection
) -> None:
    await conn.execute("listen whatever")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def terminate() -> None:
                await anyio.wait_all_tasks_blocked()
                await other.execute("select pg_terminate_backend(%s)", (conn.info.backend_pid,))

            tg.start_soon(terminate)
            with pytest.raises(psycopg.OperationalError):
                async for _ in conn.notifies():
                    pass


async def test_close_wakes_blocked_task(conn: AnyioConnection) -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def close_soon() -> None:
                await anyio.wait_all_tasks_blocked()
                await conn.close()

            tg.start_soon(close_soon)
            with pytest.raises(psycopg.OperationalError):
                await conn.execute("select pg_sleep(2)")
    assert conn.closed and not conn.broken


# -- connecting -----------------------------------------------------------


async def test_bad_port() -> None:
    with anyio.fail_after(10):
        with pytest.raises(psycopg.OperationalError) as ei:
            await AnyioConnection.connect("host=127.0.0.1 port=1 user=postgres dbname=test")
    assert "Connection refused" in str(ei.value)
    assert "port: '1'" in str(ei.value)


async def test_bad_database() -> None:
    with pytest.raises(psycopg.OperationalError) as ei:
        await AnyioConnection.connect(DSN, dbname="no_such_db_anyio")
    assert 'database "no_such_db_anyio" does not exist' in str(ei.value)


async def test_hostname_resolution() -> None:
    async with await AnyioConnection.connect(DSN, host="localhost") as c:
        assert await fetchval(c, "select 1") == 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that completes the handshake but never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(5)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


async def test_connect_timeout(silent_server: int) -> None:
    t0 = monotonic()
    with pytest.raises(e.ConnectionTimeout) as ei:
        await AnyioConnection.connect(
            f"host=127.0.0.1 port={silent_server} user=postgres connect_timeout=2"
        )
    assert 1.9 < monotonic() - t0 < 5
    assert "timeout expired after 2s" in str(ei.value)
    assert isinstance(ei.value, psycopg.OperationalError)


async def test_connect_cancelled(silent_server: int) -> None:
    t0 = monotonic()
    with anyio.move_on_after(0.2) as scope:
        await AnyioConnection.connect(f"host=127.0.0.1 port={silent_server} user=postgres")
    assert scope.cancelled_caught
    assert monotonic() - t0 < 2


# -- bulk paths (pipeline mode, COPY): read+write waits -------------------


async def test_executemany_and_copy(
    conn: AnyioConnection, other: AnyioConnection, table: str
) -> None:
    big = "x" * 20_000  # ~40 MB in total: the socket fills up, waits go RW
    async with conn.cursor() as cur:
        await cur.executemany(
            f"insert into {table} values (%s, %s)",
            [(i, Jsonb({"s": big})) for i in range(2000)],
        )
        async with cur.copy(f"copy {table} (id) from stdin") as copy:
            for i in range(2000, 2100):
                await copy.write_row((i,))
        async with cur.copy(f"copy (select id from {table} order by id) to stdout") as copy:
            ids = [int(row[0]) async for row in copy.rows()]
    assert ids == list(range(2100))
    assert (
        await fetchval(other, f"select count(*) from {table} where data->>'s' = %s", (big,)) == 2000
    )


async def test_other_async_api(tx_conn: AnyioConnection) -> None:
    """Setters, pipeline(), server-side cursors: all go through lock + wait()."""
    await tx_conn.set_autocommit(True)
    await tx_conn.set_read_only(True)
    async with tx_conn.pipeline():
        c1 = await tx_conn.execute("select 1")
        c2 = await tx_conn.execute("select 2")
    assert (await c1.fetchone(), await c2.fetchone()) == ((1,), (2,))
    await tx_conn.set_autocommit(False)
    async with tx_conn.transaction():
        async with tx_conn.cursor("named") as cur:
            await cur.execute("select g from generate_series(1, 5) g")
            assert await cur.fetchmany(2) == [(1,), (2,)]
            assert [r async for r in cur] == [(3,), (4,), (5,)]
