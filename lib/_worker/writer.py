"""The outcome writer: records verdicts in batches, never drops one, and flushes at the end."""

from __future__ import annotations

import logging
from typing import Final

import anyio

from dawdle._worker.housekeeping import Registration
from dawdle._worker.outcomes import Verdict
from dawdle._worker.state import Wakeup, WorkerState
from dawdle._worker.store import BreakerMoved, JobStore
from dawdle._worker.supervision import Restarts

logger = logging.getLogger("dawdle.worker")

# How long the last outcomes may take to reach the database when the worker stops.
FINAL_FLUSH_TIMEOUT: Final = 30.0
# The most outcomes written in one statement.
MAX_OUTCOME_BATCH: Final = 1_000


class OutcomeWriter:
    """Writes `state.unwritten` in batches; a failed write leaves the verdicts to write again."""

    def __init__(self, state: WorkerState, store: JobStore, registration: Registration) -> None:
        self._state = state
        self._store = store
        self._registration = registration
        self._wake = Wakeup()
        self._lock = anyio.Lock()

    def add(self, verdict: Verdict) -> None:
        """Queue a verdict for the next write."""
        self._state.unwritten.append(verdict)
        self._wake.set()

    async def write_forever(self) -> None:
        """Write verdicts as they come; a batch forms while the previous write runs."""
        while True:
            if not self._state.unwritten:  # after a failed write, retry what is still there
                await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def final_flush(self) -> None:
        """Write the last verdicts, retrying for a while if the database is away."""
        restarts = Restarts()
        with anyio.move_on_after(FINAL_FLUSH_TIMEOUT):
            while self._state.unwritten:
                try:
                    await self.flush()
                except Exception:
                    logger.exception("writing the last outcomes failed; trying again")
                    await anyio.sleep(restarts.next_delay())
        if self._state.unwritten:
            logger.error(
                "%d outcomes could not be written; their jobs stay 'doing' until another "
                "worker recovers them as stalled, and will run again",
                len(self._state.unwritten),
                extra={
                    "action": "outcomes_lost",
                    "job_ids": [verdict.job_id for verdict in self._state.unwritten],
                },
            )

    async def flush(self) -> None:
        """Write every unwritten verdict; on failure they stay unwritten (never dropped)."""
        async with self._lock:
            await self._write_unwritten()

    async def _write_unwritten(self) -> None:
        state = self._state
        while state.unwritten:
            batch = state.unwritten[:MAX_OUTCOME_BATCH]
            worker_id = state.worker_id
            written = await self._store.record(batch, worker_id=worker_id)
            recorded = written.count
            if recorded != len(batch):
                await self._registration.confirm()
                if state.worker_id != worker_id:
                    continue  # the same batch again, now that its jobs are ours again
            del state.unwritten[: len(batch)]
            for moved in written.moved:
                _log_breaker(moved)
            for pushed in written.pushed:
                logger.info(
                    "job %d of task %s: retry pushed from %s to %s by the fleet retry budget",
                    pushed.job_id,
                    pushed.task_name,
                    pushed.due_at.isoformat(),
                    pushed.runs_at.isoformat(),
                    extra={
                        "action": "job_retry_budget_pushed",
                        "job_id": pushed.job_id,
                        "task_name": pushed.task_name,
                        "due_at": pushed.due_at,
                        "runs_at": pushed.runs_at,
                    },
                )
            if written.released:
                logger.info(
                    "%d pushed retries released by retries that succeeded",
                    written.released,
                    extra={"action": "retry_budget_released", "released": written.released},
                )
            if recorded != len(batch):
                logger.warning(
                    "%d of %d outcomes found their job no longer 'doing' (recovered by "
                    "another worker after a lost heartbeat?)",
                    len(batch) - recorded,
                    len(batch),
                )
            state.wake_claimer.set()


def _log_breaker(moved: BreakerMoved) -> None:
    """Log a breaker that this write opened (a warning) or closed, once for the fleet."""
    extra = {"action": f"breaker_{moved.state}", "task_name": moved.task_name}
    if moved.state == "open":
        logger.warning(
            "breaker of task %s open until %s: no worker claims its jobs meanwhile",
            moved.task_name,
            moved.open_until.isoformat(),
            extra={**extra, "open_until": moved.open_until},
        )
    else:
        logger.info("breaker of task %s %s", moved.task_name, moved.state, extra=extra)
