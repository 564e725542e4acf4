"""FleetRetryBudget: a retry budget per task, shared by every worker through PostgreSQL.

The budget is one row of `dawdle_retry_budgets` per task, updated by the statement that
records a batch of outcomes (no extra round trip). It caps the rate of a task's retries,
fleet-wide, at `ratio` times the rate of its first runs plus `min_per_second`:

- first runs are counted with exponential decay: a run `age` seconds old weighs
  `exp(-age / window)`, so the count approximates the first runs of the last `window`
  seconds, and the rate is that count over `window`;
- retries are given slots `1 / rate` seconds apart (a leaky bucket, the GCRA without
  burst): a retry runs at its backoff's time, or at the first free slot after it if that is
  later. A retry is never refused and never fails its job: the budget only pushes it later
  (logged as `job_retry_budget_pushed`).

`plan_retries` is the same arithmetic in Python, for the in-memory connector and for tests.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from dawdle._validate import number

# exp() of a more negative number underflows in PostgreSQL (an error, not 0).
MAX_DECAY_EXPONENT = 700.0


@dataclass(frozen=True, slots=True)
class FleetRetryBudget:
    """Retries of a task, across the fleet, at most `ratio` of its first runs plus a floor.

    Given per task: `@app.task(retry=RetryPolicy(...), retry_budget=FleetRetryBudget())`.
    Over the last `window` seconds (exponentially weighted), the task's retries run at most
    `ratio * first_runs / window + min_per_second` per second; a retry beyond that waits
    for the next free slot instead of failing. Needs `dawdle schema --apply` (version 3);
    without its table the budget is off, with one warning.
    """

    ratio: float = 0.2
    min_per_second: float = 1.0
    window: float = 60.0

    def __post_init__(self) -> None:
        ratio = number("FleetRetryBudget: ratio", self.ratio, at_least=0)
        # Above 0: with no first runs, the floor alone sets the spacing of retries.
        floor = number("FleetRetryBudget: min_per_second", self.min_per_second, above=0)
        window = number("FleetRetryBudget: window", self.window, above=0)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "min_per_second", floor)
        object.__setattr__(self, "window", window)


@dataclass(slots=True)
class BudgetRow:
    """One task's row of `dawdle_retry_budgets`."""

    first_runs: float = 0.0
    counted_at: datetime.datetime | None = None
    next_retry_at: datetime.datetime | None = None


def plan_retries(
    budget: FleetRetryBudget,
    row: BudgetRow,
    *,
    first_runs: int,
    retries: list[tuple[datetime.datetime, int]],
    now: datetime.datetime,
) -> dict[int, datetime.datetime]:
    """Count `first_runs` and give each retry (due time, job id) its time; updates `row`.

    Retries take slots in order of due time (then job id), each at its due time or at
    the first free slot, whichever is later. Returns every retry's time.
    """
    age = 0.0 if row.counted_at is None else max(0.0, (now - row.counted_at).total_seconds())
    decay = math.exp(-min(age / budget.window, MAX_DECAY_EXPONENT))
    row.first_runs = row.first_runs * decay + first_runs
    row.counted_at = now
    spacing = datetime.timedelta(seconds=spacing_seconds(budget, row.first_runs))
    planned: dict[int, datetime.datetime] = {}
    free = row.next_retry_at
    for due, job_id in sorted(retries):
        at = due if free is None else max(due, free)
        planned[job_id] = at
        free = at + spacing
    row.next_retry_at = free
    return planned


def spacing_seconds(budget: FleetRetryBudget, first_runs: float) -> float:
    """Seconds between two retries of the task, given its (decayed) count of first runs."""
    return 1.0 / (budget.ratio * first_runs / budget.window + budget.min_per_second)
