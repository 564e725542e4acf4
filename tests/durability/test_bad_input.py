"""Bad input meets a real worker: a clear error at defer time, or a failed job with its reason.

Each test runs an in-process worker (`wait=False`: it returns once the queue is empty) on a
real PostgreSQL, with the bad job first in line and a good one after it, so "the worker
keeps working" is the good job's status. Reasons are read from the worker's ERROR log
record for the job (the schema has no column for them).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
import trio

from dawdle import App, PsycopgConnector, UnsupportedValue, Worker
from dawdle._connector._params import DEFAULT_MAX_PAYLOAD_BYTES

pytestmark = pytest.mark.anyio

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_events "
    "RESTART IDENTITY CASCADE"
)
TEN_MB = 10 * 1024 * 1024


class Received:
    """What the payload task saw, by job id: (length, sha256) of its argument."""

    def __init__(self) -> None:
        self.payloads: dict[int, tuple[int, str]] = {}


def make_app(dsn: str, received: Received, *, max_payload_bytes: int = 2 * TEN_MB) -> App:
    """An app with a good task, tasks that misbehave, and one that takes a payload.

    Its payload limit lets the 10 MB payload through unless the test asks for another.
    """
    app = App(connector=PsycopgConnector(conninfo=dsn, max_payload_bytes=max_payload_bytes))

    @app.task(name="bad.ok")
    async def ok() -> None:
        await anyio.lowlevel.checkpoint()

    @app.task(name="bad.raise")
    async def raise_(kind: str, backend: str) -> None:
        await anyio.lowlevel.checkpoint()
        raise make_exception(kind, backend)

    @app.task(name="bad.raise_sync")
    def raise_sync(kind: str, backend: str) -> None:
        raise make_exception(kind, backend)

    @app.task(name="bad.block")
    async def block(seconds: float) -> None:
        time.sleep(seconds)  # noqa: ASYNC251 (blocking the event loop is the fault under test)

    @app.task(name="bad.payload", pass_context=True)
    async def payload(context: Any, data: str) -> None:
        digest = hashlib.sha256(data.encode()).hexdigest()
        received.payloads[context.job.id] = (len(data), digest)

    return app


def make_exception(kind: str, backend: str) -> BaseException:
    """The exception a misbehaving task raises, by name, when the worker runs on `backend`."""
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt("from a task")
    if kind == "SystemExit":
        return SystemExit(3)
    if kind == "ExceptionGroup":
        return ExceptionGroup("two failures", [ValueError("one"), KeyError("two")])
    if kind == "BaseExceptionGroup":
        return BaseExceptionGroup("interrupted", [KeyboardInterrupt(), ValueError("three")])
    assert kind == "ForeignCancelledError"
    if backend == "asyncio":
        # Under asyncio, Trio's Cancelled cannot even be made: "trio.Cancelled has no
        # public constructor" (a TypeError) is what a task trying to raise it gets.
        return trio.Cancelled()  # type: ignore[call-arg]
    return asyncio.CancelledError("asyncio's cancellation raised under Trio")


@pytest.fixture
def received() -> Received:
    """The payload task's observations."""
    return Received()


@pytest.fixture
async def app(schema_dsn: str, received: Received) -> AsyncIterator[App]:
    """The bad-input app on the module's database, emptied for this test."""
    app = make_app(schema_dsn, received)
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


@pytest.fixture
async def default_app(schema_dsn: str, received: Received) -> AsyncIterator[App]:
    """The bad-input app with the connector's default limits, emptied for this test."""
    app = make_app(schema_dsn, received, max_payload_bytes=DEFAULT_MAX_PAYLOAD_BYTES)
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


@pytest.fixture
def worker_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The worker's log records, from INFO up."""
    caplog.set_level(logging.INFO, logger="dawdle.worker")
    return caplog


async def work(app: App, *, concurrency: int = 1, within: float = 20.0) -> float:
    """Run a worker until the queue is empty (within `within` s); the seconds it took."""
    worker = Worker(app, concurrency=concurrency, wait=False, install_signal_handlers=False)
    started = time.monotonic()
    with anyio.fail_after(within):
        await worker.run()
    return time.monotonic() - started


async def outcomes(app: App) -> dict[int, tuple[str, int]]:
    """Each job's (status, attempts), by id."""
    rows = await app.connector.execute_query_all_async(
        "SELECT id, status, attempts FROM procrastinate_jobs"
    )
    return {row["id"]: (row["status"], row["attempts"]) for row in rows}


def failure_logged(log: pytest.LogCaptureFixture, job_id: int) -> str:
    """The ERROR record the worker wrote for `job_id` (exactly one), as message + traceback."""
    records = [
        record
        for record in log.records
        if record.levelno == logging.ERROR and getattr(record, "job_id", None) == job_id
    ]
    assert len(records) == 1, [record.getMessage() for record in log.records]
    [record] = records
    assert record.exc_info is not None, "the failure's traceback is logged"
    return record.getMessage() + "\n" + log.handler.format(record)


async def test_unknown_task_fails_with_its_name_and_the_worker_goes_on(
    app: App, worker_log: pytest.LogCaptureFixture
) -> None:
    """unknown_tasks="fail": an unknown task's row fails, logged as TaskNotFound; the next runs."""
    unknown = await app.configure_task("bad.no_such_task", priority=1).defer_async(x=1)
    good = await app.configure_task("bad.ok").defer_async()
    worker = Worker(app, wait=False, install_signal_handlers=False, unknown_tasks="fail")
    with anyio.fail_after(20):
        await worker.run()
    assert await outcomes(app) == {unknown: ("failed", 1), good: ("succeeded", 1)}
    reason = failure_logged(worker_log, unknown)
    assert "TaskNotFound" in reason
    assert "bad.no_such_task" in reason


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (b"bytes", "bytes"),
        (datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), "datetime"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        ("nul \x00 inside", "\\u0000"),
    ],
    ids=["set", "object", "bytes", "datetime", "nan", "infinity", "nul-character"],
)
async def test_argument_that_is_not_json_is_refused_at_defer_time(
    app: App, value: object, named: str
) -> None:
    """A value JSON (or PostgreSQL's jsonb) cannot hold: TypeError/ValueError naming it, no row."""
    with pytest.raises((TypeError, ValueError)) as raised:
        await app.configure_task("bad.ok").defer_async(value=value)
    assert named in str(raised.value)
    assert await outcomes(app) == {}
    # The connection that refused it is fine for the next defer.
    assert await app.configure_task("bad.ok").defer_async() > 0


@pytest.mark.parametrize(
    "kind",
    [
        "KeyboardInterrupt",
        "SystemExit",
        "ForeignCancelledError",
        "ExceptionGroup",
        "BaseExceptionGroup",
    ],
)
@pytest.mark.parametrize("task", ["bad.raise", "bad.raise_sync"], ids=["async", "sync"])
async def test_task_raising_a_base_exception_fails_only_its_job(
    app: App, worker_log: pytest.LogCaptureFixture, anyio_backend: str, task: str, kind: str
) -> None:
    """KeyboardInterrupt, SystemExit, a foreign CancelledError, exception groups: job failed."""
    bad = await app.configure_task(task, priority=1).defer_async(kind=kind, backend=anyio_backend)
    good = await app.configure_task("bad.ok").defer_async()
    await work(app)
    assert await outcomes(app) == {bad: ("failed", 1), good: ("succeeded", 1)}
    reason = failure_logged(worker_log, bad)
    expected = {
        "KeyboardInterrupt": "KeyboardInterrupt: from a task",
        "SystemExit": "SystemExit: 3",
        "ExceptionGroup": "ExceptionGroup: two failures",
        "BaseExceptionGroup": "BaseExceptionGroup: interrupted",
    }.get(kind)
    if expected is None:  # the other runtime's cancellation
        expected = (
            "TypeError: trio.Cancelled has no public constructor"
            if anyio_backend == "asyncio"
            else "CancelledError: asyncio's cancellation raised under Trio"
        )
    assert expected in reason


async def test_task_blocking_the_event_loop_delays_but_does_not_break_the_worker(
    app: App,
) -> None:
    """Three async tasks that time.sleep(0.5) among 20 good jobs, concurrency 4: all succeed."""
    blockers = await app.configure_task("bad.block").batch_defer_async(*[{"seconds": 0.5}] * 3)
    good = await app.configure_task("bad.ok").batch_defer_async(*[{}] * 20)
    took = await work(app, concurrency=4)
    assert await outcomes(app) == dict.fromkeys(blockers + good, ("succeeded", 1))
    assert took >= 1.5  # the loop was blocked, one sleep at a time


async def test_ten_megabyte_payload_is_deferred_and_arrives_whole(
    app: App, received: Received
) -> None:
    """A 10 MB string argument is stored, fetched and passed to the task unchanged."""
    data = "0123456789abcdef" * (TEN_MB // 16)
    big = await app.configure_task("bad.payload", priority=1).defer_async(data=data)
    good = await app.configure_task("bad.ok").defer_async()
    await work(app, within=60)
    assert await outcomes(app) == {big: ("succeeded", 1), good: ("succeeded", 1)}
    assert received.payloads == {big: (TEN_MB, hashlib.sha256(data.encode()).hexdigest())}


@pytest.mark.parametrize(
    ("data", "said"),
    [
        # Each '"' is two bytes of JSON (a backslash and the quote): measured once encoded.
        ('"' * 600_000, "job argument of 1,200,012 bytes of JSON"),
        # Refused before it is encoded: its characters alone are over the limit.
        ("x" * 50 * 1024 * 1024, "job argument of at least 52,428,810 bytes of JSON"),
    ],
    ids=["measured", "refused-unencoded"],
)
async def test_argument_over_max_payload_bytes_is_refused_at_defer(
    default_app: App, data: str, said: str
) -> None:
    """Over 1 MiB of JSON: one line naming its size and the limit, at defer and batch defer."""
    deferrer = default_app.configure_task("bad.payload")
    expected = f"{said} exceeds max_payload_bytes=1,048,576"
    with pytest.raises(UnsupportedValue) as single:
        await deferrer.defer_async(data=data)
    with pytest.raises(UnsupportedValue) as batch:
        await deferrer.batch_defer_async({"data": "small"}, {"data": data})
    with pytest.raises(UnsupportedValue) as sync:
        await anyio.to_thread.run_sync(functools.partial(deferrer.defer, data=data))
    for caught in (single, batch, sync):
        assert str(caught.value) == expected
    assert await outcomes(default_app) == {}  # not even the batch's small job
    assert await deferrer.defer_async(data="x" * 1000) > 0


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"queue": "q" * 10_000}, "queue_name 'qqqq"),
        ({"lock": "l" * 10_000}, "lock 'llll"),
        ({"queueing_lock": "é" * 600}, "queueing_lock 'éééé"),
        ({"name": "t" * 129}, "task_name 'tttt"),
    ],
    ids=["queue", "lock", "queueing-lock", "task-name"],
)
async def test_oversized_names_are_refused_in_one_line(
    default_app: App, options: dict[str, Any], said: str
) -> None:
    """A 10,000-character queue name (or lock, ...) is one short line without SQL; no row."""
    options = dict(options)  # the parameter is shared by both runtimes' runs
    name = options.pop("name", "bad.ok")
    deferrer = default_app.configure_task(name, allow_unknown=True, **options)
    with pytest.raises(UnsupportedValue) as caught:
        await deferrer.defer_async()
    message = str(caught.value)
    assert message.startswith(said)
    assert len(message) < 200
    assert "\n" not in message
    assert await outcomes(default_app) == {}
