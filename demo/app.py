"""The demo's app and tasks; a worker can also run them: `dawdle worker --app demo.app:app`.

Every task is named `demo.<something>` so that a run can find (and clear) its own jobs.
"""

from __future__ import annotations

import anyio
from procrastinate import JobContext

import dawdle
from dawdle.backoff import Constant, Exponential, RetryPolicy

# No connector: DAWDLE_DSN, else libpq's environment, else the embedded server.
app = dawdle.App()

TASK_PREFIX = "demo."
PERIODIC_TASK = "demo.tick"

# Flaky jobs fail twice, then succeed: short jittered waits, well within five runs.
FLAKY_POLICY = RetryPolicy(
    backoff=Exponential(0.2, 2.0, jitter="full", max_delay=2.0), max_attempts=5
)
# Jobs that time out get one retry (two runs), then end failed.
TIMEOUT_POLICY = RetryPolicy(backoff=Constant(0.1), max_attempts=2)
FLAKY_FAILURES = 2


class FlakyServiceError(Exception):
    """What the flaky task raises on its first runs, like a service that is warming up."""


@app.task(name="demo.noop")
async def noop(n: int) -> None:
    """Do nothing: measures the queue's own cost per job."""


@app.task(name="demo.slow")
async def slow(seconds: float) -> None:
    """Wait `seconds`, like a call to a slow service."""
    await anyio.sleep(seconds)


@app.task(name="demo.flaky", pass_context=True, retry=FLAKY_POLICY)
async def flaky(context: JobContext, n: int) -> None:
    """Fail the first FLAKY_FAILURES runs of each job, then succeed."""
    if context.job.attempts < FLAKY_FAILURES:
        raise FlakyServiceError(f"flaky job {n}: run {context.job.attempts + 1} fails")


@app.task(name="demo.too_slow", timeout=0.5, retry=TIMEOUT_POLICY)
async def too_slow(n: int) -> None:
    """Sleep past the task's 0.5 s timeout: cancelled, retried once, then failed."""
    await anyio.sleep(5.0)


@app.periodic(cron="* * * * * */5")  # a 6th field: seconds
@app.task(name=PERIODIC_TASK)
async def tick(timestamp: int) -> None:
    """Run every 5 s while a worker is up (Procrastinate passes the tick's timestamp)."""
