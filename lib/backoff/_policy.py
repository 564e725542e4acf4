"""RetryPolicy: whether and when to retry a failure, usable in-process and as a task's `retry=`."""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from procrastinate import BaseRetryStrategy, RetryDecision
from procrastinate.jobs import Job

from dawdle._errors import ConfigurationError, leaves
from dawdle._validate import integer, is_number, number
from dawdle.backoff._strategies import DEFAULT_MAX_DELAY, Backoff, Exponential, Jitter

ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of `RetryPolicy.decide`: retry or not, after how long, and why."""

    retry: bool
    delay: float | None
    reason: str

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


def _exception_types(where: str, value: object) -> tuple[type[BaseException], ...]:
    """`value`, one exception class or a tuple of them, as a tuple; `where` names it."""
    types = value if isinstance(value, tuple) else (value,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(
                f"{where} must be exception classes, got {item!r} in {value!r}"
            )
    return types


def _retry_after(exc: BaseException) -> float | None:
    """The longest valid `retry_after` (seconds or timedelta) carried by `exc` or its leaves."""
    hints: list[float] = []
    for candidate in (exc, *leaves(exc)):
        hint = getattr(candidate, "retry_after", None)
        if isinstance(hint, datetime.timedelta):
            hint = hint.total_seconds()
        if is_number(hint) and math.isfinite(hint):
            hints.append(max(0.0, float(hint)))
    return max(hints, default=None)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy(BaseRetryStrategy):
    """When to retry a failed call or job, and how long to wait first.

    `max_attempts` counts every run, the first included: `max_attempts=3` means one run and
    up to two retries. (Procrastinate's `RetryStrategy(max_attempts=n)` counts retries, so it
    allows n + 1 runs.) `None` means no limit. `deadline` is in seconds since the first
    attempt; a job's runs are bounded by `max_attempts` since a job does not record when its
    first run started. An exception group is retried only if every leaf is in `retry_on`
    and none is in `give_up_on`. An exception with a `retry_after` attribute (seconds or a
    timedelta) sets the wait, still capped at the backoff's `max_delay`.

    A policy is a value: it compares and hashes by its options (not `rng`), copies, and
    pickles unless `retry_if` is a lambda or a local function, which pickle cannot store.
    A deep copy or an unpickled policy has its own copy of `rng` in its current state, so it
    draws the delays the original would draw next; a shallow copy shares the original's `rng`.
    `dataclasses.replace` re-validates.
    """

    backoff: Backoff = field(default_factory=lambda: Exponential(1.0, 2.0, jitter="full"))
    max_attempts: int | None = 3
    deadline: float | None = None
    retry_on: ExceptionTypes = (Exception,)
    give_up_on: ExceptionTypes = ()
    retry_if: Callable[[BaseException], bool] | None = None
    retry_after: bool = True
    on_retry: Callable[[RetryEvent], None] | None = None
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.on_retry is not None and not callable(self.on_retry):
            raise ConfigurationError(
                f"RetryPolicy: on_retry must be callable, got {self.on_retry!r}"
            )
        if not isinstance(self.backoff, Backoff):
            raise ConfigurationError(
                f"RetryPolicy: backoff must be a dawdle.backoff strategy, got {self.backoff!r}"
            )
        if self.max_attempts is not None:
            integer("RetryPolicy: max_attempts (None for no limit)", self.max_attempts, at_least=1)
        if self.deadline is not None:
            deadline = number("RetryPolicy: deadline", self.deadline, above=0)
            object.__setattr__(self, "deadline", deadline)
        object.__setattr__(
            self, "retry_on", _exception_types("RetryPolicy: retry_on", self.retry_on)
        )
        object.__setattr__(
            self, "give_up_on", _exception_types("RetryPolicy: give_up_on", self.give_up_on)
        )
        if self.retry_if is not None and not callable(self.retry_if):
            raise ConfigurationError(
                f"RetryPolicy: retry_if must be callable, got {self.retry_if!r}"
            )

    def decide(
        self,
        exc: BaseException,
        *,
        attempt: int,
        elapsed: float | None = None,
        rng: random.Random | None = None,
    ) -> Decision:
        """Decide about `exc`, raised by run number `attempt` (1 = first), `elapsed` s in."""
        integer("attempt", attempt, at_least=1)
        name = type(exc).__name__
        for leaf in leaves(exc):
            if isinstance(leaf, self.give_up_on):
                return Decision(
                    retry=False, delay=None, reason=f"{type(leaf).__name__} is in give_up_on"
                )
            if not isinstance(leaf, self.retry_on):
                return Decision(
                    retry=False, delay=None, reason=f"{type(leaf).__name__} is not in retry_on"
                )
        if self.retry_if is not None and not self.retry_if(exc):
            return Decision(retry=False, delay=None, reason=f"retry_if rejected {name}")
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return Decision(
                retry=False,
                delay=None,
                reason=f"{name} on attempt {attempt} of {self.max_attempts}: none left",
            )
        delay = self.backoff.delay(attempt, rng or self.rng)
        why = "backoff"
        hint = _retry_after(exc) if self.retry_after else None
        if hint is not None:
            delay, why = min(hint, self.backoff.max_delay), f"retry_after={hint:g}s"
        if self.deadline is not None and elapsed is not None and elapsed + delay > self.deadline:
            return Decision(
                retry=False,
                delay=None,
                reason=f"{name} on attempt {attempt}: waiting {delay:.3f}s after {elapsed:.3f}s "
                f"would pass the {self.deadline:g}s deadline",
            )
        limit = "" if self.max_attempts is None else f" of {self.max_attempts}"
        next_run = f"attempt {attempt + 1}{limit} in {delay:.3f}s ({why})"
        return Decision(retry=True, delay=delay, reason=f"{name} on attempt {attempt}; {next_run}")

    def decide_job(self, exception: BaseException, *, job: Job, elapsed: float | None) -> Decision:
        """Decide about a job whose run number `job.attempts + 1` raised `exception`.

        `elapsed` is the seconds since the job's first run (None if unknown). The jitter is
        drawn from a generator seeded by the job's id and attempt, so a decision replays.
        """
        attempt = job.attempts + 1
        seeded = random.Random(f"{job.id}/{attempt}")  # noqa: S311 (jitter, not security)
        return self.decide(exception, attempt=attempt, elapsed=elapsed, rng=seeded)

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        """Procrastinate's hook: a job that ran `job.attempts + 1` times has failed."""
        decision = self.decide_job(exception, job=job, elapsed=None)
        if not decision.retry or decision.delay is None:
            return None
        retry_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=decision.delay)
        return RetryDecision(retry_at=retry_at)


@dataclass(frozen=True)
class ExponentialBackoffStrategy(RetryPolicy):
    """Short form of `RetryPolicy(backoff=Exponential(base_delay, 2.0, ...), max_attempts=...)`.

    As in `RetryPolicy`, `max_attempts` counts runs: the default 3 is a run and two retries,
    after `base_delay` and `2 * base_delay` seconds. Its own arguments are its fields, so it
    pickles, copies and `dataclasses.replace`s like any policy; `backoff` and `retry_on` are
    derived from them.
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
    retry_after: bool = field(default=True, init=False, repr=False)
    on_retry: Callable[[RetryEvent], None] | None = field(default=None, init=False, repr=False)
    rng: random.Random | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        owner = "ExponentialBackoffStrategy"
        base_delay = number(f"{owner}: base_delay", self.base_delay, above=0)
        max_delay = number(f"{owner}: max_delay", self.max_delay, above=0)
        retry_on = _exception_types(f"{owner}: retry_exceptions", self.retry_exceptions)
        object.__setattr__(self, "base_delay", base_delay)
        object.__setattr__(self, "max_delay", max_delay)
        object.__setattr__(self, "retry_exceptions", retry_on)
        backoff = Exponential(base_delay, 2.0, jitter=self.jitter, max_delay=max_delay)
        object.__setattr__(self, "jitter", backoff.jitter)
        object.__setattr__(self, "backoff", backoff)
        object.__setattr__(self, "retry_on", retry_on)
        super().__post_init__()
