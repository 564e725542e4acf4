"""Policies and strategies as data: to_dict()/from_dict() round trips, pickle and deepcopy."""

from __future__ import annotations

import copy
import json
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dawdle import ConfigurationError
from dawdle.backoff import (
    Backoff,
    Exponential,
    ExponentialBackoffStrategy,
    RetryEvent,
    RetryPolicy,
)
from tests.unit.backoff_strategies import backoffs, caps, jitters, seconds

EXAMPLES = settings(max_examples=100, deadline=None)

exception_sets = st.lists(
    st.sampled_from([Exception, OSError, ConnectionError, ValueError, ExceptionGroup]),
    max_size=3,
    unique=True,
).map(tuple)


def never_on_teapots(exc: BaseException) -> bool:
    """A module-level predicate: importable by name, so a policy holding it is data."""
    return "teapot" not in str(exc)


def log_retry(event: RetryEvent) -> None:
    """A module-level hook, importable by name."""


policies = st.builds(
    RetryPolicy,
    backoff=backoffs,
    max_attempts=st.one_of(st.none(), st.integers(1, 100)),
    deadline=st.one_of(st.none(), st.floats(0.1, 1e6)),
    retry_on=exception_sets.filter(bool),
    give_up_on=exception_sets,
    retry_if=st.sampled_from([None, never_on_teapots]),
    retry_after=st.sampled_from(["max", "hint", "ignore"]),
    retry_after_max=st.floats(0.0, 1e6),
    retry_after_jitter=st.floats(0.0, 1.0),
    on_retry=st.sampled_from([None, log_retry]),
)
short_forms = st.builds(
    ExponentialBackoffStrategy,
    max_attempts=st.one_of(st.none(), st.integers(1, 100)),
    base_delay=seconds,
    max_delay=caps,
    jitter=jitters,
    retry_exceptions=exception_sets.filter(bool),
)


@EXAMPLES
@given(backoffs)
def test_strategies_round_trip_through_json(backoff: Backoff) -> None:
    """Backoff.from_dict(json of to_dict()) equals the strategy."""
    assert Backoff.from_dict(json.loads(json.dumps(backoff.to_dict()))) == backoff


@EXAMPLES
@given(st.one_of(policies, short_forms))
def test_policies_round_trip_through_json(policy: RetryPolicy) -> None:
    """RetryPolicy.from_dict(json of to_dict()) equals the policy, short form included."""
    data = json.loads(json.dumps(policy.to_dict()))
    restored = RetryPolicy.from_dict(data)
    assert restored == policy
    assert type(restored) is type(policy)


@EXAMPLES
@given(st.one_of(policies, short_forms), st.sampled_from(["pickle", "copy", "deepcopy"]))
def test_policies_pickle_and_copy(policy: RetryPolicy, how: str) -> None:
    """Every policy made of importable parts pickles and copies to an equal policy."""
    duplicate = {
        "pickle": lambda value: pickle.loads(pickle.dumps(value)),  # noqa: S301 (our bytes)
        "copy": copy.copy,
        "deepcopy": copy.deepcopy,
    }[how]
    assert duplicate(policy) == policy


def test_to_dict_writes_names_a_human_can_read() -> None:
    """Exceptions and functions appear as dotted names; rng is left out."""
    policy = RetryPolicy(
        backoff=Exponential(0.5, jitter="full"),
        retry_on=(ConnectionError,),
        retry_if=never_on_teapots,
        rng=random.Random(1),
    )
    data = policy.to_dict()
    assert data["type"] == "RetryPolicy"
    assert data["retry_on"] == ["builtins.ConnectionError"]
    assert data["retry_if"] == f"{__name__}.never_on_teapots"
    assert data["backoff"] == {
        "type": "Exponential",
        "initial": 0.5,
        "factor": 2.0,
        "jitter": "full",
        "max_delay": 3600.0,
    }
    assert "rng" not in data


def test_a_lambda_or_local_function_is_refused_by_name() -> None:
    """to_dict refuses a callable it could not load back, naming the field; builtins are fine."""

    def local(event: RetryEvent) -> None: ...

    with pytest.raises(ConfigurationError, match="retry_if"):
        RetryPolicy(retry_if=lambda exc: True).to_dict()
    with pytest.raises(ConfigurationError, match="on_retry"):
        RetryPolicy(on_retry=local).to_dict()
    assert RetryPolicy(on_retry=print).to_dict()["on_retry"] == "builtins.print"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"retry_on": ["builtins.NoSuchError"]}, "builtins.NoSuchError"),
        ({"retry_on": ["no_such_module_at_all.Error"]}, "no_such_module_at_all.Error"),
        ({"retry_if": "tests.unit.test_backoff_serialise.missing"}, "missing"),
        ({"retry_on": [3]}, "retry_on"),
        ({"type": "Sometimes"}, "Sometimes"),
        ({"colour": "blue"}, "colour"),
        ({"backoff": {"type": "Fibonacci"}}, "Fibonacci"),
        ({"backoff": {"type": "Linear", "initial": 1}}, "Linear"),
        ({"backoff": {"type": "Constant", "seconds": -1}}, "seconds"),
        ({"retry_on": ["builtins.print"]}, "retry_on"),
    ],
)
def test_from_dict_names_what_does_not_load(data: dict[str, object], named: str) -> None:
    """A name that does not resolve, an unknown key or type: ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=named):
        RetryPolicy.from_dict(data)


def test_from_dict_fills_defaults() -> None:
    """Keys left out keep their defaults; one exception may be named without a list."""
    assert RetryPolicy.from_dict({"retry_on": "builtins.OSError"}) == RetryPolicy(retry_on=OSError)
    assert RetryPolicy.from_dict({}) == RetryPolicy()
    assert RetryPolicy.from_dict({"type": "ExponentialBackoffStrategy"}) == (
        ExponentialBackoffStrategy()
    )
