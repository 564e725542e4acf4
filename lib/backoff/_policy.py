"""RetryPolicy: whether and when to retry a failure, usable in-process and as a task's `retry=`."""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, cast

from procrastinate import BaseRetryStrategy, RetryDecision
from procrastinate.jobs import Job

from dawdle._errors import ConfigurationError
from dawdle._validate import integer, number
from dawdle.backoff._exceptions import ExceptionTypes, exception_types, why_refused
from dawdle.backoff._hints import RetryAfter, retry_after_hint, retry_after_mode
from dawdle.backoff._names import dotted_name, resolve
from dawdle.backoff._seeded import SplitMix
from dawdle.backoff._strategies import DEFAULT_MAX_DELAY, Backoff, Exponential, Jitter

MAX_JOB_DELAY: Final = 100 * 365.25 * 86400.0
"""The longest a job waits for its retry, in seconds (100 years): past it, `retry_at` would
leave the dates Python and PostgreSQL can store, so a longer wait is shortened to this."""

# Jitter on hints spreads retries apart; it is not a security boundary.
_HINT_RNG: Final = random.Random()  # noqa: S311


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `RetryPolicy.decide`: retry or not, after how long, and why."""

    retry: bool
    delay: float | None
    reason: str
    backoff_delay: float | None = None
    """The backoff's own draw behind a retry's delay, before any Retry-After hint: what
    `retrying()` passes back as `previous_delay`, so `DecorrelatedJitter` follows its walk."""

    def __post_init__(self) -> None:
        # Invariant the retry loops rely on: a retry always has a delay, a refusal never has.
        if self.delay is not None:
            object.__setattr__(self, "delay", number("Decision: delay", self.delay, at_least=0))
        if self.retry is not (self.delay is not None):
            raise ConfigurationError(
                "Decision: a retry needs a delay and a refusal has none, "
                f"got retry={self.retry!r}, delay={self.delay!r}"
            )


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """A retry was decided: what `on_retry` hooks receive, before the wait begins.

    `attempt` is the run that failed (1 = the first), `delay` the seconds until the next run,
    `reason` the decision's text, `job_id` the job's id when a worker decided, else None.
    """

    attempt: int
    delay: float
    reason: str
    exception: BaseException
    job_id: int | None = None


def _duration(where: str, value: object, *, above: float | None = None) -> float:
    """`value` (seconds or a timedelta) as finite seconds >= 0; `where` names it if not."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if above is None:
        return number(where, value, at_least=0)
    return number(where, value, above=above)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy(BaseRetryStrategy):
    """When to retry a failed call or job, and how long to wait first.

    `max_attempts` counts every run, the first included: `max_attempts=3` means one run and
    up to two retries. (Procrastinate's `RetryStrategy(max_attempts=n)` counts retries, so it
    allows n + 1 runs.) `None` means no limit. `deadline` is in seconds since the first run
    (for a job, its first run as the worker measures it); a retry whose wait would end past
    it is refused. An exception group is retried if a group class in `retry_on` matches it,
    or else if every leaf is in `retry_on`; it is given up if `give_up_on` matches it (a
    group class) or any group or leaf in it.

    Retry-After: an exception (or a group's member) with a `retry_after` attribute (seconds,
    a timedelta, an absolute datetime or an HTTP header's text) hints at the wait.
    `retry_after="max"` waits the larger of hint and backoff (as the AWS SDKs do), `"hint"`
    the hint alone, `"ignore"` the backoff alone. A hint above `retry_after_max` seconds
    gives up rather than wait that long (as Envoy does); `retry_after_jitter=p` stretches a
    hint by up to p of itself, never shortening it.

    `on_retry` is called with a `RetryEvent` when `retry()`, `retrying()` or the worker has
    decided to retry, before the wait; `decide` itself calls nothing.

    A policy is a value: it compares and hashes by its options (not `rng`), copies, and
    pickles unless `retry_if` or `on_retry` is a lambda or a local function, which pickle
    cannot store. A deep copy or an unpickled policy has its own copy of `rng` in its
    current state, so it draws the delays the original would draw next; a shallow copy
    shares the original's `rng`. `dataclasses.replace` re-validates. `to_dict()` and
    `from_dict()` write it as plain data and back (exception classes and functions as
    dotted names; `rng` is left out).
    """

    backoff: Backoff = field(default_factory=lambda: Exponential(1.0, 2.0, jitter="full"))
    max_attempts: int | None = 3
    deadline: float | None = None
    retry_on: ExceptionTypes = (Exception,)
    give_up_on: ExceptionTypes = ()
    retry_if: Callable[[BaseException], bool] | None = None
    retry_after: RetryAfter = "max"
    retry_after_max: float = DEFAULT_MAX_DELAY
    retry_after_jitter: float = 0.0
    on_retry: Callable[[RetryEvent], None] | None = None
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.backoff, Backoff):
            raise ConfigurationError(
                f"RetryPolicy: backoff must be a dawdle.backoff strategy, got {self.backoff!r}"
            )
        if self.max_attempts is not None:
            integer("RetryPolicy: max_attempts (None for no limit)", self.max_attempts, at_least=1)
        if self.deadline is not None:
            deadline = _duration("RetryPolicy: deadline", self.deadline, above=0)
            object.__setattr__(self, "deadline", deadline)
        object.__setattr__(
            self, "retry_on", exception_types("RetryPolicy: retry_on", self.retry_on)
        )
        object.__setattr__(
            self, "give_up_on", exception_types("RetryPolicy: give_up_on", self.give_up_on)
        )
        for name in ("retry_if", "on_retry"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise ConfigurationError(f"RetryPolicy: {name} must be callable, got {value!r}")
        object.__setattr__(self, "retry_after", retry_after_mode(self.retry_after))
        ceiling = _duration("RetryPolicy: retry_after_max", self.retry_after_max)
        object.__setattr__(self, "retry_after_max", ceiling)
        spread = number(
            "RetryPolicy: retry_after_jitter", self.retry_after_jitter, at_least=0, at_most=1
        )
        object.__setattr__(self, "retry_after_jitter", spread)

    def _max_runs(self) -> int | None:
        """How many runs the policy allows in all (None: no limit)."""
        return self.max_attempts

    def decide(
        self,
        exc: BaseException,
        *,
        attempt: int,
        elapsed: float | datetime.timedelta | None = None,
        rng: random.Random | None = None,
        previous_delay: float | None = None,
        now: datetime.datetime | None = None,
    ) -> Decision:
        """Decide about `exc`, raised by run number `attempt` (1 = first), `elapsed` s in.

        `previous_delay` is the previous decision's `backoff_delay`, if known; `now` is
        what an absolute Retry-After date is measured from (default: the current time).
        A NaN or negative `elapsed` raises ConfigurationError.
        """
        integer("attempt", attempt, at_least=1)
        seconds_in = None if elapsed is None else _duration("elapsed", elapsed)
        refusal = self._refusal(exc, attempt)
        if refusal is not None:
            return refusal
        name = type(exc).__name__
        rng = rng or self.rng
        backoff = self.backoff.delay(attempt, rng, previous=previous_delay)
        hint = None if self.retry_after == "ignore" else retry_after_hint(exc, now)
        if hint is not None and hint > self.retry_after_max:
            return _refusal(
                f"{name} on attempt {attempt}: retry_after={hint:g}s is above "
                f"retry_after_max={self.retry_after_max:g}s"
            )
        delay, why = self._wait(backoff, hint, rng)
        deadline = self.deadline
        if seconds_in is not None and deadline is not None and seconds_in + delay > deadline:
            return _refusal(
                f"{name} on attempt {attempt}: waiting {delay:.3f}s after {seconds_in:.3f}s "
                f"would pass the {deadline:g}s deadline"
            )
        runs = self._max_runs()
        limit = "" if runs is None else f" of {runs}"
        next_run = f"attempt {attempt + 1}{limit} in {delay:.3f}s ({why})"
        return Decision(
            retry=True,
            delay=delay,
            reason=f"{name} on attempt {attempt}; {next_run}",
            backoff_delay=backoff,
        )

    def _refusal(self, exc: BaseException, attempt: int) -> Decision | None:
        """A refusal if `exc` is not to be retried after run `attempt`, whatever the wait."""
        # __post_init__ made both tuples.
        give_up_on = cast("tuple[type[BaseException], ...]", self.give_up_on)
        retry_on = cast("tuple[type[BaseException], ...]", self.retry_on)
        unwanted = why_refused(exc, retry_on, give_up_on)
        if unwanted is not None:
            return _refusal(unwanted)
        name = type(exc).__name__
        if self.retry_if is not None and not self.retry_if(exc):
            return _refusal(f"retry_if rejected {name}")
        runs = self._max_runs()
        if runs is not None and attempt >= runs:
            return _refusal(f"{name} on attempt {attempt} of {runs}: none left")
        return None

    def _wait(
        self, backoff: float, hint: float | None, rng: random.Random | None
    ) -> tuple[float, str]:
        """The wait chosen from the backoff's draw and a hint within the ceiling, and why."""
        if hint is None:
            return backoff, "backoff"
        if self.retry_after_jitter:
            hint *= (rng or _HINT_RNG).uniform(1.0, 1.0 + self.retry_after_jitter)
        if self.retry_after == "hint":
            return hint, f"retry_after={hint:g}s"
        if hint >= backoff:
            return hint, f"retry_after={hint:g}s, above the backoff's {backoff:.3f}s"
        return backoff, f"backoff, above retry_after={hint:g}s"

    def decide_job(self, exception: BaseException, *, job: Job, elapsed: float | None) -> Decision:
        """Decide about a job whose run number `job.attempts + 1` raised `exception`.

        `elapsed` is the seconds since the job's first run (None if unknown). The jitter is
        drawn from a generator seeded by the job's id and attempt, so a decision replays.
        A wait longer than `MAX_JOB_DELAY` is shortened to it, and the reason says so.
        """
        attempt = job.attempts + 1
        seeded = SplitMix(job.id or 0, attempt)
        decision = self.decide(exception, attempt=attempt, elapsed=elapsed, rng=seeded)
        if decision.delay is None or decision.delay <= MAX_JOB_DELAY:
            return decision
        return Decision(
            retry=True,
            delay=MAX_JOB_DELAY,
            reason=f"{decision.reason}, shortened to MAX_JOB_DELAY={MAX_JOB_DELAY:g}s",
            backoff_delay=decision.backoff_delay,
        )

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        """Procrastinate's hook: a job that ran `job.attempts + 1` times has failed."""
        decision = self.decide_job(exception, job=job, elapsed=None)
        if not decision.retry or decision.delay is None:
            return None
        retry_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=decision.delay)
        return RetryDecision(retry_at=retry_at)

    def to_dict(self) -> dict[str, object]:
        """The policy as plain data: classes and functions as dotted names, `rng` left out.

        A `retry_if` or `on_retry` that is not importable by name (a lambda, a local
        function, a bound method) raises ConfigurationError naming it.
        """
        data: dict[str, object] = {"type": type(self).__name__}
        for item in fields(self):
            if not item.init or item.name == "rng":
                continue
            value = getattr(self, item.name)
            where = f"{type(self).__name__}.to_dict: {item.name}"
            if isinstance(value, Backoff):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [dotted_name(where, kind) for kind in value]
            elif callable(value):
                value = dotted_name(where, value)
            data[item.name] = value
        return data

    @staticmethod
    def from_dict(data: Mapping[str, object]) -> RetryPolicy:
        """The policy `to_dict` wrote; a name that does not resolve raises ConfigurationError."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"RetryPolicy.from_dict needs a mapping, got {data!r}")
        arguments: dict[str, Any] = dict(data)
        kind = arguments.pop("type", "RetryPolicy")
        policy_class = _POLICIES.get(kind) if isinstance(kind, str) else None
        if policy_class is None:
            raise ConfigurationError(
                f"RetryPolicy.from_dict: type must be one of {', '.join(_POLICIES)}, got {kind!r}"
            )
        accepted = {item.name for item in fields(policy_class) if item.init} - {"rng"}
        unknown = sorted(set(arguments) - accepted)
        if unknown:
            raise ConfigurationError(f"{kind}.from_dict: unknown keys {', '.join(unknown)}")
        for name, value in arguments.items():
            where = f"{kind}.from_dict: {name}"
            if name == "backoff" and isinstance(value, Mapping):
                arguments[name] = Backoff.from_dict(value)
            elif name in _EXCEPTION_FIELDS and isinstance(value, str):
                arguments[name] = resolve(where, value)
            elif name in _EXCEPTION_FIELDS and isinstance(value, list | tuple):
                arguments[name] = tuple(resolve(where, item) for item in value)
            elif name in _FUNCTION_FIELDS and value is not None:
                arguments[name] = resolve(where, value)
        return policy_class(**arguments)


def _refusal(reason: str) -> Decision:
    return Decision(retry=False, delay=None, reason=reason)


@dataclass(frozen=True)
class ExponentialBackoffStrategy(RetryPolicy):
    """Procrastinate-style short form: exponential waits from `base_delay`, doubling.

    Its argument names are those of Procrastinate's `RetryStrategy`, and so is their
    meaning: `max_attempts` counts retries, so `max_attempts=3` allows four runs (the first
    and three retries, after `base_delay`, `2 * base_delay` and `4 * base_delay` seconds,
    without jitter unless `jitter=` says), `None` no limit; `retry_exceptions` lists what is
    retried. Its own arguments are its fields, so it pickles, copies, `dataclasses.replace`s
    and `to_dict`s like any policy; `backoff` and `retry_on` are derived from them.
    """

    max_attempts: int | None = 3
    base_delay: float = 1.0
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: Jitter = "none"
    retry_exceptions: ExceptionTypes = (Exception,)
    # RetryPolicy's other options keep their defaults: the short form does not take them.
    backoff: Backoff = field(init=False, repr=False)
    deadline: float | None = field(default=None, init=False, repr=False)
    retry_on: ExceptionTypes = field(init=False, repr=False)
    give_up_on: ExceptionTypes = field(default=(), init=False, repr=False)
    retry_if: Callable[[BaseException], bool] | None = field(default=None, init=False, repr=False)
    retry_after: RetryAfter = field(default="max", init=False, repr=False)
    retry_after_max: float = field(default=DEFAULT_MAX_DELAY, init=False, repr=False)
    retry_after_jitter: float = field(default=0.0, init=False, repr=False)
    on_retry: Callable[[RetryEvent], None] | None = field(default=None, init=False, repr=False)
    rng: random.Random | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = "ExponentialBackoffStrategy"
        base_delay = number(f"{owner}: base_delay", self.base_delay, above=0)
        max_delay = number(f"{owner}: max_delay", self.max_delay, above=0)
        retry_on = exception_types(f"{owner}: retry_exceptions", self.retry_exceptions)
        object.__setattr__(self, "base_delay", base_delay)
        object.__setattr__(self, "max_delay", max_delay)
        object.__setattr__(self, "retry_exceptions", retry_on)
        backoff = Exponential(base_delay, 2.0, jitter=self.jitter, max_delay=max_delay)
        object.__setattr__(self, "jitter", backoff.jitter)
        object.__setattr__(self, "backoff", backoff)
        object.__setattr__(self, "retry_on", retry_on)
        super().__post_init__()

    def _max_runs(self) -> int | None:
        return None if self.max_attempts is None else self.max_attempts + 1


_POLICIES: Final[dict[str, type[RetryPolicy]]] = {
    "RetryPolicy": RetryPolicy,
    "ExponentialBackoffStrategy": ExponentialBackoffStrategy,
}
_EXCEPTION_FIELDS: Final = ("retry_on", "give_up_on", "retry_exceptions")
_FUNCTION_FIELDS: Final = ("retry_if", "on_retry")
