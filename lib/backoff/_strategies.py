"""Backoff strategies: pure functions from a retry number to a delay in seconds.

No strategy sleeps or keeps state; randomness comes from the `rng` argument so that a
seeded `random.Random` reproduces a sequence exactly. Strategies are frozen dataclasses:
values that compare, hash, pickle and copy by their arguments.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import KW_ONLY, dataclass
from typing import Final, Literal, TypeAlias, cast

from dawdle._errors import ConfigurationError
from dawdle._validate import integer, number

Jitter: TypeAlias = Literal["none", "full", "equal"] | float
"""How a delay is randomised: not at all, uniform in [0, d], d/2 + uniform [0, d/2],
or a float p for d * uniform [1 - p, 1 + p]."""

DEFAULT_MAX_DELAY: Final = 3600.0
"""The cap, in seconds, of strategies that grow when no `max_delay` is given: one hour."""

# Jitter spreads retries apart; it is not a security boundary, so a PRNG is the right tool.
_DEFAULT_RNG: Final = random.Random()  # noqa: S311

_NAMED_JITTERS: Final = ("none", "full", "equal")


def _jitter(owner: str, value: object) -> Jitter:
    """`value` if it is a named jitter, else as a float in (0, 1]."""
    if isinstance(value, str) and value in _NAMED_JITTERS:
        return cast("Jitter", value)
    return number(
        f'{owner}: jitter other than "none", "full" or "equal"', value, above=0, at_most=1
    )


def _apply_jitter(delay: float, jitter: Jitter, max_delay: float, rng: random.Random) -> float:
    if jitter == "none":
        return delay
    if jitter == "full":
        return rng.uniform(0.0, delay)
    if jitter == "equal":
        return delay / 2 + rng.uniform(0.0, delay / 2)
    assert isinstance(jitter, float)  # noqa: S101 (narrowing for mypy; _jitter ensures it)
    return min(max_delay, delay * rng.uniform(1.0 - jitter, 1.0 + jitter))


class Backoff(ABC):
    """A backoff strategy: `delay(attempt)` is the wait before retry number `attempt` (1 = first).

    Every delay is finite, >= 0 and <= `max_delay`, for any attempt. Strategies are frozen
    dataclasses; `dataclasses.replace` re-validates the changed arguments.
    """

    __slots__ = ()
    max_delay: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 = the first retry)."""
        return self._draw(integer("attempt", attempt, at_least=1), rng or _DEFAULT_RNG)

    @abstractmethod
    def _draw(self, attempt: int, rng: random.Random) -> float:
        """The delay before retry `attempt` (already checked), randomised with `rng`."""

    def _set(self, name: str, value: object) -> None:
        """Store a validated, normalised argument: only `__init__` and `__post_init__` call it."""
        object.__setattr__(self, name, value)

    def _check_within_cap(self, name: str, value: float) -> None:
        if value > self.max_delay:
            raise ConfigurationError(
                f"{type(self).__name__}: {name}={value!r} exceeds max_delay={self.max_delay!r}"
            )


class _Jittered(Backoff):
    """A strategy with a deterministic curve, capped at `max_delay`, then jittered."""

    __slots__ = ()
    jitter: Jitter

    def _draw(self, attempt: int, rng: random.Random) -> float:
        return _apply_jitter(self._capped_delay(attempt), self.jitter, self.max_delay, rng)

    @abstractmethod
    def _capped_delay(self, attempt: int) -> float:
        """The delay before jitter, already capped at `max_delay`."""


@dataclass(frozen=True, slots=True, init=False)
class Constant(_Jittered):
    """The same delay, `seconds`, before every retry (with optional jitter).

    Without `max_delay` the cap is the delay stretched by a proportional jitter; once made,
    that cap is an argument like any other, so `dataclasses.replace` keeps it unless a new
    `max_delay=` is given.
    """

    seconds: float
    jitter: Jitter
    max_delay: float

    def __init__(
        self, seconds: float, *, jitter: Jitter = "none", max_delay: float | None = None
    ) -> None:
        checked_seconds = number("Constant: seconds", seconds, at_least=0)
        checked_jitter = _jitter("Constant", jitter)
        if max_delay is None:
            spread = 1.0 + checked_jitter if isinstance(checked_jitter, float) else 1.0
            max_delay = max(checked_seconds * spread, 1e-9)
        self._set("seconds", checked_seconds)
        self._set("jitter", checked_jitter)
        self._set("max_delay", number("Constant: max_delay", max_delay, above=0))
        self._check_within_cap("seconds", self.seconds)

    def _capped_delay(self, attempt: int) -> float:
        return self.seconds


@dataclass(frozen=True, slots=True)
class Linear(_Jittered):
    """`initial + step * (attempt - 1)`, capped at `max_delay`."""

    initial: float
    step: float
    _: KW_ONLY
    jitter: Jitter = "none"
    max_delay: float = DEFAULT_MAX_DELAY

    def __post_init__(self) -> None:
        self._set("jitter", _jitter("Linear", self.jitter))
        self._set("max_delay", number("Linear: max_delay", self.max_delay, above=0))
        self._set("initial", number("Linear: initial", self.initial, at_least=0))
        self._set("step", number("Linear: step", self.step, at_least=0))
        self._check_within_cap("initial", self.initial)

    def _capped_delay(self, attempt: int) -> float:
        # A huge step times a huge attempt is inf, never an exception; min() caps it.
        return min(self.max_delay, self.initial + self.step * (attempt - 1))


@dataclass(frozen=True, slots=True)
class Exponential(_Jittered):
    """`initial * factor ** (attempt - 1)`, capped at `max_delay` without ever overflowing."""

    initial: float = 1.0
    factor: float = 2.0
    _: KW_ONLY
    jitter: Jitter = "none"
    max_delay: float = DEFAULT_MAX_DELAY

    def __post_init__(self) -> None:
        self._set("jitter", _jitter("Exponential", self.jitter))
        self._set("max_delay", number("Exponential: max_delay", self.max_delay, above=0))
        self._set("initial", number("Exponential: initial", self.initial, above=0))
        self._set("factor", number("Exponential: factor", self.factor, at_least=1))
        self._check_within_cap("initial", self.initial)

    def _capped_delay(self, attempt: int) -> float:
        try:
            delay = self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, delay)


@dataclass(frozen=True, slots=True)
class DecorrelatedJitter(Backoff):
    """Uniform in [initial, min(max_delay, initial * 3 ** attempt)]: the AWS decorrelated family.

    AWS draws from [initial, 3 * previous delay]; without state we draw from the envelope that
    recursion grows into, so the spread widens with each attempt and, unlike a capped
    exponential, retries never pile up on `max_delay` itself.
    """

    initial: float = 1.0
    max_delay: float = DEFAULT_MAX_DELAY

    def __post_init__(self) -> None:
        self._set("max_delay", number("DecorrelatedJitter: max_delay", self.max_delay, above=0))
        self._set("initial", number("DecorrelatedJitter: initial", self.initial, above=0))
        self._check_within_cap("initial", self.initial)

    def _draw(self, attempt: int, rng: random.Random) -> float:
        try:
            ceiling = min(self.max_delay, self.initial * 3.0**attempt)
        except OverflowError:
            ceiling = self.max_delay
        return rng.uniform(self.initial, ceiling)
