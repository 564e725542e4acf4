"""The retry helpers, timed on virtual clocks (looptime on asyncio, MockClock on trio)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest

from dawdle import ConfigurationError
from dawdle.backoff import (
    Constant,
    Exponential,
    RetryBudget,
    RetryEvent,
    RetryPolicy,
    retry,
    retrying,
)

pytestmark = pytest.mark.anyio


class Flaky:
    """Fails `failures` times with `error`, then returns "ok"; records when each call ran."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(anyio.current_time())
        if len(self.calls) <= self.failures:
            raise self.error(f"call {len(self.calls)}")
        return "ok"


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


async def test_loop_form_waits_the_backoff_between_attempts() -> None:
    """Async for ... with attempt: three failures, then success, after 1 + 2 + 4 s."""
    flaky = Flaky(failures=3)
    result = None
    async for attempt in retrying(RetryPolicy(backoff=Exponential(1.0, 2.0), max_attempts=5)):
        with attempt:
            result = await flaky()
    assert result == "ok"
    assert attempt.number == 4
    assert gaps(flaky.calls) == [1.0, 2.0, 4.0]


async def test_gives_up_with_the_last_exception() -> None:
    """When the policy says no, the last failure propagates unchanged."""
    flaky = Flaky(failures=10)
    with pytest.raises(ConnectionError, match="call 3"):
        async for attempt in retrying(RetryPolicy(backoff=Constant(0.5), max_attempts=3)):
            with attempt:
                await flaky()
    assert gaps(flaky.calls) == [0.5, 0.5]


async def test_non_retryable_error_is_raised_at_once() -> None:
    """An exception outside retry_on is not retried and does not wait."""
    flaky = Flaky(failures=1, error=KeyError)
    started = anyio.current_time()
    with pytest.raises(KeyError):
        async for attempt in retrying(RetryPolicy(retry_on=(OSError,))):
            with attempt:
                await flaky()
    assert len(flaky.calls) == 1
    assert anyio.current_time() == started


async def test_deadline_uses_the_event_loop_clock() -> None:
    """Deadline counts virtual seconds from the first attempt: 0, 10, 20 then 30 would pass 25."""
    flaky = Flaky(failures=10)
    policy = RetryPolicy(backoff=Constant(10.0), max_attempts=None, deadline=25.0)
    with pytest.raises(ConnectionError):
        async for attempt in retrying(policy):
            with attempt:
                await flaky()
    assert gaps(flaky.calls) == [10.0, 10.0]


async def test_decorator_on_async_function() -> None:
    """@retry on an async function retries each call, sleeping through anyio."""
    flaky = Flaky(failures=2)

    @retry(RetryPolicy(backoff=Constant(1.0), max_attempts=3))
    async def call() -> str:
        return await flaky()

    start = anyio.current_time()
    assert await call() == "ok"
    assert anyio.current_time() - start == pytest.approx(2.0)


async def test_cancellation_is_never_swallowed() -> None:
    """A cancelled attempt is not retried: cancellation passes through `with attempt`."""
    calls = 0
    with anyio.move_on_after(5) as scope:
        async for attempt in retrying(RetryPolicy(backoff=Constant(1.0), max_attempts=None)):
            with attempt:
                calls += 1
                await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert calls == 1


async def test_cancellation_during_the_wait() -> None:
    """Cancelling while waiting between attempts stops the loop at once."""
    flaky = Flaky(failures=10)
    with anyio.move_on_after(15):
        async for attempt in retrying(RetryPolicy(backoff=Constant(10.0), max_attempts=None)):
            with attempt:
                await flaky()
    assert len(flaky.calls) == 2


async def test_on_retry_sees_each_decision() -> None:
    """on_retry receives every decision to retry, with its delay and reason."""
    seen: list[RetryEvent] = []
    flaky = Flaky(failures=2)
    policy = RetryPolicy(backoff=Exponential(0.1, 3.0), max_attempts=5)
    async for attempt in retrying(policy, on_retry=seen.append):
        with attempt:
            await flaky()
    assert [d.delay for d in seen] == pytest.approx([0.1, 0.3])
    assert "ConnectionError on attempt 1" in seen[0].reason


async def test_budget_stops_a_retry_storm() -> None:
    """With the budget spent, failures are raised at once instead of retried."""
    clock_now = [0.0]
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10.0, clock=lambda: clock_now[0])
    policy = RetryPolicy(backoff=Constant(0.0), max_attempts=None)
    flaky = Flaky(failures=100)
    with pytest.raises(ConnectionError):
        async for attempt in retrying(policy, budget=budget):
            with attempt:
                await flaky()
    assert len(flaky.calls) == 2  # the first run and the single retry the floor allows


async def test_success_on_the_first_attempt() -> None:
    """With no failure at all there is one attempt and no wait."""
    async for attempt in retrying(RetryPolicy()):
        with attempt:
            pass
    assert attempt.number == 1


async def test_on_retry_gets_a_retry_event_before_each_wait() -> None:
    """The policy's on_retry sees attempt, delay, reason and exception before the wait starts."""
    events: list[tuple[RetryEvent, float]] = []
    flaky = Flaky(failures=2)
    policy = RetryPolicy(
        backoff=Exponential(1.0, 2.0),
        max_attempts=5,
        on_retry=lambda event: events.append((event, anyio.current_time())),
    )
    async for attempt in retrying(policy):
        with attempt:
            await flaky()
    assert [(event.attempt, event.delay) for event, _ in events] == [(1, 1.0), (2, 2.0)]
    assert [type(event.exception) for event, _ in events] == [ConnectionError] * 2
    assert all(event.job_id is None for event, _ in events)
    assert "ConnectionError on attempt 2" in events[1][0].reason
    # Each event came at the failure, before the wait that follows it.
    assert [when for _, when in events] == pytest.approx(flaky.calls[:2])


async def test_on_retry_argument_replaces_the_policys_hook() -> None:
    """retry(policy, on_retry=f) calls f instead of the policy's own hook."""
    from_policy: list[RetryEvent] = []
    from_call: list[RetryEvent] = []
    policy = RetryPolicy(backoff=Constant(0.5), max_attempts=3, on_retry=from_policy.append)
    flaky = Flaky(failures=1)
    assert await retry(policy, on_retry=from_call.append)(flaky)() == "ok"
    assert [event.delay for event in from_call] == [0.5]
    assert from_policy == []


async def test_object_with_async_call_is_retried() -> None:
    """retry() on an object whose __call__ is async awaits it and retries each failure."""
    flaky = Flaky(failures=2)
    wrapped = retry(RetryPolicy(backoff=Constant(1.0), max_attempts=5))(flaky)
    assert await wrapped() == "ok"
    assert len(flaky.calls) == 3
    assert gaps(flaky.calls) == [1.0, 1.0]


def test_generator_functions_are_refused() -> None:
    """retry() on a generator function, sync or async, says why instead of running it once."""

    async def agen() -> AsyncIterator[int]:
        yield 1

    def gen() -> Iterator[int]:
        yield 1

    for fn in (agen, gen):
        with pytest.raises(ConfigurationError, match="generator function"):
            retry(RetryPolicy())(fn)
