from __future__ import annotations

import pytest

from dawdle import ConfigurationError
from dawdle.backoff import RetryBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spend_all(budget: RetryBudget) -> int:
    granted = 0
    while budget.try_acquire_retry():
        granted += 1
    return granted


def test_floor_allows_a_few_retries_without_traffic() -> None:
    """With no requests, min_per_second * window retries are allowed, then none."""
    budget = RetryBudget(ratio=0.2, min_per_second=0.5, window=10.0, clock=FakeClock())
    assert spend_all(budget) == 5


def test_ratio_of_recent_requests() -> None:
    """1,000 requests at ratio 0.1 earn 100 retries on top of the floor."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_per_second=0.0, window=10.0, clock=clock)
    for _ in range(1_000):
        budget.record_request()
    assert spend_all(budget) == 100
    assert budget.available == pytest.approx(0.0)


def test_old_traffic_and_retries_leave_the_window() -> None:
    """After a window has passed, earned and spent retries are both forgotten."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.1, window=10.0, clock=clock)
    for _ in range(10):
        budget.record_request()
    assert spend_all(budget) == 6
    clock.now += 5.0
    assert not budget.try_acquire_retry()
    clock.now += 6.0
    assert spend_all(budget) == 1


def test_storm_is_bounded() -> None:
    """Under a sustained outage, retries stay within ratio * requests + floor * time."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window=10.0, clock=clock)
    requests = retries = 0
    for _ in range(600):  # one minute at 10 failing requests per second, 3 retries each wanted
        clock.now += 0.1
        budget.record_request()
        requests += 1
        retries += sum(budget.try_acquire_retry() for _ in range(3))
    assert retries <= 0.2 * requests + 1.0 * (60 + 10)
    assert retries >= 0.2 * requests


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"ratio": -0.1}, "ratio"), ({"window": 0}, "window"), ({"min_per_second": "1"}, "min_per")],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], named: str) -> None:
    """Invalid settings raise ConfigurationError naming the value."""
    with pytest.raises(ConfigurationError, match=named):
        RetryBudget(**kwargs)  # type: ignore[arg-type]
