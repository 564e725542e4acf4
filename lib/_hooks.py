"""Hooks: one small protocol for the events of jobs and workers, for metrics, traces and logs.

A `Hooks` subclass overrides the events it wants; each event is a frozen dataclass, so a
later version can add fields without breaking a hook. In the spirit of trio's `Instrument`
and stamina's `RetryHook`: calls are synchronous and made where the event happens.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from procrastinate import job_context, jobs

from dawdle.backoff import RetryEvent

if TYPE_CHECKING:
    # Only for annotations: importing dawdle._worker here would make a cycle, since the
    # worker's modules emit these events.
    from dawdle._worker.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class JobDeferred:
    """A job was inserted as 'todo' (`defer_async`, `batch_defer_async`, the periodic deferrer)."""

    job: jobs.Job
    """The job as stored, with its id."""


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A job's W3C trace context, as its defer's span left it (stored in `dawdle_job_traces`)."""

    traceparent: str
    tracestate: str | None = None


@dataclass(frozen=True, slots=True)
class JobStarted:
    """A worker begins a run of a job, in the job's runner, just before its task is called.

    Before the middlewares too; every run that gets a verdict has one, even a run of a task
    the worker does not know (`unknown_tasks="fail"`) or one stopped before it began.
    """

    job: jobs.Job
    attempt: int
    """1 for the first run: the attempts spent before it, plus one."""
    queue_time: float | None
    """Seconds from when it was due to now: from its `scheduled_at` (a job deferred with a
    schedule, or retried, or snoozed); None for a job deferred to run at once, whose
    deferral time the claim does not read (Procrastinate's jobs table has no such column)."""
    context: job_context.JobContext | None = None
    """The run's context (worker name, `additional_context`...); None only in events made
    by hand."""
    trace_context: TraceContext | None = None
    """The trace context its defer stored, read by the claim only for a worker one of whose
    hooks sets `wants_trace_context`; None otherwise, or if it was deferred untraced."""


@dataclass(frozen=True, slots=True)
class JobFinished:
    """A run of a job ended, with the verdict the worker will write."""

    job: jobs.Job
    outcome: Outcome
    duration: float
    """Seconds the run took."""
    attempt: int
    exception: BaseException | None
    """What the task raised, if it raised."""
    context: job_context.JobContext | None = None
    """The run's context, as `JobStarted.context`."""
    result: Any = None
    """What the task returned (None if it raised)."""
    retry_at: datetime.datetime | None = None
    """When the job is due again: a retry, a snooze, a put-back."""
    reason: str | None = None
    """Why a dawdle `RetryPolicy` retried or gave up, or when a snoozed job is due."""
    retry_event: RetryEvent | None = None
    """For a retry a dawdle `RetryPolicy` decided: the event its `on_retry` hook receives."""
    timed_out: bool = False
    """The run went past its task's `timeout=` (an async one was cancelled; a sync one's
    thread ran on to its end)."""


@dataclass(frozen=True, slots=True)
class JobRetried:
    """A run ended in a retry: the job is due again at `retry_at`."""

    job: jobs.Job
    attempt: int
    delay: float
    """Seconds from now to `retry_at`."""
    retry_at: datetime.datetime
    reason: str | None
    """The retry policy's reason ('retry 2 of 5 in 1.3 s'), if it gave one."""


@dataclass(frozen=True, slots=True)
class JobSnoozed:
    """A task raised `Snooze`: the job is due again at `until`, no attempt spent."""

    job: jobs.Job
    delay: float
    until: datetime.datetime


@dataclass(frozen=True, slots=True)
class LoopRestarted:
    """One of the worker's internal loops failed and is being restarted."""

    loop: str
    """Its name: 'writer', 'heartbeat', 'claimer', ..."""
    exception: BaseException
    delay: float | None = None
    """Seconds before it runs again."""


@dataclass(frozen=True, slots=True)
class JobsClaimed:
    """A claim statement returned (with no jobs too, when it found none)."""

    count: int
    latency: float
    """Seconds from sending the claim to its answer."""


@dataclass(frozen=True, slots=True)
class JobsPruned:
    """Finished jobs were deleted by retention or `dawdle prune`."""

    count: int
    statuses: tuple[str, ...]


class Hooks:
    """Receives the events of jobs and workers; override the methods you need.

    Every method does nothing by default. Each is called synchronously where its event
    happens: `job_started` and `job_finished` in the job's runner, around its task, so a
    context variable set by `job_started` is seen by the task (sync tasks' threads too) and
    by `job_finished`. A runner runs one job after another: reset such a variable in
    `job_finished`. A run's events come in this order: `job_started`, then `job_retried` or
    `job_snoozed` if it ends so, then `job_finished` (every run that gets a verdict; not a
    sync run abandoned at shutdown, which has none). Hooks must be quick and never block. A
    hook that raises is logged once and removed, as trio does with a failing `Instrument`:
    a broken hook never stops a job or the worker.
    """

    wants_trace_context: ClassVar[bool] = False
    """True: the worker reads each claimed job's stored trace context (one more query per
    non-empty claim) for `JobStarted.trace_context`. Off by default, so it costs nothing."""

    def job_deferred(self, event: JobDeferred) -> None:
        """A job was deferred."""

    def job_started(self, event: JobStarted) -> None:
        """A run begins."""

    def job_finished(self, event: JobFinished) -> None:
        """A run ended."""

    def job_retried(self, event: JobRetried) -> None:
        """A run ended in a retry."""

    def job_snoozed(self, event: JobSnoozed) -> None:
        """A run ended in a snooze."""

    def loop_restarted(self, event: LoopRestarted) -> None:
        """An internal loop of the worker failed and restarts."""

    def jobs_claimed(self, event: JobsClaimed) -> None:
        """A claim returned."""

    def jobs_pruned(self, event: JobsPruned) -> None:
        """Finished jobs were deleted."""
