"""Recovery: stalled and pruned workers, terminated backends, bad input, bad tasks.

On connector x runtime, except where a scenario needs real PostgreSQL backends. The
original guide's "worker fault tolerance" (exceptions of every kind fail only their job)
lives in test_durability.py (TestWorkerResilience).
"""

from __future__ import annotations

import collections
from typing import Any

import anyio
import procrastinate
import pytest

from dawdle import App
from dawdle.backoff import Constant, RetryPolicy
from tests.durability.worker.helpers import (
    insert_raw_job,
    job_row,
    job_states,
    make_worker,
    postgres_only,
    run_until,
    running,
    strand_with_dead_worker,
    work,
    worker_ids,
)

pytestmark = pytest.mark.anyio

TERMINATE_WORKER_BACKENDS = (
    "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend'"
)


async def test_stalled_job_of_a_dead_worker_is_recovered_and_run(app: App) -> None:
    """A job left doing by a worker silent for an hour goes back to todo and succeeds."""
    done = anyio.Event()

    @app.task(name="orphan")
    async def orphan() -> None:
        done.set()

    job_id = await orphan.defer_async()
    await strand_with_dead_worker(app, job_id)
    worker = make_worker(app, stalled_worker_timeout=1, update_heartbeat_interval=0.1)
    await run_until(worker, done)
    job = await job_row(app, job_id)
    # The recovery ends the dead worker's run without spending an attempt (its worker died,
    # the task did not fail); the new run succeeds, the job's first attempt.
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert await worker_ids(app) == []


async def test_live_workers_jobs_are_not_recovered(app: App) -> None:
    """A job running past several stalled-worker timeouts, heartbeats fresh: runs once."""
    runs = 0

    @app.task(name="long")
    async def long() -> None:
        nonlocal runs
        runs += 1
        await anyio.sleep(2.5)  # the behaviour: longer than twice stalled_worker_timeout

    job_id = await long.defer_async()
    # Not much shorter: fencing stops a job whose heartbeats are late by a fraction of that.
    await work(app, concurrency=2, stalled_worker_timeout=1.0, update_heartbeat_interval=0.1)
    assert runs == 1
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_pruned_worker_keeps_taking_jobs(app: App) -> None:
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
        # What another worker does to one whose heartbeat is too old (here: any).
        assert await app.job_manager.prune_stalled_workers(0)
        assert await worker_ids(app) == []
        await step.defer_async(n=2)
        with anyio.fail_after(2):
            await second.wait()
    assert ran == [1, 2]
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


@postgres_only("pg_terminate_backend needs real server backends")
async def test_terminated_backends_lose_and_repeat_no_job(app: App, admin: App) -> None:
    """pg_terminate_backend on all the worker's connections, twice: each job runs once."""
    ran: list[int] = []
    terminations: list[int] = []

    @app.task(name="tracked", pass_context=True)
    async def tracked(context: procrastinate.JobContext) -> None:
        assert context.job.id is not None
        ran.append(context.job.id)
        if len(ran) in {10, 25}:
            row = await admin.connector.execute_query_one_async(TERMINATE_WORKER_BACKENDS)
            terminations.append(row["n"])
        await anyio.sleep(0.005)  # the behaviour: jobs in progress while backends die

    ids = await tracked.batch_defer_async(*({} for _ in range(40)))
    await work(app, concurrency=3, within=15)
    assert len(terminations) == 2
    assert all(n >= 1 for n in terminations)
    assert collections.Counter(ran) == collections.Counter(ids)
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


@postgres_only("pg_terminate_backend needs real server backends")
async def test_backends_terminated_again_and_again(app: App, admin: App) -> None:
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
            row = await admin.connector.execute_query_one_async(TERMINATE_WORKER_BACKENDS)
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
    assert set((await job_states(app)).values()) == {("succeeded", 1)}


async def test_unknown_task_fails_and_the_worker_goes_on(app: App) -> None:
    """unknown_tasks="fail": a row naming a task this app lacks ends failed; the next succeeds."""

    @app.task(name="known")
    async def known() -> None: ...

    unknown_id = await insert_raw_job(app, "no.such.task")
    known_id = await known.defer_async()
    await work(app, concurrency=1, unknown_tasks="fail")
    assert await job_states(app) == {unknown_id: ("failed", 1), known_id: ("succeeded", 1)}


async def test_base_exception_is_retried_per_policy(app: App) -> None:
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
    assert await job_states(app) == {job_id: ("succeeded", 2)}


async def test_wrong_arguments_fail_the_job(app: App) -> None:
    """Arguments the function does not take (TypeError) end the job failed."""

    @app.task(name="strict")
    async def strict(a: int) -> None: ...

    bad_id = await strict.defer_async(b=1)  # type: ignore[call-arg]
    good_id = await strict.defer_async(a=1)
    await work(app, concurrency=1)
    assert await job_states(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}


@pytest.mark.parametrize("args", ["[1, 2]", '"text"', "null", "3"])
async def test_arguments_that_are_not_an_object_fail_the_job(app: App, args: str) -> None:
    """A row whose args are JSON but not an object ends failed; the worker goes on."""

    @app.task(name="takes_kwargs")
    async def takes_kwargs(**kwargs: Any) -> None: ...

    bad_id = await insert_raw_job(app, "takes_kwargs", args)
    good_id = await takes_kwargs.defer_async()
    await work(app, concurrency=1)
    assert await job_states(app) == {bad_id: ("failed", 1), good_id: ("succeeded", 1)}
