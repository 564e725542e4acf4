"""Stopping a worker: stop(), the graceful timeout, cancellation, signals, stop() from a thread.

Sync jobs at shutdown: asked to abort after the graceful timeout, waited for
SYNC_ABORT_TIMEOUT more, never put back while their thread runs, abandoned if it runs on.

On connector x runtime. A worker restart that finishes a put-back job is the original
guide's "tasks persist across worker restarts": it lives in test_durability.py
(TestTaskDurability).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import procrastinate
import pytest
from procrastinate import exceptions

from dawdle import App
from dawdle._worker import shutdown
from dawdle._worker.state import abandoned_threads
from tests.durability.worker.helpers import (
    insert_raw_job,
    job_row,
    job_states,
    make_worker,
    postgres_only,
    run_until,
    sigterm_once_started,
    worker_ids,
)

pytestmark = pytest.mark.anyio

WORKER_APP = Path(__file__).with_name("worker_app.py")
REPO_ROOT = Path(__file__).parents[3]


async def test_cancelled_worker_puts_a_slow_job_back(app: App) -> None:
    """Cancelling the worker's scope: it returns after the graceful timeout, job in todo."""
    started = anyio.Event()
    cancelled = anyio.Event()

    @app.task(name="slow")
    async def slow() -> None:
        started.set()
        try:
            await anyio.sleep(10)  # the behaviour: a job still running at cancellation
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    job_id = await slow.defer_async()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                app.run_worker_async,
                install_signal_handlers=False,
                shutdown_graceful_timeout=0.2,
            )
        )
        with anyio.fail_after(5):
            await started.wait()
        stopping = time.monotonic()
        tg.cancel_scope.cancel()
    took = time.monotonic() - stopping
    assert cancelled.is_set()
    assert 0.15 <= took < 1.5
    job = await job_row(app, job_id)
    assert job.status == "todo"
    assert job.scheduled_at is None or job.scheduled_at.timestamp() <= time.time()
    assert await worker_ids(app) == []


async def test_job_finishing_within_the_graceful_timeout_succeeds(app: App) -> None:
    """stop() while a 0.1 s job runs with shutdown_graceful_timeout=2: it ends succeeded."""
    started = anyio.Event()
    finished: list[bool] = []

    @app.task(name="short")
    async def short() -> None:
        started.set()
        await anyio.sleep(0.1)  # the behaviour: a job still running at stop()
        finished.append(True)

    job_id = await short.defer_async()
    took = await run_until(make_worker(app, shutdown_graceful_timeout=2), started)
    assert finished == [True]
    assert took < 2
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_stop_from_another_thread(app: App) -> None:
    """worker.stop() from a plain thread stops the worker; the running job completes."""
    started = anyio.Event()
    release = threading.Event()

    @app.task(name="held")
    async def held() -> None:
        started.set()
        await anyio.to_thread.run_sync(release.wait, 5)

    job_id = await held.defer_async()
    worker = make_worker(app, fetch_job_polling_interval=30)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(5):
            await started.wait()
        stopper = threading.Thread(target=worker.stop)
        stopper.start()
        await anyio.to_thread.run_sync(stopper.join, 5)
        assert not stopper.is_alive()
        release.set()
        stopped = time.monotonic()
    assert time.monotonic() - stopped < 2
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_stop_before_run_has_started(app: App) -> None:
    """stop() right after start_soon(worker.run), before it ran: no error, run() returns."""

    @app.task(name="idle")
    async def idle() -> None: ...

    job_id = await idle.defer_async()
    worker = make_worker(app, fetch_job_polling_interval=30)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            worker.stop()
    assert (await job_row(app, job_id)).status in {"todo", "succeeded"}
    assert await worker_ids(app) == []


@postgres_only("SIGTERM goes to a worker in another process, which needs a shared database")
@pytest.mark.parametrize(
    ("job_seconds", "expected"), [(10.0, "todo"), (0.1, "succeeded")], ids=["slow", "short"]
)
async def test_sigterm_stops_a_subprocess_worker_cleanly(
    app: App, schema_dsn: str, anyio_backend: str, job_seconds: float, expected: str
) -> None:
    """SIGTERM to a worker process on this runtime: exit 0, its job finished or put back."""
    job_id = await insert_raw_job(app, "worker_app.sleep", f'{{"seconds": {job_seconds}}}')
    stopped = await sigterm_once_started(
        [sys.executable, str(WORKER_APP), schema_dsn, anyio_backend, "0.5"], within=15
    )
    assert b"started" in stopped.output, stopped.errors
    assert stopped.returncode == 0, stopped.errors
    assert (await job_row(app, job_id)).status == expected
    assert await worker_ids(app) == []


async def test_sync_job_sees_should_abort_at_shutdown_and_stays_doing_until_it_returns(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the graceful timeout should_abort() turns True and stays; the job stays doing."""
    monkeypatch.setattr(shutdown, "SYNC_ABORT_TIMEOUT", 10.0)
    started, asked, release = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    @app.task(name="polite", pass_context=True)
    def polite(context: procrastinate.JobContext) -> None:
        started.set()
        while not context.should_abort():
            time.sleep(0.01)  # the behaviour: a sync job checking now and then
        seen.append(True)
        asked.set()
        release.wait(10)  # the test looks at the job's row meanwhile
        seen.append(context.should_abort())
        raise exceptions.JobAborted

    job_id = await polite.defer_async()
    worker = make_worker(app, shutdown_graceful_timeout=0.1)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            assert await anyio.to_thread.run_sync(started.wait, 5)
            worker.stop()
            assert await anyio.to_thread.run_sync(asked.wait, 5)
            # The thread is inside the task: the job must not be back in the queue.
            assert (await job_row(app, job_id)).status == "doing"
            assert await worker_ids(app) == [worker.worker_id]
            release.set()
    finally:
        release.set()
    assert seen == [True, True]
    assert (await job_row(app, job_id)).status == "todo"  # put back once its thread ended
    assert await worker_ids(app) == []


async def test_sync_job_ignoring_the_abort_is_abandoned_and_stays_doing(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread still running after SYNC_ABORT_TIMEOUT: run() returns, job and row stay."""
    monkeypatch.setattr(shutdown, "SYNC_ABORT_TIMEOUT", 0.3)
    caplog.set_level(logging.ERROR, logger="dawdle.worker")
    started, release, left = threading.Event(), threading.Event(), threading.Event()

    @app.task(name="stubborn")
    def stubborn() -> None:
        started.set()
        release.wait(10)  # ignores should_abort(): runs on until the test releases it
        left.set()

    job_id = await stubborn.defer_async()
    worker = make_worker(app, shutdown_graceful_timeout=0.1)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            assert await anyio.to_thread.run_sync(started.wait, 5)
            stopping = time.monotonic()
            worker.stop()
        took = time.monotonic() - stopping
        assert 0.4 <= took < 2
        assert not left.is_set()
        assert (await job_row(app, job_id)).status == "doing"
        assert await worker_ids(app) == [worker.worker_id]
        assert worker.stats.abandoned == 1
        assert len(abandoned_threads()) == 1
        assert [record.job_id for record in caplog.records if record.action == "job_abandoned"] == [
            job_id
        ]
    finally:
        release.set()
        await anyio.to_thread.run_sync(left.wait, 5)


async def test_sync_job_no_thread_began_goes_back_at_the_end_of_the_shutdown(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync job still waiting for a thread when the shutdown ends is put back, never run."""
    monkeypatch.setattr(shutdown, "SYNC_ABORT_TIMEOUT", 0.2)
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens = limiter.total_tokens
    limiter.total_tokens = 1  # the first job holds the only thread; the second waits for it
    started = anyio.Event()
    release, left = threading.Event(), threading.Event()
    ran: list[str] = []

    @app.task(name="holder")
    def holder() -> None:
        ran.append("holder")
        anyio.from_thread.run_sync(started.set)
        release.wait(10)
        left.set()

    @app.task(name="waiter")
    def waiter() -> None:
        ran.append("waiter")

    async def holder_first(
        call_next: Callable[[], Awaitable[Any]], context: procrastinate.JobContext, worker: Any
    ) -> Any:
        # Both jobs are claimed together, and which runner reaches the thread limiter first
        # is not the claim's order (Trio runs tasks woken together in a random order): the
        # waiter asks for its thread only once the holder's thread holds the only token.
        # No query meanwhile: opening a connection takes a thread too (the resolver).
        if context.job.task_name == "waiter":
            await started.wait()
            queued.set()
        return await call_next()

    holder_id = await holder.configure(priority=1).defer_async()
    waiter_id = await waiter.defer_async()
    queued = anyio.Event()
    worker = make_worker(
        app, concurrency=2, shutdown_graceful_timeout=0.1, worker_middleware=[holder_first]
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            with anyio.fail_after(5):
                await queued.wait()
            worker.stop()
        assert await job_states(app) == {holder_id: ("doing", 0), waiter_id: ("todo", 0)}
        assert ran == ["holder"]
    finally:
        release.set()
        limiter.total_tokens = tokens
    assert await anyio.to_thread.run_sync(left.wait, 5)


@postgres_only("SIGTERM goes to a worker in another process, which needs a shared database")
async def test_sigterm_ends_a_dawdle_worker_process_despite_a_never_ending_sync_job(
    app: App, schema_dsn: str, anyio_backend: str
) -> None:
    """`dawdle worker` with a sync job that never returns exits 1 soon after SIGTERM."""
    job_id = await insert_raw_job(app, "worker_app.spin")
    env = {
        **os.environ,
        "DAWDLE_WORKER_APP_DSN": schema_dsn,
        "DAWDLE_SYNC_ABORT_TIMEOUT": "1",
    }
    command = [
        *(sys.executable, "-m", "dawdle", "worker"),
        *("--app", "tests.durability.worker.worker_app:app", "--backend", anyio_backend),
        *("--shutdown-graceful-timeout", "0.5"),
    ]
    stopped = await sigterm_once_started(command, within=20, env=env, cwd=REPO_ROOT)
    assert b"started" in stopped.output, stopped.errors
    assert stopped.returncode == 1, stopped.errors
    # The graceful timeout, the sync jobs' wait, and slack.
    assert stopped.seconds_after_signal < 0.5 + 1 + 5, stopped.errors
    assert f"worker_app.spin[{job_id}]" in stopped.errors
    assert (await job_row(app, job_id)).status == "doing"
    assert len(await worker_ids(app)) == 1  # its row stays until it is stalled
