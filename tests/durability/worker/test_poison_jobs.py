"""Poison jobs: a job whose worker dies in each of its runs fails after `max_recoveries`.

A recovery from a dead or stalled worker spends no attempt, so without a limit a job that
kills its worker process every time (a crash, the OOM killer) would be recovered for ever.
Here the dead worker is simulated (`strand_with_dead_worker`: the job claimed by a worker
whose heartbeat is an hour old), and a rescuer that works another queue recovers it; real
processes killed by their job are in tests/durability/test_process_faults.py. On connector
x runtime.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from dawdle import App, RetryPolicy, Snooze, Worker
from dawdle.backoff import Constant
from tests.durability.worker.helpers import (
    actions,
    job_events,
    job_states,
    make_worker,
    run_until,
    strand_with_dead_worker,
)

pytestmark = pytest.mark.anyio

RECOVERED = "recover_stalled_job"
FAILED = "job_failed_recovery_limit"


def rescuer(app: App, **options: Any) -> Worker:
    """A worker of another queue: it recovers stalled jobs and runs none of them."""
    return make_worker(
        app,
        queues=["elsewhere"],
        stalled_worker_timeout=1,
        update_heartbeat_interval=0.05,
        **options,
    )


async def recover_once(app: App, job_id: int, action: str, **options: Any) -> list[Any]:
    """Strand the job with a dead worker, run a rescuer until it logs `action`; the records."""
    await strand_with_dead_worker(app, job_id)
    with actions() as log:
        await run_until(rescuer(app, **options), log.reached(action))
    return log.of(action)


async def test_a_job_whose_worker_dies_each_run_fails_after_max_recoveries(app: App) -> None:
    """Recovered twice under max_recoveries=2, the third dead worker's run fails the job."""

    @app.task(name="poison")
    async def poison() -> None:
        raise AssertionError("runs on no worker here")

    job_id = await poison.defer_async()
    for _ in range(2):
        await recover_once(app, job_id, RECOVERED, max_recoveries=2)
        assert await job_states(app) == {job_id: ("todo", 0)}
    (record,) = await recover_once(app, job_id, FAILED, max_recoveries=2)
    assert await job_states(app) == {job_id: ("failed", 0)}
    assert record.runs == 3
    assert record.levelname == "ERROR"
    assert f"poison[{job_id}]" in record.getMessage()
    assert "3 runs" in record.getMessage()
    events = await job_events(app, job_id)
    assert (events.count("started"), events.count("deferred_for_retry")) == (3, 2)
    assert events[-1] == "failed"


async def test_max_recoveries_zero_fails_at_the_first_recovery(app: App) -> None:
    """max_recoveries=0: a job whose worker died once fails (at most one run per job)."""

    @app.task(name="once_only")
    async def once_only() -> None:
        raise AssertionError("runs on no worker here")

    job_id = await once_only.defer_async()
    (record,) = await recover_once(app, job_id, FAILED, max_recoveries=0)
    assert record.runs == 1
    assert await job_states(app) == {job_id: ("failed", 0)}


async def test_no_limit_with_max_recoveries_none(app: App) -> None:
    """max_recoveries=None: recovered three times in a row, the job is still put back."""

    @app.task(name="tolerated")
    async def tolerated() -> None:
        raise AssertionError("runs on no worker here")

    job_id = await tolerated.defer_async()
    for _ in range(3):
        await recover_once(app, job_id, RECOVERED, max_recoveries=None)
    assert await job_states(app) == {job_id: ("todo", 0)}


@pytest.mark.parametrize("ending", ["snooze", "retry"])
async def test_a_run_the_task_ends_starts_the_count_again(app: App, ending: str) -> None:
    """A snooze or a retry between two dead workers resets the count: max_recoveries=1 holds."""
    ran = anyio.Event()

    @app.task(name="polling", retry=RetryPolicy(backoff=Constant(3600), max_attempts=5))
    async def polling() -> None:
        ran.set()
        if ending == "snooze":
            raise Snooze(3600)
        raise ConnectionError

    job_id = await polling.defer_async()
    await recover_once(app, job_id, RECOVERED, max_recoveries=1)
    # A worker of the job's queue runs it once: the task ends the run, due in an hour.
    await run_until(make_worker(app, max_recoveries=1), ran)
    assert await job_states(app) == {job_id: ("todo", 0 if ending == "snooze" else 1)}
    # Two runs cut short in the job's life, but only one since the task's own end.
    await recover_once(app, job_id, RECOVERED, max_recoveries=1)
    assert (await job_states(app))[job_id][0] == "todo"
