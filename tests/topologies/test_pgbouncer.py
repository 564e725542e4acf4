"""dawdle behind PgBouncer, in transaction and in session mode, on asyncio and on Trio.

Transaction mode shares server connections between clients: psycopg's prepared statements
clash or go missing, and LISTEN hears nothing reliable. Session mode keeps both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import psycopg
import pytest

from dawdle import App, PsycopgConnector
from tests.durability.private_server import PrivateServer
from tests.topologies.conftest import create_database
from tests.topologies.pgbouncer import pgbouncer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

JOBS = 40


@pytest.fixture(scope="module")
def transaction_pooler(server: PrivateServer) -> Iterator[str]:
    """PgBouncer in transaction mode with 2 server connections: clients always share them."""
    with pgbouncer(server.get_uri(), "transaction", pool_size=2) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def session_pooler(server: PrivateServer) -> Iterator[str]:
    """PgBouncer in session mode."""
    with pgbouncer(server.get_uri(), "session", pool_size=10) as dsn:
        yield dsn


def through(pooler_dsn: str, database_dsn: str) -> str:
    """The pooler's DSN for `database_dsn`'s database."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_dsn)["dbname"]
    return psycopg.conninfo.make_conninfo(pooler_dsn, dbname=dbname)


def actions(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    """The log records of one `action`."""
    return [r for r in caplog.records if getattr(r, "action", None) == action]


def count_jobs(dsn: str, status: str) -> int:
    """How many jobs have `status`, read directly."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = %s", [status]
        ).fetchone()
    assert row is not None
    return int(row[0])


def make_app(dsn: str, **connector: object) -> App:
    """An app with one no-op task, on a pool of 8 connections."""
    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=8, max_size=8, **connector))  # type: ignore[arg-type]

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    return app


async def defer_concurrently(app: App) -> None:
    """JOBS defers from 8 tasks at once, and one batch of JOBS: every pooled connection used."""

    async def defer(start: int) -> None:
        for i in range(start, JOBS, 8):
            await app.tasks["noop"].defer_async(i=i)

    async with anyio.create_task_group() as tg:
        for start in range(8):
            tg.start_soon(defer, start)
    await app.tasks["noop"].batch_defer_async(*({"i": i} for i in range(JOBS)))


async def work_all(app: App, **options: bool) -> None:
    """Run the jobs waiting, 4 at once, until none is left (no signal handlers)."""
    await app.run_worker_async(wait=False, concurrency=4, install_signal_handlers=False, **options)


async def test_transaction_mode_stops_preparing_once_and_resends(
    database: str, transaction_pooler: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Prepared at once, 8 clients on 2 server connections clash: one warning, nothing lost."""
    caplog.set_level(logging.INFO)
    app = make_app(through(transaction_pooler, database), prepare_threshold=0)
    async with app.open_async():
        await defer_concurrently(app)
        await work_all(app, listen_notify=False)
        async with app.connector.connection() as conn:  # type: ignore[attr-defined]
            assert conn.prepare_threshold is None
    assert len(actions(caplog, "prepared_statements_off")) == 1
    assert count_jobs(database, "succeeded") == 2 * JOBS


async def test_transaction_mode_with_pooler_option(
    database: str, transaction_pooler: str, caplog: pytest.LogCaptureFixture
) -> None:
    """pooler='transaction': nothing prepared, no clash; the worker says once that it polls."""
    caplog.set_level(logging.INFO)
    app = make_app(through(transaction_pooler, database), pooler="transaction")
    async with app.open_async():
        await defer_concurrently(app)
        await work_all(app)
    assert actions(caplog, "prepared_statements_off") == []
    assert len(actions(caplog, "listen_unavailable")) == 1
    assert count_jobs(database, "succeeded") == 2 * JOBS


async def test_kwargs_as_procrastinate_users_write_them(
    database: str, transaction_pooler: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`kwargs={"prepare_threshold": None}` reaches every connection, sync ones too."""
    caplog.set_level(logging.INFO)
    app = make_app(through(transaction_pooler, database), kwargs={"prepare_threshold": None})
    async with app.open_async():
        await defer_concurrently(app)
        # Sync code defers through the sync connector, a pool of its own: 4 threads at once
        # defer 10 jobs each, more than the 5 runs after which psycopg would prepare.
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(
                    anyio.to_thread.run_sync,
                    lambda: [app.tasks["noop"].defer(i=i) for i in range(10)],
                )
        await work_all(app, listen_notify=False)
    assert actions(caplog, "prepared_statements_off") == []
    assert count_jobs(database, "succeeded") == 2 * JOBS + 40


async def test_schema_apply_through_transaction_mode(
    server: PrivateServer, transaction_pooler: str
) -> None:
    """`schema --apply` takes only a transaction-scoped lock: it works through the pooler."""
    empty = create_database(server.get_uri(), with_schema=False)
    connector = PsycopgConnector(conninfo=through(transaction_pooler, empty), pooler="transaction")
    app = App(connector=connector)
    async with app.open_async():
        applied = await app.schema_manager.apply_async()  # type: ignore[attr-defined]
        assert applied.procrastinate
        status = await app.schema_manager.check_schema_async()  # type: ignore[attr-defined]
        assert status.complete


async def work_one_announced_job(app: App) -> float:
    """Start a worker that polls once a minute, defer a job, and return when it ran; seconds.

    Done well within the minute only if the worker heard the job's NOTIFY.
    """
    ran = anyio.Event()

    @app.task(name="announced")
    async def announced() -> None:
        ran.set()

    listening = anyio.Event()
    async with app.open_async(), anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: app.run_worker_async(
                fetch_job_polling_interval=60.0, concurrency=1, install_signal_handlers=False
            )
        )
        # The worker claims once at start, then waits: a job deferred after that is heard.
        with anyio.fail_after(10):
            while not listening.is_set():
                rows = await app.connector.execute_query_all_async(
                    "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' "
                    "AND datname = current_database()"
                )
                if rows:
                    listening.set()
                else:
                    await anyio.sleep(0.05)  # polling PostgreSQL's view: no event to wait on
        started = anyio.current_time()
        await announced.defer_async()
        with anyio.fail_after(20):
            await ran.wait()
        tg.cancel_scope.cancel()
    return anyio.current_time() - started


async def test_listen_conninfo_hears_jobs_in_transaction_mode(
    database: str, transaction_pooler: str
) -> None:
    """Behind a transaction pooler, listen_conninfo= (direct) carries LISTEN: jobs start at once."""
    app = make_app(
        through(transaction_pooler, database), pooler="transaction", listen_conninfo=database
    )
    assert await work_one_announced_job(app) < 20


async def test_session_mode_keeps_prepared_statements_and_listen(
    database: str, session_pooler: str, caplog: pytest.LogCaptureFixture
) -> None:
    """pooler='session': statements prepared at once never clash, and LISTEN goes through it."""
    caplog.set_level(logging.INFO)
    app = make_app(through(session_pooler, database), pooler="session", prepare_threshold=0)
    async with app.open_async():
        await defer_concurrently(app)
        await work_all(app, listen_notify=False)
    assert actions(caplog, "prepared_statements_off") == []
    assert count_jobs(database, "succeeded") == 2 * JOBS
    app = make_app(through(session_pooler, database), pooler="session")
    assert await work_one_announced_job(app) < 20
