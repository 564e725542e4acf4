"""dawdle.backoff's strategies, policies, decisions and budgets are values: they copy and pickle."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawdle import ConfigurationError
from dawdle.backoff import (
    Backoff,
    Constant,
    Decision,
    DecorrelatedJitter,
    Exponential,
    ExponentialBackoffStrategy,
    Linear,
    RetryBudget,
    RetryPolicy,
)
from tests.unit.backoff_strategies import backoffs

COPIES: dict[str, Callable[[object], object]] = {
    "pickle": lambda value: pickle.loads(pickle.dumps(value)),  # noqa: S301 (our own bytes)
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
}
copies = pytest.mark.parametrize("duplicate", COPIES.values(), ids=COPIES.keys())


class FakeClock:
    """A clock tests move by hand; a module-level class, so budgets holding it pickle."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def delays(backoff: Backoff, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [backoff.delay(attempt, rng) for attempt in range(1, 30)]


def policy_delays(policy: RetryPolicy) -> list[float | None]:
    return [policy.decide(OSError(), attempt=n).delay for n in range(1, 30)]


@given(backoff=backoffs, seed=st.integers(), name=st.sampled_from(list(COPIES)))
def test_strategies_pickle_and_copy_to_equal_values(backoff: Backoff, seed: int, name: str) -> None:
    """Any strategy survives pickle, copy and deepcopy equal, with the same hash and delays."""
    duplicate = COPIES[name](backoff)
    assert duplicate == backoff
    assert hash(duplicate) == hash(backoff)
    assert type(duplicate) is type(backoff)
    assert delays(duplicate, seed) == delays(backoff, seed)  # type: ignore[arg-type]


@given(backoffs)
def test_strategy_repr_is_the_constructor_call(backoff: Backoff) -> None:
    """Evaluating a strategy's repr builds an equal strategy."""
    names = {cls.__name__: cls for cls in (Constant, Linear, Exponential, DecorrelatedJitter)}
    assert eval(repr(backoff), names) == backoff  # noqa: S307 (our own repr)


@pytest.mark.parametrize(
    ("backoff", "changes", "expected"),
    [
        (Constant(1.0, max_delay=10.0), {"seconds": 2}, Constant(2.0, max_delay=10.0)),
        (
            Constant(1.0),
            {"seconds": 0.5, "jitter": "full"},
            Constant(0.5, jitter="full", max_delay=1),
        ),
        (Linear(1, 2), {"step": 3}, Linear(1, 3)),
        (Exponential(), {"factor": 3, "jitter": 0.5}, Exponential(1, 3, jitter=0.5)),
        (DecorrelatedJitter(), {"max_delay": 60}, DecorrelatedJitter(1, 60)),
    ],
)
def test_replace_changes_a_strategy(
    backoff: Backoff, changes: dict[str, object], expected: Backoff
) -> None:
    """dataclasses.replace gives the strategy with the changed, normalised arguments."""
    assert dataclasses.replace(backoff, **changes) == expected  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("backoff", "changes", "named"),
    [
        (Constant(1.0, max_delay=10.0), {"seconds": -1}, "Constant: seconds"),
        (Constant(1.0), {"seconds": 2.0}, "seconds=2.0 exceeds max_delay=1.0"),
        (Linear(1, 2), {"step": math.nan}, "Linear: step"),
        (Linear(1, 2), {"jitter": "wide"}, "Linear: jitter"),
        (Exponential(), {"factor": 0.5}, "Exponential: factor"),
        (Exponential(), {"max_delay": 0.5}, "initial=1.0 exceeds max_delay=0.5"),
        (DecorrelatedJitter(), {"initial": True}, "DecorrelatedJitter: initial"),
    ],
)
def test_replace_revalidates_a_strategy(
    backoff: Backoff, changes: dict[str, object], named: str
) -> None:
    """A bad value given to dataclasses.replace raises ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=named):
        dataclasses.replace(backoff, **changes)  # type: ignore[type-var]


def test_replacing_constants_jitter_keeps_its_delay_and_cap() -> None:
    """replace() of one argument keeps the others, the computed cap included."""
    changed = dataclasses.replace(Constant(1.0), jitter="full")
    assert changed == Constant(1.0, jitter="full", max_delay=1.0)


@pytest.mark.parametrize(
    ("backoff", "field"),
    [
        (Constant(1.0), "seconds"),
        (Constant(1.0), "max_delay"),
        (Linear(1, 2), "step"),
        (Exponential(), "jitter"),
        (DecorrelatedJitter(), "initial"),
    ],
)
def test_strategies_are_frozen(backoff: Backoff, field: str) -> None:
    """Assigning to a strategy's field raises FrozenInstanceError."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(backoff, field, 5.0)


def test_policy_and_its_seeded_rng_survive_pickle_and_deepcopy() -> None:
    """A seeded policy pickles and deep-copies equal, and the copy draws the same delays."""
    for duplicate in (COPIES["pickle"], COPIES["deepcopy"]):
        policy = RetryPolicy(
            backoff=Exponential(0.5, jitter="full", max_delay=60.0),
            max_attempts=None,
            deadline=300,
            retry_on=OSError,
            give_up_on=(PermissionError,),
            rng=random.Random(42),
        )
        twin = duplicate(policy)
        assert isinstance(twin, RetryPolicy)
        assert twin == policy
        assert hash(twin) == hash(policy)
        assert twin.rng is not policy.rng
        assert policy_delays(twin) == policy_delays(policy)


def test_policy_shallow_copy_shares_its_rng() -> None:
    """copy.copy gives an equal policy that draws from the same rng object."""
    policy = RetryPolicy(rng=random.Random(1))
    twin = copy.copy(policy)
    assert twin == policy
    assert twin.rng is policy.rng


def test_policy_with_a_lambda_copies_but_does_not_pickle() -> None:
    """A retry_if lambda deep-copies (by reference) but pickle refuses it, as documented."""
    policy = RetryPolicy(retry_if=lambda exc: "transient" in str(exc))
    assert copy.deepcopy(policy) == policy
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(policy)


def test_policy_replace_changes_and_revalidates() -> None:
    """dataclasses.replace changes one option, keeps the rest, and re-checks the new value."""
    policy = RetryPolicy(backoff=Constant(2.0), retry_on=OSError, deadline=30)
    changed = dataclasses.replace(policy, max_attempts=5)
    assert changed.max_attempts == 5
    assert (changed.backoff, changed.retry_on, changed.deadline) == (Constant(2.0), (OSError,), 30)
    with pytest.raises(ConfigurationError, match="RetryPolicy: max_attempts"):
        dataclasses.replace(policy, max_attempts=0)
    with pytest.raises(ConfigurationError, match="RetryPolicy: deadline"):
        dataclasses.replace(policy, deadline=math.inf)


def test_policy_is_frozen_and_hashable() -> None:
    """A policy refuses assignment and hashes by value, so equal policies share a dict key."""
    policy = RetryPolicy(max_attempts=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 5  # type: ignore[misc]
    assert {policy: 1}[RetryPolicy(max_attempts=4)] == 1


@copies
def test_exponential_backoff_strategy_round_trips(duplicate: Callable[[object], object]) -> None:
    """The short form pickles, copies and deep-copies to an equal short form."""
    strategy = ExponentialBackoffStrategy(5, 0.5, 30.0, "full", (OSError,))
    twin = duplicate(strategy)
    assert type(twin) is ExponentialBackoffStrategy
    assert twin == strategy
    assert hash(twin) == hash(strategy)
    assert isinstance(twin, RetryPolicy)
    for attempt in (1, 2, 3, 4):
        ours = twin.decide(OSError(), attempt=attempt, rng=random.Random(attempt))
        theirs = strategy.decide(OSError(), attempt=attempt, rng=random.Random(attempt))
        assert ours == theirs


def test_exponential_backoff_strategy_replace() -> None:
    """dataclasses.replace rebuilds the short form from its own arguments and re-validates them."""
    strategy = ExponentialBackoffStrategy(max_attempts=3, base_delay=1.0, jitter="full")
    changed = dataclasses.replace(strategy, max_attempts=5)
    assert changed == ExponentialBackoffStrategy(max_attempts=5, base_delay=1.0, jitter="full")
    slower = dataclasses.replace(strategy, base_delay=2)
    assert slower.backoff == Exponential(2.0, 2.0, jitter="full")
    with pytest.raises(ConfigurationError, match="ExponentialBackoffStrategy: base_delay"):
        dataclasses.replace(strategy, base_delay=-1)
    with pytest.raises(ConfigurationError, match="retry_exceptions"):
        dataclasses.replace(strategy, retry_exceptions=("OSError",))
    with pytest.raises(ValueError, match="deadline"):
        dataclasses.replace(strategy, deadline=10.0)


def test_exponential_backoff_strategy_is_frozen_and_hashable() -> None:
    """The short form refuses assignment and hashes by value."""
    strategy = ExponentialBackoffStrategy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        strategy.base_delay = 2.0  # type: ignore[misc]
    assert hash(strategy) == hash(ExponentialBackoffStrategy(3, 1.0))


decisions = st.one_of(
    st.builds(Decision, st.just(True), st.floats(0, 1e6), st.text()),
    st.builds(Decision, st.just(False), st.none(), st.text()),
)


@given(decisions, st.sampled_from(list(COPIES)))
def test_decisions_pickle_and_copy_to_equal_values(decision: Decision, name: str) -> None:
    """Any decision survives pickle, copy and deepcopy equal, with the same hash."""
    twin = COPIES[name](decision)
    assert twin == decision
    assert hash(twin) == hash(decision)


def test_decision_replace_frozen_and_revalidated() -> None:
    """A decision is frozen; replace re-checks that a retry, and only a retry, has a delay."""
    decision = Decision(retry=True, delay=1, reason="backoff")
    assert dataclasses.replace(decision, delay=2.5) == Decision(True, 2.5, "backoff")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.delay = 3.0  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="Decision: delay"):
        dataclasses.replace(decision, delay=-1)
    with pytest.raises(ConfigurationError, match="retry=False"):
        dataclasses.replace(decision, retry=False)


def settings(budget: RetryBudget) -> tuple[float, float, float]:
    return (budget.ratio, budget.min_per_second, budget.window)


@copies
def test_budget_copies_are_fresh_budgets_with_the_same_settings(
    duplicate: Callable[[object], object],
) -> None:
    """Pickling or copying a spent budget gives a fresh one: same settings, empty counts."""
    budget = RetryBudget(ratio=0.1, min_per_second=0.5, window=4.0, clock=FakeClock())
    while budget.try_acquire_retry():
        pass
    twin = duplicate(budget)
    assert isinstance(twin, RetryBudget)
    assert settings(twin) == settings(budget)
    assert repr(twin) == repr(budget)
    assert isinstance(twin.clock, FakeClock)
    assert twin.available == 2.0
    assert budget.available == 0.0


def test_budget_copy_shares_the_clock_and_deepcopy_copies_it() -> None:
    """copy.copy keeps the very clock; copy.deepcopy gets its own copy of it."""
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    assert copy.copy(budget).clock is clock
    assert copy.deepcopy(budget).clock is not clock


def test_budget_replace_frozen_and_revalidated() -> None:
    """A budget's settings are frozen; replace gives a fresh budget and re-checks them."""
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    budget.try_acquire_retry()
    changed = dataclasses.replace(budget, ratio=0.5)
    assert settings(changed) == (0.5, 1.0, 10.0)
    assert changed.clock is clock
    assert changed.available == 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.window = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="RetryBudget: window"):
        dataclasses.replace(budget, window=0)


def test_budgets_compare_by_identity() -> None:
    """Budgets with equal settings still count different traffic, so they are not equal."""
    budget = RetryBudget()
    assert budget == budget  # noqa: PLR0124 (identity is the point)
    assert budget != copy.copy(budget)
    assert len({budget, copy.copy(budget)}) == 2
