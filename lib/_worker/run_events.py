"""The events of one run, made from its `Running` and its `Verdict`, for the worker's hooks."""

from __future__ import annotations

import datetime
from typing import Any

from dawdle._errors import JobTimeout
from dawdle._hooks import JobFinished, JobRetried, JobSnoozed, JobStarted
from dawdle._hooks_dispatch import HookDispatch
from dawdle._worker.outcomes import Outcome, Verdict
from dawdle._worker.state import Running


def started_event(running: Running) -> JobStarted:
    """`JobStarted` for a run about to begin, with its queue time if its due time is known.

    A job deferred without a schedule has no due time in its row (Procrastinate keeps no
    deferral time); reading its 'deferred' event would add work to every claim.
    """
    context = running.context
    job = context.job
    queue_time = None
    if job.scheduled_at is not None:
        waited = datetime.datetime.now(datetime.UTC) - job.scheduled_at
        # Never negative, even if the database's clock is ahead of this one.
        queue_time = max(0.0, waited.total_seconds())
    return JobStarted(
        job=job,
        attempt=job.attempts + 1,
        queue_time=queue_time,
        context=context,
        trace_context=running.trace_context,
    )


def emit_outcome(
    hooks: HookDispatch,
    running: Running,
    verdict: Verdict,
    *,
    failure: BaseException | None,
    duration: float,
    result: Any,
) -> None:
    """Tell the hooks how a run ended: `job_retried` or `job_snoozed` first, then `job_finished`."""
    context = running.context
    job = context.job
    attempt = job.attempts + 1
    due = verdict.retry_at
    if due is not None and verdict.outcome is Outcome.RETRY and hooks.wants(JobRetried):
        # A dawdle policy's own delay, else the strategy's time from now.
        delay = verdict.event.delay if verdict.event is not None else _until(due)
        hooks.emit(
            JobRetried(job=job, attempt=attempt, delay=delay, retry_at=due, reason=verdict.reason)
        )
    elif due is not None and verdict.outcome is Outcome.SNOOZED and hooks.wants(JobSnoozed):
        hooks.emit(JobSnoozed(job=job, delay=_until(due), until=due))
    hooks.emit(
        JobFinished(
            job=job,
            outcome=verdict.outcome,
            duration=duration,
            attempt=attempt,
            exception=failure,
            context=context,
            result=result,
            retry_at=due,
            reason=verdict.reason,
            retry_event=verdict.event,
            timed_out=running.overran or isinstance(failure, JobTimeout),
        )
    )


def _until(moment: datetime.datetime) -> float:
    """Seconds from now to `moment`, at least 0."""
    return max(0.0, (moment - datetime.datetime.now(datetime.UTC)).total_seconds())
