"""Every strategy and policy is total: a finite, non-negative, capped wait, or a clear refusal."""

from __future__ import annotations

import datetime
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procrastinate.jobs import Job

from dawdle import ConfigurationError
from dawdle.backoff import (
    MAX_JOB_DELAY,
    Backoff,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Linear,
    RetryPolicy,
)

# Bounded example counts keep the suite fast; the properties hold for any input.
EXAMPLES = settings(max_examples=150, deadline=None)

durations = st.floats(min_value=0.0, max_value=1e15, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-9, max_value=1e15, allow_nan=False, allow_infinity=False)
factors = st.floats(min_value=1.0, max_value=1e300, allow_nan=False, allow_infinity=False)
attempts = st.one_of(
    st.integers(min_value=1, max_value=100),
    st.integers(min_value=1, max_value=10**400),
    st.just(10**400),
)
jitters = st.one_of(
    st.sampled_from(["none", "full", "equal"]),
    st.floats(min_value=1e-6, max_value=1.0),
)


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    """Any strategy, with arguments from the whole range each one accepts."""
    cap = draw(positive)
    start = draw(st.floats(min_value=1e-9, max_value=cap))
    kind = draw(st.sampled_from(["constant", "linear", "exponential", "decorrelated"]))
    if kind == "constant":
        return Constant(start, jitter=draw(jitters), max_delay=cap)
    if kind == "linear":
        return Linear(start, draw(durations), jitter=draw(jitters), max_delay=cap)
    if kind == "exponential":
        return Exponential(start, draw(factors), jitter=draw(jitters), max_delay=cap)
    return DecorrelatedJitter(start, max_delay=cap)


def job(attempts: int, job_id: int = 1) -> Job:
    return Job(
        id=job_id,
        queue="default",
        lock=None,
        queueing_lock=None,
        task_name="t",
        attempts=attempts,
    )


class HintedError(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__("hinted")
        self.retry_after = retry_after


@EXAMPLES
@given(backoffs(), attempts, st.integers(), st.one_of(st.none(), durations))
def test_every_strategy_is_total(
    backoff: Backoff, attempt: int, seed: int, previous: float | None
) -> None:
    """Any strategy, attempt up to 10**400 and previous delay: 0 <= delay <= max_delay, finite."""
    delay = backoff.delay(attempt, random.Random(seed), previous=previous)
    assert math.isfinite(delay)
    assert 0.0 <= delay <= backoff.max_delay


@EXAMPLES
@given(
    backoffs(),
    attempts,
    st.one_of(st.none(), durations, st.timedeltas(min_value=datetime.timedelta(0))),
    st.one_of(st.none(), durations, st.integers(min_value=0, max_value=10**400)),
    st.sampled_from(["max", "hint", "ignore"]),
)
def test_every_policy_decision_is_total(
    backoff: Backoff,
    attempt: int,
    elapsed: float | datetime.timedelta | None,
    hint: float | None,
    mode: str,
) -> None:
    """Any policy, attempt, elapsed and hint: a refusal, or a finite wait within the ceilings."""
    policy = RetryPolicy(
        backoff=backoff,
        max_attempts=None,
        deadline=1e9,
        retry_after=mode,  # type: ignore[arg-type]
        retry_after_jitter=0.5,
    )
    decision = policy.decide(HintedError(hint), attempt=attempt, elapsed=elapsed)
    if decision.retry:
        assert decision.delay is not None
        assert math.isfinite(decision.delay)
        assert 0.0 <= decision.delay <= max(backoff.max_delay, policy.retry_after_max * 1.5)
    else:
        assert decision.delay is None


@EXAMPLES
@given(backoffs(), st.integers(min_value=0, max_value=10**6), st.integers(min_value=1))
def test_every_job_decision_gives_a_storable_retry_at(
    backoff: Backoff, attempts_so_far: int, job_id: int
) -> None:
    """Any strategy on a job: the Procrastinate hook gives a retry_at Python can represent."""
    policy = RetryPolicy(backoff=backoff, max_attempts=None)
    decision = policy.get_retry_decision(exception=ValueError(), job=job(attempts_so_far, job_id))
    assert decision is not None
    assert decision.retry_at is not None


def test_linear_and_exponential_survive_an_attempt_of_ten_to_the_400() -> None:
    """The issue's cases: no OverflowError, and a factor of 1 never grows."""
    assert Linear(1, 1).delay(10**400) == 3600.0
    assert Linear(1, 0).delay(10**400) == 1.0
    assert Exponential(1, 1, max_delay=100).delay(10**400) == 1.0
    assert Exponential(1, 2, max_delay=100).delay(10**400) == 100.0
    assert DecorrelatedJitter(1).delay(10**400, random.Random(1)) <= 3600.0


def test_exponential_is_exact_just_below_and_at_the_cap() -> None:
    """Comparing exponents first changes nothing below the cap."""
    backoff = Exponential(1.0, 2.0, max_delay=1024.0)
    assert [backoff.delay(n) for n in (10, 11, 12)] == [512.0, 1024.0, 1024.0]


def test_a_huge_retry_after_gives_up_instead_of_overflowing() -> None:
    """retry_after=10**400 is above any ceiling: the policy gives up and says why."""
    decision = RetryPolicy().decide(HintedError(10**400), attempt=1)
    assert not decision.retry
    assert "retry_after_max" in decision.reason


def test_a_huge_constant_on_a_job_is_shortened_to_max_job_delay() -> None:
    """Constant(1e12) on a job: retry_at within MAX_JOB_DELAY, no date overflow, reason says it."""
    policy = RetryPolicy(backoff=Constant(1e12), max_attempts=None)
    decision = policy.decide_job(ValueError(), job=job(0), elapsed=None)
    assert decision.delay == MAX_JOB_DELAY
    assert "MAX_JOB_DELAY" in decision.reason
    retry = policy.get_retry_decision(exception=ValueError(), job=job(0))
    assert retry is not None
    assert retry.retry_at is not None
    limit = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=MAX_JOB_DELAY)
    assert retry.retry_at <= limit


@pytest.mark.parametrize("elapsed", [float("nan"), -1.0, float("inf"), datetime.timedelta(-1)])
def test_bad_elapsed_is_refused_by_name(elapsed: object) -> None:
    """decide(elapsed=NaN or negative) raises ConfigurationError naming elapsed, deadline or not."""
    for policy in (RetryPolicy(deadline=60), RetryPolicy()):
        with pytest.raises(ConfigurationError, match="elapsed"):
            policy.decide(ValueError(), attempt=1, elapsed=elapsed)  # type: ignore[arg-type]


def test_elapsed_as_a_timedelta_counts_against_the_deadline() -> None:
    """A timedelta elapsed is read in seconds: 59 s in, a 2 s wait passes a 60 s deadline."""
    policy = RetryPolicy(backoff=Constant(2.0), deadline=datetime.timedelta(minutes=1))
    assert policy.deadline == 60.0
    late = policy.decide(ValueError(), attempt=1, elapsed=datetime.timedelta(seconds=59))
    assert not late.retry
    assert policy.decide(ValueError(), attempt=1, elapsed=datetime.timedelta(seconds=1)).retry


@pytest.mark.parametrize("previous", [float("nan"), -1.0, float("inf")])
def test_bad_previous_delay_is_refused_by_name(previous: float) -> None:
    """delay(previous=NaN or negative) raises ConfigurationError naming previous."""
    with pytest.raises(ConfigurationError, match="previous"):
        DecorrelatedJitter().delay(2, previous=previous)


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: Constant(float("nan")), "seconds"),
        (lambda: Linear(1.0, -1.0), "step"),
        (lambda: Exponential(1.0, float("nan")), "factor"),
        (lambda: DecorrelatedJitter(float("inf")), "initial"),
        (lambda: RetryPolicy(retry_after_max=float("nan")), "retry_after_max"),
        (lambda: RetryPolicy(retry_after_max=-1), "retry_after_max"),
        (lambda: RetryPolicy(retry_after_jitter=2.0), "retry_after_jitter"),
        (lambda: RetryPolicy(retry_after="sometimes"), "retry_after"),
        (lambda: RetryPolicy(deadline=float("nan")), "deadline"),
        (lambda: RetryPolicy(on_retry=3), "on_retry"),
    ],
)
def test_nan_negative_and_unknown_arguments_are_named(build: object, named: str) -> None:
    """NaN, negative and unknown arguments raise ConfigurationError naming the argument."""
    assert callable(build)
    with pytest.raises(ConfigurationError, match=named):
        build()
