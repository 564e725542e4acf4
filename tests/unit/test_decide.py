"""The worker's pure `decide()`: what becomes of a run, checked without an event loop."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from procrastinate import BaseRetryStrategy, RetryDecision, RetryStrategy, exceptions, jobs, tasks
from procrastinate.job_context import AbortReason

from dawdle import App, InMemoryConnector, JobTimeout, Outcome
from dawdle._worker.outcomes import Verdict, decide
from dawdle.backoff import Constant, RetryPolicy

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
NEVER = jobs.DeleteJobCondition.NEVER


def make_task(retry: Any = None) -> tasks.Task[Any, Any, Any]:
    app = App(connector=InMemoryConnector())

    @app.task(name="subject", retry=retry)
    async def subject() -> None: ...

    return subject


def make_job(attempts: int = 0) -> jobs.Job:
    return jobs.Job(
        id=7,
        queue="default",
        lock=None,
        queueing_lock=None,
        task_name="subject",
        attempts=attempts,
    )


def verdict_of(
    failure: BaseException | None,
    *,
    retry: Any = None,
    attempts: int = 0,
    abort_reason: AbortReason | None = None,
    cancelled: bool = False,
    delete_jobs: jobs.DeleteJobCondition = NEVER,
) -> Verdict:
    return decide(
        make_task(retry),
        make_job(attempts),
        failure,
        abort_reason,
        cancelled=cancelled,
        delete_jobs=delete_jobs,
        now=NOW,
    )


def test_a_run_that_returned_succeeded() -> None:
    """No failure and no cancellation: succeeded, written as 'succeeded'."""
    verdict = verdict_of(None)
    assert (verdict.outcome, verdict.status, verdict.retry_at) == (
        Outcome.SUCCEEDED,
        "succeeded",
        None,
    )


def test_a_failure_without_retry_strategy_fails() -> None:
    """A task with no `retry=` fails on its first failure."""
    verdict = verdict_of(ValueError("boom"))
    assert (verdict.outcome, verdict.status) == (Outcome.FAILED, "failed")


def test_a_failure_with_attempts_left_is_retried_after_the_backoff() -> None:
    """RetryPolicy with attempts left: 'todo' again, due after the policy's delay."""
    verdict = verdict_of(
        ValueError(), retry=RetryPolicy(backoff=Constant(30.0), max_attempts=3), attempts=1
    )
    assert (verdict.outcome, verdict.status) == (Outcome.RETRY, "todo")
    assert verdict.retry_at is not None
    wait = verdict.retry_at - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(seconds=29) < wait <= datetime.timedelta(seconds=30)


def test_the_last_allowed_run_fails() -> None:
    """max_attempts counts runs: the third failure of max_attempts=3 fails the job."""
    verdict = verdict_of(ValueError(), retry=RetryPolicy(max_attempts=3), attempts=2)
    assert verdict.outcome is Outcome.FAILED


def test_a_timeout_goes_to_the_retry_strategy() -> None:
    """JobTimeout is a failure like any other: the policy retries it."""
    verdict = verdict_of(JobTimeout("late"), retry=RetryPolicy(max_attempts=2))
    assert verdict.outcome is Outcome.RETRY


def test_procrastinate_retry_decision_moves_queue_priority_and_lock() -> None:
    """A RetryDecision's new queue, priority and lock are carried to the writer."""

    class Move(BaseRetryStrategy):
        def get_retry_decision(
            self, *, exception: BaseException, job: jobs.Job
        ) -> RetryDecision | None:
            return RetryDecision(retry_in={"seconds": 5}, priority=3, queue="slow", lock="l")

    verdict = verdict_of(ValueError(), retry=Move())
    assert (verdict.outcome, verdict.priority, verdict.queue, verdict.lock) == (
        Outcome.RETRY,
        3,
        "slow",
        "l",
    )


def test_procrastinate_retry_strategy_without_wait_is_due_now() -> None:
    """RetryStrategy(max_attempts=1) has no wait: the retry is due at once."""
    verdict = verdict_of(ValueError(), retry=RetryStrategy(max_attempts=1))
    assert verdict.outcome is Outcome.RETRY
    assert verdict.retry_at is not None
    assert verdict.retry_at <= datetime.datetime.now(datetime.UTC)


def test_a_retry_decision_without_time_is_due_at_now() -> None:
    """RetryDecision() names no time: the retry is due at the `now` decide() was given."""

    class Immediately(BaseRetryStrategy):
        def get_retry_decision(
            self, *, exception: BaseException, job: jobs.Job
        ) -> RetryDecision | None:
            return RetryDecision()

    verdict = verdict_of(ValueError(), retry=Immediately())
    assert (verdict.outcome, verdict.retry_at) == (Outcome.RETRY, NOW)


def test_a_strategy_that_raises_fails_the_job_and_keeps_its_error() -> None:
    """A broken retry strategy fails its job; the error is kept for the log, not raised."""

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in retry_if")

    verdict = verdict_of(ValueError(), retry=RetryPolicy(retry_if=broken))
    assert verdict.outcome is Outcome.FAILED
    assert isinstance(verdict.strategy_error, RuntimeError)


def test_an_unknown_task_fails() -> None:
    """With no task (not registered in this app) there is no strategy: failed."""
    verdict = decide(
        None, make_job(), exceptions.TaskNotFound(), None, cancelled=False, delete_jobs=NEVER
    )
    assert verdict.outcome is Outcome.FAILED


def test_a_shutdown_cancellation_puts_the_job_back_now() -> None:
    """Cancelled for the shutdown: put back, due at once, with no retry strategy asked."""
    verdict = verdict_of(
        None,
        retry=RetryPolicy(max_attempts=1),
        abort_reason=AbortReason.SHUTDOWN,
        cancelled=True,
        delete_jobs=jobs.DeleteJobCondition.ALWAYS,
    )
    assert (verdict.outcome, verdict.status, verdict.retry_at) == (Outcome.PUT_BACK, "todo", NOW)


@pytest.mark.parametrize(
    ("failure", "cancelled"),
    [(None, True), (exceptions.JobAborted(), False)],
    ids=["async", "sync"],
)
def test_a_user_abort_ends_aborted_even_with_retries(
    failure: BaseException | None, cancelled: bool
) -> None:
    """An abort (cancelled scope, or JobAborted from a sync job) is never retried."""
    verdict = verdict_of(
        failure,
        retry=RetryPolicy(max_attempts=5),
        abort_reason=AbortReason.USER_REQUEST,
        cancelled=cancelled,
    )
    assert (verdict.outcome, verdict.status) == (Outcome.ABORTED, "aborted")


@pytest.mark.parametrize(
    ("delete_jobs", "failure", "deleted"),
    [
        (jobs.DeleteJobCondition.SUCCESSFUL, None, True),
        (jobs.DeleteJobCondition.SUCCESSFUL, ValueError(), False),
        (jobs.DeleteJobCondition.ALWAYS, ValueError(), True),
        (jobs.DeleteJobCondition.NEVER, None, False),
    ],
)
def test_delete_jobs_decides_which_finished_jobs_are_deleted(
    delete_jobs: jobs.DeleteJobCondition, failure: BaseException | None, deleted: bool
) -> None:
    """delete_jobs='successful' deletes succeeded jobs only; 'always' every finished one."""
    verdict = verdict_of(failure, delete_jobs=delete_jobs)
    assert (verdict.status == "delete") is deleted


def test_a_retry_is_never_deleted() -> None:
    """delete_jobs='always' deletes finished jobs, not ones that will run again."""
    verdict = verdict_of(
        ValueError(), retry=RetryPolicy(max_attempts=2), delete_jobs=jobs.DeleteJobCondition.ALWAYS
    )
    assert (verdict.outcome, verdict.status) == (Outcome.RETRY, "todo")


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_has_a_log_action_and_a_phrase(outcome: Outcome) -> None:
    """Each outcome names its log action (Procrastinate's names) and reads well in a message."""
    assert outcome.log_action.startswith("job_")
    assert outcome.phrase


def test_a_sync_job_that_aborts_for_the_shutdown_is_put_back() -> None:
    """JobAborted after the shutdown asked (its thread has ended): put back, not aborted."""
    verdict = verdict_of(
        exceptions.JobAborted(),
        retry=RetryPolicy(max_attempts=5),
        abort_reason=AbortReason.SHUTDOWN,
    )
    assert (verdict.outcome, verdict.status, verdict.retry_at) == (Outcome.PUT_BACK, "todo", NOW)


def test_a_sync_job_that_returns_despite_the_shutdown_succeeds() -> None:
    """Asked to stop by the shutdown but returned normally: its real outcome, succeeded."""
    verdict = verdict_of(None, abort_reason=AbortReason.SHUTDOWN)
    assert (verdict.outcome, verdict.status) == (Outcome.SUCCEEDED, "succeeded")


def test_a_sync_job_failing_during_the_shutdown_goes_to_its_retry_strategy() -> None:
    """A failure other than JobAborted while the shutdown asked: retried as any failure."""
    verdict = verdict_of(
        ValueError(), retry=RetryPolicy(max_attempts=2), abort_reason=AbortReason.SHUTDOWN
    )
    assert (verdict.outcome, verdict.status) == (Outcome.RETRY, "todo")


def test_outcomes_log_procrastinates_actions() -> None:
    """The outcomes Procrastinate also has are logged under its `action` names."""
    assert {outcome: outcome.log_action for outcome in Outcome} == {
        Outcome.SUCCEEDED: "job_success",
        Outcome.FAILED: "job_error",
        Outcome.ABORTED: "job_aborted",
        Outcome.RETRY: "job_error_retry",
        Outcome.PUT_BACK: "job_put_back",  # dawdle's own: Procrastinate has no put-back
    }
