"""dawdle's InMemoryConnector under asyncio and Trio, through Procrastinate's App machinery."""

from __future__ import annotations

import json

import anyio
import anyio.to_thread
import pytest
from procrastinate import exceptions, schema

from dawdle import App, InMemoryConnector

pytestmark = pytest.mark.anyio


async def test_open_async_works_on_both_runtimes(in_memory_app: App) -> None:
    """Procrastinate's own in-memory connector fails to open under Trio; ours does not."""
    connector = in_memory_app.connector
    assert isinstance(connector, InMemoryConnector)
    assert connector.states == ["open_async"]


async def test_defer_and_inspect(in_memory_app: App) -> None:
    """defer_async stores a todo job with its arguments, visible in connector.jobs."""

    @in_memory_app.task(queue="mail")
    async def send(to: str) -> None: ...

    job_id = await send.defer_async(to="ada@example.org")
    job = in_memory_app.connector.jobs[job_id]  # type: ignore[attr-defined]
    assert job["status"] == "todo"
    assert job["queue_name"] == "mail"
    assert job["args"] == {"to": "ada@example.org"}


async def test_batch_defer_and_queueing_lock(in_memory_app: App) -> None:
    """batch_defer_async inserts all jobs; a taken queueing lock is refused as in PostgreSQL."""

    @in_memory_app.task(queueing_lock="only-one")
    async def single() -> None: ...

    @in_memory_app.task
    async def many(n: int) -> None: ...

    ids = await many.batch_defer_async(*({"n": n} for n in range(5)))
    assert len(ids) == 5
    await single.defer_async()
    with pytest.raises(exceptions.AlreadyEnqueued):
        await single.defer_async()


async def test_apply_schema_async_does_not_raise(in_memory_app: App) -> None:
    """Procrastinate's in-memory connector raises KeyError on the escaped schema; ours does not."""
    await schema.SchemaManager(in_memory_app.connector).apply_schema_async()
    assert in_memory_app.connector.queries[-1][0] == "apply_schema"  # type: ignore[attr-defined]


async def test_schema_is_reported_current(in_memory_app: App) -> None:
    """The schema check works in memory, so code that checks before applying runs in tests."""
    status = await in_memory_app.schema_manager.check_schema_async()
    assert status.current
    await in_memory_app.schema_manager.apply_schema_async()


async def test_notification_from_another_thread(in_memory_app: App) -> None:
    """A job deferred from a worker thread notifies the listener on the opening event loop."""
    received: list[tuple[str, dict[str, object]]] = []
    got_one = anyio.Event()

    async def on_notification(*, channel: str, payload: str) -> None:
        received.append((channel, json.loads(payload)))
        got_one.set()

    @in_memory_app.task(queue="reports")
    def build() -> None: ...

    await in_memory_app.connector.listen_notify(
        on_notification, channels=["procrastinate_queue_v1#reports"]
    )
    job_id = await anyio.to_thread.run_sync(build.defer)
    # No fail_after: a virtual clock jumps while a thread runs; pytest-timeout bounds the wait.
    await got_one.wait()
    assert received == [
        ("procrastinate_queue_v1#reports", {"type": "job_inserted", "job_id": job_id})
    ]


async def test_reset_between_tests(in_memory_app: App) -> None:
    """reset() empties the pseudo-database so that tests stay independent."""

    @in_memory_app.task
    async def noop() -> None: ...

    await noop.defer_async()
    connector = in_memory_app.connector
    connector.reset()  # type: ignore[attr-defined]
    assert connector.jobs == {}  # type: ignore[attr-defined]
