"""What became of a run: the `Outcome` of a job and the pure `decide()` that picks it.

`decide()` needs no event loop and does no I/O, so tests call it directly; the runners
call it when a job ends and hand its `Verdict` to the writer.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import Any

from procrastinate import exceptions, jobs, tasks
from procrastinate.job_context import AbortReason


class Outcome(enum.StrEnum):
    """How one run of a job ended, as counted in `WorkerStats.jobs` and logged."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    RETRY = "retry"
    PUT_BACK = "put_back"
    """Cancelled by the worker's shutdown: back to 'todo' to run again, no attempt lost."""

    @property
    def log_action(self) -> str:
        """The `action` of the log record (Procrastinate's names where it has them)."""
        return _LOG_ACTIONS[self]

    @property
    def phrase(self) -> str:
        """How a log message says it: 'job x[1]() to be retried after 0.2 s'."""
        return _PHRASES.get(self, self.value)


_PHRASES: dict[Outcome, str] = {Outcome.RETRY: "to be retried", Outcome.PUT_BACK: "put back"}
# Procrastinate's `_log_job_outcome` actions. dawdle never retries an aborted job, so it has
# no `job_aborted_retry`.
_LOG_ACTIONS: dict[Outcome, str] = {
    Outcome.SUCCEEDED: "job_success",
    Outcome.FAILED: "job_error",
    Outcome.ABORTED: "job_aborted",
    Outcome.RETRY: "job_error_retry",
    # No Procrastinate name: its shutdown ends such a run aborted (`job_aborted`) or
    # retries it through the task's strategy (`job_aborted_retry`), spending an attempt.
    # dawdle puts it back as it was, so the record has a name of its own.
    Outcome.PUT_BACK: "job_put_back",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decided outcome, waiting to be written: new status and, for a retry, when and where."""

    job_id: int
    outcome: Outcome
    delete: bool = False
    retry_at: datetime.datetime | None = None
    priority: int | None = None
    queue: str | None = None
    lock: str | None = None
    strategy_error: Exception | None = None
    """The exception the job's retry strategy raised, if it did (the job then fails)."""

    @property
    def status(self) -> str:
        """What the outcome writer's SQL receives: a job status, or 'delete'."""
        if self.delete:
            return "delete"
        if self.outcome in (Outcome.RETRY, Outcome.PUT_BACK):
            return "todo"
        return self.outcome.value


def decide(
    task: tasks.Task[Any, Any, Any] | None,
    job: jobs.Job,
    failure: BaseException | None,
    abort_reason: AbortReason | None,
    *,
    cancelled: bool,
    delete_jobs: jobs.DeleteJobCondition = jobs.DeleteJobCondition.NEVER,
    now: datetime.datetime | None = None,
) -> Verdict:
    """The verdict on a run of `job` that raised `failure` (None: returned normally).

    `cancelled` says the worker cancelled the run (an abort, or its shutdown when
    `abort_reason` is SHUTDOWN). A run ended by the shutdown is put back: cancelled (an
    async job, or a sync one no thread had begun), or a sync job that saw `should_abort()`
    and raised JobAborted, since its thread has ended. A sync job that returned or failed
    despite the request keeps that outcome. A failure goes to the task's retry strategy.
    """
    assert job.id is not None  # noqa: S101 (claimed jobs have ids)
    when = now or datetime.datetime.now(datetime.UTC)
    stopped = cancelled or isinstance(failure, exceptions.JobAborted)
    if stopped and abort_reason is AbortReason.SHUTDOWN:
        return Verdict(job.id, Outcome.PUT_BACK, retry_at=when)
    if stopped:
        return _finished(job.id, Outcome.ABORTED, delete_jobs)
    if failure is None:
        return _finished(job.id, Outcome.SUCCEEDED, delete_jobs)
    try:
        retry = None if task is None else task.get_retry_exception(exception=failure, job=job)
    except Exception as exc:  # noqa: BLE001 (a broken strategy fails its job, not the worker)
        return _finished(job.id, Outcome.FAILED, delete_jobs, strategy_error=exc)
    if retry is None:
        return _finished(job.id, Outcome.FAILED, delete_jobs)
    decision = retry.retry_decision
    return Verdict(
        job.id,
        Outcome.RETRY,
        retry_at=decision.retry_at or when,
        priority=decision.priority,
        queue=decision.queue,
        lock=decision.lock,
    )


def _finished(
    job_id: int,
    outcome: Outcome,
    delete_jobs: jobs.DeleteJobCondition,
    strategy_error: Exception | None = None,
) -> Verdict:
    delete = delete_jobs is jobs.DeleteJobCondition.ALWAYS or (
        delete_jobs is jobs.DeleteJobCondition.SUCCESSFUL and outcome is Outcome.SUCCEEDED
    )
    return Verdict(job_id, outcome, delete=delete, strategy_error=strategy_error)
