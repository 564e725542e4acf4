"""Fencing: a worker cut off from the database stops its jobs before another may take them.

Worker A reaches PostgreSQL through a proxy that blackholes it (stops forwarding, keeps its
sockets open) for twice `stalled_worker_timeout`; worker B talks to the database directly
and recovers A's job once A's heartbeat is stale. A heartbeat that hangs while the database
otherwise answers fences a worker on either connector. Short timings (stalled timeout 3 s,
heartbeat every 0.5 s, so a 1.75 s lease) keep it to seconds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import procrastinate
import pytest
from procrastinate import exceptions

from dawdle import App, PsycopgConnector
from dawdle._sql import HEARTBEAT
from tests.durability.proxy import tcp_proxy
from tests.durability.worker.helpers import (
    job_states,
    make_worker,
    overlaps,
    postgres_only,
    running,
)

pytestmark = pytest.mark.anyio

STALLED = 3.0
TIMINGS = {
    "stalled_worker_timeout": STALLED,
    "update_heartbeat_interval": 0.5,
    "fetch_job_polling_interval": 0.5,
    "abort_job_polling_interval": 0.5,
}
# The first run: longer than the stalled timeout, so that unfenced, A would still be running
# it when B takes the job. Later runs are short.
RUN = 5.0
RERUN = 0.1


@dataclass
class Run:
    """One run of a job, in this process's memory: who ran it, from when to when, how it ended."""

    worker: str | None
    start: float
    end: float = 0.0
    finished: bool = False


def log_records(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    """The worker's log records with `action` (e.g. worker_fenced)."""
    return [record for record in caplog.records if getattr(record, "action", None) == action]


class Jobs:
    """The test's tasks on an app, and what their runs did, for both workers' apps at once."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.started_on_a = anyio.Event()
        self.succeeded = anyio.Event()
        self.after_heal = anyio.Event()

    def register(self, target: App) -> None:
        """Register "long" (async), "long_sync" and "after" (queue only_a) on `target`."""

        @target.task(name="long", pass_context=True)
        async def long(context: procrastinate.JobContext) -> None:
            run = self._start(context)
            try:
                await anyio.sleep(self.run_length(run))  # the behaviour: a job that takes time
                run.finished = True
                self.succeeded.set()
            finally:
                run.end = time.monotonic()  # when the function exits, cancellation included

        @target.task(name="long_sync", pass_context=True)
        def long_sync(context: procrastinate.JobContext) -> None:
            run = anyio.from_thread.run_sync(self._start, context)
            try:
                deadline = time.monotonic() + self.run_length(run)
                while time.monotonic() < deadline:
                    if context.should_abort():
                        raise exceptions.JobAborted
                    time.sleep(0.01)  # the behaviour: a sync job checking now and then
                run.finished = True
                anyio.from_thread.run_sync(self.succeeded.set)
            finally:
                run.end = time.monotonic()

        @target.task(name="after", queue="only_a")
        async def after() -> None:
            self.after_heal.set()

    def run_length(self, run: Run) -> float:
        """How long `run` lasts: RUN for the job's first run, RERUN after.

        Counted here, not from `attempts`: a run cut short by fencing or recovery spends none.
        """
        return RUN if self.runs[0] is run else RERUN

    def _start(self, context: procrastinate.JobContext) -> Run:
        run = Run(context.worker_name, time.monotonic())
        self.runs.append(run)
        if run.worker == "A":
            self.started_on_a.set()
        return run


@contextlib.contextmanager
def seen(logger: logging.Logger, action: str) -> Iterator[Sighting]:
    """A `Sighting` of the first record with `action` that `logger` emits (in the loop's thread)."""
    sighting = Sighting(anyio.Event())

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "action", None) == action and not sighting.event.is_set():
                sighting.at = time.monotonic()
                sighting.event.set()

    handler = Handler()
    logger.addHandler(handler)
    try:
        yield sighting
    finally:
        logger.removeHandler(handler)


@dataclass
class Sighting:
    """When a log record was emitted: `at` is set as it is, before any waiter wakes."""

    event: anyio.Event
    at: float = math.inf

    async def wait(self) -> None:
        """Wait until the record has been emitted."""
        await self.event.wait()


@postgres_only("a TCP proxy between the worker and a real server")
@pytest.mark.parametrize("task", ["long", "long_sync"])
async def test_partitioned_worker_never_overlaps_the_worker_that_recovers_its_job(
    app: App, schema_dsn: str, caplog: pytest.LogCaptureFixture, task: str
) -> None:
    """A blackholed for 2x the stalled timeout: zero overlapping runs, one success, A resumes.

    The sync job checks `should_abort()`, as fencing asks it to.
    """
    caplog.set_level(logging.INFO, logger="dawdle.worker")
    tasks = Jobs()
    async with tcp_proxy(schema_dsn) as (proxy, proxy_dsn):
        app_a = App(connector=PsycopgConnector(conninfo=proxy_dsn))
        tasks.register(app_a)
        tasks.register(app)
        worker_a = make_worker(app_a, name="A", **TIMINGS)
        worker_b = make_worker(app, name="B", queues=["default"], **TIMINGS)
        job_id = await app.configure_task(task).defer_async()
        async with app_a.open_async(), running(worker_a):
            with anyio.fail_after(5):
                await tasks.started_on_a.wait()
            proxy.blackhole()
            partitioned = time.monotonic()
            async with running(worker_b):
                with anyio.fail_after(2 * STALLED + RUN):
                    await tasks.succeeded.wait()
                # The behaviour: a partition that lasts twice the stalled timeout.
                await anyio.sleep(max(0.0, partitioned + 2 * STALLED - time.monotonic()))
                proxy.heal()
                await app.configure_task("after").defer_async()
                with anyio.fail_after(2 * STALLED):
                    await tasks.after_heal.wait()  # only A serves that queue: A claims again
    runs = tasks.runs
    assert overlaps([(run.start, run.end) for run in runs]) == []
    assert [(run.worker, run.finished) for run in runs] == [("A", False), ("B", True)]
    states = await job_states(app)
    # A's run, cut short and recovered by B, spends no attempt; B's run succeeded.
    assert states[job_id] == ("succeeded", 1)
    assert len(log_records(caplog, "worker_fenced")) == 1
    assert len(log_records(caplog, "worker_fencing_ended")) == 1
    assert "holding this lock" not in caplog.text
    assert "you don't own" not in caplog.text


@postgres_only("a TCP proxy between the worker and a real server")
async def test_fenced_job_runs_again_once_the_partition_heals(
    app: App, schema_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Alone and blackholed, A stops its job, puts it back after the heal, and runs it once."""
    caplog.set_level(logging.INFO, logger="dawdle.worker")
    tasks = Jobs()
    async with tcp_proxy(schema_dsn) as (proxy, proxy_dsn):
        app_a = App(connector=PsycopgConnector(conninfo=proxy_dsn))
        tasks.register(app_a)
        tasks.register(app)
        worker_a = make_worker(app_a, name="A", **TIMINGS)
        job_id = await app.configure_task("long").defer_async()
        async with app_a.open_async(), running(worker_a):
            with anyio.fail_after(5):
                await tasks.started_on_a.wait()
            with seen(logging.getLogger("dawdle.worker"), "worker_fenced") as fenced:
                proxy.blackhole()
                partitioned = time.monotonic()
                with anyio.fail_after(5):
                    await fenced.wait()
            # The behaviour: a partition that lasts twice the stalled timeout.
            await anyio.sleep(partitioned + 2 * STALLED - time.monotonic())
            proxy.heal()
            with anyio.fail_after(2 * STALLED + RUN):
                await tasks.succeeded.wait()
    runs = tasks.runs
    assert overlaps([(run.start, run.end) for run in runs]) == []
    assert [(run.worker, run.finished) for run in runs] == [("A", False), ("A", True)]
    # Put back (no attempt spent), then succeeded.
    assert await job_states(app) == {job_id: ("succeeded", 1)}


@contextlib.contextmanager
def heartbeats_hang(app: App, *, once: anyio.Event) -> Iterator[tuple[list[float], anyio.Event]]:
    """Heartbeats sent after `once` is set hang until the event yielded is set.

    Yields the times at which heartbeats began to hang, and that event. Every other query
    is answered: only the heartbeat is lost, on either connector.
    """
    connector: Any = app.connector
    original = connector.execute_query_all_async
    healed = anyio.Event()
    hung_at: list[float] = []

    async def execute_query_all_async(query: str, **arguments: Any) -> Any:
        if query == HEARTBEAT and once.is_set():
            hung_at.append(time.monotonic())
            await healed.wait()  # a heartbeat lost on its way, until the test heals it
        return await original(query, **arguments)

    connector.execute_query_all_async = execute_query_all_async
    try:
        yield hung_at, healed
    finally:
        del connector.execute_query_all_async


async def test_hung_heartbeat_fences_until_one_gets_through(app: App) -> None:
    """Heartbeats hang, all else answers: the job is stopped, put back, run again once after."""
    runs: list[Run] = []
    first_started = anyio.Event()
    first_ended = anyio.Event()
    succeeded = anyio.Event()

    @app.task(name="held", pass_context=True)
    async def held(context: procrastinate.JobContext) -> None:
        run = Run(context.worker_name, time.monotonic())
        runs.append(run)
        first_started.set()
        try:
            if len(runs) == 1:
                await anyio.sleep_forever()  # the behaviour: running when the fencing comes
            run.finished = True
            succeeded.set()
        finally:
            run.end = time.monotonic()
            first_ended.set()

    job_id = await held.defer_async()
    worker = make_worker(app, name="A", **TIMINGS)
    logger = logging.getLogger("dawdle.worker")
    with (
        heartbeats_hang(app, once=first_started) as (hung_at, healed),
        seen(logger, "worker_fenced") as fenced,
        seen(logger, "worker_fencing_ended") as ended,
    ):
        async with running(worker):
            with anyio.fail_after(5):
                await first_started.wait()
                await fenced.wait()
                await first_ended.wait()
            healed.set()
            with anyio.fail_after(5):
                await ended.wait()
                await succeeded.wait()
    assert [run.finished for run in runs] == [False, True]
    # The last heartbeat that got through was sent at most one interval before the first
    # that hung: another worker could take the job from that plus the stalled timeout on.
    assert runs[0].end < hung_at[0] - TIMINGS["update_heartbeat_interval"] + STALLED
    assert runs[1].start >= ended.at  # nothing was claimed while fenced
    assert (await job_states(app))[job_id][0] == "succeeded"


async def test_stop_while_fenced_is_prompt_and_puts_the_job_back(app: App) -> None:
    """Stopping a fenced worker: it returns at once, its stopped job back in the queue."""
    started = anyio.Event()

    @app.task(name="forever")
    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()  # the behaviour: running when the fencing comes

    job_id = await forever.defer_async()
    worker = make_worker(app, **TIMINGS)
    logger = logging.getLogger("dawdle.worker")
    with heartbeats_hang(app, once=started), seen(logger, "worker_fenced") as fenced:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await started.wait()
                await fenced.wait()
            stopping = time.monotonic()
            worker.stop()
        stopped_in = time.monotonic() - stopping
    assert stopped_in < 1
    assert (await job_states(app))[job_id][0] == "todo"  # put back, for any worker to run
    assert worker.stats.jobs["put_back"] == 1
