from __future__ import annotations

import dataclasses
import datetime
import random

import pytest
from procrastinate import App, RetryStrategy
from procrastinate.jobs import Job
from procrastinate.testing import InMemoryConnector

from dawdle import ConfigurationError
from dawdle.backoff import Constant, Exponential, ExponentialBackoffStrategy, RetryPolicy


class RateLimitedError(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__(f"retry after {retry_after}")
        self.retry_after = retry_after


def job(attempts: int) -> Job:
    return Job(
        id=1, queue="default", lock=None, queueing_lock=None, task_name="t", attempts=attempts
    )


def test_max_attempts_counts_runs() -> None:
    """max_attempts=3: retries after runs 1 and 2, gives up after run 3."""
    policy = RetryPolicy(backoff=Constant(1.0), max_attempts=3)
    assert [policy.decide(ValueError(), attempt=n).retry for n in (1, 2, 3)] == [True, True, False]
    assert "attempt 3 of 3" in policy.decide(ValueError(), attempt=3).reason


def test_unlimited_attempts() -> None:
    """max_attempts=None retries forever, with the backoff's capped delay."""
    policy = RetryPolicy(backoff=Exponential(1.0, max_delay=30.0), max_attempts=None)
    decision = policy.decide(ValueError(), attempt=10**6)
    assert decision.retry
    assert decision.delay == 30.0


def test_delay_follows_the_backoff() -> None:
    """The nth failure waits backoff.delay(n), in float seconds."""
    policy = RetryPolicy(backoff=Exponential(0.25, 2.0), max_attempts=10)
    assert [policy.decide(OSError(), attempt=n).delay for n in (1, 2, 3)] == [0.25, 0.5, 1.0]


def test_retry_on_and_give_up_on() -> None:
    """Only listed exceptions are retried, and give_up_on wins over retry_on."""
    policy = RetryPolicy(retry_on=(OSError,), give_up_on=(PermissionError,), max_attempts=5)
    assert policy.decide(ConnectionError(), attempt=1).retry
    refused = policy.decide(PermissionError(), attempt=1)
    assert not refused.retry
    assert refused.reason == "PermissionError is in give_up_on"
    assert policy.decide(ValueError(), attempt=1).reason == "ValueError is not in retry_on"


def test_exception_groups_retry_only_if_every_leaf_is_retryable() -> None:
    """A group is retried when all its leaves are; one fatal leaf, however deep, stops it."""
    policy = RetryPolicy(retry_on=(OSError,), give_up_on=(PermissionError,), max_attempts=5)
    retryable = ExceptionGroup("io", [ConnectionError(), ExceptionGroup("inner", [TimeoutError()])])
    assert policy.decide(retryable, attempt=1).retry
    mixed = ExceptionGroup("mixed", [ConnectionError(), ValueError()])
    assert not policy.decide(mixed, attempt=1).retry
    fatal = ExceptionGroup("deep", [OSError(), ExceptionGroup("inner", [PermissionError()])])
    assert policy.decide(fatal, attempt=1).reason == "PermissionError is in give_up_on"


def test_base_exceptions_are_not_retried_by_default() -> None:
    """KeyboardInterrupt and friends are not Exceptions, so the default retry_on skips them."""
    assert not RetryPolicy().decide(KeyboardInterrupt(), attempt=1).retry


def test_retry_if_predicate() -> None:
    """retry_if sees the exception and can veto the retry."""
    policy = RetryPolicy(retry_if=lambda exc: "transient" in str(exc), max_attempts=5)
    assert policy.decide(RuntimeError("transient glitch"), attempt=1).retry
    assert (
        policy.decide(RuntimeError("bad data"), attempt=1).reason
        == "retry_if rejected RuntimeError"
    )


def test_deadline_stops_retries_that_would_pass_it() -> None:
    """A retry whose wait would end after the deadline is not attempted."""
    policy = RetryPolicy(backoff=Constant(5.0), max_attempts=None, deadline=30.0)
    assert policy.decide(ValueError(), attempt=3, elapsed=20.0).retry
    late = policy.decide(ValueError(), attempt=4, elapsed=26.0)
    assert not late.retry
    assert "30s deadline" in late.reason


@pytest.mark.parametrize("hint", [7, 7.0, datetime.timedelta(seconds=7)])
def test_retry_after_is_honoured(hint: object) -> None:
    """An exception's retry_after (seconds or timedelta) replaces the backoff's delay."""
    policy = RetryPolicy(backoff=Constant(1.0, max_delay=60.0), max_attempts=5)
    decision = policy.decide(RateLimitedError(hint), attempt=1)
    assert decision.delay == 7.0
    assert "retry_after=7s" in decision.reason


def test_retry_after_is_not_capped_at_max_delay_and_can_be_ignored() -> None:
    """A hint above the backoff's max_delay is waited in full; retry_after=False ignores it."""
    policy = RetryPolicy(backoff=Constant(1.0, max_delay=60.0), max_attempts=5)
    decision = policy.decide(RateLimitedError(600), attempt=1)
    assert decision.delay == 600.0
    assert "retry_after=600s" in decision.reason
    ignoring = RetryPolicy(backoff=Constant(1.0), max_attempts=5, retry_after=False)
    assert ignoring.retry_after == "ignore"
    assert ignoring.decide(RateLimitedError(30), attempt=1).delay == 1.0


def test_retry_after_inside_a_group_and_invalid_hints() -> None:
    """The longest valid hint among a group's leaves counts; NaN and strings are ignored."""
    policy = RetryPolicy(backoff=Constant(1.0, max_delay=60.0), max_attempts=5)
    group = ExceptionGroup(
        "g", [RateLimitedError(3), RateLimitedError(9), RateLimitedError(float("nan"))]
    )
    assert policy.decide(group, attempt=1).delay == 9.0
    assert policy.decide(RateLimitedError("soon"), attempt=1).delay == 1.0


def test_seeded_policy_is_reproducible() -> None:
    """A policy's rng makes its jittered decisions repeatable."""

    def delays(seed: int) -> list[float | None]:
        policy = RetryPolicy(max_attempts=None, rng=random.Random(seed))
        return [policy.decide(ValueError(), attempt=n).delay for n in range(1, 20)]

    assert delays(3) == delays(3)
    assert delays(3) != delays(4)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"deadline": -1}, "deadline"),
        ({"retry_on": ValueError()}, "retry_on"),
        ({"give_up_on": (ValueError, "KeyError")}, "give_up_on"),
        ({"retry_if": 3}, "retry_if"),
        ({"backoff": 5}, "backoff"),
    ],
)
def test_bad_policy_arguments_are_named(kwargs: dict[str, object], named: str) -> None:
    """Invalid arguments raise ConfigurationError naming the argument and the value."""
    with pytest.raises(ConfigurationError, match=named):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_as_procrastinate_retry_strategy() -> None:
    """get_retry_decision maps job.attempts (0 on the first run) to our 1-based attempt."""
    policy = RetryPolicy(backoff=Exponential(10.0, 2.0), max_attempts=3)
    before = datetime.datetime.now(datetime.UTC)
    first = policy.get_retry_decision(exception=ValueError(), job=job(attempts=0))
    second = policy.get_retry_decision(exception=ValueError(), job=job(attempts=1))
    after = datetime.datetime.now(datetime.UTC)
    assert first is not None
    assert first.retry_at is not None
    assert second is not None
    assert second.retry_at is not None
    assert first.retry_at.tzinfo is datetime.UTC
    assert (
        before + datetime.timedelta(seconds=10)
        <= first.retry_at
        <= after + datetime.timedelta(seconds=10)
    )
    assert (
        before + datetime.timedelta(seconds=20)
        <= second.retry_at
        <= after + datetime.timedelta(seconds=20)
    )
    assert policy.get_retry_decision(exception=ValueError(), job=job(attempts=2)) is None


def test_accepted_by_app_task_next_to_procrastinate_strategies() -> None:
    """@app.task(retry=...) takes a RetryPolicy as is, like Procrastinate's own strategies."""
    app = App(connector=InMemoryConnector())
    policy = RetryPolicy(max_attempts=4)

    @app.task(retry=policy)
    def ours() -> None: ...

    @app.task(retry=RetryStrategy(max_attempts=3))
    def theirs() -> None: ...

    assert ours.retry_strategy is policy
    exception = ours.get_retry_exception(exception=ValueError(), job=job(attempts=0))
    assert exception is not None
    assert ours.get_retry_exception(exception=ValueError(), job=job(attempts=3)) is None
    assert theirs.get_retry_exception(exception=ValueError(), job=job(attempts=2)) is not None


def test_a_group_class_in_retry_on_matches_the_group_itself() -> None:
    """retry_on=ExceptionGroup retries a group whatever its leaves; a bare leaf still is not."""
    policy = RetryPolicy(retry_on=ExceptionGroup, max_attempts=5)
    assert policy.decide(ExceptionGroup("g", [ValueError(), KeyError()]), attempt=1).retry
    assert not policy.decide(ValueError(), attempt=1).retry
    nested = RetryPolicy(retry_on=(OSError, ExceptionGroup), max_attempts=5)
    assert nested.decide(
        ExceptionGroup("outer", [ExceptionGroup("in", [KeyError()])]), attempt=1
    ).retry


def test_a_group_class_in_give_up_on_matches_the_group_itself() -> None:
    """give_up_on=ExceptionGroup gives up on any group, even one of retryable leaves."""
    policy = RetryPolicy(give_up_on=ExceptionGroup, max_attempts=5)
    refused = policy.decide(ExceptionGroup("g", [ConnectionError()]), attempt=1)
    assert not refused.retry
    assert refused.reason == "ExceptionGroup is in give_up_on"
    assert policy.decide(ConnectionError(), attempt=1).retry


def test_decide_job_is_reproducible_and_seeded_per_job() -> None:
    """The same job and attempt always get the same jittered wait; other jobs get others."""
    policy = RetryPolicy(max_attempts=None)
    first = policy.decide_job(OSError(), job=job(attempts=4), elapsed=None)
    assert first == policy.decide_job(OSError(), job=job(attempts=4), elapsed=None)
    others = {
        policy.decide_job(
            OSError(),
            job=Job(id=n, queue="q", lock=None, queueing_lock=None, task_name="t", attempts=4),
            elapsed=None,
        ).delay
        for n in range(2, 40)
    }
    assert len(others) > 30


def test_decide_job_applies_the_deadline_to_elapsed() -> None:
    """A job 59 s past its first run, with a 60 s deadline and a 2 s wait, is not retried."""
    policy = RetryPolicy(backoff=Constant(2.0), deadline=60, max_attempts=None)
    assert policy.decide_job(OSError(), job=job(attempts=1), elapsed=10.0).retry
    late = policy.decide_job(OSError(), job=job(attempts=1), elapsed=59.0)
    assert not late.retry
    assert "60s deadline" in late.reason


def test_exponential_backoff_strategy_counts_retries_like_procrastinate() -> None:
    """max_attempts=3 gives four runs in both dawdle's short form and Procrastinate's strategy."""
    ours = ExponentialBackoffStrategy(max_attempts=3)
    theirs = RetryStrategy(max_attempts=3)
    for attempts in range(6):
        mine = ours.get_retry_decision(exception=ValueError(), job=job(attempts=attempts))
        procrastinates = theirs.get_retry_decision(exception=ValueError(), job=job(attempts))
        assert (mine is None) == (procrastinates is None), attempts
    assert ours.get_retry_decision(exception=ValueError(), job=job(attempts=3)) is None


def test_exponential_backoff_strategy_replaces_its_max_attempts() -> None:
    """dataclasses.replace(ExponentialBackoffStrategy(), max_attempts=5) is a new strategy."""
    replaced = dataclasses.replace(ExponentialBackoffStrategy(), max_attempts=5)
    assert replaced.max_attempts == 5
    assert replaced.decide(ValueError(), attempt=5).retry
    assert not replaced.decide(ValueError(), attempt=6).retry


def test_default_jitter_of_each_entry_point() -> None:
    """As documented: RetryPolicy() has full jitter; Exponential() and the short form have none."""
    assert RetryPolicy().backoff == Exponential(1.0, 2.0, jitter="full")
    assert Exponential().jitter == "none"
    assert ExponentialBackoffStrategy().backoff.jitter == "none"
