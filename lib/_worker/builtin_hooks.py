"""The hooks every worker registers first: its `WorkerStats` counters and its outcome log.

They receive the same events as users' hooks, so what a user's hook sees is what the
worker's own counters and log records are made from.
"""

from __future__ import annotations

import logging
import time

from dawdle._hooks import Hooks, JobFinished, LoopRestarted
from dawdle._worker.joblog import describe, log_job, logger
from dawdle._worker.outcomes import Outcome
from dawdle._worker.state import WorkerState, WorkerStats


class StatsHook(Hooks):
    """Counts runs by outcome, runs past their timeout, and restarts of internal loops."""

    def __init__(self, stats: WorkerStats) -> None:
        self._stats = stats

    def job_finished(self, event: JobFinished) -> None:
        """One more run of its outcome (and of the timed-out ones, if it ran past its timeout)."""
        self._stats.jobs[event.outcome] += 1
        if event.timed_out:
            self._stats.timed_out += 1

    def loop_restarted(self, event: LoopRestarted) -> None:
        """One more restart of that loop."""
        self._stats.loop_restarts[event.loop] += 1


class OutcomeLog(Hooks):
    """The record of each run's outcome, with Procrastinate's action and `extra` fields."""

    def __init__(self, state: WorkerState) -> None:
        self._state = state

    def job_finished(self, event: JobFinished) -> None:
        """Log the outcome: ERROR with the traceback for a failure, INFO otherwise."""
        failed = event.outcome is Outcome.FAILED
        level = logging.ERROR if failed else logging.INFO
        if not logger.isEnabledFor(level):
            return  # once per job: build nothing that will not be emitted
        context = event.context
        assert context is not None  # noqa: S101 (the worker's events carry their context)
        failure, duration = event.exception, event.duration

        def message() -> str:
            text = f"job {describe(context.job)} {event.outcome.phrase} after {duration:.3f} s"
            if failure is not None:
                text += f": {type(failure).__name__}: {failure}"
            if event.reason is not None:
                text += f" ({event.reason})"
            return text

        # A retry a dawdle policy decided is logged from the event its hook receives.
        retry = event.retry_event
        retry_fields = (
            {} if retry is None else {"retry_delay": retry.delay, "retry_reason": retry.reason}
        )
        log_job(
            self._state,
            level,
            event.outcome.log_action,
            message,
            context,
            duration=duration,
            outcome=event.outcome.value,
            end_timestamp=time.time(),
            result=event.result,
            exc_info=failure if failed else None,
            scheduled_at=None if event.retry_at is None else event.retry_at.isoformat(),
            **retry_fields,
        )
