"""The retry helpers on plain synchronous code (threads, scripts), with instant sleeps."""

from __future__ import annotations

import time

import pytest

from dawdle.backoff import (
    Constant,
    Exponential,
    RetryEvent,
    RetryPolicy,
    instant_sleeps,
    retry,
    retrying,
)


def test_sync_decorator_retries_then_returns() -> None:
    """@retry on a plain function retries it and returns its value."""
    calls: list[int] = []

    @retry(RetryPolicy(backoff=Constant(30.0), max_attempts=3))
    def fetch(value: int) -> int:
        calls.append(value)
        if len(calls) < 3:
            raise TimeoutError
        return value * 2

    started = time.monotonic()
    with instant_sleeps():
        assert fetch(21) == 42
    assert calls == [21, 21, 21]
    assert time.monotonic() - started < 30.0


def test_sync_loop_reports_the_delays_it_would_sleep() -> None:
    """The plain for-loop form asks the policy for the same delays as the async one."""
    seen: list[RetryEvent] = []
    attempts = 0
    with instant_sleeps(), pytest.raises(OSError, match="down"):
        for attempt in retrying(
            RetryPolicy(backoff=Exponential(2.0, 2.0), max_attempts=4), on_retry=seen.append
        ):
            with attempt:
                attempts += 1
                raise OSError("down")
    assert attempts == 4
    assert [d.delay for d in seen] == [2.0, 4.0, 8.0]


def test_sync_loop_really_sleeps_outside_instant_mode() -> None:
    """Without instant_sleeps the wait happens (a 10 ms wait is the behaviour under test)."""
    started = time.monotonic()
    for attempt in retrying(RetryPolicy(backoff=Constant(0.01), max_attempts=2)):
        with attempt:
            if attempt.number == 1:
                raise ConnectionError
    assert time.monotonic() - started >= 0.01


def test_instant_sleeps_restores_the_previous_mode() -> None:
    """instant_sleeps nests and restores whatever was set before."""
    from dawdle.backoff import _retrying  # noqa: PLC0415 (peeks at the private switch)

    with instant_sleeps():
        with instant_sleeps(enabled=False):
            assert not _retrying._instant
        assert _retrying._instant
    assert not _retrying._instant


def test_keyboard_interrupt_is_not_caught() -> None:
    """BaseExceptions such as KeyboardInterrupt leave the loop at once."""
    attempts = 0
    with pytest.raises(KeyboardInterrupt):
        for attempt in retrying(RetryPolicy(max_attempts=5)):
            with attempt:
                attempts += 1
                raise KeyboardInterrupt
    assert attempts == 1
