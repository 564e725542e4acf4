from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawdle import ConfigurationError
from dawdle.backoff import Backoff, Constant, DecorrelatedJitter, Exponential, Linear

seconds = st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False)
caps = st.floats(min_value=1e6, max_value=1e12, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=1, max_value=10**6)
jitters = st.one_of(
    st.sampled_from(["none", "full", "equal"]),
    st.floats(min_value=0.01, max_value=1.0),
)


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    kind = draw(st.sampled_from(["constant", "linear", "exponential", "decorrelated"]))
    cap = draw(caps)
    if kind == "constant":
        return Constant(draw(seconds), jitter=draw(jitters), max_delay=cap)
    if kind == "linear":
        return Linear(draw(seconds), draw(seconds), jitter=draw(jitters), max_delay=cap)
    if kind == "exponential":
        factor = draw(st.floats(min_value=1.0, max_value=1e3))
        return Exponential(draw(seconds), factor, jitter=draw(jitters), max_delay=cap)
    return DecorrelatedJitter(draw(seconds), max_delay=cap)


@given(backoffs(), attempts, st.integers())
def test_every_delay_is_finite_non_negative_and_capped(
    backoff: Backoff, attempt: int, seed: int
) -> None:
    """Any strategy, any attempt up to 10**6, any seed: 0 <= delay <= max_delay, finite."""
    delay = backoff.delay(attempt, random.Random(seed))
    assert math.isfinite(delay)
    assert 0.0 <= delay <= backoff.max_delay


@given(
    st.sampled_from(["constant", "linear", "exponential"]),
    seconds,
    st.floats(min_value=1.0, max_value=10.0),
    attempts,
)
def test_delays_never_decrease_without_jitter(
    kind: str, initial: float, factor: float, attempt: int
) -> None:
    """Without jitter a later retry never waits less than an earlier one."""
    backoff: Backoff = {
        "constant": Constant(initial),
        "linear": Linear(initial, factor, max_delay=1e7),
        "exponential": Exponential(initial, factor, max_delay=1e7),
    }[kind]
    assert backoff.delay(attempt) <= backoff.delay(attempt + 1)


@given(backoffs(), attempts, st.integers())
def test_same_seed_gives_same_delay(backoff: Backoff, attempt: int, seed: int) -> None:
    """A seeded rng reproduces the sequence exactly, jitter included."""
    assert backoff.delay(attempt, random.Random(seed)) == backoff.delay(
        attempt, random.Random(seed)
    )


@given(attempts)
def test_huge_attempts_do_not_overflow(attempt: int) -> None:
    """A factor of 10 overflows floats near attempt 309; the cap must take over silently."""
    backoff = Exponential(1.0, 10.0, max_delay=60.0)
    assert backoff.delay(attempt) == min(60.0, 10.0 ** min(attempt - 1, 300))


def test_exponential_doubles_from_initial() -> None:
    """Exponential(0.5, 2) waits 0.5, 1, 2, 4 ... in float seconds."""
    backoff = Exponential(0.5, 2.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_linear_and_constant_values() -> None:
    """Linear adds its step each retry; Constant never changes."""
    assert [Linear(1.0, 0.25).delay(n) for n in (1, 2, 5)] == [1.0, 1.25, 2.0]
    assert [Constant(0.3).delay(n) for n in (1, 100, 10**6)] == [0.3, 0.3, 0.3]


def test_cap_applies_to_linear() -> None:
    """A growing strategy stops at max_delay."""
    assert Linear(1.0, 10.0, max_delay=25.0).delay(10) == 25.0


@given(seconds, caps, attempts, st.integers())
def test_decorrelated_jitter_stays_within_initial_and_cap(
    initial: float, cap: float, attempt: int, seed: int
) -> None:
    """DecorrelatedJitter draws from [initial, max_delay], never below its floor."""
    backoff = DecorrelatedJitter(initial, max_delay=cap)
    assert initial <= backoff.delay(attempt, random.Random(seed)) <= cap


def test_decorrelated_jitter_does_not_collapse_at_the_cap() -> None:
    """Deep into the retries, clients still spread out instead of all waiting max_delay."""
    backoff = DecorrelatedJitter(1.0, max_delay=30.0)
    rng = random.Random(7)
    delays = [backoff.delay(50, rng) for _ in range(200)]
    assert len(set(delays)) == 200
    assert min(delays) < 10.0
    assert max(delays) > 20.0


def test_strategies_are_immutable_and_comparable() -> None:
    """Strategies are values: equal when built alike, hashable, and frozen."""
    assert Exponential(1.0, 2.0) == Exponential(1, 2)
    assert hash(Linear(1, 2)) == hash(Linear(1.0, 2.0))
    assert Constant(1) != Linear(1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError, match="initial"):
        Exponential().initial = 3.0  # type: ignore[misc]
    assert repr(Constant(2.0)) == "Constant(seconds=2.0, jitter='none', max_delay=2.0)"


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: Exponential(0), "initial"),
        (lambda: Exponential(1, 0.5), "factor"),
        (lambda: Exponential(1, float("inf")), "factor"),
        (lambda: Exponential(1, max_delay=float("inf")), "max_delay"),
        (lambda: Exponential(10, max_delay=5), "initial=10.0 exceeds max_delay=5.0"),
        (lambda: Linear(-1, 1), "initial"),
        (lambda: Linear(1, float("nan")), "step"),
        (lambda: Constant("5"), "seconds"),
        (lambda: Constant(True), "seconds"),
        (lambda: Constant(1, jitter="wide"), "jitter"),
        (lambda: Constant(1, jitter=1.5), "jitter"),
        (lambda: DecorrelatedJitter(5, max_delay=1), "exceeds max_delay"),
    ],
)
def test_bad_arguments_are_named(build: object, named: str) -> None:
    """Invalid arguments raise ConfigurationError (a ValueError) that names the bad value."""
    with pytest.raises(ConfigurationError, match=named):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("attempt", [0, -1, 1.5, True])
def test_bad_attempt_is_rejected(attempt: object) -> None:
    """Attempt counts from 1; anything else is a caller bug, reported with the value."""
    with pytest.raises(ConfigurationError, match="attempt"):
        Exponential().delay(attempt)  # type: ignore[arg-type]
