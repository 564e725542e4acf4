"""Snooze: a task raises `dawdle.Snooze` and its job runs again later, no attempt spent.

On connector x runtime.
"""

from __future__ import annotations

import datetime
import itertools
import time

import anyio
import anyio.from_thread
import procrastinate
import pytest

from dawdle import App, Outcome, RetryPolicy, Snooze
from tests.durability.worker.helpers import (
    actions,
    job_events,
    job_row,
    job_states,
    make_worker,
    run_until,
    work,
)

pytestmark = pytest.mark.anyio

SNOOZE = 0.3


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_snoozed_job_runs_again_later_without_spending_an_attempt(
    app: App, kind: str
) -> None:
    """Snoozed three times under max_attempts=1, then run: succeeded with attempts 1."""
    starts: list[float] = []
    done = anyio.Event()
    policy = RetryPolicy(max_attempts=1)

    def run() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 3:
            raise Snooze(SNOOZE)

    if kind == "async":

        @app.task(name="napper", retry=policy)
        async def napper() -> None:
            run()
            done.set()

    else:

        @app.task(name="napper", retry=policy)
        def napper() -> None:
            run()
            anyio.from_thread.run_sync(done.set)

    job_id = await napper.defer_async()
    worker = make_worker(app, fetch_job_polling_interval=30)
    with actions() as log:
        await run_until(worker, done, within=10)
    assert await job_states(app) == {job_id: ("succeeded", 1)}
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 3
    assert all(gap >= SNOOZE for gap in gaps), gaps
    assert worker.stats.jobs[Outcome.SNOOZED] == 3
    snoozed = log.of("job_snoozed")
    assert len(snoozed) == 3
    assert "snoozed for 0.3 s" in snoozed[0].getMessage()
    events = await job_events(app, job_id)
    assert events.count("started") == 4
    assert events.count("deferred_for_retry") == 3


async def test_snooze_until_an_aware_datetime_schedules_the_job_then(app: App) -> None:
    """Snooze(datetime) leaves the job 'todo', scheduled at exactly that time, attempts 0."""
    until = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(hours=1)

    @app.task(name="later")
    async def later() -> None:
        raise Snooze(until)

    job_id = await later.defer_async()
    await work(app)
    job = await job_row(app, job_id)
    assert (job.status, job.attempts, job.scheduled_at) == ("todo", 0, until)


async def test_a_snooze_of_a_job_asked_to_abort_ends_it_aborted(app: App) -> None:
    """A job whose abort was requested during its run does not come back when it snoozes."""

    @app.task(name="doomed", pass_context=True)
    async def doomed(context: procrastinate.JobContext) -> None:
        assert context.job.id is not None
        await app.job_manager.cancel_job_by_id_async(context.job.id, abort=True)
        raise Snooze(0)

    job_id = await doomed.defer_async()
    with actions() as log:
        await work(app, abort_job_polling_interval=30)
    assert len(log.of("job_snoozed")) == 1  # the run ended by its snooze, not cancelled
    assert (await job_row(app, job_id)).status == "aborted"


async def test_a_bad_snooze_fails_the_job_naming_the_value(app: App) -> None:
    """Snooze(-1) raises ConfigurationError in the task: the job fails with that one line."""

    @app.task(name="confused")
    async def confused() -> None:
        raise Snooze(-1)

    job_id = await confused.defer_async()
    with actions() as log:
        await work(app)
    assert await job_states(app) == {job_id: ("failed", 1)}
    [failed] = log.of("job_error")
    assert "ConfigurationError: Snooze: seconds must be a finite number >= 0, got -1" in (
        failed.getMessage()
    )
