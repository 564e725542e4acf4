"""The original test guide's performance floors, kept as cheap sanity tests on asyncio and Trio.

Not benchmarks (that is the program in tests/perf/benchmark/, `nox -s perf`): each test
measures a small workload, prints what it measured (`-s` shows it), and asserts only the
guide's floors (`performance_threshold`) and that the work was done right: every job ran
exactly once and ended succeeded, priorities were honoured, memory did not grow per job.
The floors are far below what the code does, so none of this fails on a healthy machine.

The core measurements (deferral, processing, batches, latency with LISTEN/NOTIFY) run on the
in-memory connector (`in_memory_app`, as the guide had them) and on a real PostgreSQL; the
rest on the in-memory connector only. Tests wait on events set by the jobs, never on sleeps;
the only sleeps are the jobs' simulated I/O and the idle period of the idle-overhead test.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import inspect
import math
import random
import statistics
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel
import procrastinate
import pytest
from procrastinate import tasks
from psycopg.conninfo import make_conninfo

from dawdle import App, InMemoryConnector, PsycopgConnector, Worker

if TYPE_CHECKING:
    from tests.perf.conftest import PerformanceThreshold

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events RESTART IDENTITY CASCADE"
)
JOBS = 200  # jobs per rate measurement: a fraction of a second at the floors' worst


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(params=["memory", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """Where `app` keeps its jobs: None for the in-memory connector, else a PostgreSQL DSN."""
    if request.param == "memory":
        return None
    return str(request.getfixturevalue("schema_dsn"))


@pytest.fixture
async def app(database: str | None, in_memory_app: App) -> AsyncIterator[App]:
    """`in_memory_app`, or a dawdle App on the module's PostgreSQL database, emptied."""
    if database is None:
        yield in_memory_app
        return
    # Without waiting for each commit's flush to disk: the floors are about dawdle, and a
    # slow disk (5 ms an fsync) would otherwise decide the one-job-at-a-time rates.
    conninfo = make_conninfo(database, options="-c synchronous_commit=off")
    app = App(connector=PsycopgConnector(conninfo=conninfo))
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


class Tally:
    """What the jobs report: which ran (by id, in start order), when, and how many at once."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.waits: list[float] = []  # seconds from just before the defer to the job's start
        self.ends: list[float] = []  # time.perf_counter() at each job's end, in end order
        self.busy = 0.0  # seconds spent inside jobs, summed over jobs
        self.running = 0
        self.most = 0  # the most jobs running at once
        self._progress: anyio.Event | None = None

    @property
    def finished(self) -> int:
        return len(self.ends)

    def begin(self, job_id: int, sent: float | None) -> float:
        started = time.perf_counter()
        self.ran.append(job_id)
        if sent is not None:
            self.waits.append(started - sent)
        self.running += 1
        self.most = max(self.most, self.running)
        return started

    def end(self, started: float) -> None:
        ended = time.perf_counter()
        self.running -= 1
        self.busy += ended - started
        self.ends.append(ended)
        if self._progress is not None:
            self._progress.set()

    async def wait_for(self, count: int, *, within: float = 5.0) -> None:
        """Wait (on the jobs' own signal, at most `within` s) until `count` jobs have ended."""
        with anyio.fail_after(within):
            while self.finished < count:
                self._progress = anyio.Event()
                await self._progress.wait()


def define_task(app: App, tally: Tally, name: str = "perf.job") -> tasks.Task[Any, Any, Any]:
    """A job that reports to `tally`; `seconds` > 0 makes it wait that long (simulated I/O)."""

    @app.task(name=name, pass_context=True)
    async def job(
        context: procrastinate.JobContext, n: int = 0, sent: float | None = None, seconds: float = 0
    ) -> None:
        assert context.job.id is not None
        started = tally.begin(context.job.id, sent)
        try:
            if seconds:
                await anyio.sleep(seconds)  # the behaviour: a job waiting on I/O
            else:
                await anyio.lowlevel.checkpoint()
        finally:
            tally.end(started)

    return job


async def work(app: App, *, concurrency: int = 1, within: float = 10.0, **options: Any) -> float:
    """Work the queue until nothing is ready (wait=False), then return; the seconds it took."""
    started = time.perf_counter()
    with anyio.fail_after(within):
        await app.run_worker_async(
            concurrency=concurrency,
            wait=False,
            listen_notify=False,
            install_signal_handlers=False,
            **options,
        )
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def listening_worker(app: App, **options: Any) -> AsyncIterator[None]:
    """A waiting worker with LISTEN/NOTIFY, entered once its LISTEN is in place.

    Its readiness is the `on_listening` call of the connector's `listen_notify` (for the
    in-memory connector: the handler being set), caught here on the way. On exit the worker
    is cancelled, which stops it gracefully: its outcomes are all written when this returns.
    """
    connector = app.connector
    original = connector.listen_notify
    listening = anyio.Event()

    async def listen_notify(
        on_notification: Callable[..., Awaitable[None]],
        channels: Iterable[str],
        *,
        on_listening: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        async def listened() -> None:
            listening.set()
            if on_listening is not None:
                await on_listening()

        if "on_listening" in inspect.signature(original).parameters:
            await original(on_notification, channels, on_listening=listened)
        else:  # the in-memory connector listens as soon as it holds the handler
            await original(on_notification, channels)
            await listened()

    connector.listen_notify = listen_notify  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(
                    app.run_worker_async,
                    wait=True,
                    listen_notify=True,
                    install_signal_handlers=False,
                    **options,
                )
            )
            with anyio.fail_after(5):
                await listening.wait()
            yield
            tg.cancel_scope.cancel()
    finally:
        del connector.listen_notify


async def outcomes(app: App) -> collections.Counter[tuple[str, int]]:
    """How many jobs ended in each (status, attempts)."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        rows: list[dict[str, Any]] = list(connector.jobs.values())
    else:
        rows = await connector.execute_query_all_async(
            "SELECT status, attempts FROM procrastinate_jobs"
        )
    return collections.Counter((row["status"], row["attempts"]) for row in rows)


async def assert_each_ran_once(app: App, tally: Tally, ids: Sequence[int]) -> None:
    """Every job of `ids` ran exactly once, and succeeded; the queue holds no other job."""
    assert collections.Counter(tally.ran) == collections.Counter(ids)
    assert await outcomes(app) == {("succeeded", 1): len(ids)}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value that `fraction` of them do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Report(Protocol):
    def __call__(self, what: str, /, **figures: float) -> None: ...


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Report:
    """Print what a test measured, under its parameters (runtime, database); `-s` shows it."""
    where = request.node.callspec.id if hasattr(request.node, "callspec") else ""

    def print_figures(what: str, /, **figures: float) -> None:
        shown = ", ".join(
            f"{name} {value * 1000:.2f} ms" if name.endswith("seconds") else f"{name} {value:,.0f}"
            for name, value in figures.items()
        )
        print(f"\n[{where}] {what}: {shown}")

    return print_figures


# -- the floors --------------------------------------------------------------------------------


class TestBasicThroughput:
    """One job, jobs one after another, and defers one at a time."""

    async def test_single_task_execution_time(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """A job deferred to an idle, listening worker has run within the latency floor."""
        tally = Tally()
        job = define_task(app, tally)
        async with listening_worker(app):
            ids = [await job.defer_async(n=0)]  # warm-up: connections open, worker ready
            await tally.wait_for(1)
            sent = time.perf_counter()
            ids.append(await job.defer_async(n=1, sent=sent))
            await tally.wait_for(2)
        took = tally.ends[-1] - sent
        report("single task", defer_to_done_seconds=took)
        assert took < performance_threshold.latency_seconds
        await assert_each_ran_once(app, tally, ids)

    async def test_sequential_task_throughput(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """concurrency=1 works 200 jobs in id order, each once, above the processing floor."""
        tally = Tally()
        job = define_task(app, tally)
        ids = await job.batch_defer_async(*({"n": n} for n in range(JOBS)))
        rate = JOBS / await work(app, concurrency=1)
        report("sequential", jobs_per_second=rate)
        assert rate > performance_threshold.process_per_second
        assert tally.ran == sorted(ids)
        assert tally.most == 1
        assert await outcomes(app) == {("succeeded", 1): JOBS}

    async def test_deferral_rate(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """200 defers one at a time: above the deferral floor, 200 distinct todo jobs."""
        job = define_task(app, Tally())
        started = time.perf_counter()
        ids = [await job.defer_async(n=n) for n in range(JOBS)]
        rate = JOBS / (time.perf_counter() - started)
        report("deferral", defers_per_second=rate)
        assert rate > performance_threshold.defer_per_second
        assert len(set(ids)) == JOBS
        assert ids == sorted(ids)
        assert await outcomes(app) == {("todo", 0): JOBS}


class TestConcurrentThroughput:
    """Jobs in parallel on one worker, and defers from many tasks at once."""

    async def test_concurrent_processing(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """concurrency=10 on 100 jobs of 10 ms I/O: ten at once, well under the serial time."""
        tally = Tally()
        job = define_task(app, tally)
        count, seconds = 100, 0.01
        ids = await job.batch_defer_async(*({"n": n, "seconds": seconds} for n in range(count)))
        took = await work(app, concurrency=10)
        report("concurrent", jobs_per_second=count / took, took_seconds=took)
        assert count / took > performance_threshold.process_per_second
        assert tally.most == 10
        assert took < count * seconds / 2  # serially it would take 1 s; ideally 0.1 s
        await assert_each_ran_once(app, tally, ids)

    async def test_parallel_deferral(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """Ten tasks deferring 20 jobs each at once: above the deferral floor, 200 distinct ids."""
        job = define_task(app, Tally())
        ids: list[int] = []

        async def deferrer(first: int) -> None:
            ids.extend([await job.defer_async(n=n) for n in range(first, first + JOBS // 10)])

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for first in range(0, JOBS, JOBS // 10):
                tg.start_soon(deferrer, first)
        rate = JOBS / (time.perf_counter() - started)
        report("parallel deferral", defers_per_second=rate)
        assert rate > performance_threshold.defer_per_second
        assert len(set(ids)) == JOBS
        assert await outcomes(app) == {("todo", 0): JOBS}


class TestBatchProcessing:
    """batch_defer_async and a worker draining it, small and large."""

    async def test_small_batch_throughput(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """A batch of 10, worker start and stop included: above the processing floor."""
        tally = Tally()
        job = define_task(app, tally)
        started = time.perf_counter()
        ids = await job.batch_defer_async(*({"n": n} for n in range(10)))
        await work(app, concurrency=10)
        rate = 10 / (time.perf_counter() - started)
        report("batch of 10", jobs_per_second=rate)
        assert rate > performance_threshold.process_per_second
        assert len(set(ids)) == 10
        await assert_each_ran_once(app, tally, ids)

    async def test_large_batch_scales_linearly(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """A batch 10 times larger (500, not 50) costs less than 3 times more per job.

        Each size runs twice and the faster run counts, so that one pause does not decide.
        Cost growing with the batch (a claim scanning all jobs) would show as about 10 times.
        """
        tally = Tally()
        job = define_task(app, tally)
        per_job: dict[int, float] = {50: math.inf, 500: math.inf}
        ids: list[int] = []
        for size in (50, 500, 50, 500):
            started = time.perf_counter()
            ids += await job.batch_defer_async(*({"n": n} for n in range(size)))
            await work(app, concurrency=10)
            per_job[size] = min(per_job[size], (time.perf_counter() - started) / size)
        report(
            "batches",
            per_job_of_50_seconds=per_job[50],
            per_job_of_500_seconds=per_job[500],
        )
        assert 1 / per_job[500] > performance_threshold.process_per_second
        assert per_job[500] < 3 * per_job[50]
        await assert_each_ran_once(app, tally, ids)


class TestLoadPerformance:
    """A steady stream, a burst, and mixed priorities (in memory)."""

    async def test_sustained_load(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """300 jobs arriving one by one while a worker runs: both halves above the floor."""
        tally = Tally()
        job = define_task(in_memory_app, tally)
        count = 300
        async with listening_worker(in_memory_app, concurrency=10):
            started = time.perf_counter()
            ids: list[int] = []
            for n in range(count):
                ids.append(await job.defer_async(n=n, sent=time.perf_counter()))
                await anyio.lowlevel.checkpoint()  # let the worker take them as they come
            await tally.wait_for(count)
        halfway = tally.ends[count // 2 - 1]
        first = (count // 2) / (halfway - started)
        second = (count // 2) / (tally.ends[-1] - halfway)
        report(
            "sustained load",
            first_half_jobs_per_second=first,
            second_half_jobs_per_second=second,
            median_wait_seconds=statistics.median(tally.waits),
        )
        assert min(first, second) > performance_threshold.process_per_second
        assert statistics.median(tally.waits) < performance_threshold.queue_wait_seconds
        await assert_each_ran_once(in_memory_app, tally, ids)

    async def test_burst_load(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """300 jobs at once on an idle worker: every slot used, drained above the floor."""
        tally = Tally()
        job = define_task(in_memory_app, tally)
        count = 300
        async with listening_worker(in_memory_app, concurrency=10):
            started = time.perf_counter()
            ids = await job.batch_defer_async(*({"n": n} for n in range(count)))
            await tally.wait_for(count, within=count / performance_threshold.process_per_second)
            rate = count / (time.perf_counter() - started)
        report("burst load", jobs_per_second=rate)
        assert rate > performance_threshold.process_per_second
        assert tally.most == 10
        await assert_each_ran_once(in_memory_app, tally, ids)

    async def test_mixed_priority_load(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """90 jobs of shuffled priorities -5, 0 and 5: run highest first, then in id order."""
        tally = Tally()
        job = define_task(in_memory_app, tally)
        priorities = [-5, 0, 5] * 30
        random.Random(7).shuffle(priorities)
        priority_of = {
            await job.configure(priority=priority).defer_async(n=n): priority
            for n, priority in enumerate(priorities)
        }
        rate = len(priorities) / await work(in_memory_app, concurrency=1)
        report("mixed priorities", jobs_per_second=rate)
        assert rate > performance_threshold.process_per_second
        assert tally.ran == sorted(priority_of, key=lambda job_id: (-priority_of[job_id], job_id))
        assert await outcomes(in_memory_app) == {("succeeded", 1): len(priorities)}


class TestTaskExecutionLatency:
    """From defer to start, with LISTEN/NOTIFY waking the worker."""

    async def test_latency_distribution(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """30 jobs, each deferred once the one before has run: median and p90 under 100 ms."""
        tally = Tally()
        job = define_task(app, tally)
        count = 30
        async with listening_worker(app):
            ids = [await job.defer_async()]  # warm-up: not measured
            await tally.wait_for(1)
            for n in range(count):
                ids.append(await job.defer_async(n=n, sent=time.perf_counter()))
                await tally.wait_for(n + 2)
        median, p90 = statistics.median(tally.waits), percentile(tally.waits, 0.9)
        report(
            "latency",
            median_seconds=median,
            p90_seconds=p90,
            max_seconds=max(tally.waits),
        )
        assert len(tally.waits) == count
        assert median < performance_threshold.latency_seconds
        assert p90 < performance_threshold.latency_seconds
        await assert_each_ran_once(app, tally, ids)

    async def test_queue_wait_time(
        self, app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """100 jobs arriving one by one at a worker of 4 slots: median and p90 wait < 100 ms."""
        tally = Tally()
        job = define_task(app, tally)
        count = 100
        async with listening_worker(app, concurrency=4):
            ids = [await job.defer_async()]  # warm-up: not measured
            await tally.wait_for(1)
            for n in range(count):
                ids.append(await job.defer_async(n=n, sent=time.perf_counter()))
                await anyio.lowlevel.checkpoint()
            await tally.wait_for(count + 1)
        median, p90 = statistics.median(tally.waits), percentile(tally.waits, 0.9)
        report("queue wait", median_seconds=median, p90_seconds=p90)
        assert median < performance_threshold.queue_wait_seconds
        assert p90 < performance_threshold.queue_wait_seconds
        await assert_each_ran_once(app, tally, ids)


class TestWorkerEfficiency:
    """How much of its slots' time a busy worker spends in jobs, and what an idle one costs."""

    async def test_worker_utilisation(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """concurrency=5 on 50 jobs of 20 ms: all five slots used, busy over half the time."""
        tally = Tally()
        job = define_task(in_memory_app, tally)
        count, seconds = 50, 0.02
        ids = await job.batch_defer_async(*({"n": n, "seconds": seconds} for n in range(count)))
        took = await work(in_memory_app, concurrency=5)
        utilisation = tally.busy / (5 * took)
        report("utilisation", percent=100 * utilisation, jobs_per_second=count / took)
        assert count / took > performance_threshold.process_per_second
        assert tally.most == 5
        assert utilisation > 0.5  # ideally 1: 0.2 s of 5 slots for 1 s of jobs
        await assert_each_ran_once(in_memory_app, tally, ids)

    async def test_idle_overhead(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """An idle listening worker makes no query and uses little CPU, yet wakes at once."""
        tally = Tally()
        job = define_task(in_memory_app, tally)
        connector = in_memory_app.connector
        assert isinstance(connector, InMemoryConnector)
        idle = 0.3
        async with listening_worker(in_memory_app):
            ids = [await job.defer_async()]  # warm-up: the worker is past its start
            await tally.wait_for(1)
            queries, cpu = len(connector.queries), time.process_time()
            await anyio.sleep(idle)  # the behaviour: a worker with nothing to do
            cpu = time.process_time() - cpu
            idle_queries = connector.queries[queries:]
            sent = time.perf_counter()
            ids.append(await job.defer_async(sent=sent))
            await tally.wait_for(2)
        report("idle worker", cpu_percent=100 * cpu / idle, queries=len(idle_queries))
        # Only the warm-up job's tail (its outcome, a fetch or two), no poll loop: the worker
        # polls every fetch_job_polling_interval (5 s) when LISTEN/NOTIFY is on.
        assert len(idle_queries) <= 4, idle_queries
        assert {name for name, _ in idle_queries} <= {"fetch_jobs", "record_outcomes"}
        assert cpu < idle / 5
        assert tally.waits[0] < performance_threshold.latency_seconds
        await assert_each_ran_once(in_memory_app, tally, ids)


class TestScalability:
    """More slots, more jobs per second; more jobs, no more memory per job."""

    async def test_throughput_scaling(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """Jobs of 10 ms at concurrency 1, 4 and 16: each step at least twice the jobs/s.

        Each run gets 16 jobs per slot, so all three last about 0.16 s and a pause weighs
        the same on each. Ideally each step is 4 times faster.
        """
        tally = Tally()
        job = define_task(in_memory_app, tally)
        seconds = 0.01
        rates: dict[int, float] = {}
        ids: list[int] = []
        for concurrency in (1, 4, 16):
            count = 16 * concurrency
            ids += await job.batch_defer_async(
                *({"n": n, "seconds": seconds} for n in range(count))
            )
            rates[concurrency] = count / await work(in_memory_app, concurrency=concurrency)
            assert tally.most == concurrency
            tally.most = 0
        report("scaling", **{f"concurrency_{c}_jobs_per_second": r for c, r in rates.items()})
        assert rates[1] > performance_threshold.process_per_second
        assert rates[4] > 2 * rates[1]
        assert rates[16] > 2 * rates[4]
        await assert_each_ran_once(in_memory_app, tally, ids)

    async def test_memory_efficiency(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """One worker run again on 500 more jobs keeps under 64 bytes per job (traced)."""
        connector = in_memory_app.connector
        assert isinstance(connector, InMemoryConnector)
        ran = 0

        @in_memory_app.task(name="perf.count")
        async def count_it(n: int) -> None:
            nonlocal ran  # a counter, not a list: the test itself keeps nothing per job
            ran += 1

        worker = Worker(
            in_memory_app,
            concurrency=10,
            wait=False,
            listen_notify=False,
            install_signal_handlers=False,
            delete_jobs="always",
        )

        async def run(count: int) -> int:
            """Run `count` jobs, drop what the pseudo-database keeps of them; traced bytes."""
            await count_it.batch_defer_async(*({"n": n} for n in range(count)))
            started = time.perf_counter()
            with anyio.fail_after(10):
                await worker.run()
            took = time.perf_counter() - started
            assert count / took > performance_threshold.process_per_second
            assert connector.jobs == {}  # delete_jobs="always" removed every row
            # New containers for the pseudo-database: a dict does not shrink when emptied.
            connector.jobs, connector.events, connector.queries = {}, {}, []
            gc.collect()
            return tracemalloc.get_traced_memory()[0]

        tracemalloc.start()
        try:
            warm = await run(100)  # first-use allocations: caches, loggers, the worker's own
            grown = await run(500) - warm
        finally:
            tracemalloc.stop()
        report("memory", bytes_per_job=grown / 500, bytes_total=grown)
        assert grown / 500 < 64  # a Job, a JobContext or a row kept per job is several hundred
        assert ran == 600
        assert worker.stats.jobs["succeeded"] == 600


class TestPerformanceRegression:
    """All floors on one workload, and the same workload again and again."""

    async def test_baseline_metrics(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """Defer 200, work them with 10 slots, then 20 latency probes: each floor holds.

        The latency is the probes' 90th percentile, as in test_latency_distribution.
        """
        tally = Tally()
        job = define_task(in_memory_app, tally)
        started = time.perf_counter()
        ids = [await job.defer_async(n=n) for n in range(JOBS)]
        defer_rate = JOBS / (time.perf_counter() - started)
        process_rate = JOBS / await work(in_memory_app, concurrency=10)
        async with listening_worker(in_memory_app):
            for n in range(20):
                ids.append(await job.defer_async(n=n, sent=time.perf_counter()))
                await tally.wait_for(JOBS + n + 1)
        baseline = {
            "defer_per_second": defer_rate,
            "process_per_second": process_rate,
            "latency_seconds": percentile(tally.waits, 0.9),
        }
        report("baseline", **baseline)
        assert baseline["defer_per_second"] > performance_threshold.defer_per_second
        assert baseline["process_per_second"] > performance_threshold.process_per_second
        assert baseline["latency_seconds"] < performance_threshold.latency_seconds
        await assert_each_ran_once(in_memory_app, tally, ids)

    async def test_consistency(
        self, in_memory_app: App, performance_threshold: PerformanceThreshold, report: Report
    ) -> None:
        """Five rounds of 100 jobs: every round, not just the median, above the floor."""
        tally = Tally()
        job = define_task(in_memory_app, tally)
        rates: list[float] = []
        for _ in range(5):
            ran_before = len(tally.ran)
            ids = await job.batch_defer_async(*({"n": n} for n in range(100)))
            rates.append(100 / await work(in_memory_app, concurrency=10))
            assert collections.Counter(tally.ran[ran_before:]) == collections.Counter(ids)
        report(
            "consistency",
            slowest_jobs_per_second=min(rates),
            median_jobs_per_second=statistics.median(rates),
            fastest_jobs_per_second=max(rates),
        )
        assert min(rates) > performance_threshold.process_per_second
        assert await outcomes(in_memory_app) == {("succeeded", 1): 500}
