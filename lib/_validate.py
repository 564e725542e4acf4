"""The one place option values are checked: a bad value raises ConfigurationError naming it."""

from __future__ import annotations

import math
from typing import TypeGuard

from dawdle._errors import ConfigurationError


def is_number(value: object) -> TypeGuard[int | float]:
    """True for an int or a float; False for a bool, which is an int only by accident."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(
    where: str,
    value: object,
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    finite: bool = True,
) -> float:
    """`value` as a float if it is a number within the bounds; `where` names it in the error."""
    if (
        is_number(value)
        and not math.isnan(value)
        and (not finite or math.isfinite(value))
        and (at_least is None or value >= at_least)
        and (above is None or value > above)
        and (at_most is None or value <= at_most)
    ):
        return float(value)
    bounds = " and ".join(
        f"{sign} {bound:g}"
        for sign, bound in ((">=", at_least), (">", above), ("<=", at_most))
        if bound is not None
    )
    kind = "a finite number" if finite else "a number"
    raise ConfigurationError(f"{where} must be {kind} {bounds}".rstrip() + f", got {value!r}")


def integer(where: str, value: object, *, at_least: int) -> int:
    """`value` if it is an int (not a bool) >= `at_least`; `where` names it in the error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < at_least:
        raise ConfigurationError(f"{where} must be an int >= {at_least}, got {value!r}")
    return value
