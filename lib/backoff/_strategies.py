"""Backoff strategies: pure functions from a retry number to a delay in seconds.

No strategy sleeps or keeps state; randomness comes from the `rng` argument so that a
seeded `random.Random` reproduces a sequence exactly. Strategies are frozen dataclasses:
values that compare, hash, pickle and copy by their arguments.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, fields, is_dataclass
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
    # The spread is cut at the cap rather than the draw clamped to it: clamping would put
    # every draw above the cap on the cap itself, the very herd jitter is there to spread.
    return rng.uniform(delay * (1.0 - jitter), min(max_delay, delay * (1.0 + jitter)))


def _as_float(count: int) -> float:
    """`count` as a float, inf past the float range (an int of 10**400 does not convert)."""
    return float(count) if count < 2**1023 else math.inf


class Backoff(ABC):
    """A backoff strategy: `delay(attempt)` is the wait before retry number `attempt` (1 = first).

    Every delay is finite, >= 0 and <= `max_delay`, for any attempt. Strategies are frozen
    dataclasses; `dataclasses.replace` re-validates the changed arguments.
    """

    __slots__ = ()
    max_delay: float

    def delay(
        self, attempt: int, rng: random.Random | None = None, *, previous: float | None = None
    ) -> float:
        """Seconds to wait before retry number `attempt` (1 = the first retry).

        `previous` is the delay this strategy gave before the previous retry, when the caller
        knows it (`retrying()` does); only `DecorrelatedJitter` uses it.
        """
        checked = integer("attempt", attempt, at_least=1)
        if previous is not None:
            previous = number("previous", previous, at_least=0)
        return self._draw(checked, rng or _DEFAULT_RNG, previous)

    @abstractmethod
    def _draw(self, attempt: int, rng: random.Random, previous: float | None) -> float:
        """The delay before retry `attempt` (already checked), randomised with `rng`."""

    def to_dict(self) -> dict[str, object]:
        """The strategy as plain data (JSON-ready): its type name and its arguments."""
        assert is_dataclass(self)  # noqa: S101 (every concrete strategy is a dataclass)
        return {"type": type(self).__name__} | {
            item.name: getattr(self, item.name) for item in fields(self) if item.init
        }

    @staticmethod
    def from_dict(data: Mapping[str, object]) -> Backoff:
        """The strategy `to_dict` described; a bad type or argument raises ConfigurationError."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"backoff must be a mapping, got {data!r}")
        arguments = dict(data)
        kind = arguments.pop("type", None)
        strategy = _STRATEGIES.get(kind) if isinstance(kind, str) else None
        if strategy is None:
            raise ConfigurationError(
                f"backoff: type must be one of {', '.join(sorted(_STRATEGIES))}, got {kind!r}"
            )
        try:
            return strategy(**arguments)
        except TypeError as exc:
            raise ConfigurationError(f"{kind}: bad arguments {arguments!r}: {exc}") from None

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

    def _draw(self, attempt: int, rng: random.Random, previous: float | None) -> float:
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
        if self.step == 0:
            return self.initial  # 0 * inf would be NaN
        # A huge step times a huge attempt is inf, never an exception; min() caps it.
        return min(self.max_delay, self.initial + self.step * _as_float(attempt - 1))


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
        if self.factor == 1.0:
            return self.initial  # a factor of 1 never grows, however many retries
        try:
            delay: float = self.initial * self.factor ** _as_float(attempt - 1)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, delay)


@dataclass(frozen=True, slots=True)
class DecorrelatedJitter(Backoff):
    """AWS's decorrelated jitter: each wait is uniform in [initial, 3 * the previous wait].

    The first wait is uniform in [initial, 3 * initial]. One difference from AWS's
    `min(cap, uniform(initial, 3 * previous))`: the cap bounds the range, not the draw, so
    waits that reach `max_delay` spread over [initial, max_delay] instead of landing on it.
    Given `previous` (as `retrying()` does), one step is drawn from it; without it (a job,
    which stores no previous wait) the recursion is replayed from `initial` with `rng`,
    which gives the same distribution for the wait before retry `attempt`. A replay runs at
    most `256 + 64 * ln(max_delay / initial)` steps, by when the walk has long reached the
    cap, so a huge attempt costs no more than that.
    """

    initial: float = 1.0
    max_delay: float = DEFAULT_MAX_DELAY

    def __post_init__(self) -> None:
        self._set("max_delay", number("DecorrelatedJitter: max_delay", self.max_delay, above=0))
        self._set("initial", number("DecorrelatedJitter: initial", self.initial, above=0))
        self._check_within_cap("initial", self.initial)

    def _draw(self, attempt: int, rng: random.Random, previous: float | None) -> float:
        if previous is not None:
            return self._step(max(previous, self.initial), rng)
        wait = self.initial
        for _ in range(min(attempt, self._replay_limit())):
            wait = self._step(wait, rng)
        return wait

    def _step(self, previous: float, rng: random.Random) -> float:
        return rng.uniform(self.initial, min(self.max_delay, 3.0 * previous))

    def _replay_limit(self) -> int:
        # The log of the wait drifts up by ln 3 - 1 (about 0.1) a step with unit variance,
        # so it reaches the cap after about 10 * ln(max_delay / initial) steps on average.
        return 256 + math.ceil(64 * math.log(self.max_delay / self.initial))


_STRATEGIES: Final[dict[str, type[Backoff]]] = {
    strategy.__name__: strategy for strategy in (Constant, Linear, Exponential, DecorrelatedJitter)
}
