"""How running jobs end when the worker stops.

After the graceful timeout, async jobs are cancelled and put back; sync jobs are asked to
stop (`should_abort()`) and get SYNC_ABORT_TIMEOUT more seconds, since their thread cannot
be cancelled. A sync job is never put back while its thread runs it: one still running
after that is abandoned, 'doing' for this worker, until recovered as stalled.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Final

import anyio
from procrastinate import job_context

from dawdle._worker.joblog import describe, log_job
from dawdle._worker.state import Running, WorkerState

logger = logging.getLogger("dawdle.worker")

# How long sync jobs get to return once the shutdown asked them to (after the graceful
# timeout), before their threads are abandoned. An async job ends as soon as it is
# cancelled; a thread only ends by itself, so this is the one wait a job that checks
# `should_abort()` needs. 5 s suits a job that checks it between units of work of a few
# seconds, and keeps the whole stop after the graceful timeout (this, the final flush of a
# few ms on a healthy database, unregistering) well inside common stop limits (Kubernetes'
# default grace of 30 s, systemd's 90 s). The same bound as UNREGISTER_TIMEOUT.
SYNC_ABORT_TIMEOUT: Final = 5.0


async def end_running_jobs(state: WorkerState) -> None:
    """End running jobs at shutdown: the graceful timeout, then abort (see the module)."""
    if state.running:
        now = time.time()
        for running in state.running.values():
            log_job(
                state,
                logging.INFO,
                "ending_job",
                functools.partial(_waiting_message, running.context, now),
                running.context,
            )
        grace = state.settings.shutdown_graceful_timeout
        with anyio.move_on_after(math.inf if grace is None else grace):
            while state.running:
                state.slot_freed.clear()
                await state.slot_freed.wait()
    if state.running:
        logger.info(
            "%d jobs still running after the graceful timeout: cancelling async ones, "
            "asking sync ones to abort",
            len(state.running),
            extra={
                "action": "stop_worker",  # Procrastinate's, for this very record
                "worker": state.worker_log_fields(),
                "queues": state.settings.queues,
            },
        )
        state.abort_for_shutdown()
        await _end_sync_jobs(state)


async def _end_sync_jobs(state: WorkerState) -> None:
    """Wait SYNC_ABORT_TIMEOUT for sync jobs to return, then abandon the ones that run on."""

    def sync_jobs() -> list[Running]:
        return [running for running in state.running.values() if not running.is_async]

    with anyio.move_on_after(SYNC_ABORT_TIMEOUT):
        while sync_jobs():
            state.slot_freed.clear()
            await state.slot_freed.wait()
    # What each thread is doing is read and changed under the run's lock: a thread that
    # has left its job is let deliver its result, one not begun never begins (the job
    # goes back), one inside the job is abandoned (its runner stops waiting).
    for running in sync_jobs():
        running.stop_thread()


def abandon(state: WorkerState, running: Running, duration: float) -> None:
    """The shutdown gave up on a sync job whose thread runs on: nothing is written.

    Putting it back would let another worker start it while this thread still runs it.
    It stays 'doing' for this worker, which keeps its row: it is recovered as stalled
    once this worker's last heartbeat is `stalled_worker_timeout` old.
    """
    job = running.context.job
    assert job.id is not None  # noqa: S101 (claimed jobs have ids)
    state.abandon(job.id)
    log_job(
        state,
        logging.ERROR,
        "job_abandoned",
        lambda: (
            f"job {describe(job)} abandoned after {duration:.3f} s: its thread still runs "
            f"{SYNC_ABORT_TIMEOUT:g} s after it was asked to abort; it stays 'doing' until "
            f"recovered as stalled, {state.settings.stalled_worker_timeout:g} s after this "
            "worker's last heartbeat"
        ),
        running.context,
        duration=duration,
    )


def _waiting_message(context: job_context.JobContext, now: float) -> str:
    started = now - context.start_timestamp
    return f"waiting for job {describe(context.job)} to finish (started {started:.3f} s ago)"
