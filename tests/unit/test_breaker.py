"""Breaker's rules (record_calls, free_probes, take_probes), as its SQL's, on a fake clock."""

from __future__ import annotations

import datetime
import math

import pytest

from dawdle import App, Breaker, ConfigurationError, InMemoryConnector
from dawdle._breaker import BreakerRow, Calls, free_probes, record_calls, take_probes

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    """The fake clock: `seconds` after T0."""
    return T0 + datetime.timedelta(seconds=seconds)


def tripped(breaker: Breaker, now: float = 0) -> BreakerRow:
    """A row that `breaker` has just opened at `now` (min_calls failures)."""
    row = BreakerRow(max_probes=breaker.half_open_probes)
    failures = breaker.min_calls
    assert record_calls(breaker, row, Calls(failures, failures), now=at(now)) == "open"
    return row


def test_defaults_are_the_documented_ones() -> None:
    """The defaults the README states."""
    assert Breaker() == Breaker(
        failure_ratio=0.5,
        window=60.0,
        min_calls=20,
        open_for=30.0,
        max_open_for=600.0,
        half_open_probes=1,
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"failure_ratio": 0}, "failure_ratio"),
        ({"failure_ratio": 1.5}, "failure_ratio"),
        ({"window": math.nan}, "window"),
        ({"min_calls": 0}, "min_calls"),
        ({"min_calls": 2.5}, "min_calls"),
        ({"open_for": -1}, "open_for"),
        ({"open_for": 60, "max_open_for": 30}, "max_open_for"),
        ({"half_open_probes": True}, "half_open_probes"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(options: dict[str, float], named: str) -> None:
    """Out of range, NaN, or not an int where one is due: one error naming the setting."""
    with pytest.raises(ConfigurationError, match=f"Breaker: {named}"):
        Breaker(**options)  # type: ignore[arg-type]


def test_a_task_refuses_a_breaker_of_another_type() -> None:
    """breaker= takes a Breaker only, and says what it got."""
    app = App(connector=InMemoryConnector())
    with pytest.raises(ConfigurationError, match=r"breaker must be a dawdle\.Breaker"):
        app.task(name="x", breaker=0.5)  # type: ignore[arg-type]


def test_it_stays_closed_below_min_calls_whatever_the_ratio() -> None:
    """19 failures of 19 calls, min_calls 20: still closed; the 20th failure opens it."""
    breaker = Breaker()
    row = BreakerRow()
    assert record_calls(breaker, row, Calls(19, 19), now=at(0)) == "closed"
    assert record_calls(breaker, row, Calls(1, 1), now=at(0)) == "open"
    assert row.open_until == at(30)


def test_it_stays_closed_below_the_failure_ratio() -> None:
    """9 failures in 20 calls at ratio 0.5: closed; 10 in 20 opens it."""
    breaker = Breaker()
    assert record_calls(breaker, BreakerRow(), Calls(20, 9), now=at(0)) == "closed"
    assert record_calls(breaker, BreakerRow(), Calls(20, 10), now=at(0)) == "open"


def test_old_failures_fade_with_the_window() -> None:
    """19 failures then quiet for ten windows: one more failure does not open it."""
    breaker = Breaker(window=1.0)
    row = BreakerRow()
    record_calls(breaker, row, Calls(19, 19), now=at(0))
    assert record_calls(breaker, row, Calls(1, 1), now=at(10)) == "closed"


def test_open_it_takes_no_probe_until_open_for_is_over() -> None:
    """Open: no probe before open_for, then half_open_probes of them, then none."""
    breaker = Breaker(half_open_probes=2)
    row = tripped(breaker)
    assert free_probes(row, at(29.9)) == 0
    assert free_probes(row, at(30)) == 2
    take_probes(row, 2, at(30))
    assert (row.state, free_probes(row, at(31))) == ("half_open", 0)


def test_a_successful_probe_closes_it_and_forgets_the_trips() -> None:
    """Half-open, the probe succeeds: closed, no probe limit, trips back to 0."""
    breaker = Breaker()
    row = tripped(breaker)
    take_probes(row, 1, at(30))
    assert record_calls(breaker, row, Calls(probe_successes=1), now=at(31)) == "closed"
    assert (row.trips, row.probes, free_probes(row, at(31))) == (0, 0, 0)


def test_failed_probes_double_the_open_time_up_to_max_open_for() -> None:
    """Each failed probe in a row doubles open_for (30, 60, 120 ...), capped at max_open_for."""
    breaker = Breaker(open_for=30, max_open_for=100)
    row = tripped(breaker)
    waits = []
    now = 0.0
    for _ in range(3):
        now = (row.open_until - T0).total_seconds()  # type: ignore[operator]
        take_probes(row, 1, at(now))
        assert record_calls(breaker, row, Calls(probe_failures=1), now=at(now)) == "open"
        waits.append((row.open_until - at(now)).total_seconds())  # type: ignore[operator]
    assert waits == [60.0, 100.0, 100.0]


def test_a_released_probe_frees_its_place() -> None:
    """A probe put back or snoozed says nothing: half-open still, and another may probe."""
    breaker = Breaker()
    row = tripped(breaker)
    take_probes(row, 1, at(30))
    assert record_calls(breaker, row, Calls(released=1), now=at(31)) == "half_open"
    assert free_probes(row, at(31)) == 1


def test_a_probe_silent_past_its_lease_is_given_up() -> None:
    """A probe whose worker died: after max_open_for another job may probe."""
    breaker = Breaker(max_open_for=100)
    row = tripped(breaker)
    row.probe_lease = breaker.max_open_for
    take_probes(row, 1, at(30))
    assert free_probes(row, at(129)) == 0
    assert free_probes(row, at(130)) == 1


def test_calls_while_open_are_not_counted() -> None:
    """Outcomes of jobs that ran before the trip leave the open breaker as it is."""
    breaker = Breaker()
    row = tripped(breaker)
    assert record_calls(breaker, row, Calls(50, 0), now=at(1)) == "open"
    assert (row.calls, row.failures) == (0, 0)
