"""dawdle's worker against a real PostgreSQL, on asyncio and Trio: what each job's row says.

Every test reads the outcome from the database (status, attempts, scheduled_at), never from
logs. Tests wait on events set by the tasks themselves; where nothing can signal (a LISTEN in
place, a row changed by another process), they poll the database in a bounded loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import functools
import itertools
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import procrastinate
import pytest
import trio
from procrastinate import exceptions, jobs

from dawdle import App, JobTimeout, PsycopgConnector, Worker
from dawdle.backoff import Constant, RetryPolicy

pytestmark = pytest.mark.anyio

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events RESTART IDENTITY CASCADE"
)
JOB_ROWS = (
    "SELECT id, task_name, queue_name, priority, lock, status, attempts, scheduled_at, args, "
    "worker_id FROM procrastinate_jobs"
)
WORKER_APP = Path(__file__).with_name("worker_app.py")


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
async def app(schema_dsn: str) -> AsyncIterator[App]:
    """A dawdle App on the module's database, emptied of jobs and workers for this test."""
    app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


@pytest.fixture
async def admin(schema_dsn: str) -> AsyncIterator[App]:
    """A second App on its own pool, for faults done to the worker's connections."""
    admin = App(connector=PsycopgConnector(conninfo=schema_dsn, max_size=2))
    async with admin.open_async():
        yield admin


def make_worker(app: App, **options: Any) -> Worker:
    return Worker(app, **{"install_signal_handlers": False, **options})


async def work(app: App, *, within: float = 10.0, **options: Any) -> None:
    """run_worker_async(wait=False): work the queue until nothing is ready, then return."""
    with anyio.fail_after(within):
        await app.run_worker_async(wait=False, install_signal_handlers=False, **options)


@contextlib.asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    """Run `workers` in a task group while the block runs, then stop them and wait for them."""
    async with anyio.create_task_group() as tg:
        for worker in workers:
            tg.start_soon(worker.run)
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()


async def run_until(worker: Worker, done: anyio.Event, *, within: float = 5.0) -> float:
    """Run `worker` until `done` is set (within `within` s), stop it; the seconds it all took."""
    started = time.monotonic()
    async with running(worker):
        with anyio.fail_after(within):
            await done.wait()
    return time.monotonic() - started


async def job_rows(app: App) -> list[dict[str, Any]]:
    return await app.connector.execute_query_all_async(
        JOB_ROWS + " ORDER BY id"  # type: ignore[arg-type]
    )


async def job_row(app: App, job_id: int) -> dict[str, Any]:
    return await app.connector.execute_query_one_async(
        JOB_ROWS + " WHERE id = %(id)s",  # type: ignore[arg-type]
        id=job_id,
    )


async def outcomes(app: App) -> dict[int, tuple[str, int]]:
    """Each job's (status, attempts), by id."""
    return {row["id"]: (row["status"], row["attempts"]) for row in await job_rows(app)}


async def insert_raw_job(app: App, task_name: str, args: str = "{}") -> int:
    """A job row as any client could write it, through Procrastinate's own SQL function."""
    row = await app.connector.execute_query_one_async(
        "SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW('default', %(task_name)s, 0, NULL, "
        "NULL, %(args)s::jsonb, NULL)::procrastinate_job_to_defer_v1]))[1] AS id",
        task_name=task_name,
        args=args,
    )
    return int(row["id"])


async def listener_pids(app: App) -> set[int]:
    rows = await app.connector.execute_query_all_async(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'idle' AND query LIKE 'LISTEN %%'"
    )
    return {row["pid"] for row in rows}


async def wait_until_listening(app: App, before: set[int]) -> None:
    """Poll (bounded) until a LISTEN connection not in `before` is in place."""
    with anyio.fail_after(5):
        while not (await listener_pids(app)) - before:  # noqa: ASYNC110 (no event: polling)
            await anyio.sleep(0.02)


async def poll_until(
    app: App,
    query: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    within: float,
    **params: Any,
) -> list[dict[str, Any]]:
    """Run `query` until `predicate` holds on its rows, for at most `within` seconds."""
    with anyio.fail_after(within):
        while True:
            rows = await app.connector.execute_query_all_async(query, **params)  # type: ignore[arg-type]
            if predicate(rows):
                return rows
            await anyio.sleep(0.05)


def overlaps(intervals: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Pairs of indices whose [start, end) intervals intersect."""
    return [
        (i, j)
        for i, (start_i, end_i) in enumerate(intervals)
        for j, (start_j, end_j) in enumerate(intervals)
        if i < j and start_i < end_j and start_j < end_i
    ]


class Concurrency:
    """Counts jobs in progress and remembers the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def __exit__(self, *exc_info: object) -> None:
        self.now -= 1


# -- running tasks -----------------------------------------------------------------------------


class TestTaskDurability:
    """Jobs run once each, in the right thread, with their context, and their outcome recorded."""

    async def test_wait_false_works_the_queue_and_returns(self, app: App) -> None:
        """wait=False runs all 30 ready jobs, then returns; each succeeded on its first run."""
        seen: list[int] = []

        @app.task(name="record")
        async def record(value: int) -> None:
            seen.append(value)

        await record.batch_defer_async(*({"value": n} for n in range(30)))
        await work(app, concurrency=4)
        assert sorted(seen) == list(range(30))
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    async def test_sync_task_runs_in_a_worker_thread(self, app: App) -> None:
        """A plain function task runs outside the event loop's thread and succeeds."""
        loop_thread = threading.get_ident()
        threads: list[int] = []

        @app.task(name="blocking")
        def blocking() -> None:
            threads.append(threading.get_ident())

        job_id = await blocking.defer_async()
        await work(app)
        assert len(threads) == 1
        assert threads[0] != loop_thread
        assert await outcomes(app) == {job_id: ("succeeded", 1)}

    async def test_pass_context_gives_procrastinate_job_context(self, app: App) -> None:
        """pass_context=True tasks get a JobContext naming their job, worker and extra context."""
        contexts: list[procrastinate.JobContext] = []

        @app.task(name="contextual", pass_context=True, queue="ctx")
        async def contextual(context: procrastinate.JobContext, n: int) -> None:
            assert not context.should_abort()
            contexts.append(context)

        @app.task(name="contextual_sync", pass_context=True, queue="ctx")
        def contextual_sync(context: procrastinate.JobContext, n: int) -> None:
            contexts.append(context)

        first = await contextual.defer_async(n=1)
        second = await contextual_sync.defer_async(n=2)
        await work(app, name="w-ctx", additional_context={"tenant": "acme"})
        assert [type(c) for c in contexts] == [procrastinate.JobContext] * 2
        assert [(c.job.id, c.job.task_name, c.job.task_kwargs) for c in contexts] == [
            (first, "contextual", {"n": 1}),
            (second, "contextual_sync", {"n": 2}),
        ]
        assert {c.worker_name for c in contexts} == {"w-ctx"}
        assert [c.additional_context for c in contexts] == [{"tenant": "acme"}] * 2
        assert all(c.app is app for c in contexts)
        assert await outcomes(app) == {first: ("succeeded", 1), second: ("succeeded", 1)}

    @pytest.mark.parametrize("kind", ["async", "sync"])
    async def test_task_exception_reaches_retry_strategy_unwrapped(
        self, app: App, kind: str
    ) -> None:
        """RetryStrategy(retry_exceptions=[ValueError]) retries a ValueError from any task."""
        strategy = procrastinate.RetryStrategy(max_attempts=1, retry_exceptions=[ValueError])
        runs: list[int] = []

        if kind == "async":

            @app.task(name="picky", retry=strategy)
            async def picky() -> None:
                runs.append(1)
                raise ValueError("retry me")

        else:

            @app.task(name="picky", retry=strategy)
            def picky() -> None:
                runs.append(1)
                raise ValueError("retry me")

        job_id = await picky.defer_async()
        await work(app)
        assert len(runs) == 2
        assert await outcomes(app) == {job_id: ("failed", 2)}

    async def test_always_failing_job_fails_after_max_attempts_on_schedule(self, app: App) -> None:
        """RetryPolicy(Constant(0.2), max_attempts=3): three runs 0.2 s apart, then failed, 3.

        fetch_job_polling_interval=30 and a retry sends no NOTIFY: the worker must wake
        itself for each retry.
        """
        runs: list[tuple[int, datetime.datetime | None, float, float]] = []
        done = anyio.Event()

        @app.task(
            name="doomed",
            pass_context=True,
            retry=RetryPolicy(backoff=Constant(0.2), max_attempts=3),
        )
        async def doomed(context: procrastinate.JobContext) -> None:
            started = time.time()
            if len(runs) == 2:
                done.set()
            runs.append((context.job.attempts, context.job.scheduled_at, started, time.time()))
            raise ConnectionError("still down")

        job_id = await doomed.defer_async()
        elapsed = await run_until(make_worker(app, fetch_job_polling_interval=30), done)
        row = await job_row(app, job_id)
        assert (row["status"], row["attempts"]) == ("failed", 3)
        assert [attempts for attempts, *_ in runs] == [0, 1, 2]
        for (_, _, _, failed_at), (_, scheduled_at, started_at, _) in itertools.pairwise(runs):
            assert scheduled_at is not None
            wait = scheduled_at.timestamp() - failed_at
            assert 0.19 <= wait < 0.4, wait
            assert -0.05 <= started_at - scheduled_at.timestamp() < 0.5
        assert elapsed < 3

    async def test_job_failing_twice_then_succeeding_ends_succeeded(self, app: App) -> None:
        """Two failures then a success under RetryPolicy(max_attempts=3): succeeded, attempts 3."""
        runs = 0
        done = anyio.Event()

        @app.task(name="flaky", retry=RetryPolicy(backoff=Constant(0.05), max_attempts=3))
        async def flaky() -> None:
            nonlocal runs
            runs += 1
            if runs < 3:
                raise ConnectionError("not yet")
            done.set()

        job_id = await flaky.defer_async()
        await run_until(make_worker(app, fetch_job_polling_interval=30), done)
        assert runs == 3
        assert await outcomes(app) == {job_id: ("succeeded", 3)}

    async def test_procrastinate_retry_strategy_is_honoured(self, app: App) -> None:
        """Procrastinate's RetryStrategy(max_attempts=2, wait=0): three runs, then failed, 3."""
        runs = 0

        @app.task(name="classic", retry=procrastinate.RetryStrategy(max_attempts=2, wait=0))
        async def classic() -> None:
            nonlocal runs
            runs += 1
            raise RuntimeError("boom")

        job_id = await classic.defer_async()
        await work(app)
        assert runs == 3
        assert await outcomes(app) == {job_id: ("failed", 3)}

    async def test_retries_due_at_different_times_are_each_picked_up(self, app: App) -> None:
        """Two jobs retried 0.2 s and 0.8 s later both rerun at once, not at the 30 s poll."""
        reruns: list[str] = []
        done = anyio.Event()
        failed: set[str] = set()

        async def run(name: str) -> None:
            if name not in failed:
                failed.add(name)
                raise ConnectionError(name)
            reruns.append(name)
            if len(reruns) == 2:
                done.set()

        @app.task(name="soon", retry=RetryPolicy(backoff=Constant(0.2), max_attempts=2))
        async def soon() -> None:
            await run("soon")

        @app.task(name="later", retry=RetryPolicy(backoff=Constant(0.8), max_attempts=2))
        async def later() -> None:
            await run("later")

        await soon.defer_async()
        await later.defer_async()
        worker = make_worker(app, concurrency=2, fetch_job_polling_interval=30)
        elapsed = await run_until(worker, done, within=5)
        assert reruns == ["soon", "later"]
        assert set((await outcomes(app)).values()) == {("succeeded", 2)}
        assert elapsed < 3

    async def test_retry_due_during_a_slow_fetch_is_not_forgotten(
        self, app: App, admin: App
    ) -> None:
        """A fetch that starts before a retry is due and ends after it does not lose the wake-up.

        The fetch is held on a table lock across the due time (as load or a lagging database
        clock would); the worker must still rerun the job at once, not at the 30 s poll.
        """
        runs = 0
        done = anyio.Event()

        @app.task(name="held_back", retry=RetryPolicy(backoff=Constant(0.6), max_attempts=2))
        async def held_back() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise ConnectionError
            done.set()

        job_id = await held_back.defer_async()
        before = await listener_pids(app)
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            await wait_until_listening(app, before)
            rows = await poll_until(
                app,
                "SELECT scheduled_at FROM procrastinate_jobs WHERE id = %(id)s "
                "AND status = 'todo' AND attempts = 1",
                bool,
                within=3,
                id=job_id,
            )
            due = rows[0]["scheduled_at"].timestamp()
            async with admin.connector.connection() as conn, conn.transaction():
                await conn.execute("LOCK TABLE procrastinate_jobs IN SHARE MODE")
                # A NOTIFY makes the worker fetch now, before the retry is due.
                await app.connector.execute_query_async(
                    "SELECT pg_notify('procrastinate_any_queue_v1', "
                    '\'{"type": "job_inserted", "job_id": 0}\')'
                )
                await poll_until(
                    app,
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%%candidate%%'",
                    bool,
                    within=3,
                )
                assert time.time() < due, "too slow to hold the fetch before the retry was due"
                await anyio.sleep(due - time.time() + 0.1)  # the behaviour: hold it past due
            with anyio.fail_after(2):
                await done.wait()
        assert await outcomes(app) == {job_id: ("succeeded", 2)}

    async def test_async_timeout_cancels_the_job_with_job_timeout(self, app: App) -> None:
        """timeout=0.2 cancels a 10 s job, whose policy sees JobTimeout; the next job runs."""
        seen: list[type[BaseException]] = []

        def remember(exc: BaseException) -> bool:
            seen.append(type(exc))
            return False

        @app.task(name="stuck", timeout=0.2, retry=RetryPolicy(retry_if=remember))
        async def stuck() -> None:
            await anyio.sleep(10)

        @app.task(name="quick")
        async def quick() -> None: ...

        stuck_id = await stuck.defer_async()
        quick_id = await quick.defer_async()
        started = time.monotonic()
        await work(app, concurrency=1)
        assert time.monotonic() - started < 2
        assert seen == [JobTimeout]
        assert await outcomes(app) == {stuck_id: ("failed", 1), quick_id: ("succeeded", 1)}

    async def test_async_timeout_is_retried_per_policy(self, app: App) -> None:
        """A job timing out on its first run and finishing in time on its second: succeeded, 2."""
        runs = 0
        done = anyio.Event()

        @app.task(name="slow_once", timeout=0.2, retry=RetryPolicy(backoff=Constant(0.01)))
        async def slow_once() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                await anyio.sleep(10)
            done.set()

        job_id = await slow_once.defer_async()
        await run_until(make_worker(app, fetch_job_polling_interval=30), done, within=3)
        assert runs == 2
        assert await outcomes(app) == {job_id: ("succeeded", 2)}

    async def test_sync_timeout_only_reports_the_overrun(self, app: App) -> None:
        """A sync task past timeout= cannot be cancelled: it runs to the end and succeeds."""
        finished: list[int] = []

        @app.task(name="slow_sync", timeout=0.1)
        def slow_sync() -> None:
            time.sleep(0.3)  # the behaviour under test: slower than its timeout
            finished.append(42)

        job_id = await slow_sync.defer_async()
        worker = make_worker(app, wait=False)
        with anyio.fail_after(5):
            await worker.run()
        assert finished == [42]
        assert await outcomes(app) == {job_id: ("succeeded", 1)}
        assert worker.stats.timed_out == 1


# -- queues, order, locks ----------------------------------------------------------------------


class TestQueueDurability:
    """What a worker takes, how many at once, and which jobs may not overlap."""

    async def test_concurrency_caps_jobs_in_progress(self, app: App) -> None:
        """concurrency=3: never more than three jobs at once, and three are reached."""
        running = Concurrency()

        @app.task(name="busy")
        async def busy() -> None:
            with running:
                await anyio.sleep(0.03)

        await busy.batch_defer_async(*({} for _ in range(15)))
        await work(app, concurrency=3)
        assert running.most == 3
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    async def test_sync_jobs_count_against_concurrency(self, app: App) -> None:
        """concurrency=2 with sync tasks: never more than two threads run jobs at once."""
        running = Concurrency()
        lock = threading.Lock()

        @app.task(name="busy_sync")
        def busy_sync() -> None:
            with lock:
                running.__enter__()
            time.sleep(0.03)  # the behaviour: a job that holds its thread
            with lock:
                running.__exit__()

        await busy_sync.batch_defer_async(*({} for _ in range(8)))
        await work(app, concurrency=2)
        assert running.most == 2
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    async def test_queues_option_restricts_what_the_worker_takes(self, app: App) -> None:
        """queues=['a', 'b'] runs jobs of a and b and leaves c's untouched in todo."""
        ran: list[str] = []

        @app.task(name="queued")
        async def queued(queue: str) -> None:
            ran.append(queue)

        ids = {
            queue: await queued.configure(queue=queue).defer_async(queue=queue)
            for queue in ("a", "b", "c")
        }
        await work(app, queues=["a", "b"])
        assert sorted(ran) == ["a", "b"]
        assert await outcomes(app) == {
            ids["a"]: ("succeeded", 1),
            ids["b"]: ("succeeded", 1),
            ids["c"]: ("todo", 0),
        }

    async def test_notify_wakes_a_waiting_worker(self, app: App) -> None:
        """A job deferred to a listened queue runs at once, with a 30 s polling interval."""
        ran = anyio.Event()

        @app.task(name="announced", queue="a")
        async def announced() -> None:
            ran.set()

        before = await listener_pids(app)
        async with running(make_worker(app, queues=["a"], fetch_job_polling_interval=30)):
            await wait_until_listening(app, before)
            job_id = await announced.defer_async()
            with anyio.fail_after(2):
                await ran.wait()
        assert await outcomes(app) == {job_id: ("succeeded", 1)}

    async def test_job_deferred_while_the_listener_reconnects_is_taken(
        self, app: App, admin: App
    ) -> None:
        """A NOTIFY lost while LISTEN was down does not strand the job: it runs at once."""
        ran = anyio.Event()

        @app.task(name="unheard")
        async def unheard() -> None:
            ran.set()

        before = await listener_pids(app)
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            await wait_until_listening(app, before)
            listeners = sorted((await listener_pids(app)) - before)
            await admin.connector.execute_query_async(
                "SELECT pg_terminate_backend(pid) FROM unnest(%(pids)s::int[]) AS pid",
                pids=listeners,
            )
            job_id = await unheard.defer_async()
            with anyio.fail_after(3):
                await ran.wait()
        assert await outcomes(app) == {job_id: ("succeeded", 1)}

    async def test_jobs_sharing_a_lock_never_overlap_and_keep_order(self, app: App) -> None:
        """concurrency=4: jobs of one lock run one at a time, in id order; other locks overlap."""
        intervals: dict[str, list[tuple[int, float, float]]] = collections.defaultdict(list)
        running = Concurrency()

        @app.task(name="locked")
        async def locked(lock: str, n: int) -> None:
            start = time.monotonic()
            with running:
                await anyio.sleep(0.02)
            intervals[lock].append((n, start, time.monotonic()))

        for n in range(6):
            for lock in ("L", "M"):
                await locked.configure(lock=lock).defer_async(lock=lock, n=n)
        await work(app, concurrency=4)
        for lock in ("L", "M"):
            assert [n for n, _, _ in intervals[lock]] == list(range(6))
            assert overlaps([(start, end) for _, start, end in intervals[lock]]) == []
        assert running.most == 2  # one job per lock at a time, both locks at once
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    async def test_future_job_does_not_block_its_lock(self, app: App) -> None:
        """A job scheduled an hour ahead does not hold back its lock's ready job (#1599)."""
        ran: list[str] = []

        @app.task(name="locked_later")
        async def locked_later(which: str) -> None:
            ran.append(which)

        future = await locked_later.configure(lock="L", schedule_in={"hours": 1}).defer_async(
            which="future"
        )
        ready = await locked_later.configure(lock="L").defer_async(which="ready")
        await work(app)
        assert ran == ["ready"]
        assert await outcomes(app) == {future: ("todo", 0), ready: ("succeeded", 1)}

    async def test_batch_never_takes_two_jobs_of_one_lock(self, app: App) -> None:
        """concurrency=10, 20 jobs of one lock: all succeed, never overlapping, no fetch error."""
        intervals: list[tuple[float, float]] = []
        order: list[int] = []

        @app.task(name="one_lock")
        async def one_lock(n: int) -> None:
            start = time.monotonic()
            await anyio.sleep(0.005)
            order.append(n)
            intervals.append((start, time.monotonic()))

        await one_lock.configure(lock="only").batch_defer_async(*({"n": n} for n in range(20)))
        worker = make_worker(app, wait=False, concurrency=10)
        with anyio.fail_after(10):
            await worker.run()
        assert order == list(range(20))
        assert overlaps(intervals) == []
        assert worker.stats.loop_restarts == collections.Counter()
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    @pytest.mark.parametrize(
        ("delete_jobs", "kept"),
        [("never", {"ok", "ko"}), ("successful", {"ko"}), ("always", set())],
    )
    async def test_delete_jobs(self, app: App, delete_jobs: str, kept: set[str]) -> None:
        """delete_jobs removes the rows of finished jobs it names and keeps the others."""

        @app.task(name="ok")
        async def ok() -> None: ...

        @app.task(name="ko")
        async def ko() -> None:
            raise ValueError

        await ok.defer_async()
        await ko.defer_async()
        await work(app, delete_jobs=delete_jobs)
        rows = await job_rows(app)
        assert {row["task_name"] for row in rows} == kept
        expected = {"ok": "succeeded", "ko": "failed"}
        assert {row["task_name"]: row["status"] for row in rows} == {
            name: expected[name] for name in kept
        }

    async def test_periodic_task_is_deferred_and_run(self, app: App) -> None:
        """An every-second periodic task is deferred and run by a running worker."""
        stamps: list[int] = []
        done = anyio.Event()

        @app.periodic(cron="* * * * * *")
        @app.task(name="tick")
        async def tick(timestamp: int) -> None:
            stamps.append(timestamp)
            if len(stamps) == 2:
                done.set()

        await run_until(make_worker(app), done, within=4)
        assert stamps[1] == stamps[0] + 1
        rows = await job_rows(app)
        assert [row["args"]["timestamp"] for row in rows] == stamps
        assert {row["status"] for row in rows} == {"succeeded"}

    async def test_two_workers_defer_a_periodic_task_once_per_tick(self, schema_dsn: str) -> None:
        """Two workers running at once defer each second's job once between them."""
        stamps: list[int] = []
        done = anyio.Event()
        apps = [App(connector=PsycopgConnector(conninfo=schema_dsn)) for _ in range(2)]
        for each in apps:

            @each.periodic(cron="* * * * * *")
            @each.task(name="tick")
            async def tick(timestamp: int) -> None:
                stamps.append(timestamp)
                if len(set(stamps)) >= 3:
                    done.set()

        async with apps[0].open_async(), apps[1].open_async():
            await apps[0].connector.execute_query_async(TRUNCATE)
            async with running(*(make_worker(each, concurrency=2) for each in apps)):
                with anyio.fail_after(5):
                    await done.wait()
            rows = await apps[0].connector.execute_query_all_async(
                "SELECT args->>'timestamp' AS stamp, count(*) AS n FROM procrastinate_jobs "
                "GROUP BY 1 ORDER BY 1"
            )
        assert len(rows) >= 3
        assert {row["n"] for row in rows} == {1}
        assert collections.Counter(stamps).most_common(1)[0][1] == 1


class TestJobPriority:
    """Within what a worker may take, higher priority first, then older first."""

    async def test_priority_desc_then_id(self, app: App) -> None:
        """concurrency=1 runs jobs by priority (highest first), ties in id order."""
        ran: list[int] = []

        @app.task(name="prioritized")
        async def prioritized(n: int) -> None:
            ran.append(n)

        priorities = [0, 5, -3, 5, 10, 0, -3, 10]
        ids = [
            await prioritized.configure(priority=priority).defer_async(n=n)
            for n, priority in enumerate(priorities)
        ]
        await work(app, concurrency=1)
        expected = sorted(range(len(priorities)), key=lambda n: (-priorities[n], ids[n]))
        assert ran == expected

    async def test_priority_applies_across_queues_of_one_worker(self, app: App) -> None:
        """A worker on two queues takes the higher priority job whichever queue it is in."""
        ran: list[str] = []

        @app.task(name="across")
        async def across(name: str) -> None:
            ran.append(name)

        await across.configure(queue="a", priority=1).defer_async(name="a-low")
        await across.configure(queue="b", priority=9).defer_async(name="b-high")
        await across.configure(queue="a", priority=5).defer_async(name="a-mid")
        await work(app, concurrency=1, queues=["a", "b"])
        assert ran == ["b-high", "a-mid", "a-low"]


# -- aborts, shutdown, stalled jobs ------------------------------------------------------------


class TestJobRecovery:
    """Jobs end right when aborted, interrupted by shutdown, or left behind by a dead worker."""

    @pytest.mark.parametrize("listen_notify", [True, False], ids=["notify", "polling"])
    async def test_abort_cancels_a_running_async_job(self, app: App, listen_notify: bool) -> None:
        """cancel_job_by_id_async(abort=True) cancels the job at once: aborted, not retried."""
        started = anyio.Event()
        cancelled = anyio.Event()

        @app.task(name="abortable", retry=RetryPolicy(backoff=Constant(0.05), max_attempts=5))
        async def abortable() -> None:
            started.set()
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                cancelled.set()
                raise

        before = await listener_pids(app)
        worker = make_worker(
            app,
            listen_notify=listen_notify,
            # With notify, the abort must come through the notification, not the poll.
            abort_job_polling_interval=30 if listen_notify else 0.1,
        )
        job_id = await abortable.defer_async()
        async with running(worker):
            with anyio.fail_after(5):
                await started.wait()
                if listen_notify:
                    await wait_until_listening(app, before)
            requested = time.monotonic()
            assert await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
            with anyio.fail_after(2):
                await cancelled.wait()
            took = time.monotonic() - requested
        assert took < 1
        assert await outcomes(app) == {job_id: ("aborted", 1)}

    async def test_sync_job_that_checks_should_abort_ends_aborted(self, app: App) -> None:
        """A sync job raising JobAborted once should_abort() is true ends aborted."""
        started = anyio.Event()
        saw_abort: list[bool] = []

        @app.task(name="polite", pass_context=True)
        def polite(context: procrastinate.JobContext) -> None:
            anyio.from_thread.run_sync(started.set)
            for _ in range(500):  # at most 5 s
                if context.should_abort():
                    saw_abort.append(True)
                    raise exceptions.JobAborted
                time.sleep(0.01)  # the behaviour: a sync job checking now and then

        job_id = await polite.defer_async()
        worker = make_worker(app, listen_notify=False, abort_job_polling_interval=0.1)
        async with running(worker):  # its stop() is graceful: the sync job gets all it needs
            with anyio.fail_after(5):
                await started.wait()
            assert await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
        assert saw_abort == [True]
        assert await outcomes(app) == {job_id: ("aborted", 1)}

    async def test_abort_of_a_todo_job_cancels_it_before_it_runs(self, app: App) -> None:
        """An abort requested before the job is fetched marks it cancelled and it never runs."""
        ran: list[int] = []

        @app.task(name="never_run")
        async def never_run() -> None:
            ran.append(1)

        job_id = await never_run.defer_async()
        assert await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
        await work(app)
        assert ran == []
        assert await outcomes(app) == {job_id: ("cancelled", 0)}

    async def test_cancelled_worker_puts_a_slow_job_back(self, app: App) -> None:
        """Cancelling the worker's scope: it returns after the graceful timeout, job in todo."""
        started = anyio.Event()
        cancelled = anyio.Event()

        @app.task(name="slow")
        async def slow() -> None:
            started.set()
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                cancelled.set()
                raise

        job_id = await slow.defer_async()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(
                    app.run_worker_async,
                    install_signal_handlers=False,
                    shutdown_graceful_timeout=0.2,
                )
            )
            with anyio.fail_after(5):
                await started.wait()
            stopping = time.monotonic()
            tg.cancel_scope.cancel()
        took = time.monotonic() - stopping
        assert cancelled.is_set()
        assert 0.15 <= took < 1.5
        row = await job_row(app, job_id)
        assert row["status"] == "todo"
        assert row["scheduled_at"] is None or row["scheduled_at"].timestamp() <= time.time()
        workers = await app.connector.execute_query_all_async(
            "SELECT id FROM procrastinate_workers"
        )
        assert workers == []

    async def test_put_back_job_runs_again_on_the_next_worker(self, app: App) -> None:
        """A job put back at shutdown is taken and finished by the next worker."""
        runs = 0
        started = anyio.Event()

        @app.task(name="resumable")
        async def resumable() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                started.set()
                await anyio.sleep(10)

        job_id = await resumable.defer_async()
        worker = make_worker(app, shutdown_graceful_timeout=0.1)
        await run_until(worker, started)
        assert (await job_row(app, job_id))["status"] == "todo"
        await work(app)
        assert runs == 2
        assert (await job_row(app, job_id))["status"] == "succeeded"

    async def test_job_finishing_within_the_graceful_timeout_succeeds(self, app: App) -> None:
        """stop() while a 0.1 s job runs with shutdown_graceful_timeout=2: it ends succeeded."""
        started = anyio.Event()
        finished: list[bool] = []

        @app.task(name="short")
        async def short() -> None:
            started.set()
            await anyio.sleep(0.1)  # the behaviour: a job still running at stop()
            finished.append(True)

        job_id = await short.defer_async()
        took = await run_until(make_worker(app, shutdown_graceful_timeout=2), started)
        assert finished == [True]
        assert took < 2
        assert await outcomes(app) == {job_id: ("succeeded", 1)}

    async def test_stop_from_another_thread(self, app: App) -> None:
        """worker.stop() from a plain thread stops the worker; the running job completes."""
        started = anyio.Event()
        release = threading.Event()

        @app.task(name="held")
        async def held() -> None:
            started.set()
            await anyio.to_thread.run_sync(release.wait, 5)

        job_id = await held.defer_async()
        worker = make_worker(app, fetch_job_polling_interval=30)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await started.wait()
            stopper = threading.Thread(target=worker.stop)
            stopper.start()
            await anyio.to_thread.run_sync(stopper.join, 5)
            assert not stopper.is_alive()
            release.set()
            stopped = time.monotonic()
        assert time.monotonic() - stopped < 2
        assert await outcomes(app) == {job_id: ("succeeded", 1)}

    async def test_stalled_job_of_a_dead_worker_is_recovered_and_run(self, app: App) -> None:
        """A job left doing by a worker silent for an hour goes back to todo and succeeds."""
        done = anyio.Event()

        @app.task(name="orphan")
        async def orphan() -> None:
            done.set()

        job_id = await orphan.defer_async()
        dead = await app.connector.execute_query_one_async(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id"
        )
        await app.connector.execute_query_async(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %(worker)s "
            "WHERE id = %(id)s",
            worker=dead["id"],
            id=job_id,
        )
        worker = make_worker(app, stalled_worker_timeout=1, update_heartbeat_interval=0.1)
        await run_until(worker, done)
        row = await job_row(app, job_id)
        # The recovery ends the dead worker's run (attempt 1), the new run succeeds (attempt 2).
        assert (row["status"], row["attempts"]) == ("succeeded", 2)
        workers = await app.connector.execute_query_all_async(
            "SELECT id FROM procrastinate_workers"
        )
        assert workers == []

    async def test_live_workers_jobs_are_not_recovered(self, app: App) -> None:
        """A job running past several stalled-worker timeouts, heartbeats fresh: runs once."""
        runs = 0

        @app.task(name="long")
        async def long() -> None:
            nonlocal runs
            runs += 1
            await anyio.sleep(1.0)  # the behaviour: longer than twice stalled_worker_timeout

        job_id = await long.defer_async()
        await work(app, concurrency=2, stalled_worker_timeout=0.4, update_heartbeat_interval=0.05)
        assert runs == 1
        assert await outcomes(app) == {job_id: ("succeeded", 1)}

    @pytest.mark.parametrize(
        ("job_seconds", "expected"), [(10.0, "todo"), (0.1, "succeeded")], ids=["slow", "short"]
    )
    async def test_sigterm_stops_a_subprocess_worker_cleanly(
        self, app: App, schema_dsn: str, anyio_backend: str, job_seconds: float, expected: str
    ) -> None:
        """SIGTERM to a worker process on this runtime: exit 0, its job finished or put back."""
        job_id = await insert_raw_job(app, "worker_app.sleep", f'{{"seconds": {job_seconds}}}')
        async with await anyio.open_process(
            [sys.executable, str(WORKER_APP), schema_dsn, anyio_backend, "0.5"]
        ) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            with anyio.fail_after(15):
                output = b""
                async for chunk in process.stdout:
                    output += chunk
                    if b"started" in output:
                        process.send_signal(signal.SIGTERM)
                        break
                errors = b"".join([chunk async for chunk in process.stderr])
                returncode = await process.wait()
        assert b"started" in output, errors.decode(errors="replace")
        assert returncode == 0, errors.decode(errors="replace")
        row = await job_row(app, job_id)
        assert row["status"] == expected
        workers = await app.connector.execute_query_all_async(
            "SELECT id FROM procrastinate_workers"
        )
        assert workers == []


# -- consistency ---------------------------------------------------------------------------


class TestDataConsistency:
    """Each job runs exactly once with its arguments, and retries write what they decided."""

    async def test_two_workers_run_each_job_exactly_once(self, app: App, schema_dsn: str) -> None:
        """Two workers (their own pools) on one queue of 200 jobs: each runs once."""
        ran: list[int] = []
        other = App(connector=PsycopgConnector(conninfo=schema_dsn))
        for each in (app, other):

            @each.task(name="count", pass_context=True)
            async def count(context: procrastinate.JobContext) -> None:
                assert context.job.id is not None
                ran.append(context.job.id)
                await anyio.lowlevel.checkpoint()

        ids = await app.tasks["count"].batch_defer_async(*({} for _ in range(200)))
        async with other.open_async(), anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(work, app, concurrency=5))
            tg.start_soon(functools.partial(work, other, concurrency=5))
        assert collections.Counter(ran) == collections.Counter(ids)
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    async def test_arguments_round_trip(self, app: App) -> None:
        """Nested, unicode, large and float arguments reach the task as they were deferred."""
        received: list[dict[str, Any]] = []
        kwargs = {
            "text": "naïve café ✓ 日本",
            "nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}], "empty": {}},
            "big": 2**62,
            "negative": -1.5e-9,
        }

        @app.task(name="echo")
        async def echo(**kw: Any) -> None:
            received.append(kw)

        await echo.defer_async(**kwargs)
        await work(app)
        assert received == [kwargs]

    async def test_retry_decision_moves_queue_priority_and_lock(self, app: App) -> None:
        """A retry decision's new queue, priority and lock are written to the job's row."""

        class Move(procrastinate.BaseRetryStrategy):
            def get_retry_decision(
                self, *, exception: BaseException, job: jobs.Job
            ) -> procrastinate.RetryDecision | None:
                if job.attempts:
                    return None
                return procrastinate.RetryDecision(
                    retry_in={"seconds": 0}, priority=7, queue="second", lock="moved"
                )

        seen: list[tuple[str, int, str | None]] = []

        @app.task(name="mover", pass_context=True, retry=Move())
        async def mover(context: procrastinate.JobContext) -> None:
            seen.append((context.job.queue, context.job.priority, context.job.lock))
            if len(seen) == 1:
                raise ValueError

        job_id = await mover.defer_async()
        await work(app)
        assert seen == [("default", 0, None), ("second", 7, "moved")]
        row = await job_row(app, job_id)
        assert (row["status"], row["attempts"]) == ("succeeded", 2)
        assert (row["queue_name"], row["priority"], row["lock"]) == ("second", 7, "moved")

    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_job_deferred_by_procrastinate_on_asyncio_runs_on_trio(
        self, app: App, schema_dsn: str
    ) -> None:
        """Trio only: Procrastinate's App defers on asyncio (a thread), dawdle runs it on Trio."""
        received: list[int] = []

        @app.task(name="interop.shared")
        async def shared(value: int) -> None:
            received.append(value)

        async def defer_with_procrastinate() -> int:
            upstream = procrastinate.App(
                connector=procrastinate.PsycopgConnector(conninfo=schema_dsn)
            )

            @upstream.task(name="interop.shared")
            async def shared(value: int) -> None: ...

            async with upstream.open_async():
                return await shared.defer_async(value=17)

        job_id = await anyio.to_thread.run_sync(
            functools.partial(anyio.run, defer_with_procrastinate, backend="asyncio")
        )
        await work(app)
        assert received == [17]
        assert await outcomes(app) == {job_id: ("succeeded", 1)}

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_job_deferred_by_dawdle_runs_on_procrastinate_worker(
        self, app: App, schema_dsn: str
    ) -> None:
        """Asyncio only (Procrastinate's worker needs it): a dawdle job, Procrastinate's worker."""
        received: list[int] = []

        @app.task(name="interop.shared")
        async def shared(value: int) -> None: ...

        upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=schema_dsn))

        @upstream.task(name="interop.shared")
        async def upstream_shared(value: int) -> None:
            received.append(value)

        job_id = await shared.defer_async(value=23)
        async with upstream.open_async():
            with anyio.fail_after(10):
                await upstream.run_worker_async(wait=False, install_signal_handlers=False)
        assert received == [23]
        assert await outcomes(app) == {job_id: ("succeeded", 1)}


# -- faults ------------------------------------------------------------------------------------


def native_cancellation(backend: str) -> BaseException:
    """The cancellation exception of the running runtime, raised by a task on its own."""
    return asyncio.CancelledError() if backend == "asyncio" else trio.Cancelled._create()


def foreign_cancellation(backend: str) -> BaseException:
    """The other runtime's cancellation exception."""
    return trio.Cancelled._create() if backend == "asyncio" else asyncio.CancelledError()


RAISERS: dict[str, Callable[[str], BaseException]] = {
    "KeyboardInterrupt": lambda _: KeyboardInterrupt(),
    "SystemExit": lambda _: SystemExit(3),
    "ExceptionGroup": lambda _: ExceptionGroup("group", [ValueError("a"), KeyError("b")]),
    "native-cancellation": native_cancellation,
    "foreign-cancellation": foreign_cancellation,
}


class TestWorkerResilience:
    """Bad jobs, bad rows and a hostile database fail jobs, never the worker."""

    async def test_unknown_task_fails_and_the_worker_goes_on(self, app: App) -> None:
        """A row naming a task this app lacks ends failed; the next job still succeeds."""

        @app.task(name="known")
        async def known() -> None: ...

        unknown_id = await insert_raw_job(app, "no.such.task")
        known_id = await known.defer_async()
        await work(app, concurrency=1)
        assert await outcomes(app) == {unknown_id: ("failed", 1), known_id: ("succeeded", 1)}

    @pytest.mark.parametrize("kind", ["async", "sync"])
    @pytest.mark.parametrize("raiser", list(RAISERS))
    async def test_base_exceptions_fail_only_their_job(
        self, app: App, anyio_backend: str, raiser: str, kind: str
    ) -> None:
        """KeyboardInterrupt, SystemExit, groups and stray cancellations fail just their job."""
        make_error = RAISERS[raiser]

        if kind == "async":

            @app.task(name="bad")
            async def bad() -> None:
                raise make_error(anyio_backend)

        else:

            @app.task(name="bad")
            def bad() -> None:
                raise make_error(anyio_backend)

        @app.task(name="good")
        async def good() -> None: ...

        bad_id = await bad.defer_async()
        good_id = await good.defer_async()
        await work(app, concurrency=1)
        assert await outcomes(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}

    async def test_base_exception_is_retried_per_policy(self, app: App) -> None:
        """A policy retrying on BaseException retries a KeyboardInterrupt like any failure."""
        runs = 0
        done = anyio.Event()

        @app.task(
            name="interrupted",
            retry=RetryPolicy(backoff=Constant(0.01), max_attempts=2, retry_on=BaseException),
        )
        async def interrupted() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise KeyboardInterrupt
            done.set()

        job_id = await interrupted.defer_async()
        await run_until(make_worker(app, fetch_job_polling_interval=30), done, within=3)
        assert runs == 2
        assert await outcomes(app) == {job_id: ("succeeded", 2)}

    async def test_wrong_arguments_fail_the_job(self, app: App) -> None:
        """Arguments the function does not take (TypeError) end the job failed."""

        @app.task(name="strict")
        async def strict(a: int) -> None: ...

        bad_id = await strict.defer_async(b=1)  # type: ignore[call-arg]
        good_id = await strict.defer_async(a=1)
        await work(app, concurrency=1)
        assert await outcomes(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}

    @pytest.mark.parametrize("args", ["[1, 2]", '"text"', "null", "3"])
    async def test_arguments_that_are_not_an_object_fail_the_job(self, app: App, args: str) -> None:
        """A row whose args are JSON but not an object ends failed; the worker goes on."""

        @app.task(name="takes_kwargs")
        async def takes_kwargs(**kwargs: Any) -> None: ...

        bad_id = await insert_raw_job(app, "takes_kwargs", args)
        good_id = await takes_kwargs.defer_async()
        await work(app, concurrency=1)
        assert await outcomes(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}

    async def test_retry_policy_that_raises_fails_the_job(self, app: App) -> None:
        """A retry_if predicate that raises fails its job; the worker goes on."""

        def broken(exc: BaseException) -> bool:
            raise RuntimeError("bug in the predicate")

        @app.task(name="badly_retried", retry=RetryPolicy(retry_if=broken))
        async def badly_retried() -> None:
            raise ValueError

        @app.task(name="after")
        async def after() -> None: ...

        bad_id = await badly_retried.defer_async()
        good_id = await after.defer_async()
        await work(app, concurrency=1)
        assert await outcomes(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}

    async def test_terminated_backends_lose_and_repeat_no_job(self, app: App, admin: App) -> None:
        """pg_terminate_backend on all the worker's connections, twice: each job runs once."""
        ran: list[int] = []
        terminations: list[int] = []

        async def terminate() -> None:
            row = await admin.connector.execute_query_one_async(
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            terminations.append(row["n"])

        @app.task(name="tracked", pass_context=True)
        async def tracked(context: procrastinate.JobContext) -> None:
            assert context.job.id is not None
            ran.append(context.job.id)
            if len(ran) in {10, 25}:
                await terminate()
            await anyio.sleep(0.005)

        ids = await tracked.batch_defer_async(*({} for _ in range(40)))
        await work(app, concurrency=3, within=15)
        assert len(terminations) == 2
        assert all(n >= 1 for n in terminations)
        assert collections.Counter(ran) == collections.Counter(ids)
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    async def test_stop_before_run_has_started(self, app: App) -> None:
        """stop() right after start_soon(worker.run), before it ran: no error, run() returns."""

        @app.task(name="idle")
        async def idle() -> None: ...

        job_id = await idle.defer_async()
        worker = make_worker(app, fetch_job_polling_interval=30)
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                worker.stop()
        assert (await job_row(app, job_id))["status"] in {"todo", "succeeded"}
        workers = await app.connector.execute_query_all_async(
            "SELECT id FROM procrastinate_workers"
        )
        assert workers == []

    async def test_backends_terminated_again_and_again(self, app: App, admin: App) -> None:
        """Every 50 ms, pg_terminate_backend on all the worker's connections: each job runs once."""
        ran: list[int] = []
        all_done = anyio.Event()

        @app.task(name="hammered", pass_context=True)
        async def hammered(context: procrastinate.JobContext) -> None:
            assert context.job.id is not None
            ran.append(context.job.id)
            await anyio.sleep(0.01)  # the behaviour: jobs in progress while backends die

        ids = await hammered.batch_defer_async(*({} for _ in range(60)))
        terminated = 0

        async def terminate_until_done() -> None:
            nonlocal terminated
            while not all_done.is_set():
                row = await admin.connector.execute_query_one_async(
                    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
                terminated += row["n"]
                await anyio.sleep(0.05)  # the behaviour: a fault every 50 ms

        async with anyio.create_task_group() as tg:
            tg.start_soon(terminate_until_done)
            try:
                await work(app, concurrency=3, within=20)
            finally:
                all_done.set()
        assert terminated >= 5
        assert collections.Counter(ran) == collections.Counter(ids)
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}

    async def test_pruned_worker_keeps_taking_jobs(self, app: App) -> None:
        """A worker whose row another worker pruned (missed heartbeats) still runs new jobs."""
        ran: list[int] = []
        first = anyio.Event()
        second = anyio.Event()

        @app.task(name="step")
        async def step(n: int) -> None:
            ran.append(n)
            (first if n == 1 else second).set()

        await step.defer_async(n=1)
        worker = make_worker(app, update_heartbeat_interval=0.1, fetch_job_polling_interval=0.2)
        async with running(worker):
            with anyio.fail_after(5):
                await first.wait()
            # What prune_stalled_workers does to a worker silent for too long.
            await app.connector.execute_query_async("DELETE FROM procrastinate_workers")
            await step.defer_async(n=2)
            with anyio.fail_after(2):
                await second.wait()
        assert ran == [1, 2]
        assert set((await outcomes(app)).values()) == {("succeeded", 1)}
