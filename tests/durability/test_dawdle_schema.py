"""dawdle's own tables on real PostgreSQL: applied, checked, harmless to Procrastinate.

Each test gets a scratch PostgreSQL schema of its own (via search_path) in the module's
database, so "fresh" and "Procrastinate's schema only" are both real starting points.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import anyio
import procrastinate
import pytest
from procrastinate import schema
from psycopg import conninfo

from dawdle import App, PsycopgConnector
from dawdle._dawdle_schema import DAWDLE_TABLES, QUEUE_PAUSES_DDL, WORKER_TASKS_DDL
from dawdle._schema import Applied, apply_script
from dawdle._sql import PUBLISH_TASKS

pytestmark = pytest.mark.anyio


@pytest.fixture
async def scratch_dsn(database_dsn: str) -> str:
    """A DSN whose search_path is a new, empty PostgreSQL schema."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    admin = App(connector=PsycopgConnector(conninfo=database_dsn, max_size=1))
    async with admin.open_async():
        await admin.connector.execute_query_async(f"CREATE SCHEMA {name}")  # type: ignore[arg-type]
    return conninfo.make_conninfo(database_dsn, options=f"-c search_path={name}")


@pytest.fixture
async def app(scratch_dsn: str) -> AsyncIterator[App]:
    """A dawdle App, open, on the scratch schema."""
    app = App(connector=PsycopgConnector(conninfo=scratch_dsn, max_size=2))
    async with app.open_async():
        yield app


async def procrastinate_schema_only(app: App) -> None:
    """Apply Procrastinate's own schema, as `procrastinate schema --apply` would."""
    await schema.SchemaManager(app.connector).apply_schema_async()


async def published_worker_ids(app: App) -> list[int]:
    rows = await app.connector.execute_query_all_async(
        "SELECT worker_id FROM dawdle_worker_tasks ORDER BY worker_id"
    )
    return [row["worker_id"] for row in rows]


async def test_apply_on_a_fresh_database_creates_both_and_is_idempotent(app: App) -> None:
    """On an empty schema, apply creates Procrastinate's schema and dawdle's table; twice too."""
    before = await app.schema_manager.check_schema_async()
    await app.schema_manager.apply_schema_async()
    await app.schema_manager.apply_schema_async()
    after = await app.schema_manager.check_schema_async()
    assert (before.present, before.dawdle_missing) == (False, DAWDLE_TABLES)
    assert after.complete
    assert after.dawdle_missing == ()


async def test_apply_adds_dawdle_tables_beside_an_existing_procrastinate_schema(app: App) -> None:
    """Procrastinate's schema already there: check says current but incomplete; apply adds ours."""
    await procrastinate_schema_only(app)
    before = await app.schema_manager.check_schema_async()
    await app.schema_manager.apply_schema_async()
    after = await app.schema_manager.check_schema_async()
    assert before.current
    assert before.dawdle_missing == DAWDLE_TABLES
    assert after.complete
    assert after.version == before.version


def test_apply_script_quotes_procrastinate_schema_whole() -> None:
    """Procrastinate's schema never contains the dollar-quote tag that wraps it in the script."""
    assert "$dawdle_schema$" not in schema.SchemaManager.get_schema()
    assert apply_script().count("$dawdle_schema$") == 2


async def apply_concurrently(dsn: str, runs: int) -> list[Applied]:
    """`runs` applies at once, each through an App and connections of its own."""
    apps = [App(connector=PsycopgConnector(conninfo=dsn, max_size=1)) for _ in range(runs)]
    results: list[Applied] = []

    async def apply(app: App) -> None:
        async with app.open_async():
            results.append(await app.schema_manager.apply_async())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for app in apps:
                group.start_soon(apply, app)
    return results


async def test_concurrent_applies_on_a_fresh_database_all_succeed(
    app: App, scratch_dsn: str
) -> None:
    """Three applies at once on an empty schema: none fails, one creates it all, two see it."""
    results = await apply_concurrently(scratch_dsn, 3)
    assert sorted(result.procrastinate for result in results) == [False, False, True]
    assert sorted(result.dawdle_tables for result in results) == [(), (), DAWDLE_TABLES]
    assert (await app.schema_manager.check_schema_async()).complete


async def test_concurrent_applies_beside_procrastinate_schema_create_our_table_once(
    app: App, scratch_dsn: str
) -> None:
    """Procrastinate's schema there: three applies at once, one creates dawdle's table."""
    await procrastinate_schema_only(app)
    results = await apply_concurrently(scratch_dsn, 3)
    assert [result.procrastinate for result in results] == [False] * 3
    assert sorted(result.dawdle_tables for result in results) == [(), (), DAWDLE_TABLES]
    assert (await app.schema_manager.check_schema_async()).complete


async def test_concurrent_sync_applies_all_succeed(app: App) -> None:
    """The synchronous apply, from three threads at once on an empty schema, never fails."""
    results: list[Applied] = []

    async def apply_in_thread() -> None:
        results.append(await anyio.to_thread.run_sync(app.schema_manager.apply))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(apply_in_thread)
    assert sorted(result.procrastinate for result in results) == [False, False, True]
    assert (await app.schema_manager.check_schema_async()).complete


async def test_apply_when_complete_creates_nothing(app: App) -> None:
    """A second apply reports that it created nothing."""
    first = await app.schema_manager.apply_async()
    second = await app.schema_manager.apply_async()
    assert first == Applied(procrastinate=True, dawdle_tables=DAWDLE_TABLES)
    assert second == Applied(procrastinate=False, dawdle_tables=())


async def test_three_dawdle_schema_apply_processes_at_once_all_succeed(
    app: App, scratch_dsn: str
) -> None:
    """Three `dawdle schema --apply` processes on an empty schema: all exit 0, one applies."""
    environment = {**os.environ, "DAWDLE_DSN": scratch_dsn}
    environment.pop("DAWDLE_APP", None)
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def apply(backend: str) -> None:
        command = [sys.executable, "-m", "dawdle", "schema", "--apply", "--backend", backend]
        results.append(await anyio.run_process(command, env=environment, check=False))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for backend in ("asyncio", "trio", "asyncio"):
                group.start_soon(apply, backend)
    assert [(result.returncode, result.stderr) for result in results] == [(0, b"")] * 3
    reports = sorted(result.stdout.decode().split(" (")[0] for result in results)
    assert reports == ["schema already current"] * 2 + ["schema applied"]
    assert (await app.schema_manager.check_schema_async()).complete


async def test_sync_apply_adds_dawdle_tables(app: App) -> None:
    """The synchronous apply_schema (run in a thread) adds dawdle's table as the async one does."""
    await procrastinate_schema_only(app)
    await anyio.to_thread.run_sync(app.schema_manager.apply_schema)
    await anyio.to_thread.run_sync(app.schema_manager.apply_schema)
    assert (await app.schema_manager.check_schema_async()).complete


@pytest.mark.parametrize(
    ("table", "version"),
    [
        ("dawdle_worker_tasks", 1),
        ("dawdle_queue_pauses", 2),
        ("dawdle_retry_budgets", 3),
        ("dawdle_breakers", 3),
    ],
)
async def test_table_comment_names_the_dawdle_schema_version(
    app: App, table: str, version: int
) -> None:
    """Each table says which dawdle schema version brought it."""
    await app.schema_manager.apply_schema_async()
    row = await app.connector.execute_query_one_async(
        "SELECT obj_description(%(table)s::regclass, 'pg_class') AS comment", table=table
    )
    assert row["comment"].startswith(f"dawdle schema {version}:")


async def test_apply_upgrades_dawdle_schema_1_with_the_pauses_table(app: App) -> None:
    """A database of dawdle schema 1: check names dawdle_queue_pauses; apply adds it alone."""
    await procrastinate_schema_only(app)
    await app.connector.execute_query_async(WORKER_TASKS_DDL)
    before = await app.schema_manager.check_schema_async()
    applied = await app.schema_manager.apply_async()
    after = await app.schema_manager.check_schema_async()
    assert before.dawdle_missing == DAWDLE_TABLES[1:]
    assert applied == Applied(procrastinate=False, dawdle_tables=DAWDLE_TABLES[1:])
    assert after.complete
    assert await app.pause_queue_async("mail")


async def test_apply_upgrades_dawdle_schema_2_with_the_budgets_and_breakers(app: App) -> None:
    """A database of dawdle schema 2: check names schema 3's two tables; apply adds them alone."""
    await procrastinate_schema_only(app)
    await app.connector.execute_query_async(WORKER_TASKS_DDL + QUEUE_PAUSES_DDL)
    await app.pause_queue_async("mail")
    before = await app.schema_manager.check_schema_async()
    applied = await app.schema_manager.apply_async()
    again = await app.schema_manager.apply_async()
    after = await app.schema_manager.check_schema_async()
    assert before.dawdle_missing == DAWDLE_TABLES[2:]
    assert applied == Applied(procrastinate=False, dawdle_tables=DAWDLE_TABLES[2:])
    assert again == Applied(procrastinate=False, dawdle_tables=())
    assert after.complete
    assert [state.name for state in await app.list_queue_states_async() if state.paused] == ["mail"]


async def test_procrastinate_prune_and_unregister_take_the_published_row(app: App) -> None:
    """Procrastinate's own prune_stalled_workers and unregister_worker cascade to our rows."""
    await app.schema_manager.apply_schema_async()
    manager = app.job_manager
    stale, live, leaving = [await manager.register_worker() for _ in range(3)]
    for worker_id in (stale, live, leaving):
        await app.connector.execute_query_async(
            PUBLISH_TASKS, worker_id=worker_id, task_names=["mail.send"]
        )
    await app.connector.execute_query_async(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
        "WHERE id = %(id)s",
        id=stale,
    )
    assert await manager.prune_stalled_workers(60) == [stale]
    await manager.unregister_worker(leaving)
    assert await published_worker_ids(app) == [live]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_procrastinate_worker_is_unaffected_by_dawdle_tables(
    app: App, scratch_dsn: str
) -> None:
    """Asyncio only (Procrastinate's worker needs it): it registers, runs, prunes, unregisters."""
    await app.schema_manager.apply_schema_async()
    stalled = await app.job_manager.register_worker()
    await app.connector.execute_query_async(PUBLISH_TASKS, worker_id=stalled, task_names=["gone"])
    await app.connector.execute_query_async(
        "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"
    )
    upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=scratch_dsn))
    received: list[int] = []

    @upstream.task(name="plain")
    async def plain(value: int) -> None:
        received.append(value)

    async with upstream.open_async():
        await plain.defer_async(value=5)
        with anyio.fail_after(10):
            await upstream.run_worker_async(wait=False, install_signal_handlers=False)
    assert received == [5]
    # It pruned the stalled dawdle worker (and so its row) and removed its own row.
    assert await published_worker_ids(app) == []
    row = await app.connector.execute_query_one_async(
        "SELECT count(*) AS n FROM procrastinate_workers"
    )
    assert row["n"] == 0
