"""Stopping a worker: stop(), the graceful timeout, cancellation, signals, stop() from a thread.

On connector x runtime. A worker restart that finishes a put-back job is the original
guide's "tasks persist across worker restarts": it lives in test_durability.py
(TestTaskDurability).
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from dawdle import App
from tests.durability.worker.helpers import (
    insert_raw_job,
    job_row,
    job_states,
    make_worker,
    postgres_only,
    run_until,
    worker_ids,
)

pytestmark = pytest.mark.anyio

WORKER_APP = Path(__file__).with_name("worker_app.py")


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
    async with await anyio.open_process(
        [sys.executable, str(WORKER_APP), schema_dsn, anyio_backend, "0.5"]
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(15):
            output = b""
            async for chunk in process.stdout:
                output += chunk
                if b"started" in output:
                    process.send_signal(signal.SIGTERM)
                    break
            errors = b"".join([chunk async for chunk in process.stderr])
            returncode = await process.wait()
    assert b"started" in output, errors.decode(errors="replace")
    assert returncode == 0, errors.decode(errors="replace")
    assert (await job_row(app, job_id)).status == expected
    assert await worker_ids(app) == []
