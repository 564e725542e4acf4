"""Backoff strategies: pure functions from a retry number to a delay in seconds.

No strategy sleeps or keeps state; randomness comes from the `rng` argument so that a
seeded `random.Random` reproduces a sequence exactly.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from typing import Final, Literal, NoReturn, TypeAlias

from dawdle._errors import ConfigurationError

Jitter: TypeAlias = Literal["none", "full", "equal"] | float
"""How a delay is randomised: not at all, uniform in [0, d], d/2 + uniform [0, d/2],
or a float p for d * uniform [1 - p, 1 + p]."""

DEFAULT_MAX_DELAY: Final = 3600.0
"""The cap, in seconds, of strategies that grow when no `max_delay` is given: one hour."""

# Jitter spreads retries apart; it is not a security boundary, so a PRNG is the right tool.
_DEFAULT_RNG: Final = random.Random()  # noqa: S311


def check_number(owner: str, name: str, value: object, *, positive: bool = False) -> float:
    """Return `value` as a float if it is a finite number >= 0 (> 0 when `positive`)."""
    bound = "> 0" if positive else ">= 0"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise ConfigurationError(f"{owner}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_attempt(value: object) -> int:
    """Return `value` if it is a valid 1-based attempt number."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"attempt must be an int >= 1, got {value!r}")
    return value


def _check_jitter(owner: str, jitter: object) -> Jitter:
    if jitter in ("none", "full", "equal"):
        return jitter
    if isinstance(jitter, float | int) and not isinstance(jitter, bool) and 0 < jitter <= 1:
        return float(jitter)
    raise ConfigurationError(
        f'{owner}: jitter must be "none", "full", "equal" or a float in (0, 1], got {jitter!r}'
    )


def _apply_jitter(delay: float, jitter: Jitter, max_delay: float, rng: random.Random) -> float:
    if jitter == "none":
        return delay
    if jitter == "full":
        return rng.uniform(0.0, delay)
    if jitter == "equal":
        return delay / 2 + rng.uniform(0.0, delay / 2)
    assert isinstance(jitter, float)  # noqa: S101 (narrowing for mypy; _check_jitter ensures it)
    return min(max_delay, delay * rng.uniform(1.0 - jitter, 1.0 + jitter))


class Backoff(ABC):
    """A backoff strategy: `delay(attempt)` is the wait before retry number `attempt` (1 = first).

    Every delay is finite, >= 0 and <= `max_delay`, for any attempt. Strategies are immutable.
    """

    __slots__ = ("jitter", "max_delay")
    jitter: Jitter
    max_delay: float

    def __init__(self, *, jitter: Jitter, max_delay: float) -> None:
        owner = type(self).__name__
        object.__setattr__(self, "jitter", _check_jitter(owner, jitter))
        object.__setattr__(
            self, "max_delay", check_number(owner, "max_delay", max_delay, positive=True)
        )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 = the first retry)."""
        check_attempt(attempt)
        delay = self._capped_delay(attempt)
        return _apply_jitter(delay, self.jitter, self.max_delay, rng or _DEFAULT_RNG)

    @abstractmethod
    def _capped_delay(self, attempt: int) -> float:
        """The delay before jitter, already capped at `max_delay`."""

    @abstractmethod
    def _params(self) -> dict[str, object]:
        """The constructor arguments that define this strategy, for repr and equality."""

    def _check_within_cap(self, name: str, value: float) -> None:
        if value > self.max_delay:
            raise ConfigurationError(
                f"{type(self).__name__}: {name}={value!r} exceeds max_delay={self.max_delay!r}"
            )

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Backoff)  # noqa: S101 (narrowing for mypy)
        return self._params() == other._params()

    def __hash__(self) -> int:
        return hash((type(self), tuple(self._params().items())))


class Constant(Backoff):
    """The same delay before every retry (with optional jitter)."""

    __slots__ = ("seconds",)
    seconds: float

    def __init__(
        self, delay: float, *, jitter: Jitter = "none", max_delay: float | None = None
    ) -> None:
        seconds = check_number("Constant", "delay", delay)
        if max_delay is None:
            spread = 1.0 + jitter if isinstance(jitter, float | int) else 1.0
            max_delay = max(seconds * spread, seconds, 1e-9)
        super().__init__(jitter=jitter, max_delay=max_delay)
        object.__setattr__(self, "seconds", seconds)
        self._check_within_cap("delay", seconds)

    def _capped_delay(self, attempt: int) -> float:
        return self.seconds

    def _params(self) -> dict[str, object]:
        return {"delay": self.seconds, "jitter": self.jitter, "max_delay": self.max_delay}


class Linear(Backoff):
    """`initial + step * (attempt - 1)`, capped at `max_delay`."""

    __slots__ = ("initial", "step")
    initial: float
    step: float

    def __init__(
        self,
        initial: float,
        step: float,
        *,
        jitter: Jitter = "none",
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        super().__init__(jitter=jitter, max_delay=max_delay)
        object.__setattr__(self, "initial", check_number("Linear", "initial", initial))
        object.__setattr__(self, "step", check_number("Linear", "step", step))
        self._check_within_cap("initial", self.initial)

    def _capped_delay(self, attempt: int) -> float:
        # A huge step times a huge attempt is inf, never an exception; min() caps it.
        return min(self.max_delay, self.initial + self.step * (attempt - 1))

    def _params(self) -> dict[str, object]:
        return {
            "initial": self.initial,
            "step": self.step,
            "jitter": self.jitter,
            "max_delay": self.max_delay,
        }


class Exponential(Backoff):
    """`initial * factor ** (attempt - 1)`, capped at `max_delay` without ever overflowing."""

    __slots__ = ("factor", "initial")
    initial: float
    factor: float

    def __init__(
        self,
        initial: float = 1.0,
        factor: float = 2.0,
        *,
        jitter: Jitter = "none",
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        super().__init__(jitter=jitter, max_delay=max_delay)
        object.__setattr__(
            self, "initial", check_number("Exponential", "initial", initial, positive=True)
        )
        if (
            isinstance(factor, bool)
            or not isinstance(factor, int | float)
            or not (1 <= factor < math.inf)
        ):
            raise ConfigurationError(f"Exponential: factor must be finite and >= 1, got {factor!r}")
        object.__setattr__(self, "factor", float(factor))
        self._check_within_cap("initial", self.initial)

    def _capped_delay(self, attempt: int) -> float:
        try:
            delay = self.initial * self.factor ** (attempt - 1)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, delay)

    def _params(self) -> dict[str, object]:
        return {
            "initial": self.initial,
            "factor": self.factor,
            "jitter": self.jitter,
            "max_delay": self.max_delay,
        }


class DecorrelatedJitter(Backoff):
    """Uniform in [initial, min(max_delay, initial * 3 ** attempt)]: the AWS decorrelated family.

    AWS draws from [initial, 3 * previous delay]; without state we draw from the envelope that
    recursion grows into, so the spread widens with each attempt and, unlike a capped
    exponential, retries never pile up on `max_delay` itself.
    """

    __slots__ = ("initial",)
    initial: float

    def __init__(self, initial: float = 1.0, max_delay: float = DEFAULT_MAX_DELAY) -> None:
        super().__init__(jitter="none", max_delay=max_delay)
        object.__setattr__(
            self, "initial", check_number("DecorrelatedJitter", "initial", initial, positive=True)
        )
        self._check_within_cap("initial", self.initial)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt`, drawn afresh from its envelope."""
        check_attempt(attempt)
        return (rng or _DEFAULT_RNG).uniform(self.initial, self._capped_delay(attempt))

    def _capped_delay(self, attempt: int) -> float:
        try:
            ceiling = self.initial * 3.0**attempt
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, ceiling)

    def _params(self) -> dict[str, object]:
        return {"initial": self.initial, "max_delay": self.max_delay}
