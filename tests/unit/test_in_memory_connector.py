"""dawdle's InMemoryConnector under asyncio and Trio, through Procrastinate's App machinery."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.to_thread
import pytest
from procrastinate import exceptions, schema

from dawdle import App, ConfigurationError, InMemoryConnector, UnsupportedValue
from dawdle._connector._params import DEFAULT_MAX_PAYLOAD_BYTES

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


async def test_max_payload_bytes_is_enforced_as_in_postgresql() -> None:
    """Over `max_payload_bytes` of JSON: refused naming size and limit; a batch stores nothing."""
    connector = InMemoryConnector(max_payload_bytes=100)
    app = App(connector=connector)
    async with app.open_async():

        @app.task(name="payload")
        async def payload(data: str) -> None: ...

        # {"data": "xxx..."}: 12 bytes around the string.
        await payload.defer_async(data="x" * 88)
        with pytest.raises(UnsupportedValue) as single:
            await payload.defer_async(data="x" * 89)
        with pytest.raises(UnsupportedValue) as batch:
            await payload.batch_defer_async({"data": "ok"}, {"data": "é" * 60})
    assert str(single.value) == "job argument of 101 bytes of JSON exceeds max_payload_bytes=100"
    # Not ASCII: 60 characters, each escaped as \u00e9 (6 bytes) by json.dumps.
    assert str(batch.value) == "job argument of 372 bytes of JSON exceeds max_payload_bytes=100"
    assert [job["args"] for job in connector.jobs.values()] == [{"data": "x" * 88}]


@pytest.mark.parametrize(
    "args",
    [{"n": [0] * 50}, {"s": "é" * 10, "t": {"u": None, "v": [True, 1.5]}}, {}],
    ids=["numbers", "mixed", "empty"],
)
async def test_argument_of_exactly_max_payload_bytes_is_accepted(args: dict[str, Any]) -> None:
    """The limit is on the JSON's exact size: at the limit it is stored, a byte over refused."""
    size = len(json.dumps(args).encode())
    for limit, accepted in ((size, True), (size - 1, False)):
        if limit < 1:
            continue
        app = App(connector=InMemoryConnector(max_payload_bytes=limit))
        async with app.open_async():
            deferrer = app.configure_task("exact", allow_unknown=True)
            if accepted:
                await deferrer.defer_async(**args)
            else:
                with pytest.raises(UnsupportedValue, match=f"exceeds max_payload_bytes={limit}$"):
                    await deferrer.defer_async(**args)


async def test_default_payload_limit_and_name_lengths(in_memory_app: App) -> None:
    """The default limit is PsycopgConnector's (1 MiB); a 129-character queue name is refused."""
    deferrer = in_memory_app.configure_task("payload", allow_unknown=True)
    with pytest.raises(UnsupportedValue, match="exceeds max_payload_bytes=1,048,576"):
        await deferrer.defer_async(data="x" * DEFAULT_MAX_PAYLOAD_BYTES)
    long_queue = in_memory_app.configure_task("payload", allow_unknown=True, queue="q" * 129)
    with pytest.raises(UnsupportedValue, match="is 129 characters; Procrastinate's column"):
        await long_queue.defer_async()
    assert in_memory_app.connector.jobs == {}  # type: ignore[attr-defined]


def test_bad_payload_limit_is_named() -> None:
    """max_payload_bytes=0 is refused by name."""
    with pytest.raises(ConfigurationError, match="InMemoryConnector: max_payload_bytes must be"):
        InMemoryConnector(max_payload_bytes=0)
