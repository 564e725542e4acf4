"""What a worker takes, how many at once, which jobs may not overlap, and what it leaves.

Concurrency, queues, notify wake-ups, locks, batches, delete_jobs and periodic tasks, on
connector x runtime. FIFO order, queueing locks, multiple queues and priority are the
original guide's scenarios: they live in test_durability.py (TestQueueDurability,
TestJobPriority).
"""

from __future__ import annotations

import collections
import threading
import time

import anyio
import pytest

from dawdle import App
from tests.durability.worker.helpers import (
    Concurrency,
    job_rows,
    job_states,
    listening,
    make_worker,
    overlaps,
    postgres_only,
    run_until,
    running,
    same_database,
    work,
)

pytestmark = pytest.mark.anyio


async def test_concurrency_caps_jobs_in_progress(app: App) -> None:
    """concurrency=3: never more than three jobs at once, and three are reached."""
    in_progress = Concurrency()

    @app.task(name="busy")
    async def busy() -> None:
        with in_progress:
            await anyio.sleep(0.03)  # the behaviour: jobs that take a while

    await busy.batch_defer_async(*({} for _ in range(15)))
    await work(app, concurrency=3)
    assert in_progress.most == 3
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


async def test_sync_jobs_count_against_concurrency(app: App) -> None:
    """concurrency=2 with sync tasks: never more than two threads run jobs at once."""
    in_progress = Concurrency()
    lock = threading.Lock()

    @app.task(name="busy_sync")
    def busy_sync() -> None:
        with lock:
            in_progress.__enter__()
        time.sleep(0.03)  # the behaviour: a job that holds its thread
        with lock:
            in_progress.__exit__()

    await busy_sync.batch_defer_async(*({} for _ in range(8)))
    await work(app, concurrency=2)
    assert in_progress.most == 2
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


async def test_notify_wakes_a_waiting_worker(app: App) -> None:
    """A job deferred to a listened queue runs at once, with a 30 s polling interval."""
    ran = anyio.Event()

    @app.task(name="announced", queue="a")
    async def announced() -> None:
        ran.set()

    with listening(app) as listened:
        async with running(make_worker(app, queues=["a"], fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await listened.wait()
            job_id = await announced.defer_async()
            with anyio.fail_after(2):
                await ran.wait()
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_job_deferred_from_a_sync_task_wakes_the_worker(app: App) -> None:
    """A sync task (a worker thread) defers a job: its NOTIFY reaches the worker's loop."""
    ran = anyio.Event()

    @app.task(name="follow_up")
    async def follow_up() -> None:
        ran.set()

    @app.task(name="spawner")
    def spawner() -> None:
        follow_up.defer()

    with listening(app) as listened:
        async with running(make_worker(app, concurrency=2, fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await listened.wait()
            await spawner.defer_async()
            with anyio.fail_after(3):
                await ran.wait()
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


@postgres_only("terminates the worker's LISTEN backend with pg_terminate_backend")
async def test_job_deferred_while_the_listener_reconnects_is_taken(app: App, admin: App) -> None:
    """A NOTIFY lost while LISTEN was down does not strand the job: it runs at once."""
    ran = anyio.Event()

    @app.task(name="unheard")
    async def unheard() -> None:
        ran.set()

    with listening(app) as listened:
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await listened.wait()
            await admin.connector.execute_query_async(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
            )
            job_id = await unheard.defer_async()
            with anyio.fail_after(3):
                await ran.wait()
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_jobs_sharing_a_lock_never_overlap_and_keep_order(app: App) -> None:
    """concurrency=4: jobs of one lock run one at a time, in id order; other locks overlap."""
    intervals: dict[str, list[tuple[int, float, float]]] = collections.defaultdict(list)
    in_progress = Concurrency()

    @app.task(name="locked")
    async def locked(lock: str, n: int) -> None:
        start = time.monotonic()
        with in_progress:
            await anyio.sleep(0.02)  # the behaviour: jobs long enough to overlap
        intervals[lock].append((n, start, time.monotonic()))

    for n in range(6):
        for lock in ("L", "M"):
            await locked.configure(lock=lock).defer_async(lock=lock, n=n)
    await work(app, concurrency=4)
    for lock in ("L", "M"):
        assert [n for n, _, _ in intervals[lock]] == list(range(6))
        assert overlaps([(start, end) for _, start, end in intervals[lock]]) == []
    assert in_progress.most == 2  # one job per lock at a time, both locks at once
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


async def test_future_job_does_not_block_its_lock(app: App) -> None:
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
    assert await job_states(app) == {future: ("todo", 0), ready: ("succeeded", 1)}


async def test_batch_never_takes_two_jobs_of_one_lock(app: App) -> None:
    """concurrency=10, 20 jobs of one lock: all succeed, never overlapping, no fetch error."""
    intervals: list[tuple[float, float]] = []
    order: list[int] = []

    @app.task(name="one_lock")
    async def one_lock(n: int) -> None:
        start = time.monotonic()
        await anyio.sleep(0.005)  # the behaviour: jobs long enough to overlap
        order.append(n)
        intervals.append((start, time.monotonic()))

    await one_lock.configure(lock="only").batch_defer_async(*({"n": n} for n in range(20)))
    worker = make_worker(app, wait=False, concurrency=10)
    with anyio.fail_after(10):
        await worker.run()
    assert order == list(range(20))
    assert overlaps(intervals) == []
    assert worker.stats.loop_restarts == collections.Counter()
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


@pytest.mark.parametrize(
    ("delete_jobs", "kept"),
    [("never", {"ok", "ko"}), ("successful", {"ko"}), ("always", set())],
)
async def test_delete_jobs(app: App, delete_jobs: str, kept: set[str]) -> None:
    """delete_jobs removes the rows of finished jobs it names and keeps the others."""

    @app.task(name="ok")
    async def ok() -> None: ...

    @app.task(name="ko")
    async def ko() -> None:
        raise ValueError

    await ok.defer_async()
    await ko.defer_async()
    await work(app, delete_jobs=delete_jobs)
    expected = {"ok": "succeeded", "ko": "failed"}
    assert {job.task_name: job.status for job in await job_rows(app)} == {
        name: expected[name] for name in kept
    }


async def test_periodic_task_is_deferred_and_run(app: App) -> None:
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
    assert [job.task_kwargs["timestamp"] for job in rows] == stamps
    assert {job.status for job in rows} == {"succeeded"}


async def test_two_workers_defer_a_periodic_task_once_per_tick(app: App) -> None:
    """Two workers (two Apps on one database) defer each second's job once between them."""
    stamps: list[int] = []
    done = anyio.Event()
    async with same_database(app) as other:
        for each in (app, other):

            @each.periodic(cron="* * * * * *")
            @each.task(name="tick")
            async def tick(timestamp: int) -> None:
                stamps.append(timestamp)
                if len(set(stamps)) >= 3:
                    done.set()

        async with running(*(make_worker(each, concurrency=2) for each in (app, other))):
            with anyio.fail_after(5):
                await done.wait()
    deferred = collections.Counter(job.task_kwargs["timestamp"] for job in await job_rows(app))
    assert len(deferred) >= 3
    assert set(deferred.values()) == {1}
    assert collections.Counter(stamps).most_common(1)[0][1] == 1
