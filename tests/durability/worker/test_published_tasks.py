"""Workers publish the task names they know (dawdle_worker_tasks), for `dawdle healthcheck`.

On connector x runtime. The module's database gets dawdle's table beside Procrastinate's
schema; the scenario without it drops the table for its own run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from dawdle import App, Blueprint, InMemoryConnector
from dawdle._worker.store import JobStore
from tests.durability.worker.helpers import (
    dawdle_table_dropped,
    make_worker,
    postgres_only,
    running,
    worker_ids,
)

pytestmark = pytest.mark.anyio

NO_TABLE_WARNING = "run `dawdle schema --apply`"


@pytest.fixture
async def publications(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[MemoryObjectReceiveStream[tuple[int, bool]]]:
    """Each `publish_tasks` the worker made, once it returned: (worker id, published)."""
    send, receive = anyio.create_memory_object_stream[tuple[int, bool]](100)
    original = JobStore.publish_tasks

    async def recorded(store: JobStore, worker_id: int) -> bool:
        published = await original(store, worker_id)
        send.send_nowait((worker_id, published))
        return published

    monkeypatch.setattr(JobStore, "publish_tasks", recorded)
    with send, receive:
        yield receive


@pytest.fixture
def without_table(app: App, schema_dsn: str) -> Iterator[None]:
    """The database as before `dawdle schema --apply`: no dawdle_worker_tasks, for one test."""
    with dawdle_table_dropped(schema_dsn, "dawdle_worker_tasks"):
        yield


async def published(app: App) -> dict[int, list[str]]:
    """The published task names by worker id, on either connector."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        return connector.published_tasks()
    rows = await connector.execute_query_all_async(
        "SELECT worker_id, task_names FROM dawdle_worker_tasks"
    )
    return {row["worker_id"]: row["task_names"] for row in rows}


def register_tasks(app: App) -> list[str]:
    """A task with an alias and a blueprint's namespaced task; every name a job may carry."""

    @app.task(name="mail.send", aliases=["mail.old_send"])
    async def send() -> None: ...

    reports = Blueprint()

    @reports.task(name="build")
    async def build() -> None: ...

    app.add_tasks_from(reports, namespace="reports")
    return sorted(app.tasks)


async def next_publication(
    publications: MemoryObjectReceiveStream[tuple[int, bool]],
) -> tuple[int, bool]:
    with anyio.fail_after(5):
        return await publications.receive()


async def test_worker_publishes_names_and_aliases_and_takes_them_away(
    app: App, publications: MemoryObjectReceiveStream[tuple[int, bool]]
) -> None:
    """Names, aliases and namespaced names are published on start and gone after stopping."""
    names = register_tasks(app)
    assert {"mail.send", "mail.old_send", "reports:build"} <= set(names)
    async with running(make_worker(app)):
        worker_id, ok = await next_publication(publications)
        assert ok
        assert await published(app) == {worker_id: names}
    assert await published(app) == {}


async def test_pruned_worker_publishes_again_when_it_registers_again(
    app: App, publications: MemoryObjectReceiveStream[tuple[int, bool]]
) -> None:
    """Pruned by another worker, the row goes with it; the worker's next beat publishes anew."""
    names = register_tasks(app)
    async with running(make_worker(app, update_heartbeat_interval=0.1)):
        first, _ = await next_publication(publications)
        # What another worker does to one whose heartbeat is too old (here: any).
        assert await app.job_manager.prune_stalled_workers(0)
        assert await published(app) == {}
        second, ok = await next_publication(publications)
        assert ok
        assert second != first
        assert await worker_ids(app) == [second]
        assert await published(app) == {second: names}


@postgres_only("the in-memory connector always has dawdle's table")
@pytest.mark.usefixtures("without_table")
async def test_missing_table_is_one_warning_per_run(
    app: App,
    publications: MemoryObjectReceiveStream[tuple[int, bool]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without the table the worker warns once, works, and stays silent when re-registering."""
    done = anyio.Event()

    @app.task(name="still.runs")
    async def still_runs() -> None:
        done.set()

    await still_runs.defer_async()
    with caplog.at_level(logging.WARNING, logger="dawdle.worker"):
        async with running(make_worker(app, update_heartbeat_interval=0.1)):
            _, ok = await next_publication(publications)
            assert not ok
            with anyio.fail_after(5):
                await done.wait()
            assert await app.job_manager.prune_stalled_workers(0)
            _, ok = await next_publication(publications)  # registered again, tried again
            assert not ok
    warnings = [record for record in caplog.records if NO_TABLE_WARNING in record.getMessage()]
    assert len(warnings) == 1
    assert "dawdle_worker_tasks" in warnings[0].getMessage()
