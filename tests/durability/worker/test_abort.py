"""Aborts (`cancel_job_by_id_async(abort=True)`): running jobs end aborted, todo ones cancelled.

On connector x runtime.
"""

from __future__ import annotations

import time

import anyio
import anyio.from_thread
import procrastinate
import pytest
from procrastinate import exceptions

from dawdle import App
from dawdle.backoff import Constant, RetryPolicy
from tests.durability.worker.helpers import (
    abort_checks,
    forge_notification,
    job_states,
    listening,
    make_worker,
    running,
    work,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("listen_notify", [True, False], ids=["notify", "polling"])
async def test_abort_cancels_a_running_async_job(app: App, listen_notify: bool) -> None:
    """An abort cancels the running job at once (notify or poll): aborted, not retried."""
    started = anyio.Event()
    cancelled = anyio.Event()

    @app.task(name="abortable", retry=RetryPolicy(backoff=Constant(0.05), max_attempts=5))
    async def abortable() -> None:
        started.set()
        try:
            await anyio.sleep(10)  # the behaviour: a job still running when aborted
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    worker = make_worker(
        app,
        listen_notify=listen_notify,
        # With notify, the abort must come through the notification, not the poll.
        abort_job_polling_interval=30 if listen_notify else 0.1,
    )
    job_id = await abortable.defer_async()
    with listening(app) as listened:
        async with running(worker):
            with anyio.fail_after(5):
                await started.wait()
                if listen_notify:
                    await listened.wait()
            requested = time.monotonic()
            assert await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
            with anyio.fail_after(2):
                await cancelled.wait()
            took = time.monotonic() - requested
    assert took < 1
    assert await job_states(app) == {job_id: ("aborted", 1)}


async def test_sync_job_that_checks_should_abort_ends_aborted(app: App) -> None:
    """A sync job raising JobAborted once should_abort() is true ends aborted."""
    started = anyio.Event()
    saw_abort: list[bool] = []

    @app.task(name="polite", pass_context=True)
    def polite(context: procrastinate.JobContext) -> None:
        anyio.from_thread.run_sync(started.set)
        for _ in range(500):  # at most 5 s
            if context.should_abort():
                saw_abort.append(True)
                raise exceptions.JobAborted
            time.sleep(0.01)  # the behaviour: a sync job checking now and then

    job_id = await polite.defer_async()
    worker = make_worker(app, listen_notify=False, abort_job_polling_interval=0.1)
    async with running(worker):  # its stop() is graceful: the sync job gets all it needs
        with anyio.fail_after(5):
            await started.wait()
        assert await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
    assert saw_abort == [True]
    assert await job_states(app) == {job_id: ("aborted", 1)}


async def test_abort_of_a_todo_job_cancels_it_before_it_runs(app: App) -> None:
    """An abort requested before the job is fetched marks it cancelled and it never runs."""
    ran: list[int] = []

    @app.task(name="never_run")
    async def never_run() -> None:
        ran.append(1)

    job_id = await never_run.defer_async()
    assert await app.job_manager.cancel_job_by_id_async(job_id, abort=True)
    await work(app)
    assert ran == []
    assert await job_states(app) == {job_id: ("cancelled", 0)}


async def test_forged_abort_notification_is_checked_and_ignored(app: App) -> None:
    """An abort notification no abort request backs: checked in the database, job succeeds."""
    started = anyio.Event()
    release = anyio.Event()

    @app.task(name="held")
    async def held() -> None:
        started.set()
        await release.wait()

    job_id = await held.defer_async()
    # Only the notification can make the worker look: its polling would come in 30 s.
    worker = make_worker(app, abort_job_polling_interval=30)
    with listening(app) as listened, abort_checks(app) as checked:
        async with running(worker):
            with anyio.fail_after(5):
                await started.wait()
                await listened.wait()
            await forge_notification(app, f'{{"type": "abort_job_requested", "job_id": {job_id}}}')
            with anyio.fail_after(5):
                await checked.wait()
            release.set()
    assert await job_states(app) == {job_id: ("succeeded", 1)}
