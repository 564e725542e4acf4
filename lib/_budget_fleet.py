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
  (logged as `job_retry_budget_pushed`);
- a retry that succeeds gives slots back (the dependency answers again): it releases up to
  RETRY_SUCCESS_REFUND of the task's earliest pushed retries, which then run at their own
  due time (or at once), and moves the next free slot back by as many. So a backlog pushed
  far out during an outage drains at a rate that grows with its successes, not at the
  budget's rate (pushed retries are kept in `dawdle_budget_pushed`, with their due time).

`plan_retries` is the same arithmetic in Python, for the in-memory connector and for tests.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from dawdle._validate import number

# exp() of a more negative number underflows in PostgreSQL (an error, not 0).
MAX_DECAY_EXPONENT = 700.0
# Pushed retries released per retry that succeeds: above 1, so a recovered dependency's
# backlog drains in a number of rounds that grows with its logarithm.
RETRY_SUCCESS_REFUND = 2


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


@dataclass(frozen=True, slots=True)
class HeldSlot:
    """A retry the budget pushed past its due time: one row of `dawdle_budget_pushed`."""

    task_name: str
    due_at: datetime.datetime
    slot_at: datetime.datetime


def slots_to_release(
    held: dict[int, HeldSlot],
    *,
    task_name: str,
    successes: int,
    batch: set[int],
    now: datetime.datetime,
) -> list[int]:
    """The jobs whose held slots `successes` retries of the task release, earliest first.

    Slots already passed and jobs of the batch being written are not released.
    """
    pending = sorted(
        (slot.slot_at, job_id)
        for job_id, slot in held.items()
        if slot.task_name == task_name and slot.slot_at > now and job_id not in batch
    )
    return [job_id for _, job_id in pending[: RETRY_SUCCESS_REFUND * successes]]


def plan_retries(
    budget: FleetRetryBudget,
    row: BudgetRow,
    *,
    first_runs: int,
    retries: list[tuple[datetime.datetime, int]],
    now: datetime.datetime,
    released: int = 0,
) -> dict[int, datetime.datetime]:
    """Count `first_runs` and give each retry (due time, job id) its time; updates `row`.

    Retries take slots in order of due time (then job id), each at its due time or at
    the first free slot, whichever is later; then the next free slot moves back by the
    `released` slots given back (never before now). Returns every retry's time.
    """
    age = 0.0 if row.counted_at is None else max(0.0, (now - row.counted_at).total_seconds())
    decay = math.exp(-min(age / budget.window, MAX_DECAY_EXPONENT))
    row.first_runs = row.first_runs * decay + first_runs
    row.counted_at = now
    spacing = datetime.timedelta(seconds=spacing_seconds(budget, row.first_runs))
    planned: dict[int, datetime.datetime] = {}
    before = free = row.next_retry_at
    for due, job_id in sorted(retries):
        at = due if free is None else max(due, free)
        planned[job_id] = at
        free = at + spacing
    if free is not None and released:
        floor = now if before is None else min(before, now)
        free = max(free - released * spacing, floor)
    row.next_retry_at = free
    return planned


def spacing_seconds(budget: FleetRetryBudget, first_runs: float) -> float:
    """Seconds between two retries of the task, given its (decayed) count of first runs."""
    return 1.0 / (budget.ratio * first_runs / budget.window + budget.min_per_second)
