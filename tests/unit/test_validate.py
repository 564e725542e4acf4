"""dawdle._validate: the one helper every option check goes through."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dawdle import ConfigurationError
from dawdle._validate import integer, is_number, number


def test_number_error_names_the_option_and_the_value() -> None:
    """The message starts with `where`, states the rule and ends with the repr of the value."""
    with pytest.raises(
        ConfigurationError, match=r"^Owner: option must be a finite number >= 0, got -1$"
    ):
        number("Owner: option", -1, at_least=0)
    with pytest.raises(ConfigurationError, match=r"^x must be a finite number, got '3'$"):
        number("x", "3")


@pytest.mark.parametrize("value", [True, False])
def test_bools_are_refused(value: bool) -> None:
    """A bool is an int only by accident: neither helper accepts it, is_number says no."""
    assert not is_number(value)
    with pytest.raises(ConfigurationError, match=repr(value)):
        number("x", value)
    with pytest.raises(ConfigurationError, match=repr(value)):
        integer("x", value, at_least=0)


@pytest.mark.parametrize("finite", [True, False])
def test_nan_is_always_refused(finite: bool) -> None:
    """NaN fails every comparison, so it is refused even when infinities are allowed."""
    with pytest.raises(ConfigurationError, match="nan"):
        number("x", math.nan, finite=finite)


def test_infinity_is_allowed_only_when_not_finite() -> None:
    """Infinity is refused by default and accepted with finite=False, still within the bounds."""
    with pytest.raises(ConfigurationError, match="a finite number"):
        number("x", math.inf)
    assert number("x", math.inf, finite=False, above=0) == math.inf
    with pytest.raises(ConfigurationError, match=r"^x must be a number >= 0, got -inf$"):
        number("x", -math.inf, finite=False, at_least=0)


@pytest.mark.parametrize(
    ("bounds", "accepted", "refused"),
    [
        ({"at_least": 1}, [1, 1.5], [0.999]),
        ({"above": 0}, [1e-300], [0, -0.0]),
        ({"at_most": 1}, [1, -5], [1.0001]),
        ({"above": 0, "at_most": 1}, [0.5, 1], [0, 1.5]),
    ],
)
def test_bounds_are_inclusive_or_exclusive_as_named(
    bounds: dict[str, float], accepted: list[float], refused: list[float]
) -> None:
    """at_least and at_most include the bound, above excludes it."""
    for value in accepted:
        assert number("x", value, **bounds) == value  # type: ignore[arg-type]
    for value in refused:
        with pytest.raises(ConfigurationError, match="x must be"):
            number("x", value, **bounds)  # type: ignore[arg-type]


def test_message_lists_every_bound() -> None:
    """Several bounds read as one rule: '> 0 and <= 1'."""
    with pytest.raises(
        ConfigurationError, match=r"^j must be a finite number > 0 and <= 1, got 2$"
    ):
        number("j", 2, above=0, at_most=1)


@given(st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False))
def test_number_returns_a_float_of_any_finite_number(value: float) -> None:
    """Any finite int or float comes back as an equal float."""
    result = number("x", value)
    assert type(result) is float
    assert result == value


@given(st.none() | st.text() | st.booleans() | st.lists(st.integers()))
def test_is_number_refuses_non_numbers(value: object) -> None:
    """is_number is True only for ints and floats, never for bools, strings or containers."""
    assert not is_number(value)


def test_integer_checks_type_and_lower_bound() -> None:
    """`integer` returns an int at or above its bound; floats and smaller ints are named."""
    assert integer("n", 3, at_least=1) == 3
    assert integer("n", 1, at_least=1) == 1
    with pytest.raises(ConfigurationError, match=r"^n must be an int >= 1, got 0$"):
        integer("n", 0, at_least=1)
    with pytest.raises(ConfigurationError, match=r"^n must be an int >= 1, got 2.0$"):
        integer("n", 2.0, at_least=1)
