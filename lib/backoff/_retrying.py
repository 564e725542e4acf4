"""In-process retries for any call, sync or async, on asyncio and Trio alike."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import ParamSpec, TypeVar

import anyio
import anyio.lowlevel

from dawdle._errors import ConfigurationError
from dawdle.backoff._budget import RetryBudget
from dawdle.backoff._policy import Decision, RetryEvent, RetryPolicy

logger = logging.getLogger("dawdle.backoff")

P = ParamSpec("P")
T = TypeVar("T")

_instant = False


@contextmanager
def instant_sleeps(*, enabled: bool = True) -> Iterator[None]:
    """Make every retry helper skip its waits while inside the block (for tests)."""
    global _instant  # noqa: PLW0603 (a process-wide switch, as stamina's set_testing)
    previous, _instant = _instant, enabled
    try:
        yield
    finally:
        _instant = previous


class Attempt:
    """One run inside `retrying()`: use it as `with attempt:` around the call."""

    __slots__ = ("_owner", "number")

    def __init__(self, owner: Retrying, number: int) -> None:
        self._owner = owner
        self.number = number
        """1 for the first run, 2 for the first retry, and so on."""

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        # Only Exception is caught: cancellation, KeyboardInterrupt and SystemExit must pass.
        if isinstance(exc, Exception):
            self._owner._failure = exc
            return True
        return False

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class Retrying:
    """Run a block until it succeeds or `policy` gives up; then the last exception is raised.

    ``async for attempt in retrying(policy): with attempt: ...`` sleeps through anyio and
    reads anyio's clock, so fake clocks work; the plain ``for`` form sleeps with `time.sleep`.
    `on_retry` (default: the policy's) is called with a `RetryEvent` before each wait. Each
    decision is given the previous one's backoff draw, so `DecorrelatedJitter` follows
    AWS's recursion from the wait it actually drew.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        budget: RetryBudget | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ) -> None:
        self.policy = policy
        self.budget = budget
        self.on_retry = on_retry if on_retry is not None else policy.on_retry
        self._number = 0
        self._started = 0.0
        self._previous_delay: float | None = None
        self._failure: Exception | None = None

    def __aiter__(self) -> Retrying:
        self._number = 0
        self._previous_delay = None
        return self

    def __iter__(self) -> Retrying:
        self._number = 0
        self._previous_delay = None
        return self

    async def __anext__(self) -> Attempt:
        delay = self._next_delay(anyio.current_time())
        if delay is None:
            raise StopAsyncIteration
        if delay > 0 and not _instant:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()
        return self._start_attempt()

    def __next__(self) -> Attempt:
        delay = self._next_delay(time.monotonic())
        if delay is None:
            raise StopIteration
        if delay > 0 and not _instant:
            time.sleep(delay)
        return self._start_attempt()

    def _start_attempt(self) -> Attempt:
        self._number += 1
        return Attempt(self, self._number)

    def _next_delay(self, now: float) -> float | None:
        """Seconds to wait before the next attempt, None when done; raises when giving up."""
        if self._number == 0:
            self._started = now
            if self.budget is not None:
                self.budget.record_request()
            return 0.0
        failure, self._failure = self._failure, None
        if failure is None:
            return None
        decision = self.policy.decide(
            failure,
            attempt=self._number,
            elapsed=max(0.0, now - self._started),
            previous_delay=self._previous_delay,
        )
        if decision.retry and self.budget is not None and not self.budget.try_acquire_retry():
            decision = Decision(
                retry=False, delay=None, reason=f"{decision.reason}; but the retry budget is spent"
            )
        if not decision.retry:
            logger.debug("giving up: %s", decision.reason)
            raise failure
        logger.info("retrying: %s", decision.reason)
        assert decision.delay is not None  # noqa: S101 (a retry decision always has a delay)
        self._previous_delay = decision.backoff_delay
        if self.on_retry is not None:
            event = RetryEvent(self._number, decision.delay, decision.reason, failure)
            self.on_retry(event)
        return decision.delay


def retrying(
    policy: RetryPolicy,
    *,
    budget: RetryBudget | None = None,
    on_retry: Callable[[RetryEvent], None] | None = None,
) -> Retrying:
    """Loop over attempts until success: see `Retrying` for the async and sync forms."""
    return Retrying(policy, budget=budget, on_retry=on_retry)


def retry(
    policy: RetryPolicy,
    *,
    budget: RetryBudget | None = None,
    on_retry: Callable[[RetryEvent], None] | None = None,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a sync or async callable so that each call is retried under `policy`.

    Async means a coroutine function or an object whose `__call__` is one. A generator
    function, sync or async, is refused: calling it only makes the generator, so there is
    nothing to retry; retry the work inside it with `retrying()`.
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        call = getattr(fn, "__call__", None)  # noqa: B004 (the method itself, to inspect)
        if any(
            inspect.isgeneratorfunction(item) or inspect.isasyncgenfunction(item)
            for item in (fn, call)
        ):
            raise ConfigurationError(
                f"retry() cannot retry the generator function {fn!r}: retry the work "
                "inside it with retrying()"
            )
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call):

            @functools.wraps(fn)
            async def call_async(*args: P.args, **kwargs: P.kwargs) -> object:
                async for attempt in Retrying(policy, budget=budget, on_retry=on_retry):
                    with attempt:
                        return await fn(*args, **kwargs)  # type: ignore[misc]
                raise _exhausted()

            return call_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def call_sync(*args: P.args, **kwargs: P.kwargs) -> T:
            for attempt in Retrying(policy, budget=budget, on_retry=on_retry):
                with attempt:
                    return fn(*args, **kwargs)
            raise _exhausted()

        return call_sync

    return decorate


def _exhausted() -> AssertionError:
    # Unreachable: Retrying either re-raises the last failure or stops after a success,
    # and a success has already returned from inside the loop.
    return AssertionError("retry loop ended without a result")
