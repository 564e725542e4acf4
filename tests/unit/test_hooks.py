"""Hooks on the in-memory connector and virtual clocks: registration, events, broken hooks.

A worker runs here on each runtime's virtual clock, so durations and claim latencies are
exact: a task that sleeps 2 s takes 2 s on the loop's clock, at once on the wall's.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from procrastinate.jobs import Job

from dawdle import (
    App,
    ConfigurationError,
    Hooks,
    InMemoryConnector,
    JobFinished,
    JobRetried,
    JobsClaimed,
    JobSnoozed,
    JobStarted,
    LoopRestarted,
    Outcome,
    Snooze,
    Worker,
)
from dawdle._hooks_dispatch import HookDispatch
from dawdle._worker.store import Claimed, JobStore
from dawdle.backoff import Constant, RetryPolicy
from tests.hooks_recorder import (
    Recorder,
    check_context_reaches_the_tasks,
    check_queue_time_counts_from_the_due_time,
    fail_first_call,
)

pytestmark = pytest.mark.anyio


class Quiet(Hooks):
    """A hook that overrides nothing."""


class Broken(Hooks):
    """Raises in `job_started`, every time it is called."""

    def __init__(self) -> None:
        self.calls = 0

    def job_started(self, event: JobStarted) -> None:
        self.calls += 1
        raise RuntimeError("broken hook")


def quiet_worker(app: App, **options: Any) -> Worker:
    """A worker that stops once nothing is ready, with no signal handlers."""
    return Worker(app, **{"wait": False, "install_signal_handlers": False, **options})


# -- registration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hooks", "named"),
    [
        ([object()], "got a <object object"),
        ([Quiet], "got the class <class"),
        (Quiet(), "must be a list of dawdle.Hooks, got <tests.unit.test_hooks.Quiet"),
        ("hooks", "must be a list of dawdle.Hooks, got 'hooks'"),
        (42, "must be a list of dawdle.Hooks, got 42"),
    ],
)
def test_bad_hooks_are_named(
    in_memory_connector: InMemoryConnector, hooks: object, named: str
) -> None:
    """App and Worker refuse anything but Hooks instances, naming what they got."""
    with pytest.raises(ConfigurationError, match=f"App: .*{named}"):
        App(connector=in_memory_connector, hooks=hooks)  # type: ignore[arg-type]
    app = App(connector=in_memory_connector)
    with pytest.raises(ConfigurationError, match=f"Worker: .*{named}"):
        Worker(app, hooks=hooks)  # type: ignore[arg-type]


def test_worker_hooks_follow_the_apps_each_once(in_memory_connector: InMemoryConnector) -> None:
    """The app's hooks come first, then the worker's; a hook given to both is called once."""
    first, second = Quiet(), Quiet()
    app = App(connector=in_memory_connector, hooks=[first])
    assert app.hooks == (first,)
    assert Worker(app, hooks=[second, first]).settings.hooks == (first, second)
    assert Worker(app).settings.hooks == (first,)


async def test_run_worker_async_takes_hooks(in_memory_app: App) -> None:
    """`run_worker_async(hooks=...)` adds to the app's hooks."""
    recorder = Recorder()

    @in_memory_app.task(name="noop")
    async def noop() -> None: ...

    job_id = await noop.defer_async()
    await in_memory_app.run_worker_async(
        wait=False, install_signal_handlers=False, hooks=[recorder]
    )
    assert recorder.names(job_id) == ["job_started", "job_finished"]


# -- the dispatcher -----------------------------------------------------------------------------


def test_a_raising_hook_is_logged_once_and_removed(caplog: pytest.LogCaptureFixture) -> None:
    """The broken hook gets one call; the others get every event, before and after it."""
    seen: list[str] = []

    class Before(Hooks):
        def job_started(self, event: JobStarted) -> None:
            seen.append("before")

    class After(Hooks):
        def job_started(self, event: JobStarted) -> None:
            seen.append("after")

    broken = Broken()
    hooks = HookDispatch([Before(), broken, After()])
    event = JobStarted(job=None, attempt=1, queue_time=None)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="dawdle.hooks"):
        for _ in range(3):
            hooks.emit(event)
    assert broken.calls == 1
    assert seen == ["before", "after"] * 3
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.action == "hook_failed"  # type: ignore[attr-defined]
    assert record.hook == "tests.unit.test_hooks.Broken"  # type: ignore[attr-defined]
    assert record.event == "job_started"  # type: ignore[attr-defined]
    assert "tests.unit.test_hooks.Broken failed in job_started" in record.getMessage()
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "broken hook"


def test_only_overridden_methods_receive_events() -> None:
    """An event no hook overrides is not wanted: the worker need not build it."""
    hooks = HookDispatch([Quiet(), Broken()])
    assert hooks.wants(JobStarted)
    assert not hooks.wants(JobFinished)
    assert not HookDispatch([]).wants(JobStarted)


def test_trace_contexts_are_wanted_while_a_hook_that_wants_them_is_there() -> None:
    """Only a hook that says so makes the worker read them; once it is removed, no more."""

    class BrokenTracer(Broken):
        wants_trace_context = True

    assert not HookDispatch([Quiet(), Broken()]).wants_trace_context()
    hooks = HookDispatch([Quiet(), BrokenTracer()])
    assert hooks.wants_trace_context()
    job = Job(id=1, queue="q", lock=None, queueing_lock=None, task_name="t", task_kwargs={})
    hooks.emit(JobStarted(job, attempt=1, queue_time=None))
    assert not hooks.wants_trace_context()


# -- a worker's events --------------------------------------------------------------------------


async def test_a_run_reports_its_duration_on_the_loops_clock(in_memory_app: App) -> None:
    """A task that sleeps 2 s: claimed, started (no queue time), finished in 2 s, succeeded."""
    recorder = Recorder()

    @in_memory_app.task(name="two_seconds")
    async def two_seconds() -> int:
        await anyio.sleep(2)  # virtual: the behaviour is the duration the hook receives
        return 42

    job_id = await two_seconds.defer_async()
    worker = quiet_worker(in_memory_app, hooks=[recorder])
    await worker.run()
    assert recorder.names(job_id) == ["job_started", "job_finished"]
    [started] = recorder.of(JobStarted)
    assert (started.job.id, started.attempt, started.queue_time) == (job_id, 1, None)
    [finished] = recorder.of(JobFinished)
    assert finished.outcome is Outcome.SUCCEEDED
    assert 2.0 <= finished.duration < 2.1
    assert (finished.attempt, finished.result, finished.exception) == (1, 42, None)
    assert finished.context is started.context
    assert finished.context is not None
    assert finished.context.worker_name == "worker"
    assert worker.stats.jobs == {Outcome.SUCCEEDED: 1}
    claims = recorder.of(JobsClaimed)
    assert claims[0].count == 1
    assert claims[-1].count == 0  # the claim that found nothing left


async def test_queue_time_counts_from_the_jobs_due_time(in_memory_app: App) -> None:
    """A job due a minute ago waited a minute (the wall's clock: the database's time)."""

    async def run(recorder: Recorder) -> None:
        await quiet_worker(in_memory_app, hooks=[recorder]).run()

    await check_queue_time_counts_from_the_due_time(in_memory_app, run)


async def test_failure_retry_and_snooze_in_order(in_memory_app: App) -> None:
    """Each run: job_started, then job_retried or job_snoozed if so, then job_finished."""
    recorder = Recorder()
    runs: dict[str, int] = {"flaky": 0, "sleepy": 0}

    @in_memory_app.task(name="flaky", retry=RetryPolicy(backoff=Constant(0), max_attempts=2))
    async def flaky() -> None:
        runs["flaky"] += 1
        if runs["flaky"] == 1:
            raise ValueError("first run fails")

    @in_memory_app.task(name="sleepy")
    async def sleepy() -> None:
        runs["sleepy"] += 1
        if runs["sleepy"] == 1:
            raise Snooze(0)

    @in_memory_app.task(name="broken")
    async def broken() -> None:
        raise KeyError("no such thing")

    flaky_id = await flaky.defer_async()
    sleepy_id = await sleepy.defer_async()
    broken_id = await broken.defer_async()
    worker = quiet_worker(in_memory_app, hooks=[recorder])
    await worker.run()
    run = ["job_started", "job_finished"]
    assert recorder.names(flaky_id) == ["job_started", "job_retried", "job_finished", *run]
    assert recorder.names(sleepy_id) == ["job_started", "job_snoozed", "job_finished", *run]
    assert recorder.names(broken_id) == run

    [retried] = recorder.of(JobRetried)
    assert (retried.attempt, retried.delay) == (1, 0.0)
    assert retried.reason == "ValueError on attempt 1; attempt 2 of 2 in 0.000s (backoff)"
    [snoozed] = recorder.of(JobSnoozed)
    assert snoozed.delay == 0.0

    finished: dict[int | None, list[JobFinished]] = {}
    for event in recorder.of(JobFinished):
        finished.setdefault(event.job.id, []).append(event)
    first_flaky, second_flaky = finished[flaky_id]
    assert (first_flaky.outcome, first_flaky.attempt) == (Outcome.RETRY, 1)
    assert isinstance(first_flaky.exception, ValueError)
    assert first_flaky.retry_at == retried.retry_at
    assert first_flaky.retry_event is not None
    assert first_flaky.retry_event.delay == 0.0
    assert (second_flaky.outcome, second_flaky.attempt) == (Outcome.SUCCEEDED, 2)
    # A snooze spends no attempt: the next run is attempt 1 again.
    snoozed_run, next_run = finished[sleepy_id]
    assert (snoozed_run.outcome, snoozed_run.attempt) == (Outcome.SNOOZED, 1)
    assert snoozed_run.retry_at == snoozed.until
    assert (next_run.outcome, next_run.attempt) == (Outcome.SUCCEEDED, 1)
    [failed] = finished[broken_id]
    assert failed.outcome is Outcome.FAILED
    assert isinstance(failed.exception, KeyError)
    assert worker.stats.jobs == {
        Outcome.RETRY: 1,
        Outcome.SUCCEEDED: 2,
        Outcome.SNOOZED: 1,
        Outcome.FAILED: 1,
    }


async def test_a_timeout_is_reported_and_counted(in_memory_app: App) -> None:
    """An async task cancelled at its timeout: finished FAILED, timed_out, counted once."""
    recorder = Recorder()

    @in_memory_app.task(name="stuck", timeout=1)
    async def stuck() -> None:
        await anyio.sleep(60)  # virtual: past its timeout

    await stuck.defer_async()
    worker = quiet_worker(in_memory_app, hooks=[recorder])
    await worker.run()
    [finished] = recorder.of(JobFinished)
    assert (finished.outcome, finished.timed_out) == (Outcome.FAILED, True)
    assert 1.0 <= finished.duration < 1.1
    assert worker.stats.timed_out == 1


async def test_job_started_sets_context_seen_by_the_task(in_memory_app: App) -> None:
    """A context variable set in job_started: seen by async and sync tasks and job_finished."""

    async def run(recorder: Recorder) -> None:
        await quiet_worker(in_memory_app, hooks=[recorder]).run()

    await check_context_reaches_the_tasks(in_memory_app, run)


async def test_a_broken_hook_never_stops_the_jobs(
    in_memory_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """Its first call fails and removes it; every job still succeeds; one ERROR record."""
    broken, recorder = Broken(), Recorder()

    @in_memory_app.task(name="noop")
    async def noop() -> None: ...

    await noop.batch_defer_async({}, {}, {})
    worker = quiet_worker(in_memory_app, hooks=[broken, recorder])
    with caplog.at_level(logging.ERROR, logger="dawdle.hooks"):
        await worker.run()
    assert broken.calls == 1
    assert worker.stats.jobs == {Outcome.SUCCEEDED: 3}
    assert recorder.names().count("job_started") == 3
    assert [record.action for record in caplog.records] == ["hook_failed"]  # type: ignore[attr-defined]


async def test_claim_latency_on_the_loops_clock(
    in_memory_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim answered 0.25 s after it was sent reports a latency of 0.25 s."""
    recorder = Recorder()
    original = JobStore.claim

    async def slow(store: JobStore, **arguments: Any) -> list[Claimed]:
        await anyio.sleep(0.25)  # virtual: the latency under test
        return await original(store, **arguments)

    monkeypatch.setattr(JobStore, "claim", slow)

    @in_memory_app.task(name="noop")
    async def noop() -> None: ...

    await noop.defer_async()
    await quiet_worker(in_memory_app, hooks=[recorder]).run()
    claims = recorder.of(JobsClaimed)
    assert [claim.count for claim in claims[:2]] == [1, 0]
    assert {claim.count for claim in claims[2:]} <= {0}  # a wake-up may ask once more
    assert all(0.25 <= claim.latency < 0.26 for claim in claims)


async def test_a_failing_claim_restarts_the_claimer(
    in_memory_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claimer's own restart: loop_restarted('claimer'), counted, then the job runs."""
    recorder = Recorder()
    fail_first_call(monkeypatch, JobStore, "claim", ConnectionError("database away"))

    @in_memory_app.task(name="noop")
    async def noop() -> None: ...

    job_id = await noop.defer_async()
    worker = quiet_worker(in_memory_app, hooks=[recorder])
    await worker.run()
    [restarted] = recorder.of(LoopRestarted)
    assert restarted.loop == "claimer"
    assert isinstance(restarted.exception, ConnectionError)
    assert restarted.delay is not None
    assert restarted.delay > 0
    assert worker.stats.loop_restarts == {"claimer": 1}
    assert recorder.names(job_id) == ["job_started", "job_finished"]


async def test_a_failing_supervised_loop_is_reported(
    in_memory_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stalled-jobs loop fails once: loop_restarted('stalled jobs'), counted once."""
    recorder = Recorder()
    fail_first_call(monkeypatch, JobStore, "recover_stalled", ConnectionError("database away"))
    worker = Worker(in_memory_app, hooks=[recorder])
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await recorder.restarted.wait()
        worker.stop()
    [restarted] = recorder.of(LoopRestarted)
    assert (restarted.loop, str(restarted.exception)) == ("stalled jobs", "database away")
    assert worker.stats.loop_restarts == {"stalled jobs": 1}
