"""Hooks: one small protocol for the events of jobs and workers, for metrics, traces and logs.

A `Hooks` subclass overrides the events it wants; each event is a frozen dataclass, so a
later version can add fields without breaking a hook. In the spirit of trio's `Instrument`
and stamina's `RetryHook`: calls are synchronous and made where the event happens.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from procrastinate import jobs

from dawdle._worker.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class JobDeferred:
    """A job was inserted as 'todo' (`defer_async`, `batch_defer_async`, the periodic deferrer)."""

    job: jobs.Job
    """The job as stored, with its id."""


@dataclass(frozen=True, slots=True)
class JobStarted:
    """A worker begins a run of a job, in the job's runner, just before its task is called."""

    job: jobs.Job
    attempt: int
    """1 for the first run: the attempts spent before it, plus one."""
    queue_time: float | None
    """Seconds from when it was due (its `scheduled_at`, else its deferral) to now, if known."""


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
    context variable set by `job_started` is seen by the task and by `job_finished`. Hooks
    must be quick and never block. A hook that raises is logged once and removed, as trio
    does with a failing `Instrument`: a broken hook never stops a job or the worker.
    """

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
