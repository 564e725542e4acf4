"""Fencing: a worker whose lease lapsed stops claiming and stops its running jobs.

The watchdog sleeps on the monotonic clock until the lease would lapse, whatever the
database or the heartbeat loop are doing (a heartbeat stuck on a silent network never
returns to say it failed). Once the lease has lapsed, the worker is fenced until a
heartbeat is acknowledged again (`Registration.confirm`), `stalled_worker_timeout - lease`
seconds before another worker may recover its jobs: no two runs of a job overlap, except
for a sync job that ignores `should_abort()` (its thread cannot be stopped).
"""

from __future__ import annotations

import logging

import anyio

from dawdle._worker.joblog import describe
from dawdle._worker.state import WorkerState

logger = logging.getLogger("dawdle.worker")


async def guard_lease_forever(state: WorkerState) -> None:
    """Fence the worker when its lease lapses; end the fencing when it is renewed."""
    lease = state.lease
    while True:
        now = anyio.current_time()
        state.lease_changed.clear()
        if lease.held(now):
            if state.fenced_since is not None:
                _end_fencing(state, now - state.fenced_since)
            # A renewal only pushes the expiry later; a loss (`lose_lease`) wakes us.
            await state.lease_changed.wait(lease.expires_at - now)
        else:
            fence(state, f"no heartbeat acknowledged for {lease.duration:g} s (heartbeat_lease)")
            await state.lease_changed.wait()


def fence(state: WorkerState, why: str) -> None:
    """Stop claiming and stop the running jobs, once per lapse of the lease; log it once."""
    if state.fenced_since is not None:
        return
    state.fenced_since = anyio.current_time()
    running = sorted(state.running)
    threads = state.fence()
    logger.warning(
        "worker %s: %s: fenced, it stops claiming and stops its running jobs %s before "
        "another worker may recover them (stalled_worker_timeout %g s)%s",
        state.worker_id,
        why,
        running,
        state.settings.stalled_worker_timeout,
        "; sync jobs asked to stop through context.should_abort() (a thread cannot be "
        "cancelled: one that ignores it may run on while another worker reruns its job): "
        f"{', '.join(describe(r.context.job) for r in threads)}"
        if threads
        else "",
        extra={"action": "worker_fenced", "worker_id": state.worker_id, "job_ids": running},
    )


def _end_fencing(state: WorkerState, seconds: float) -> None:
    state.fenced_since = None
    logger.warning(
        "worker %s: heartbeat acknowledged again after %.1f s fenced; claiming resumes",
        state.worker_id,
        seconds,
        extra={"action": "worker_fencing_ended", "worker_id": state.worker_id},
    )
    state.wake_claimer.set()
