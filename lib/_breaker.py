"""Breaker: a circuit breaker per task, shared by every worker through PostgreSQL.

One row of `dawdle_breakers` per task. The outcome statement counts the task's calls and
failures (exponentially weighted over `window`, as the fleet retry budget counts first
runs) and trips the breaker open when, with at least `min_calls`, failures reach
`failure_ratio`. While open, no dawdle worker claims the task's jobs: they wait as 'todo'.
After `open_for` the claim takes at most `half_open_probes` jobs of the task (half-open);
a probe that succeeds closes the breaker, one that fails opens it again for twice as
long (up to `max_open_for`). A probe that reports nothing within `max_open_for` (its
worker died) is given up, and another job probes.

The functions below are the same rules in Python, for the in-memory connector and tests.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Literal

from dawdle._budget_fleet import MAX_DECAY_EXPONENT
from dawdle._errors import ConfigurationError
from dawdle._validate import number

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class Breaker:
    """Stop claiming a task's jobs, fleet-wide, while its calls mostly fail.

    Given per task: `@app.task(breaker=Breaker())`. Opens when, over the last `window`
    seconds (exponentially weighted) and with at least `min_calls` calls, the share of
    failed calls reaches `failure_ratio`; stays open `open_for` seconds, doubled on each
    trip in a row up to `max_open_for`; then lets `half_open_probes` jobs run as probes.
    Needs `dawdle schema --apply` (version 3); without its table the breaker is off, with
    one warning.
    """

    failure_ratio: float = 0.5
    window: float = 60.0
    min_calls: int = 20
    open_for: float = 30.0
    max_open_for: float = 600.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        ratio = number("Breaker: failure_ratio", self.failure_ratio, above=0, at_most=1)
        window = number("Breaker: window", self.window, above=0)
        open_for = number("Breaker: open_for", self.open_for, above=0)
        max_open_for = number("Breaker: max_open_for", self.max_open_for, at_least=open_for)
        for name in ("min_calls", "half_open_probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"Breaker: {name} must be an int >= 1, got {value!r}")
        object.__setattr__(self, "failure_ratio", ratio)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "open_for", open_for)
        object.__setattr__(self, "max_open_for", max_open_for)

    def open_time(self, trips: int) -> float:
        """Seconds open after `trips` trips in a row before this one: doubled, capped."""
        return min(self.open_for * 2.0 ** min(trips, 60), self.max_open_for)


@dataclass(slots=True)
class BreakerRow:
    """One task's row of `dawdle_breakers`."""

    state: BreakerState = "closed"
    calls: float = 0.0
    failures: float = 0.0
    counted_at: datetime.datetime | None = None
    trips: int = 0
    open_until: datetime.datetime | None = None
    probes: int = 0
    max_probes: int = 1
    probe_lease: float = 600.0
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Calls:
    """What one outcome batch says about a task's calls."""

    calls: int = 0
    failures: int = 0
    probe_successes: int = 0
    probe_failures: int = 0
    released: int = 0
    """Probes that ended without a verdict on the dependency (put back, snoozed, aborted)."""


def record_calls(
    breaker: Breaker, row: BreakerRow, calls: Calls, *, now: datetime.datetime
) -> BreakerState:
    """Count a batch's calls on `row` and move its state as the rules say; the new state."""
    age = 0.0 if row.counted_at is None else max(0.0, (now - row.counted_at).total_seconds())
    decay = math.exp(-min(age / breaker.window, MAX_DECAY_EXPONENT))
    counted = row.calls * decay + calls.calls
    failed = row.failures * decay + calls.failures
    reopened = row.state == "half_open" and calls.probe_failures > 0
    closed_again = row.state == "half_open" and not reopened and calls.probe_successes > 0
    tripped = (
        row.state == "closed"
        and counted >= breaker.min_calls
        and failed >= breaker.failure_ratio * counted
    )
    row.counted_at = now
    row.max_probes = breaker.half_open_probes
    row.probe_lease = breaker.max_open_for
    if reopened or tripped:
        row.open_until = now + datetime.timedelta(seconds=breaker.open_time(row.trips))
        row.state, row.trips, row.probes, row.calls, row.failures = "open", row.trips + 1, 0, 0, 0
    elif closed_again:
        row.state, row.trips, row.probes, row.calls, row.failures = "closed", 0, 0, 0, 0
    else:
        row.probes = max(row.probes - calls.released, 0)
        row.calls, row.failures = (counted, failed) if row.state == "closed" else (0.0, 0.0)
    return row.state


def free_probes(row: BreakerRow, now: datetime.datetime) -> int:
    """How many jobs of the task a claim may take now as probes (0 when closed: no limit)."""
    if row.state == "closed":
        return 0
    due = row.open_until is None or row.open_until <= now
    if due:  # open time over, or the last probes' lease ran out
        return row.max_probes
    return row.max_probes - row.probes if row.state == "half_open" else 0


def take_probes(row: BreakerRow, taken: int, now: datetime.datetime) -> None:
    """Record `taken` probes claimed now: half-open, their lease running."""
    lapsed = row.open_until is None or row.open_until <= now
    row.probes = (0 if lapsed else row.probes) + taken
    row.state = "half_open"
    row.open_until = now + datetime.timedelta(seconds=row.probe_lease)
