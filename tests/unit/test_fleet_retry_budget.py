"""FleetRetryBudget's arithmetic (`plan_retries`), the same as its SQL's, on a fake clock."""

from __future__ import annotations

import datetime
import math

import pytest

from dawdle import App, ConfigurationError, FleetRetryBudget, InMemoryConnector
from dawdle._budget_fleet import (
    RETRY_SUCCESS_REFUND,
    BudgetRow,
    HeldSlot,
    plan_retries,
    slots_to_release,
    spacing_seconds,
)

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    """The fake clock: `seconds` after T0."""
    return T0 + datetime.timedelta(seconds=seconds)


def offsets(planned: dict[int, datetime.datetime]) -> dict[int, float]:
    """Each job's planned time, in seconds after T0."""
    return {job_id: (when - T0).total_seconds() for job_id, when in planned.items()}


def test_defaults_are_a_fifth_of_first_runs_plus_one_a_second_over_a_minute() -> None:
    """The defaults the README states: ratio 0.2, floor 1 retry a second, window 60 s."""
    assert FleetRetryBudget() == FleetRetryBudget(ratio=0.2, min_per_second=1.0, window=60.0)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": math.nan}, "ratio"),
        ({"min_per_second": 0}, "min_per_second"),
        ({"window": 0}, "window"),
        ({"window": math.inf}, "window"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(options: dict[str, float], named: str) -> None:
    """A negative, zero (floor, window), NaN or infinite setting: one error naming it."""
    with pytest.raises(ConfigurationError, match=f"FleetRetryBudget: {named}"):
        FleetRetryBudget(**options)


def test_a_task_refuses_a_retry_budget_of_another_type() -> None:
    """retry_budget= takes a FleetRetryBudget only, and says what it got."""
    app = App(connector=InMemoryConnector())
    with pytest.raises(ConfigurationError, match=r"retry_budget must be a dawdle\.FleetRetry"):
        app.task(name="x", retry_budget=0.2)  # type: ignore[arg-type]


def test_the_floor_alone_spaces_retries_when_there_are_no_first_runs() -> None:
    """No first runs, floor 2 a second: retries due together run 0.5 s apart, in id order."""
    budget = FleetRetryBudget(ratio=0.2, min_per_second=2.0, window=60.0)
    row = BudgetRow()
    planned = plan_retries(budget, row, first_runs=0, retries=[(at(0), 3), (at(0), 1)], now=at(0))
    assert offsets(planned) == {1: 0.0, 3: 0.5}
    assert row.next_retry_at == at(1.0)


def test_first_runs_raise_the_rate_by_ratio() -> None:
    """60 first runs in a 60 s window at ratio 1 and floor 1: two retries a second."""
    budget = FleetRetryBudget(ratio=1.0, min_per_second=1.0, window=60.0)
    row = BudgetRow()
    planned = plan_retries(budget, row, first_runs=60, retries=[(at(0), 1), (at(0), 2)], now=at(0))
    assert offsets(planned) == {1: 0.0, 2: 0.5}


def test_first_runs_decay_with_the_window() -> None:
    """A count of 100 weighs 100/e one window later."""
    budget = FleetRetryBudget(window=10.0)
    row = BudgetRow()
    plan_retries(budget, row, first_runs=100, retries=[], now=at(0))
    plan_retries(budget, row, first_runs=0, retries=[], now=at(10))
    assert row.first_runs == pytest.approx(100 / math.e)


def test_a_long_idle_budget_forgets_without_underflow() -> None:
    """Years later the count is 0 (exp is kept from underflowing, as in the SQL)."""
    budget = FleetRetryBudget(window=0.001)
    row = BudgetRow()
    plan_retries(budget, row, first_runs=5, retries=[], now=at(0))
    plan_retries(budget, row, first_runs=0, retries=[], now=at(10**8))
    assert row.first_runs == pytest.approx(0.0)


def test_a_retry_due_after_the_free_slot_keeps_its_due_time() -> None:
    """The budget only ever pushes a retry later: one due after the next slot is untouched."""
    budget = FleetRetryBudget(ratio=0.0, min_per_second=1.0)
    row = BudgetRow(next_retry_at=at(5))
    planned = plan_retries(budget, row, first_runs=0, retries=[(at(30), 7)], now=at(0))
    assert offsets(planned) == {7: 30.0}
    assert row.next_retry_at == at(31)


def test_successive_batches_continue_from_the_last_slot() -> None:
    """A second batch's retries queue after the first's, as another worker's would."""
    budget = FleetRetryBudget(ratio=0.0, min_per_second=1.0)
    row = BudgetRow()
    first = plan_retries(budget, row, first_runs=0, retries=[(at(0), 1), (at(0), 2)], now=at(0))
    second = plan_retries(budget, row, first_runs=0, retries=[(at(0.1), 3)], now=at(0.1))
    assert offsets(first) | offsets(second) == {1: 0.0, 2: 1.0, 3: 2.0}


def test_retries_take_slots_in_order_of_due_time() -> None:
    """Mixed due times: each runs at its due time or one spacing after the previous slot."""
    budget = FleetRetryBudget(ratio=0.0, min_per_second=1.0)
    retries = [(at(10), 1), (at(0), 2), (at(0.2), 3), (at(3.5), 4)]
    planned = plan_retries(budget, BudgetRow(), first_runs=0, retries=retries, now=at(0))
    assert offsets(planned) == {2: 0.0, 3: 1.0, 4: 3.5, 1: 10.0}


def test_spacing_is_the_inverse_of_the_allowed_rate() -> None:
    """The spacing is 1 / (ratio * first_runs / window + min_per_second)."""
    budget = FleetRetryBudget(ratio=0.2, min_per_second=1.0, window=60.0)
    assert spacing_seconds(budget, 600) == pytest.approx(1 / 3)


def held_slots(*slots: tuple[int, str, float, float]) -> dict[int, HeldSlot]:
    """`dawdle_budget_pushed` rows: job id, task, due and slot (seconds after T0)."""
    return {job: HeldSlot(task, at(due), at(slot)) for job, task, due, slot in slots}


def test_each_retry_that_succeeds_releases_the_refund_of_earliest_slots() -> None:
    """Two successes release 2 * RETRY_SUCCESS_REFUND slots of their task, earliest first."""
    held = held_slots(*((job, "t", 0.0, 10.0 * job) for job in range(1, 9)))
    held |= held_slots((50, "other", 0.0, 1.0))
    chosen = slots_to_release(held, task_name="t", successes=2, batch=set(), now=at(0))
    assert chosen == list(range(1, 2 * RETRY_SUCCESS_REFUND + 1))


def test_passed_slots_and_the_batchs_own_jobs_are_never_released() -> None:
    """A slot already passed frees nothing; a job being written is not moved by its batch."""
    held = held_slots((1, "t", 0.0, 5.0), (2, "t", 0.0, 20.0), (3, "t", 0.0, 30.0))
    chosen = slots_to_release(held, task_name="t", successes=5, batch={2}, now=at(10))
    assert chosen == [3]


def test_no_success_releases_nothing() -> None:
    """Retries that fail keep every pushed retry where it is."""
    held = held_slots((1, "t", 0.0, 20.0))
    assert slots_to_release(held, task_name="t", successes=0, batch=set(), now=at(0)) == []


def test_released_slots_move_the_next_free_slot_back_but_never_before_now() -> None:
    """Slots given back shorten the queue: the next retry comes that much sooner."""
    budget = FleetRetryBudget(ratio=0.0, min_per_second=1.0)
    row = BudgetRow(next_retry_at=at(100))
    plan_retries(budget, row, first_runs=0, retries=[], now=at(0), released=4)
    assert row.next_retry_at == at(96)
    plan_retries(budget, row, first_runs=0, retries=[], now=at(95), released=50)
    assert row.next_retry_at == at(95)


def test_a_released_slot_is_not_moved_before_a_past_next_slot() -> None:
    """With no queue (the next slot already passed), giving slots back changes nothing."""
    budget = FleetRetryBudget(ratio=0.0, min_per_second=1.0)
    row = BudgetRow(next_retry_at=at(3))
    plan_retries(budget, row, first_runs=0, retries=[], now=at(10), released=2)
    assert row.next_retry_at == at(3)
