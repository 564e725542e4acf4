"""Who spends a job's attempts: its task's runs do; runs cut short by a worker's end do not.

A put-back at shutdown and a recovery from a dead worker leave `attempts` as it was, so
rolling restarts never use up `max_attempts`; Procrastinate's trigger still records each
such run ('started', then 'deferred_for_retry'). On connector x runtime, except where a
test says why not.
"""

from __future__ import annotations

import anyio
import procrastinate
import pytest

from dawdle import App, RetryPolicy
from dawdle.backoff import Constant
from tests.durability.worker.helpers import (
    actions,
    job_events,
    job_states,
    make_worker,
    postgres_only,
    run_until,
    strand_with_dead_worker,
    work,
)

pytestmark = pytest.mark.anyio

RESTARTS = 3


async def test_rolling_restarts_do_not_use_up_max_attempts(app: App) -> None:
    """Put back by three shutdowns under max_attempts=1, the job still runs: attempts 1."""
    started = anyio.Event()
    finish = False

    @app.task(name="patient", retry=RetryPolicy(max_attempts=1))
    async def patient() -> None:
        started.set()
        if not finish:
            await anyio.sleep_forever()  # the behaviour: still running when the worker stops

    job_id = await patient.defer_async()
    for _ in range(RESTARTS):
        started = anyio.Event()
        await run_until(make_worker(app, shutdown_graceful_timeout=0), started)
        assert await job_states(app) == {job_id: ("todo", 0)}
    finish = True
    await work(app)
    assert await job_states(app) == {job_id: ("succeeded", 1)}
    events = await job_events(app, job_id)
    assert events.count("started") == RESTARTS + 1
    assert events.count("deferred_for_retry") == RESTARTS


async def test_recovery_from_dead_workers_does_not_use_up_max_attempts(app: App) -> None:
    """Recovered from three dead workers under max_attempts=1, the job runs: attempts 1."""
    done = anyio.Event()

    @app.task(name="orphan", retry=RetryPolicy(max_attempts=1))
    async def orphan() -> None:
        done.set()

    job_id = await orphan.defer_async()
    for _ in range(RESTARTS):
        await strand_with_dead_worker(app, job_id)
        # This rescuer works another queue: it recovers the job and leaves it for the next.
        rescuer = make_worker(
            app, queues=["elsewhere"], stalled_worker_timeout=1, update_heartbeat_interval=0.1
        )
        with actions() as log:
            await run_until(rescuer, log.reached("recover_stalled_job"))
        assert await job_states(app) == {job_id: ("todo", 0)}
    await run_until(make_worker(app, stalled_worker_timeout=1, update_heartbeat_interval=0.1), done)
    assert await job_states(app) == {job_id: ("succeeded", 1)}
    assert (await job_events(app, job_id)).count("deferred_for_retry") == RESTARTS


async def test_a_failure_still_spends_an_attempt_after_put_backs(app: App) -> None:
    """Put-backs spend nothing, failures do: max_attempts=2 allows two failures after them."""
    started = anyio.Event()
    stop_here = True
    failures = 0

    @app.task(name="flaky", retry=RetryPolicy(max_attempts=2, backoff=Constant(0.0)))
    async def flaky() -> None:
        nonlocal failures
        started.set()
        if stop_here:
            await anyio.sleep_forever()  # the behaviour: still running when the worker stops
        failures += 1
        raise ConnectionError

    job_id = await flaky.defer_async()
    await run_until(make_worker(app, shutdown_graceful_timeout=0), started)
    stop_here = False
    await work(app)
    assert failures == 2
    assert await job_states(app) == {job_id: ("failed", 2)}


@postgres_only("Procrastinate's own worker and PsycopgConnector share the database")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_job_put_back_by_dawdle_runs_on_procrastinates_worker(
    app: App, schema_dsn: str
) -> None:
    """Asyncio only (Procrastinate's worker needs it): a put-back job is Procrastinate's too."""
    started = anyio.Event()
    received: list[int] = []

    @app.task(name="interop.handover")
    async def handover(value: int) -> None:
        started.set()
        await anyio.sleep_forever()  # the behaviour: still running when the worker stops

    upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=schema_dsn))

    @upstream.task(name="interop.handover")
    async def upstream_handover(value: int) -> None:
        received.append(value)

    job_id = await handover.defer_async(value=5)
    await run_until(make_worker(app, shutdown_graceful_timeout=0), started)
    assert await job_states(app) == {job_id: ("todo", 0)}
    async with upstream.open_async():
        with anyio.fail_after(10):
            await upstream.run_worker_async(wait=False, install_signal_handlers=False)
    assert received == [5]
    assert await job_states(app) == {job_id: ("succeeded", 1)}
