"""The worker's pure `decide()`: what becomes of a run, checked without an event loop."""

from __future__ import annotations

import datetime
import pickle
from typing import Any

import pytest
from procrastinate import BaseRetryStrategy, RetryDecision, RetryStrategy, exceptions, jobs, tasks
from procrastinate.job_context import AbortReason

from dawdle import App, ConfigurationError, InMemoryConnector, JobTimeout, Outcome, Snooze
from dawdle._worker.outcomes import Verdict, decide, job_deadline
from dawdle.backoff import MAX_JOB_DELAY, Constant, RetryPolicy

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
    elapsed: float | None = None,
) -> Verdict:
    return decide(
        make_task(retry),
        make_job(attempts),
        failure,
        abort_reason,
        cancelled=cancelled,
        delete_jobs=delete_jobs,
        now=NOW,
        elapsed=elapsed,
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
    assert verdict.retry_at == NOW + datetime.timedelta(seconds=30)


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
        Outcome.SNOOZED: "job_snoozed",  # dawdle's own: Procrastinate has no snooze
    }


# -- snooze ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snooze", "due"),
    [
        (Snooze(30), NOW + datetime.timedelta(seconds=30)),
        (Snooze(datetime.timedelta(minutes=2)), NOW + datetime.timedelta(minutes=2)),
        (Snooze(NOW + datetime.timedelta(hours=1)), NOW + datetime.timedelta(hours=1)),
        (Snooze(0), NOW),
    ],
    ids=["seconds", "timedelta", "datetime", "zero"],
)
def test_a_snooze_reschedules_without_spending_an_attempt(
    snooze: Snooze, due: datetime.datetime
) -> None:
    """Snooze(seconds | timedelta | datetime): 'todo' at that time, attempts untouched."""
    verdict = verdict_of(snooze, retry=RetryPolicy(max_attempts=1), attempts=4)
    assert (verdict.outcome, verdict.status, verdict.retry_at) == (Outcome.SNOOZED, "todo", due)
    assert verdict.spends_attempt is False
    assert verdict.event is None


def test_a_snooze_without_retry_strategy_still_snoozes() -> None:
    """A task with no `retry=` may snooze: snoozing is not a failure."""
    assert verdict_of(Snooze(1)).outcome is Outcome.SNOOZED


def test_a_group_of_snoozes_snoozes_until_the_latest() -> None:
    """Every leaf of an exception group is a Snooze: the job snoozes until the latest one."""
    group = ExceptionGroup("tasks", [Snooze(5), ExceptionGroup("inner", [Snooze(50)])])
    verdict = verdict_of(group)
    assert (verdict.outcome, verdict.retry_at) == (
        Outcome.SNOOZED,
        NOW + datetime.timedelta(seconds=50),
    )


def test_a_snooze_beside_a_failure_is_a_failure() -> None:
    """A group holding a Snooze and an error is a failure: the retry strategy decides."""
    group = ExceptionGroup("tasks", [Snooze(5), ValueError("boom")])
    assert verdict_of(group, retry=RetryPolicy(max_attempts=2)).outcome is Outcome.RETRY
    assert verdict_of(group).outcome is Outcome.FAILED


def test_a_snooze_during_the_shutdown_is_put_back_by_a_cancellation() -> None:
    """A run cancelled by the shutdown is put back, whatever it raised on the way out."""
    verdict = verdict_of(Snooze(60), abort_reason=AbortReason.SHUTDOWN, cancelled=True)
    assert verdict.outcome is Outcome.PUT_BACK


def test_a_very_long_snooze_is_shortened_to_max_job_delay() -> None:
    """Snooze(1e300), 10**400 s or timedelta.max: due MAX_JOB_DELAY later, as a retry would be."""
    due = NOW + datetime.timedelta(seconds=MAX_JOB_DELAY)
    assert verdict_of(Snooze(1e300)).retry_at == due
    assert verdict_of(Snooze(10**400)).retry_at == due
    assert verdict_of(Snooze(datetime.timedelta.max)).retry_at == due


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (-1, "-1"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (datetime.timedelta(seconds=-5), "timedelta(days=-1, seconds=86395)"),
        (datetime.datetime(2026, 1, 1), "naive datetime.datetime(2026, 1, 1, 0, 0)"),
        ("30", "str '30'"),
        (True, "True"),
    ],
    ids=["negative", "nan", "inf", "negative-timedelta", "naive", "str", "bool"],
)
def test_a_bad_snooze_is_refused_naming_the_value(value: Any, named: str) -> None:
    """Snooze refuses negatives, NaN, infinity, naive datetimes and non-times, naming them."""
    with pytest.raises(ConfigurationError, match=r"^Snooze: .*") as caught:
        Snooze(value)
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_snooze_reads_well_and_pickles() -> None:
    """A Snooze says what it asks for, and survives pickling (process pools, logs)."""
    snooze = pickle.loads(pickle.dumps(Snooze(2.5)))  # noqa: S301 (our own bytes)
    assert (str(snooze), snooze.delay, snooze.until) == ("snoozed for 2.5 s", 2.5, None)
    assert str(Snooze(NOW)) == f"snoozed until {NOW.isoformat()}"


# -- which runs spend an attempt ------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "spends"),
    [
        (Outcome.SUCCEEDED, True),
        (Outcome.FAILED, True),
        (Outcome.ABORTED, True),
        (Outcome.RETRY, True),
        (Outcome.PUT_BACK, False),
        (Outcome.SNOOZED, False),
    ],
)
def test_only_runs_the_task_decided_spend_an_attempt(outcome: Outcome, spends: bool) -> None:
    """Put-backs and snoozes leave `attempts` alone; every other written run adds one."""
    assert Verdict(7, outcome).spends_attempt is spends


# -- dawdle RetryPolicy: deadline, reason, event --------------------------------------------


def test_a_policy_deadline_gives_up_on_a_job_past_it() -> None:
    """RetryPolicy(deadline=60, max_attempts=None): 59 s in retries, 61 s in fails."""
    policy = RetryPolicy(backoff=Constant(0.5), max_attempts=None, deadline=60)
    assert verdict_of(ValueError(), retry=policy, attempts=100, elapsed=59).outcome is (
        Outcome.RETRY
    )
    late = verdict_of(ValueError(), retry=policy, attempts=100, elapsed=61)
    assert late.outcome is Outcome.FAILED
    assert late.reason is not None
    assert "deadline" in late.reason


def test_a_policy_retry_carries_the_event_its_hook_receives() -> None:
    """A retry decided by a RetryPolicy carries a RetryEvent: attempt, delay, reason, job."""
    failure = ValueError("boom")
    verdict = verdict_of(failure, retry=RetryPolicy(backoff=Constant(30.0)), attempts=1)
    event = verdict.event
    assert event is not None
    assert (event.attempt, event.delay, event.exception, event.job_id) == (2, 30.0, failure, 7)
    assert verdict.reason == event.reason
    assert verdict.retry_at == NOW + datetime.timedelta(seconds=event.delay)


def test_a_policy_delay_of_centuries_is_due_within_max_job_delay() -> None:
    """Constant(1e12) on a job is due MAX_JOB_DELAY later, not an OverflowError."""
    verdict = verdict_of(ValueError(), retry=RetryPolicy(backoff=Constant(1e12)))
    assert verdict.retry_at == NOW + datetime.timedelta(seconds=MAX_JOB_DELAY)


def test_a_policy_subclass_overriding_procrastinates_hook_is_asked_through_it() -> None:
    """A RetryPolicy subclass with its own get_retry_decision keeps deciding through it."""

    class Moving(RetryPolicy):
        def get_retry_decision(
            self, *, exception: BaseException, job: jobs.Job
        ) -> RetryDecision | None:
            return RetryDecision(retry_in={"seconds": 1}, queue="elsewhere")

    verdict = verdict_of(ValueError(), retry=Moving(max_attempts=1))
    assert (verdict.outcome, verdict.queue, verdict.event) == (Outcome.RETRY, "elsewhere", None)


def test_job_deadline_reads_only_dawdle_policies() -> None:
    """job_deadline: a RetryPolicy's deadline; None for other strategies or none."""
    assert job_deadline(make_task(RetryPolicy(deadline=5))) == 5
    assert job_deadline(make_task(RetryPolicy())) is None
    assert job_deadline(make_task(RetryStrategy(max_attempts=2))) is None
    assert job_deadline(None) is None
