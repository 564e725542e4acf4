"""The original test guide's durability classes, by their names, on connector x runtime.

Each class holds the guide's own scenarios (its "Key Features Tested"); the feature files
(test_claims, test_retries, test_timeouts, test_abort, test_shutdown, test_recovery,
test_interop) hold everything else, so each scenario has one home.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import procrastinate
import pytest
import trio
from procrastinate import exceptions

from dawdle import App, JobTimeout
from dawdle.backoff import Constant, Exponential, RetryPolicy
from tests.durability.worker.helpers import (
    job_row,
    job_rows,
    job_states,
    make_worker,
    postgres_only,
    run_until,
    same_database,
    work,
)

pytestmark = pytest.mark.anyio


class TestTaskDurability:
    """Jobs wait until a worker takes them, run once each, and survive a worker's restart."""

    async def test_deferred_jobs_wait_then_each_runs_exactly_once(self, app: App) -> None:
        """30 jobs wait as todo with no worker; wait=False then runs each once and returns."""
        seen: list[int] = []

        @app.task(name="record")
        async def record(value: int) -> None:
            seen.append(value)

        await record.batch_defer_async(*({"value": n} for n in range(30)))
        assert set((await job_states(app)).values()) == {("todo", 0)}
        await work(app, concurrency=4)
        assert sorted(seen) == list(range(30))
        assert set((await job_states(app)).values()) == {("succeeded", 1)}

    async def test_put_back_job_runs_again_on_the_next_worker(self, app: App) -> None:
        """A job put back when its worker stops is taken and finished by the next worker."""
        runs = 0
        started = anyio.Event()

        @app.task(name="resumable")
        async def resumable() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                started.set()
                await anyio.sleep(10)  # the behaviour: still running when its worker stops

        job_id = await resumable.defer_async()
        await run_until(make_worker(app, shutdown_graceful_timeout=0.1), started)
        assert (await job_row(app, job_id)).status == "todo"
        await work(app)
        assert runs == 2
        assert (await job_row(app, job_id)).status == "succeeded"

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
        assert await job_states(app) == {job_id: ("succeeded", 3)}


class TestQueueDurability:
    """FIFO order, queueing locks, and queues that do not affect one another."""

    async def test_jobs_of_one_priority_run_first_in_first_out(self, app: App) -> None:
        """concurrency=1, one priority: 20 jobs run in the order they were deferred."""
        ran: list[int] = []

        @app.task(name="fifo")
        async def fifo(n: int) -> None:
            ran.append(n)

        for n in range(20):
            await fifo.defer_async(n=n)
        await work(app, concurrency=1)
        assert ran == list(range(20))

    async def test_queueing_lock_refuses_a_duplicate_until_the_job_ran(self, app: App) -> None:
        """A second job with a waiting job's queueing lock is refused; once it ran, accepted."""
        ran: list[int] = []

        @app.task(name="deduplicated", queueing_lock="only-one")
        async def deduplicated(n: int) -> None:
            ran.append(n)

        first = await deduplicated.defer_async(n=1)
        with pytest.raises(exceptions.AlreadyEnqueued):
            await deduplicated.defer_async(n=2)
        await work(app)
        second = await deduplicated.defer_async(n=3)
        await work(app)
        assert ran == [1, 3]
        assert await job_states(app) == {first: ("succeeded", 1), second: ("succeeded", 1)}

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
        assert await job_states(app) == {
            ids["a"]: ("succeeded", 1),
            ids["b"]: ("succeeded", 1),
            ids["c"]: ("todo", 0),
        }


class TestJobRecovery:
    """Failed jobs come back on their retry schedule, and stop when their attempts run out."""

    async def test_always_failing_job_backs_off_exponentially_then_fails(self, app: App) -> None:
        """Exponential(0.2, 2), max_attempts=3: reruns 0.2 s then 0.4 s later, then failed, 3.

        fetch_job_polling_interval=30 and a retry sends no NOTIFY: the worker must wake
        itself for each retry.
        """
        runs: list[tuple[int, float | None, float, float]] = []
        done = anyio.Event()

        @app.task(
            name="doomed",
            pass_context=True,
            retry=RetryPolicy(backoff=Exponential(0.2, 2.0), max_attempts=3),
        )
        async def doomed(context: procrastinate.JobContext) -> None:
            started = time.time()
            if len(runs) == 2:
                done.set()
            scheduled = context.job.scheduled_at
            runs.append(
                (context.job.attempts, scheduled and scheduled.timestamp(), started, time.time())
            )
            raise ConnectionError("still down")

        job_id = await doomed.defer_async()
        elapsed = await run_until(make_worker(app, fetch_job_polling_interval=30), done)
        job = await job_row(app, job_id)
        assert (job.status, job.attempts) == ("failed", 3)
        assert [attempts for attempts, *_ in runs] == [0, 1, 2]
        pairs = itertools.pairwise(runs)
        for expected, ((_, _, _, failed_at), (_, scheduled_at, started_at, _)) in zip(
            (0.2, 0.4), pairs, strict=True
        ):
            assert scheduled_at is not None
            wait = scheduled_at - failed_at
            assert expected - 0.01 <= wait < expected + 0.2, wait
            assert -0.05 <= started_at - scheduled_at < 0.5
        assert elapsed < 3

    async def test_procrastinate_retry_strategy_is_honoured(self, app: App) -> None:
        """Procrastinate's RetryStrategy(max_attempts=2, wait=0): three runs, then failed, 3."""
        runs = 0
        done = anyio.Event()

        @app.task(name="classic", retry=procrastinate.RetryStrategy(max_attempts=2, wait=0))
        async def classic() -> None:
            nonlocal runs
            runs += 1
            if runs == 3:
                done.set()
            raise RuntimeError("boom")

        job_id = await classic.defer_async()
        await run_until(make_worker(app), done)
        assert runs == 3
        assert await job_states(app) == {job_id: ("failed", 3)}


class TestDataConsistency:
    """Nothing from a rolled-back transaction, no job run twice, arguments kept as they were."""

    @postgres_only("needs the caller's own database transaction, which memory does not have")
    async def test_defer_in_a_rolled_back_transaction_leaves_no_job(self, app: App) -> None:
        """A job deferred inside a transaction that rolls back never exists and never runs."""
        ran: list[int] = []

        @app.task(name="audit")
        async def audit(step: int) -> None:
            ran.append(step)

        class AbandonError(Exception):
            pass

        connector: Any = app.connector
        with pytest.raises(AbandonError):
            async with connector.connection() as conn, conn.transaction():
                await audit.configure(connection=conn).defer_async(step=1)
                raise AbandonError
        kept = await audit.defer_async(step=2)
        await work(app)
        assert ran == [2]
        assert await job_states(app) == {kept: ("succeeded", 1)}

    async def test_two_workers_run_each_job_exactly_once(self, app: App) -> None:
        """Two workers (two Apps on one database) on one queue of 200 jobs: each runs once."""
        ran: list[int] = []
        async with same_database(app) as other:
            for each in (app, other):

                @each.task(name="count", pass_context=True)
                async def count(context: procrastinate.JobContext) -> None:
                    assert context.job.id is not None
                    ran.append(context.job.id)
                    await anyio.lowlevel.checkpoint()

            ids = await app.tasks["count"].batch_defer_async(*({} for _ in range(200)))
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(work, app, concurrency=5))
                tg.start_soon(functools.partial(work, other, concurrency=5))
        assert collections.Counter(ran) == collections.Counter(ids)
        assert set((await job_states(app)).values()) == {("succeeded", 1)}

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
        assert [job.task_kwargs for job in await job_rows(app)] == [kwargs]


class TestJobPriority:
    """Within what a worker may take, higher priority first, then older first; future waits."""

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

    async def test_scheduled_job_waits_for_its_time(self, app: App) -> None:
        """A job scheduled 0.3 s ahead is not run before then, and is run soon after."""
        started: list[float] = []
        done = anyio.Event()

        @app.task(name="later")
        async def later() -> None:
            started.append(time.time())
            done.set()

        job_id = await later.configure(schedule_in={"seconds": 0.3}).defer_async()
        scheduled_at = (await job_row(app, job_id)).scheduled_at
        assert scheduled_at is not None
        await run_until(make_worker(app, fetch_job_polling_interval=0.05), done)
        assert -0.05 <= started[0] - scheduled_at.timestamp() < 0.5
        assert await job_states(app) == {job_id: ("succeeded", 1)}


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
    """A job's failure, whatever it raises, and a stuck job never stop the worker."""

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
        assert await job_states(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}

    async def test_async_timeout_cancels_the_job_with_job_timeout(self, app: App) -> None:
        """timeout=0.2 cancels a 10 s job, whose policy sees JobTimeout; the next job runs."""
        seen: list[type[BaseException]] = []

        def remember(exc: BaseException) -> bool:
            seen.append(type(exc))
            return False

        @app.task(name="stuck", timeout=0.2, retry=RetryPolicy(retry_if=remember))
        async def stuck() -> None:
            await anyio.sleep(10)  # the behaviour: far past its timeout

        @app.task(name="quick")
        async def quick() -> None: ...

        stuck_id = await stuck.defer_async()
        quick_id = await quick.defer_async()
        started = time.monotonic()
        await work(app, concurrency=1)
        assert time.monotonic() - started < 2
        assert seen == [JobTimeout]
        assert await job_states(app) == {stuck_id: ("failed", 1), quick_id: ("succeeded", 1)}
