"""Retries: what the retry strategy sees, what it decides, and when the job runs again.

On connector x runtime. The original guide's retry scenarios live in test_durability.py:
a job failing twice then succeeding (TestTaskDurability), exponential backoff until the last
attempt and Procrastinate's RetryStrategy (TestJobRecovery).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import procrastinate
import pytest
from procrastinate import jobs

from dawdle import App
from dawdle._sql import FETCH_JOBS, RECORD_OUTCOMES
from dawdle.backoff import Constant, RetryPolicy
from tests.durability.worker.helpers import (
    job_row,
    job_states,
    listening,
    make_worker,
    postgres_only,
    run_until,
    running,
    work,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_task_exception_reaches_retry_strategy_unwrapped(app: App, kind: str) -> None:
    """RetryStrategy(retry_exceptions=[ValueError]) retries a ValueError from any task."""
    strategy = procrastinate.RetryStrategy(max_attempts=1, retry_exceptions=[ValueError])
    runs: list[int] = []
    done = anyio.Event()

    if kind == "async":

        @app.task(name="picky", retry=strategy)
        async def picky() -> None:
            runs.append(1)
            if len(runs) == 2:
                done.set()
            raise ValueError("retry me")

    else:

        @app.task(name="picky", retry=strategy)
        def picky() -> None:
            runs.append(1)
            if len(runs) == 2:
                anyio.from_thread.run_sync(done.set)
            raise ValueError("retry me")

    job_id = await picky.defer_async()
    await run_until(make_worker(app), done)
    assert len(runs) == 2
    assert await job_states(app) == {job_id: ("failed", 2)}


async def test_failure_due_later_is_left_todo_with_its_attempt_counted(app: App) -> None:
    """A failure retried in 30 s is put back as todo, attempts 1, not left doing."""

    @app.task(name="flaky", retry=RetryPolicy(backoff=Constant(30.0), max_attempts=3))
    async def flaky() -> None:
        raise ConnectionError

    job_id = await flaky.defer_async()
    await work(app)
    job = await job_row(app, job_id)
    assert (job.status, job.attempts) == ("todo", 1)
    assert job.scheduled_at is not None
    assert 25 < job.scheduled_at.timestamp() - time.time() <= 30


async def test_wait_false_does_not_return_while_a_retry_is_due(app: App) -> None:
    """wait=False reruns a job retried at once, even if the fetch raced the retry's write.

    The race, made certain: the write of the first run's outcome waits until a fetch has
    read the job (still doing), and that fetch returns only once the write is done. The
    write woke the fetcher meanwhile; returning then leaves a due job behind.
    """
    runs = 0
    armed = False
    fetched = anyio.Event()
    written = anyio.Event()
    connector: Any = app.connector
    fetch_all = connector.execute_query_all_async
    write_one = connector.execute_query_one_async

    async def execute_query_all_async(query: str, **arguments: Any) -> Any:
        rows = await fetch_all(query, **arguments)
        if query == FETCH_JOBS and armed and not fetched.is_set():
            fetched.set()
            with anyio.move_on_after(2):
                await written.wait()
            await anyio.lowlevel.checkpoint()  # the writer ends its round first
        return rows

    async def execute_query_one_async(query: str, **arguments: Any) -> Any:
        if query == RECORD_OUTCOMES and armed and not written.is_set():
            with anyio.move_on_after(2):
                await fetched.wait()
            row = await write_one(query, **arguments)
            written.set()
            return row
        return await write_one(query, **arguments)

    @app.task(name="again", retry=procrastinate.RetryStrategy(max_attempts=1, wait=0))
    async def again() -> None:
        nonlocal runs, armed
        runs += 1
        if runs == 1:
            armed = True
            raise ConnectionError

    job_id = await again.defer_async()
    connector.execute_query_all_async = execute_query_all_async
    connector.execute_query_one_async = execute_query_one_async
    try:
        await work(app)
    finally:
        del connector.execute_query_all_async, connector.execute_query_one_async
    assert fetched.is_set()
    assert written.is_set()
    assert runs == 2
    assert await job_states(app) == {job_id: ("succeeded", 2)}


async def test_retries_due_at_different_times_are_each_picked_up(app: App) -> None:
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
    assert set((await job_states(app)).values()) == {("succeeded", 2)}
    assert elapsed < 3


@postgres_only("holds the fetch on a PostgreSQL table lock, seen in pg_stat_activity")
async def test_retry_due_during_a_slow_fetch_is_not_forgotten(app: App, admin: App) -> None:
    """A fetch that starts before a retry is due and ends after it does not lose the wake-up.

    The fetch is held on a table lock across the due time (as load or a lagging database
    clock would); the worker must still rerun the job at once, not at the 30 s poll.
    """
    runs = 0
    failed = anyio.Event()
    done = anyio.Event()

    @app.task(name="held_back", retry=RetryPolicy(backoff=Constant(0.6), max_attempts=2))
    async def held_back() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            failed.set()
            raise ConnectionError
        done.set()

    job_id = await held_back.defer_async()
    with listening(app) as listened:
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await listened.wait()
                await failed.wait()
                # The outcome is written by the worker's writer: a bounded poll for it.
                while (job := await job_row(app, job_id)).attempts != 1:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            assert job.scheduled_at is not None
            due = job.scheduled_at.timestamp()
            async with admin.connector.connection() as conn, conn.transaction():
                await conn.execute("LOCK TABLE procrastinate_jobs IN SHARE MODE")
                # A NOTIFY makes the worker fetch now, before the retry is due.
                await app.connector.execute_query_async(
                    "SELECT pg_notify('procrastinate_any_queue_v1', "
                    '\'{"type": "job_inserted", "job_id": 0}\')'
                )
                # The fetch waits on the table lock, or behind the stalled-job recovery that
                # shares its claim lock and waits on the table lock itself (as it does when
                # its first round comes late): either way the fetch is held.
                with anyio.fail_after(3):
                    while not await app.connector.execute_query_all_async(  # noqa: ASYNC110
                        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' "
                        "AND (query LIKE '%%candidate%%' OR query LIKE '%%stalled%%')"
                    ):
                        await anyio.sleep(0.02)
                assert time.time() < due, "too slow to hold the fetch before the retry was due"
                await anyio.sleep(due - time.time() + 0.1)  # the behaviour: hold it past due
            with anyio.fail_after(2):
                await done.wait()
    assert await job_states(app) == {job_id: ("succeeded", 2)}


async def test_retry_decision_moves_queue_priority_and_lock(app: App) -> None:
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
    done = anyio.Event()

    @app.task(name="mover", pass_context=True, retry=Move())
    async def mover(context: procrastinate.JobContext) -> None:
        seen.append((context.job.queue, context.job.priority, context.job.lock))
        if len(seen) == 1:
            raise ValueError
        done.set()

    job_id = await mover.defer_async()
    await run_until(make_worker(app), done)
    assert seen == [("default", 0, None), ("second", 7, "moved")]
    job = await job_row(app, job_id)
    assert (job.status, job.attempts) == ("succeeded", 2)
    assert (job.queue, job.priority, job.lock) == ("second", 7, "moved")


async def test_retry_policy_that_raises_fails_the_job(app: App) -> None:
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
    assert await job_states(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}
