"""The original guide's unit tests for ExponentialBackoffStrategy, on dawdle's short form."""

from __future__ import annotations

import pytest

from dawdle import ExponentialBackoffStrategy
from dawdle.backoff import Exponential, RetryPolicy


class TestExponentialBackoffStrategy:
    def test_exponential_delay_calculation(self) -> None:
        """Waits double from base_delay: 1, 2, 4, 8 seconds."""
        strategy = ExponentialBackoffStrategy(max_attempts=5, base_delay=1.0)
        assert [strategy.decide(ValueError(), attempt=n).delay for n in (1, 2, 3, 4)] == [
            1.0,
            2.0,
            4.0,
            8.0,
        ]

    def test_max_attempts_enforcement(self) -> None:
        """max_attempts=3 allows three retries (four runs), as Procrastinate's RetryStrategy."""
        strategy = ExponentialBackoffStrategy(max_attempts=3, base_delay=1.0)
        assert strategy.decide(ValueError(), attempt=3).retry
        assert not strategy.decide(ValueError(), attempt=4).retry

    def test_max_delay_capping(self) -> None:
        """No wait exceeds max_delay, however many retries came before."""
        strategy = ExponentialBackoffStrategy(max_attempts=None, base_delay=1.0, max_delay=10.0)
        assert strategy.decide(ValueError(), attempt=5).delay == 10.0
        assert strategy.decide(ValueError(), attempt=10**6).delay == 10.0
        assert strategy.max_delay == 10.0

    def test_exception_filtering(self) -> None:
        """Only retry_exceptions are retried."""
        strategy = ExponentialBackoffStrategy(retry_exceptions=(ConnectionError,))
        assert strategy.decide(ConnectionError(), attempt=1).retry
        assert not strategy.decide(KeyError(), attempt=1).retry

    def test_is_a_retry_policy(self) -> None:
        """The short form is a RetryPolicy with an exponential backoff of factor 2."""
        strategy = ExponentialBackoffStrategy(max_attempts=3, base_delay=0.5, jitter="full")
        assert isinstance(strategy, RetryPolicy)
        assert strategy.backoff == Exponential(0.5, 2.0, jitter="full")
        assert strategy.base_delay == 0.5

    def test_bad_base_delay_is_named(self) -> None:
        """A negative base delay is refused with its value."""
        with pytest.raises(ValueError, match="-1"):
            ExponentialBackoffStrategy(base_delay=-1)
