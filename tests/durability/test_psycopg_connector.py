"""dawdle.PsycopgConnector against a real PostgreSQL, on asyncio and Trio."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.from_thread
import anyio.to_thread
import psycopg
import pytest
from procrastinate import exceptions
from psycopg import conninfo

from dawdle import App, DatabaseUnavailable, DawdleError, PoolTimeout, PsycopgConnector

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app(schema_dsn: str) -> AsyncIterator[App]:
    """A dawdle App on a small pool (2 connections) and an empty queue, on the test's runtime."""
    app = App(connector=PsycopgConnector(conninfo=schema_dsn, max_size=2))
    async with app.open_async():
        await app.connector.execute_query_async("TRUNCATE procrastinate_jobs CASCADE")
        yield app


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A TCP port bound but not listening: connecting to it is refused at once."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def connector_of(app: App) -> PsycopgConnector:
    assert isinstance(app.connector, PsycopgConnector)
    return app.connector


async def backend_pids(app: App) -> list[int]:
    rows = await app.connector.execute_query_all_async(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return [row["pid"] for row in rows]


async def test_queries_and_json_round_trip(app: App) -> None:
    """Dict arguments travel as jsonb and come back as dicts; one/all/none results work."""
    payload = {"nested": {"list": [1, 2.5, "three", None], "flag": True}}
    row = await app.connector.execute_query_one_async("SELECT %(doc)s::jsonb AS doc", doc=payload)
    assert row == {"doc": payload}
    rows = await app.connector.execute_query_all_async("SELECT generate_series(1, 3) AS n")
    assert [r["n"] for r in rows] == [1, 2, 3]
    await app.connector.execute_query_async("SELECT 1")
    with pytest.raises(exceptions.NoResult):
        await app.connector.execute_query_one_async("SELECT 1 WHERE false")


async def test_sql_errors_become_connector_exceptions(app: App) -> None:
    """A failing statement raises Procrastinate's ConnectorException with psycopg's cause."""
    with pytest.raises(exceptions.ConnectorException) as caught:
        await app.connector.execute_query_async("SELECT * FROM no_such_table")
    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)
    assert (await app.connector.execute_query_one_async("SELECT 2 AS n"))["n"] == 2


async def test_database_error_keeps_the_reason_and_drops_the_sql(app: App) -> None:
    """An error inside PL/pgSQL: the server's reason and condition, no CONTEXT with SQL text."""
    statement = "DO $$ BEGIN PERFORM 1 / (SELECT count(*) FROM pg_class WHERE false); END $$"
    with pytest.raises(exceptions.ConnectorException) as caught:
        await app.connector.execute_query_async(statement)
    cause = caught.value.__cause__
    assert isinstance(cause, psycopg.errors.DivisionByZero)
    assert "PERFORM" in str(cause)  # psycopg's own message has the SQL...
    assert str(caught.value) == "division by zero (division_by_zero)"  # ...ours does not
    assert isinstance(caught.value, DawdleError)  # the CLI prints it as it is, on one line


async def test_sync_queries_keep_the_reason_and_drop_the_sql(app: App) -> None:
    """The connector of sync code (a sync task's defer()) describes errors the same way."""
    statement = "DO $$ BEGIN PERFORM 1 / (SELECT count(*) FROM pg_class WHERE false); END $$"
    with pytest.raises(exceptions.ConnectorException) as caught:
        await anyio.to_thread.run_sync(
            functools.partial(app.connector.get_sync_connector().execute_query, statement)
        )
    assert str(caught.value) == "division by zero (division_by_zero)"
    assert isinstance(caught.value.__cause__, psycopg.errors.DivisionByZero)


def test_sync_pool_replaces_a_connection_terminated_while_idle(schema_dsn: str) -> None:
    """The sync pool checks idle connections locally: a terminated one is replaced, not used."""
    sync = PsycopgConnector(conninfo=schema_dsn, max_size=1).get_sync_connector()
    try:
        first = sync.execute_query_one("SELECT pg_backend_pid() AS pid")["pid"]
        with psycopg.connect(schema_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", [first])  # waits till gone
        second = sync.execute_query_one("SELECT pg_backend_pid() AS pid")["pid"]
    finally:
        sync.close()
    assert second != first


async def test_defer_without_the_schema_says_to_apply_it(database_dsn: str) -> None:
    """Deferring on a database without the schema names the missing table and `schema --apply`."""
    # A search_path without Procrastinate's schema, as a database where it was never applied.
    empty = conninfo.make_conninfo(database_dsn, options="-c search_path=pg_temp")
    app = App(connector=PsycopgConnector(conninfo=empty, max_size=1))
    async with app.open_async():
        with pytest.raises(exceptions.ConnectorException) as caught:
            await app.configure_task("any.task", allow_unknown=True).defer_async()
    assert str(caught.value) == (
        'relation "procrastinate_jobs" does not exist (undefined_table): the '
        "schema is missing or outdated: run `dawdle schema --apply`"
    )
    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)


async def test_defer_and_batch_defer_through_procrastinate(app: App) -> None:
    """Procrastinate's Task.defer_async and batch_defer_async work on this connector."""

    @app.task(queue="mail", name="send_mail")
    async def send_mail(to: str) -> None: ...

    single = await send_mail.defer_async(to="ada@example.org")
    batch = await send_mail.batch_defer_async(*({"to": f"user{n}@example.org"} for n in range(50)))
    rows = await app.connector.execute_query_all_async(
        "SELECT id, status, args FROM procrastinate_jobs WHERE id = ANY(%(ids)s) ORDER BY id",
        ids=[single, *batch],
    )
    assert [r["id"] for r in rows] == sorted([single, *batch])
    assert {r["status"] for r in rows} == {"todo"}
    assert rows[0]["args"] == {"to": "ada@example.org"}


async def test_queueing_lock_is_refused_as_in_procrastinate(app: App) -> None:
    """A second job with a taken queueing lock raises AlreadyEnqueued."""

    @app.task(queueing_lock="nightly-report", name="nightly_report")
    async def report() -> None: ...

    await report.defer_async()
    with pytest.raises(exceptions.AlreadyEnqueued):
        await report.defer_async()


@pytest.mark.parametrize("commit", [True, False])
async def test_transactional_defer(app: App, commit: bool) -> None:
    """A job deferred inside the caller's transaction exists only if that transaction commits."""

    @app.task(name="audit")
    async def audit(step: int) -> None: ...

    class AbandonError(Exception):
        pass

    job_id = None
    with pytest.raises(AbandonError) if not commit else anyio.CancelScope():
        async with connector_of(app).connection() as conn, conn.transaction():
            job_id = await audit.configure(connection=conn).defer_async(step=1)
            if not commit:
                raise AbandonError
    assert job_id is not None
    rows = await app.connector.execute_query_all_async(
        "SELECT id FROM procrastinate_jobs WHERE id = %(id)s", id=job_id
    )
    assert len(rows) == (1 if commit else 0)


async def test_listen_notify_delivers_job_inserted(app: App) -> None:
    """A deferred job's NOTIFY reaches listen_notify with Procrastinate's payload."""
    received: list[tuple[str, dict[str, object]]] = []
    arrived = anyio.Event()
    listening = anyio.Event()

    async def on_notification(*, channel: str, payload: str) -> None:
        received.append((channel, json.loads(payload)))
        arrived.set()

    async def on_listening() -> None:
        listening.set()

    @app.task(queue="reports", name="build_report")
    async def build_report() -> None: ...

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                connector_of(app).listen_notify,
                on_notification,
                ["procrastinate_queue_v1#reports"],
                on_listening=on_listening,
            )
        )
        await listening.wait()
        job_id = await build_report.defer_async()
        await arrived.wait()
        tg.cancel_scope.cancel()
    assert received == [
        ("procrastinate_queue_v1#reports", {"type": "job_inserted", "job_id": job_id})
    ]


async def test_listener_recovers_from_a_terminated_backend(app: App) -> None:
    """After pg_terminate_backend the listener reconnects, says so, and hears new jobs."""
    received: list[int] = []
    arrived = anyio.Event()
    listens: list[anyio.Event] = [anyio.Event(), anyio.Event()]

    async def on_notification(*, channel: str, payload: str) -> None:
        received.append(json.loads(payload)["job_id"])
        arrived.set()

    async def on_listening() -> None:
        next(event for event in listens if not event.is_set()).set()

    @app.task(queue="resilient", name="resilient_job")
    async def job() -> None: ...

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                connector_of(app).listen_notify,
                on_notification,
                ["procrastinate_queue_v1#resilient"],
                on_listening=on_listening,
            )
        )
        await listens[0].wait()
        await app.connector.execute_query_async(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN %%' AND datname = current_database()"
        )
        await listens[1].wait()
        job_id = await job.defer_async()
        await arrived.wait()
        tg.cancel_scope.cancel()
    assert received == [job_id]


async def test_cancelled_query_is_cancelled_on_the_server_and_the_pool_reused(app: App) -> None:
    """Cancelling pg_sleep stops it server-side; the pool then serves the next query."""
    with anyio.move_on_after(0.3) as scope:
        await app.connector.execute_query_async("SELECT pg_sleep(30)")
    assert scope.cancelled_caught
    rows = await app.connector.execute_query_all_async(
        "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
    )
    assert rows == []
    for _ in range(4):  # more than max_size: every pooled connection is usable
        assert (await app.connector.execute_query_one_async("SELECT 7 AS n"))["n"] == 7


async def test_pool_exhaustion_waits_and_honours_cancellation(app: App) -> None:
    """With both connections held, a query waits; cancelling it works; release lets others in."""
    connector = connector_of(app)
    release = anyio.Event()
    held = 0
    both_held = anyio.Event()

    async def hold() -> None:
        nonlocal held
        async with connector.connection():
            held += 1
            if held == 2:
                both_held.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        tg.start_soon(hold)
        await both_held.wait()
        with anyio.move_on_after(0.2) as waiting:
            await app.connector.execute_query_async("SELECT 1")
        assert waiting.cancelled_caught
        release.set()
    assert (await app.connector.execute_query_one_async("SELECT 3 AS n"))["n"] == 3


async def test_pool_checkout_times_out_naming_the_pool_size(schema_dsn: str) -> None:
    """With both connections held, a third caller gets PoolTimeout after `timeout`, named."""
    connector = PsycopgConnector(conninfo=schema_dsn, max_size=2, timeout=0.5)
    await connector.open_async()
    release = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                held = anyio.Event()

                async def hold(held: anyio.Event = held) -> None:
                    async with connector.connection():
                        held.set()
                        await release.wait()

                tg.start_soon(hold)
                await held.wait()
            started = time.monotonic()
            with pytest.raises(PoolTimeout) as caught:
                await connector.execute_query_async("SELECT 1")
            took = time.monotonic() - started
            release.set()
        assert (await connector.execute_query_one_async("SELECT 4 AS n"))["n"] == 4
    finally:
        await connector.close_async()
    assert 0.45 < took < 5
    assert str(caught.value) == (
        "no database connection free after 0.5 s: all 2 of the pool's connections are in "
        "use (max_size=2, timeout=0.5)"
    )
    assert isinstance(caught.value, exceptions.ConnectorException)


async def test_waiters_are_served_in_arrival_order(schema_dsn: str) -> None:
    """With one connection, queued waiters get it first come, first served."""
    connector = PsycopgConnector(conninfo=schema_dsn, max_size=1)
    await connector.open_async()
    order: list[int] = []
    try:
        async with anyio.create_task_group() as tg, connector.connection():
            for n in range(5):
                queued = anyio.Event()

                async def query(n: int = n, queued: anyio.Event = queued) -> None:
                    queued.set()
                    await connector.execute_query_async("SELECT 1")
                    order.append(n)

                tg.start_soon(query)
                await queued.wait()
                await anyio.wait_all_tasks_blocked()
    finally:
        await connector.close_async()
    assert order == [0, 1, 2, 3, 4]


async def test_terminated_backends_are_replaced(app: App, schema_dsn: str) -> None:
    """After every pooled backend is terminated, the next queries reconnect and succeed."""
    async with anyio.create_task_group() as tg:  # make both pooled connections exist
        for _ in range(2):
            tg.start_soon(app.connector.execute_query_async, "SELECT pg_sleep(0.05)")
    pids = await backend_pids(app)
    admin = App(connector=PsycopgConnector(conninfo=schema_dsn, max_size=1))
    async with admin.open_async():
        await admin.connector.execute_query_async(
            "SELECT pg_terminate_backend(pid) FROM unnest(%(pids)s::int[]) AS pid", pids=pids
        )
    for _ in range(4):
        assert (await app.connector.execute_query_one_async("SELECT 5 AS n"))["n"] == 5
    assert not set(await backend_pids(app)) & set(pids)


async def test_query_right_after_termination_is_not_lost(app: App, schema_dsn: str) -> None:
    """Terminate every pooled backend and query at once, repeatedly: each query succeeds.

    The backend dies a moment after pg_terminate_backend returns, so the pool may hand out a
    connection that looks alive; the server's AdminShutdown then proves the query never ran.
    """
    admin = App(connector=PsycopgConnector(conninfo=schema_dsn, max_size=1))
    async with admin.open_async():
        for round_number in range(20):
            async with anyio.create_task_group() as tg:
                for _ in range(2):
                    tg.start_soon(app.connector.execute_query_async, "SELECT pg_sleep(0.01)")
            pids = await backend_pids(app)
            await admin.connector.execute_query_async(
                "SELECT pg_terminate_backend(pid) FROM unnest(%(pids)s::int[]) AS pid", pids=pids
            )
            # A jsonb argument too: sent again on a new connection, it is encoded again.
            row = await app.connector.execute_query_one_async(
                "SELECT %(n)s::int AS n, %(doc)s::jsonb AS doc",
                n=round_number,
                doc={"round": round_number},
            )
            assert row == {"n": round_number, "doc": {"round": round_number}}


async def test_bad_port_names_host_and_database_and_hides_the_password() -> None:
    """An unreachable server gives DatabaseUnavailable naming host, port and database only."""
    bad = conninfo.make_conninfo(
        "",
        host="127.0.0.1",
        port=1,
        dbname="payroll",
        user="alice",
        password="hunter2",  # noqa: S106
    )
    app = App(connector=PsycopgConnector(conninfo=bad))
    with pytest.raises(DatabaseUnavailable) as caught:
        await app.open_async()
    message = str(caught.value)
    assert "host=127.0.0.1" in message
    assert "port=1" in message
    assert "dbname=payroll" in message
    assert "hunter2" not in message
    assert isinstance(caught.value, exceptions.ConnectorException)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


async def test_server_lost_during_a_query_is_database_unavailable(closed_port: int) -> None:
    """A query that cannot get a connection raises DatabaseUnavailable naming the server."""
    # min_size=0: the pool opens without connecting, so the first query makes the connection.
    unreachable = f"host=127.0.0.1 port={closed_port} user=postgres password=hunter2"
    connector = PsycopgConnector(conninfo=unreachable, min_size=0, reconnect_timeout=0.2)
    await connector.open_async()
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await connector.execute_query_async("SELECT 1")
    finally:
        await connector.close_async()
    message = str(caught.value)
    assert message.startswith(f"cannot connect to PostgreSQL at host=127.0.0.1 port={closed_port}")
    assert "Connection refused" in message
    assert "hunter2" not in message


async def test_missing_database_is_named(schema_dsn: str) -> None:
    """A database that does not exist is named in the error."""
    bad = conninfo.make_conninfo(schema_dsn, dbname="no_such_db_here")
    with pytest.raises(DatabaseUnavailable, match="no_such_db_here"):
        await App(connector=PsycopgConnector(conninfo=bad)).open_async()


async def test_schema_check_and_idempotent_apply(database_dsn: str) -> None:
    """The check tells absent from current; applying twice is harmless."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    app = App(connector=PsycopgConnector(conninfo=database_dsn))
    async with app.open_async():
        await app.connector.execute_query_async(f"CREATE SCHEMA {name}")  # type: ignore[arg-type]
    scratch = conninfo.make_conninfo(database_dsn, options=f"-c search_path={name}")
    app = App(connector=PsycopgConnector(conninfo=scratch))
    async with app.open_async():
        before = await app.schema_manager.check_schema_async()
        await app.schema_manager.apply_schema_async()
        await app.schema_manager.apply_schema_async()
        after = await app.schema_manager.check_schema_async()
    assert not before.present
    assert after.current
    assert after.version is not None


async def test_sync_defer_from_a_worker_thread(app: App) -> None:
    """Synchronous code (a sync task in a thread) defers through a thread-safe sync connector."""

    @app.task(name="from_thread")
    def from_thread(n: int) -> None: ...

    ids = [
        await anyio.to_thread.run_sync(functools.partial(from_thread.defer, n=n)) for n in range(3)
    ]
    rows = await app.connector.execute_query_all_async(
        "SELECT args FROM procrastinate_jobs WHERE id = ANY(%(ids)s) ORDER BY id", ids=ids
    )
    assert [row["args"] for row in rows] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_connects_while_sync_jobs_hold_every_thread_token(schema_dsn: str) -> None:
    """Resolving a host runs outside anyio's default thread limiter, which sync jobs fill."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    limiter.total_tokens = 1
    holding, release = anyio.Event(), threading.Event()

    def hold_the_only_token() -> None:
        anyio.from_thread.run_sync(holding.set)
        release.wait(10)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, hold_the_only_token)
            await holding.wait()
            with anyio.fail_after(5):
                app = App(connector=PsycopgConnector(conninfo=schema_dsn, min_size=1))
                async with app.open_async():
                    row = await app.connector.execute_query_one_async("SELECT 1 AS one")
            release.set()
    finally:
        release.set()
        limiter.total_tokens = tokens
    assert row == {"one": 1}
