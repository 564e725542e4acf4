"""What became of a run: the `Outcome` of a job and the pure `decide()` that picks it.

`decide()` needs no event loop and does no I/O, so tests call it directly; the runners
call it when a job ends and hand its `Verdict` to the writer.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from procrastinate import exceptions, jobs, tasks
from procrastinate.job_context import AbortReason

from dawdle._errors import leaves
from dawdle._snooze import Snooze, later
from dawdle.backoff import RetryEvent, RetryPolicy

if TYPE_CHECKING:
    from dawdle._worker.stored_errors import JobError


class Outcome(enum.StrEnum):
    """How one run of a job ended, as counted in `WorkerStats.jobs` and logged."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    RETRY = "retry"
    PUT_BACK = "put_back"
    """Cancelled by the worker's shutdown: back to 'todo' to run again, no attempt lost."""
    SNOOZED = "snoozed"
    """The task raised `Snooze`: back to 'todo', due later, no attempt spent."""

    @property
    def log_action(self) -> str:
        """The `action` of the log record (Procrastinate's names where it has them)."""
        return _LOG_ACTIONS[self]

    @property
    def phrase(self) -> str:
        """How a log message says it: 'job x[1]() to be retried after 0.2 s'."""
        return _PHRASES.get(self, self.value)


_PHRASES: dict[Outcome, str] = {Outcome.RETRY: "to be retried", Outcome.PUT_BACK: "put back"}
# Runs that go back to 'todo' without spending an attempt: the task did not fail.
_FREE_RUNS = frozenset({Outcome.PUT_BACK, Outcome.SNOOZED})
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
    # No Procrastinate name either (it has no snooze); named as its own actions are.
    Outcome.SNOOZED: "job_snoozed",
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
    reason: str | None = None
    """Why a dawdle `RetryPolicy` retried or gave up, or when a snoozed job is due."""
    event: RetryEvent | None = None
    """A retry decided by a dawdle `RetryPolicy`: what its `on_retry` hook receives."""
    error: JobError | None = None
    """What a failed or retried run raised, for `dawdle_job_errors` (`stored_errors`)."""

    @property
    def status(self) -> str:
        """What the outcome writer's SQL receives: a job status, or 'delete'."""
        if self.delete:
            return "delete"
        if self.outcome in (Outcome.RETRY, *_FREE_RUNS):
            return "todo"
        return self.outcome.value

    @property
    def spends_attempt(self) -> bool:
        """Whether the write adds one to `attempts`: not for a put-back or a snooze."""
        return self.outcome not in _FREE_RUNS


def decide(
    task: tasks.Task[Any, Any, Any] | None,
    job: jobs.Job,
    failure: BaseException | None,
    abort_reason: AbortReason | None,
    *,
    cancelled: bool,
    delete_jobs: jobs.DeleteJobCondition = jobs.DeleteJobCondition.NEVER,
    now: datetime.datetime | None = None,
    elapsed: float | None = None,
) -> Verdict:
    """The verdict on a run of `job` that raised `failure` (None: returned normally).

    `cancelled` says the worker cancelled the run (an abort, or its shutdown when
    `abort_reason` is SHUTDOWN). A run ended by the shutdown is put back: cancelled (an
    async job, or a sync one no thread had begun), or a sync job that saw `should_abort()`
    and raised JobAborted, since its thread has ended. A sync job that returned or failed
    despite the request keeps that outcome. A `Snooze` (alone, or every leaf of an
    exception group) reschedules the job. Any other failure goes to the task's retry
    strategy: a dawdle `RetryPolicy` decides with `elapsed`, the seconds since the job's
    first run (for its deadline; None if unknown), Procrastinate's through its own hook.
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
    return _decided_on_failure(task, _FailedRun(job, failure, when, elapsed, delete_jobs))


@dataclass(frozen=True, slots=True)
class _FailedRun:
    """A run that raised, as the deciders see it: its job, its failure, when it ended."""

    job: jobs.Job
    failure: BaseException
    when: datetime.datetime
    elapsed: float | None
    """Seconds since the job's first run, for a policy's deadline (None if unknown)."""
    delete_jobs: jobs.DeleteJobCondition

    @property
    def job_id(self) -> int:
        """The job's id (claimed jobs have one)."""
        assert self.job.id is not None  # noqa: S101 (claimed jobs have ids)
        return self.job.id

    def failed(
        self, *, strategy_error: Exception | None = None, reason: str | None = None
    ) -> Verdict:
        """The verdict that the run failed for good (deleted if `delete_jobs` says so)."""
        return _finished(
            self.job_id,
            Outcome.FAILED,
            self.delete_jobs,
            strategy_error=strategy_error,
            reason=reason,
        )


def _decided_on_failure(task: tasks.Task[Any, Any, Any] | None, run: _FailedRun) -> Verdict:
    """The verdict on a run that raised: snoozed, or as its retry strategy says."""
    failures = leaves(run.failure)
    snoozes = [leaf for leaf in failures if isinstance(leaf, Snooze)]
    if snoozes and len(snoozes) == len(failures):
        due = max(snooze.scheduled_at(run.when) for snooze in snoozes)
        return Verdict(run.job_id, Outcome.SNOOZED, retry_at=due, reason=f"due {due.isoformat()}")
    strategy = None if task is None else task.retry_strategy
    # A subclass that overrides Procrastinate's hook is asked through that hook.
    if (
        isinstance(strategy, RetryPolicy)
        and type(strategy).get_retry_decision is RetryPolicy.get_retry_decision
    ):
        return _decided_by_policy(strategy, run)
    try:
        retry = (
            None if task is None else task.get_retry_exception(exception=run.failure, job=run.job)
        )
    except Exception as exc:  # noqa: BLE001 (a broken strategy fails its job, not the worker)
        return run.failed(strategy_error=exc)
    if retry is None:
        return run.failed()
    decision = retry.retry_decision
    return Verdict(
        run.job_id,
        Outcome.RETRY,
        retry_at=decision.retry_at or run.when,
        priority=decision.priority,
        queue=decision.queue,
        lock=decision.lock,
    )


def job_deadline(task: tasks.Task[Any, Any, Any] | None) -> float | None:
    """The deadline (seconds from a job's first run) of the task's dawdle `RetryPolicy`."""
    strategy = None if task is None else task.retry_strategy
    return strategy.deadline if isinstance(strategy, RetryPolicy) else None


def _decided_by_policy(policy: RetryPolicy, run: _FailedRun) -> Verdict:
    """A dawdle policy's verdict, with its reason, and the event its `on_retry` hook gets."""
    try:
        decision = policy.decide_job(run.failure, job=run.job, elapsed=run.elapsed)
    except Exception as exc:  # noqa: BLE001 (a broken policy fails its job, not the worker)
        return run.failed(strategy_error=exc)
    if not decision.retry or decision.delay is None:
        return run.failed(reason=decision.reason)
    event = RetryEvent(
        attempt=run.job.attempts + 1,
        delay=decision.delay,
        reason=decision.reason,
        exception=run.failure,
        job_id=run.job_id,
    )
    return Verdict(
        run.job_id,
        Outcome.RETRY,
        retry_at=later(run.when, decision.delay),
        reason=decision.reason,
        event=event,
    )


def _finished(
    job_id: int,
    outcome: Outcome,
    delete_jobs: jobs.DeleteJobCondition,
    strategy_error: Exception | None = None,
    reason: str | None = None,
) -> Verdict:
    delete = delete_jobs is jobs.DeleteJobCondition.ALWAYS or (
        delete_jobs is jobs.DeleteJobCondition.SUCCESSFUL and outcome is Outcome.SUCCEEDED
    )
    return Verdict(job_id, outcome, delete=delete, strategy_error=strategy_error, reason=reason)
