"""Log records carry Procrastinate's `action` names and `extra` keys, so its alerts still work.

On connector x runtime.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import anyio
import pytest
from procrastinate import RetryStrategy

from dawdle import App
from tests.durability.worker.helpers import make_worker, running, work

pytestmark = pytest.mark.anyio

PROCRASTINATE_WORKER_KEYS = {"name", "worker_id", "job_id", "queues"}


@pytest.fixture
def worker_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The worker's log records, from DEBUG up."""
    caplog.set_level(logging.DEBUG, logger="dawdle.worker")
    return caplog


def actions_by_job(log: pytest.LogCaptureFixture) -> dict[int, list[str]]:
    """The `action` of each record about a job, in order, by job id."""
    actions = collections.defaultdict(list)
    for record in log.records:
        job: Any = getattr(record, "job", None)
        if job is not None:
            actions[job["id"]].append(record.action)
    return dict(actions)


def records_of(log: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    """The records with this `action`."""
    return [record for record in log.records if getattr(record, "action", None) == action]


async def test_job_outcomes_are_logged_with_procrastinates_actions(
    app: App, worker_log: pytest.LogCaptureFixture
) -> None:
    """Success, failure, retry and an unknown task: Procrastinate's actions, in its order."""
    calls: list[str] = []

    @app.task(name="ok")
    async def ok() -> int:
        return 42

    @app.task(name="boom")
    async def boom() -> None:
        raise ValueError("boom")

    @app.task(name="flaky", retry=RetryStrategy(max_attempts=1))  # due again at once
    def flaky() -> None:
        calls.append("flaky")
        if len(calls) == 1:
            raise ValueError("first run fails")

    ok_id = await ok.defer_async()
    boom_id = await boom.defer_async()
    flaky_id = await flaky.defer_async()
    unknown_id = await app.configure_task("no_such_task").defer_async()
    await work(app, unknown_tasks="fail")  # Procrastinate claims and fails unknown tasks
    started = ["loaded_job_info", "start_job"]
    assert actions_by_job(worker_log) == {
        ok_id: [*started, "job_success"],
        boom_id: [*started, "job_error"],
        flaky_id: [*started, "job_error_retry", *started, "job_success"],
        unknown_id: ["task_not_found", "job_error"],
    }
    [success] = records_of(worker_log, "job_success")[:1]
    assert success.result == 42  # type: ignore[attr-defined]
    assert success.end_timestamp >= success.start_timestamp  # type: ignore[attr-defined]
    [not_found] = records_of(worker_log, "task_not_found")
    assert (not_found.levelno, not_found.getMessage()) == (logging.ERROR, "Task was not found")
    assert not_found.exc_info is not None
    for record in records_of(worker_log, "start_job"):
        assert set(record.worker) >= PROCRASTINATE_WORKER_KEYS  # type: ignore[attr-defined]
        assert record.job["call_string"].endswith("()")  # type: ignore[attr-defined]
        assert record.job_id == record.job["id"]  # type: ignore[attr-defined]


async def test_an_abort_is_logged_with_procrastinates_actions(
    app: App, worker_log: pytest.LogCaptureFixture
) -> None:
    """A user's abort of a running job: abort_job, then job_aborted."""
    started = anyio.Event()
    cancelled = anyio.Event()

    @app.task(name="abortable")
    async def abortable() -> None:
        started.set()
        try:
            await anyio.sleep(10)  # the behaviour: a job still running when aborted
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    job_id = await abortable.defer_async()
    worker = make_worker(app, listen_notify=False, abort_job_polling_interval=0.05)
    async with running(worker):
        with anyio.fail_after(5):
            await started.wait()
        assert await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
        with anyio.fail_after(5):
            await cancelled.wait()
    assert actions_by_job(worker_log) == {
        job_id: ["loaded_job_info", "start_job", "abort_job", "job_aborted"]
    }


async def test_the_worker_lifecycle_is_logged_with_procrastinates_actions(
    app: App, worker_log: pytest.LogCaptureFixture
) -> None:
    """start_worker, stopping_worker, ending_job, stop_worker; put back is dawdle's own."""
    started = anyio.Event()

    @app.task(name="slow")
    async def slow() -> None:
        started.set()
        await anyio.sleep(10)  # the behaviour: a job still running at stop()

    job_id = await slow.defer_async()
    worker = make_worker(app, shutdown_graceful_timeout=0.05)
    async with running(worker):
        with anyio.fail_after(5):
            await started.wait()
    worker_actions = [
        record.action  # type: ignore[attr-defined]
        for record in worker_log.records
        if getattr(record, "action", None) and getattr(record, "job", None) is None
    ]
    assert worker_actions == ["start_worker", "stopping_worker", "stop_worker", "stop_worker"]
    for action in worker_actions:
        for record in records_of(worker_log, action):
            assert set(record.worker) >= PROCRASTINATE_WORKER_KEYS  # type: ignore[attr-defined]
    assert actions_by_job(worker_log) == {
        job_id: ["loaded_job_info", "start_job", "ending_job", "job_put_back"]
    }
