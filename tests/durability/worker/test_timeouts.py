"""Job timeouts (`@app.task(timeout=...)`): async jobs are cancelled, sync ones reported.

On connector x runtime. The original guide's "task timeout protection" (a stuck job is
cancelled with JobTimeout and the next job runs) lives in test_durability.py
(TestWorkerResilience).
"""

from __future__ import annotations

import time

import anyio
import pytest

from dawdle import App
from dawdle.backoff import Constant, RetryPolicy
from tests.durability.worker.helpers import job_states, make_worker, run_until

pytestmark = pytest.mark.anyio


async def test_async_timeout_is_retried_per_policy(app: App) -> None:
    """A job timing out on its first run and finishing in time on its second: succeeded, 2."""
    runs = 0
    done = anyio.Event()

    @app.task(name="slow_once", timeout=0.2, retry=RetryPolicy(backoff=Constant(0.01)))
    async def slow_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await anyio.sleep(10)  # the behaviour: past its timeout
        done.set()

    job_id = await slow_once.defer_async()
    await run_until(make_worker(app, fetch_job_polling_interval=30), done, within=3)
    assert runs == 2
    assert await job_states(app) == {job_id: ("succeeded", 2)}


async def test_sync_timeout_only_reports_the_overrun(app: App) -> None:
    """A sync task past timeout= cannot be cancelled: it runs to the end and succeeds."""
    finished: list[int] = []

    @app.task(name="slow_sync", timeout=0.1)
    def slow_sync() -> None:
        time.sleep(0.3)  # the behaviour under test: slower than its timeout
        finished.append(42)

    job_id = await slow_sync.defer_async()
    worker = make_worker(app, wait=False)
    with anyio.fail_after(5):
        await worker.run()
    assert finished == [42]
    assert await job_states(app) == {job_id: ("succeeded", 1)}
    assert worker.stats.timed_out == 1
