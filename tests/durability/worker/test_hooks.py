"""Hooks receive each run's events in order, on a real clock; a broken hook stops nothing.

On connector x runtime.
"""

from __future__ import annotations

import time

import anyio
import anyio.from_thread
import pytest

from dawdle import (
    App,
    Hooks,
    JobFinished,
    JobRetried,
    JobsClaimed,
    JobSnoozed,
    JobStarted,
    LoopRestarted,
    Outcome,
    RetryPolicy,
    Snooze,
)
from dawdle._worker.store import JobStore
from dawdle.backoff import Constant
from tests.durability.worker.helpers import job_states, make_worker, running, work
from tests.hooks_recorder import (
    Recorder,
    check_context_reaches_the_tasks,
    check_queue_time_counts_from_the_due_time,
    fail_first_call,
)

pytestmark = pytest.mark.anyio

RUN = ["job_started", "job_finished"]


def finished_of(recorder: Recorder, job_id: int) -> list[JobFinished]:
    """The job's `JobFinished` events, in order."""
    return [event for event in recorder.of(JobFinished) if event.job.id == job_id]


async def test_each_outcome_in_order(app: App) -> None:
    """Success, failure, retry then success, snooze then success: their events, in order."""
    recorder = Recorder()
    runs: dict[str, int] = {"flaky": 0, "sleepy": 0}

    @app.task(name="ok")
    async def ok() -> str:
        return "done"

    @app.task(name="ko")
    async def ko() -> None:
        raise ValueError("no")

    @app.task(name="flaky", retry=RetryPolicy(backoff=Constant(0.05), max_attempts=2))
    async def flaky() -> None:
        runs["flaky"] += 1
        if runs["flaky"] == 1:
            raise ValueError("first run fails")

    @app.task(name="sleepy")
    def sleepy() -> None:
        runs["sleepy"] += 1
        if runs["sleepy"] == 1:
            raise Snooze(0.05)

    ids = {
        name: await task.defer_async()
        for name, task in {"ok": ok, "ko": ko, "flaky": flaky, "sleepy": sleepy}.items()
    }
    done = anyio.Event()

    class Done(Hooks):
        def job_finished(self, event: JobFinished) -> None:
            if len(recorder.of(JobFinished)) == 6:
                done.set()

    async with running(make_worker(app, hooks=[recorder, Done()])):
        with anyio.fail_after(5):
            await done.wait()
    assert recorder.names(ids["ok"]) == RUN
    assert recorder.names(ids["ko"]) == RUN
    assert recorder.names(ids["flaky"]) == ["job_started", "job_retried", "job_finished", *RUN]
    assert recorder.names(ids["sleepy"]) == ["job_started", "job_snoozed", "job_finished", *RUN]

    [ok_run] = finished_of(recorder, ids["ok"])
    assert (ok_run.outcome, ok_run.result, ok_run.attempt) == (Outcome.SUCCEEDED, "done", 1)
    assert 0 <= ok_run.duration < 5
    [ko_run] = finished_of(recorder, ids["ko"])
    assert ko_run.outcome is Outcome.FAILED
    assert str(ko_run.exception) == "no"
    [retried] = recorder.of(JobRetried)
    assert (retried.attempt, retried.delay) == (1, 0.05)
    assert [run.outcome for run in finished_of(recorder, ids["flaky"])] == [
        Outcome.RETRY,
        Outcome.SUCCEEDED,
    ]
    [snoozed] = recorder.of(JobSnoozed)
    assert 0 <= snoozed.delay <= 0.05
    sleepy_runs = finished_of(recorder, ids["sleepy"])
    assert [(run.outcome, run.attempt) for run in sleepy_runs] == [
        (Outcome.SNOOZED, 1),
        (Outcome.SUCCEEDED, 1),
    ]
    # The runs after a retry or a snooze were due at a known time: their queue time is known.
    started = {event.job.id: event for event in recorder.of(JobStarted)}
    assert started[ids["flaky"]].queue_time is not None
    assert started[ids["sleepy"]].queue_time is not None
    assert started[ids["ok"]].queue_time is None


async def test_put_back_at_shutdown_is_a_run_that_finished(app: App) -> None:
    """A job cancelled by the shutdown: job_started, then job_finished PUT_BACK, attempt 1."""
    recorder = Recorder()
    started = anyio.Event()

    @app.task(name="slow")
    async def slow() -> None:
        started.set()
        await anyio.sleep(10)  # the behaviour: still running at stop()

    job_id = await slow.defer_async()
    worker = make_worker(app, shutdown_graceful_timeout=0.05, hooks=[recorder])
    async with running(worker):
        with anyio.fail_after(5):
            await started.wait()
    assert recorder.names(job_id) == RUN
    [finished] = finished_of(recorder, job_id)
    assert (finished.outcome, finished.attempt) == (Outcome.PUT_BACK, 1)
    assert finished.retry_at is not None
    assert worker.stats.jobs == {Outcome.PUT_BACK: 1}
    assert await job_states(app) == {job_id: ("todo", 0)}


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_run_past_its_timeout_is_marked(app: App, kind: str) -> None:
    """timed_out: an async run cancelled (failed), a sync one that ran on (succeeded)."""
    recorder = Recorder()
    if kind == "async":

        @app.task(name="slow", timeout=0.1)
        async def slow_async() -> None:
            await anyio.sleep(10)  # the behaviour: past its timeout

        expected = Outcome.FAILED
    else:

        @app.task(name="slow", timeout=0.1)
        def slow_sync() -> None:
            time.sleep(0.3)  # the behaviour: a thread past its timeout

        expected = Outcome.SUCCEEDED
    job_id = await app.configure_task("slow").defer_async()
    worker = make_worker(app, wait=False, hooks=[recorder])
    with anyio.fail_after(5):
        await worker.run()
    [finished] = finished_of(recorder, job_id)
    assert (finished.outcome, finished.timed_out) == (expected, True)
    assert finished.duration >= 0.1
    assert worker.stats.timed_out == 1


async def test_context_set_by_job_started_reaches_the_task(app: App) -> None:
    """CURRENT_JOB, set in job_started: the async task, the sync task's thread, job_finished."""

    async def run(recorder: Recorder) -> None:
        await work(app, hooks=[recorder], concurrency=2)

    await check_context_reaches_the_tasks(app, run)


async def test_queue_time_of_a_job_due_a_minute_ago(app: App) -> None:
    """A job scheduled a minute in the past waited about a minute."""

    async def run(recorder: Recorder) -> None:
        await work(app, hooks=[recorder])

    await check_queue_time_counts_from_the_due_time(app, run)


async def test_a_broken_hook_is_dropped_and_the_jobs_go_on(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook raising in job_finished: logged once, removed; all jobs succeed and are written."""
    recorder = Recorder()
    calls = 0

    class Broken(Hooks):
        def job_finished(self, event: JobFinished) -> None:
            nonlocal calls
            calls += 1
            raise RuntimeError("broken hook")

    @app.task(name="noop")
    async def noop() -> None: ...

    await noop.batch_defer_async(*({} for _ in range(5)))
    with caplog.at_level("ERROR", logger="dawdle.hooks"):
        await work(app, hooks=[Broken(), recorder])
    assert calls == 1
    assert len(recorder.of(JobFinished)) == 5
    assert set((await job_states(app)).values()) == {("succeeded", 1)}
    [failure] = [record for record in caplog.records if record.name == "dawdle.hooks"]
    assert failure.getMessage() == (
        "hook tests.durability.worker.test_hooks.test_a_broken_hook_is_dropped_and_the_jobs_go_on"
        ".<locals>.Broken failed in job_finished and is removed from this worker: it gets no "
        "more events"
    )


async def test_claims_report_their_count_and_latency(app: App) -> None:
    """Each claim: how many jobs it took, and how long its answer took."""
    recorder = Recorder()

    @app.task(name="noop")
    async def noop() -> None: ...

    await noop.batch_defer_async(*({} for _ in range(3)))
    await work(app, hooks=[recorder], concurrency=3)
    claims = recorder.of(JobsClaimed)
    assert sum(claim.count for claim in claims) == 3
    assert claims[-1].count == 0
    assert all(0 <= claim.latency < 5 for claim in claims)


async def test_a_failing_claim_is_a_loop_restart(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim fails once: loop_restarted('claimer') with its error, then the job runs."""
    recorder = Recorder()
    fail_first_call(monkeypatch, JobStore, "claim", ConnectionError("database away"))

    @app.task(name="noop")
    async def noop() -> None: ...

    job_id = await noop.defer_async()
    worker = make_worker(app, wait=False, hooks=[recorder])
    with anyio.fail_after(5):
        await worker.run()
    [restarted] = recorder.of(LoopRestarted)
    assert (restarted.loop, str(restarted.exception)) == ("claimer", "database away")
    assert worker.stats.loop_restarts == {"claimer": 1}
    assert recorder.names(job_id) == RUN
    assert await job_states(app) == {job_id: ("succeeded", 1)}
