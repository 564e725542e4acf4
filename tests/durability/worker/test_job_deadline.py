"""A RetryPolicy's `deadline` on jobs, counted from the job's first run; its `on_retry` hook.

The first run is read from Procrastinate's `procrastinate_events` in the claim's statement.
On connector x runtime, except where a test says why not.
"""

from __future__ import annotations

import time

import anyio
import procrastinate
import pytest

from dawdle import App, InMemoryConnector, RetryPolicy
from dawdle.backoff import Constant, RetryEvent
from tests.durability.worker.helpers import (
    actions,
    backdate_first_run,
    job_row,
    job_states,
    make_worker,
    postgres_only,
    running,
    work,
)

pytestmark = pytest.mark.anyio

# How much later than it was due a job may begin: its claim's round trip, on a busy machine.
CLAIM_SLACK = 0.25


async def test_a_deadline_ends_the_retries_of_a_job_without_max_attempts(app: App) -> None:
    """RetryPolicy(deadline=1, max_attempts=None) fails a job that always fails, about 1 s in."""
    runs: list[float] = []

    @app.task(
        name="hopeless",
        retry=RetryPolicy(backoff=Constant(0.1), max_attempts=None, deadline=1.0),
    )
    async def hopeless() -> None:
        runs.append(time.monotonic())
        raise ConnectionError("down")

    job_id = await hopeless.defer_async()
    with actions() as log:
        failed = log.reached("job_error")
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await failed.wait()
    job = await job_row(app, job_id)
    assert job.status == "failed"
    assert 3 <= job.attempts == len(runs) <= 11
    # The last retry was due within the deadline; it began once claimed, a little later on
    # a busy machine (2 ms late was seen), so the bound allows for the claim.
    assert runs[-1] - runs[0] <= 1.0 + CLAIM_SLACK
    [record] = log.of("job_error")
    assert "deadline" in record.getMessage()


async def test_the_deadline_counts_from_a_first_run_recorded_long_ago(app: App) -> None:
    """A job whose first run began an hour ago fails at once past its 60 s deadline."""

    @app.task(name="old", retry=RetryPolicy(max_attempts=None, deadline=60))
    async def old() -> None:
        raise ConnectionError("still down")

    job_id = await old.defer_async()
    await backdate_first_run(app, job_id, 3600)
    with actions() as log:
        await work(app)
    assert await job_states(app) == {job_id: ("failed", 1)}
    [record] = log.of("job_error")
    assert "60s deadline" in record.getMessage()
    assert log.of("job_first_run_unknown") == []


async def test_a_job_that_ran_before_without_events_counts_from_this_run_and_says_so(
    app: App,
) -> None:
    """A job that ran before with no 'started' event: its deadline counts from this run, said."""
    runs = 0

    @app.task(name="amnesiac", retry=RetryPolicy(backoff=Constant(0.05), deadline=60))
    async def amnesiac() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("once")

    job_id = await amnesiac.defer_async()
    await set_attempts(app, job_id, 1)
    with actions() as log:
        done = log.reached("job_success")
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await done.wait()
    assert await job_states(app) == {job_id: ("succeeded", 3)}
    [warning] = log.of("job_first_run_unknown")
    assert "counts from this run" in warning.getMessage()


async def test_on_retry_gets_the_event_the_retry_is_logged_from(app: App) -> None:
    """on_retry receives job id, attempt, delay and reason; the log record carries the same."""
    events: list[RetryEvent] = []
    failures = 0

    @app.task(name="noted", retry=RetryPolicy(backoff=Constant(0.05), on_retry=events.append))
    async def noted() -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise ConnectionError(f"failure {failures}")

    job_id = await noted.defer_async()
    with actions() as log:
        done = log.reached("job_success")
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await done.wait()
    assert [(event.job_id, event.attempt, event.delay) for event in events] == [
        (job_id, 1, 0.05),
        (job_id, 2, 0.05),
    ]
    assert [str(event.exception) for event in events] == ["failure 1", "failure 2"]
    retries = log.of("job_error_retry")
    assert [getattr(record, "retry_reason", None) for record in retries] == [
        event.reason for event in events
    ]
    assert [getattr(record, "retry_delay", None) for record in retries] == [0.05, 0.05]
    assert events[0].reason in retries[0].getMessage()


async def test_a_failing_on_retry_hook_is_logged_and_the_job_still_retried(app: App) -> None:
    """A hook that raises is logged (retry_hook_failed); the retry goes ahead."""

    def broken(event: RetryEvent) -> None:
        raise RuntimeError("hook bug")

    failed = False

    @app.task(name="hooked", retry=RetryPolicy(backoff=Constant(0.05), on_retry=broken))
    async def hooked() -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise ConnectionError

    job_id = await hooked.defer_async()
    with actions() as log:
        done = log.reached("job_success")
        async with running(make_worker(app, fetch_job_polling_interval=30)):
            with anyio.fail_after(5):
                await done.wait()
    assert await job_states(app) == {job_id: ("succeeded", 2)}
    [record] = log.of("retry_hook_failed")
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


@postgres_only("Procrastinate's own worker and PsycopgConnector share the database")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_first_run_on_procrastinates_worker_starts_the_deadline(
    app: App, schema_dsn: str
) -> None:
    """Asyncio only (Procrastinate's worker needs it): its run's start is the first run."""
    deadline = 0.5

    @app.task(name="interop.slow", retry=RetryPolicy(max_attempts=None, deadline=deadline))
    async def slow() -> None:
        raise ConnectionError("dawdle's run")

    upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=schema_dsn))

    @upstream.task(
        name="interop.slow", retry=procrastinate.RetryStrategy(max_attempts=1, wait=3600)
    )
    async def upstream_slow() -> None:
        await anyio.sleep(deadline + 0.1)  # the behaviour: a first run longer than the deadline
        raise ConnectionError("Procrastinate's run")

    job_id = await slow.defer_async()
    async with upstream.open_async():
        with anyio.fail_after(10):
            await upstream.run_worker_async(wait=False, install_signal_handlers=False)
    assert await job_states(app) == {job_id: ("todo", 1)}
    await app.connector.execute_query_async(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = %(id)s", id=job_id
    )
    with actions() as log:
        await work(app)
    # Measured from dawdle's run alone, the deadline was not reached: it would retry.
    assert await job_states(app) == {job_id: ("failed", 2)}
    [record] = log.of("job_error")
    assert "deadline" in record.getMessage()


async def test_the_claim_that_reads_first_runs_leaves_paused_queues_alone(app: App) -> None:
    """A task with a deadline in a paused queue waits; the same task elsewhere runs."""
    ran: list[str] = []

    @app.task(name="timed", retry=RetryPolicy(deadline=60))
    async def timed(queue: str) -> None:
        ran.append(queue)

    await app.pause_queue_async("held")
    try:
        held = await timed.configure(queue="held").defer_async(queue="held")
        free = await timed.configure(queue="free").defer_async(queue="free")
        await work(app)
    finally:
        await app.resume_queue_async("held")  # pauses outlive the test's truncation
    assert ran == ["free"]
    assert await job_states(app) == {held: ("todo", 0), free: ("succeeded", 1)}


@postgres_only("the in-memory database always has dawdle's tables")
async def test_without_the_pauses_table_the_deadline_still_counts_from_the_first_run(
    app: App, without_pauses_table: None
) -> None:
    """No dawdle_queue_pauses: the claim that ignores pauses reads first runs too."""

    @app.task(name="old", retry=RetryPolicy(max_attempts=None, deadline=60))
    async def old() -> None:
        raise ConnectionError("still down")

    job_id = await old.defer_async()
    await backdate_first_run(app, job_id, 3600)
    await work(app)
    assert await job_states(app) == {job_id: ("failed", 1)}


async def set_attempts(app: App, job_id: int, attempts: int) -> None:
    """Give the job `attempts` as if it ran before, with no event to say when."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        connector.jobs[job_id]["attempts"] = attempts
        return
    await connector.execute_query_async(
        "UPDATE procrastinate_jobs SET attempts = %(n)s WHERE id = %(id)s", n=attempts, id=job_id
    )
