"""The fleet retry budget: retries of a task spaced across the fleet, in the outcome write.

On connector x runtime, except where a real server is the point (concurrent statements,
a database without the table).
"""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import anyio
import pytest

from dawdle import App, FleetRetryBudget, InMemoryConnector, RetryPolicy
from dawdle._budget_fleet import BudgetRow, plan_retries
from dawdle._dawdle_schema import RETRY_BUDGETS_DDL
from dawdle._sql import ADD_RETRY_BUDGETS, RECORD_OUTCOMES_BUDGETED
from dawdle.backoff import Constant
from tests.durability.worker.helpers import actions, job_rows, postgres_only, work

pytestmark = pytest.mark.anyio

# One retry every 10 s at most: far longer than a test runs, so every spacing is visible.
SLOW_BUDGET = FleetRetryBudget(ratio=0.0, min_per_second=0.1, window=60.0)
BACKOFF = 30.0


async def clear_budgets(app: App) -> None:
    """Start from no budget rows (the module's database outlives a test)."""
    if isinstance(app.connector, InMemoryConnector):
        app.connector.retry_budgets.clear()
    else:
        await app.connector.execute_query_async("DELETE FROM dawdle_retry_budgets")


def failing_task(app: App, name: str, budget: FleetRetryBudget | None) -> Any:
    """A task that always fails, retried 30 s later (past the test's end) up to 3 runs."""

    @app.task(name=name, retry=RetryPolicy(backoff=Constant(BACKOFF)), retry_budget=budget)
    async def fails() -> None:
        raise RuntimeError("dependency down")

    return fails


async def retry_times(app: App) -> list[datetime.datetime]:
    """When each job waiting for its retry is due, in order."""
    rows = await job_rows(app)
    assert {(row.status, row.attempts) for row in rows} == {("todo", 1)}
    return sorted(row.scheduled_at for row in rows if row.scheduled_at is not None)


async def test_a_budgeted_tasks_retries_are_pushed_to_spaced_slots(app: App) -> None:
    """Four jobs fail at once: their retries run 10 s apart, three pushed and logged so."""
    await clear_budgets(app)
    fails = failing_task(app, "budgeted", SLOW_BUDGET)
    for _ in range(4):
        await fails.defer_async()
    with actions() as log:
        await work(app, concurrency=4)
    due = await retry_times(app)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(due)]
    assert gaps == pytest.approx([10.0] * 3, abs=0.01)
    pushed = log.of("job_retry_budget_pushed")
    assert len(pushed) == 3
    assert "retry pushed from" in pushed[0].getMessage()
    assert {record.task_name for record in pushed} == {"budgeted"}


async def test_a_task_without_a_budget_keeps_its_backoffs_times(app: App) -> None:
    """The same failures without retry_budget: every retry due at once, nothing pushed."""
    await clear_budgets(app)
    fails = failing_task(app, "unbudgeted", None)
    for _ in range(4):
        await fails.defer_async()
    with actions() as log:
        await work(app, concurrency=4)
    due = await retry_times(app)
    assert (due[-1] - due[0]).total_seconds() < 5
    assert log.of("job_retry_budget_pushed") == []


async def test_an_alias_counts_against_its_tasks_budget(app: App) -> None:
    """Jobs deferred under a task's alias share the task's budget row."""
    await clear_budgets(app)

    @app.task(
        name="renamed",
        aliases=["old_name"],
        retry=RetryPolicy(backoff=Constant(BACKOFF)),
        retry_budget=SLOW_BUDGET,
    )
    async def renamed() -> None:
        raise RuntimeError("dependency down")

    await renamed.defer_async()
    await app.configure_task("old_name").defer_async()
    await work(app, concurrency=2)
    due = await retry_times(app)
    assert (due[1] - due[0]).total_seconds() == pytest.approx(10.0, abs=0.01)


@postgres_only("the table is dropped: the in-memory database always has dawdle's tables")
async def test_without_the_table_the_budget_is_off_with_one_warning(app: App) -> None:
    """No dawdle_retry_budgets: outcomes are written unbudgeted, one retry_budgets_off line."""
    await app.connector.execute_query_async("DROP TABLE dawdle_retry_budgets")
    try:
        fails = failing_task(app, "no_table", SLOW_BUDGET)
        for _ in range(3):
            await fails.defer_async()
        with actions() as log:
            await work(app, concurrency=3)
        due = await retry_times(app)
        assert (due[-1] - due[0]).total_seconds() < 5
        assert len(log.of("retry_budgets_off")) == 1
    finally:
        await app.connector.execute_query_async(RETRY_BUDGETS_DDL)


async def record_retries(
    app: App,
    worker_id: int,
    ids: list[int],
    due: datetime.datetime,
    tasks: tuple[str, ...] = ("shared",),
) -> None:
    """Write one batch of retries of `tasks` as the worker's statement does."""
    count = len(ids)
    await app.connector.execute_query_one_async(
        RECORD_OUTCOMES_BUDGETED,
        ids=ids,
        statuses=["todo"] * count,
        retry_at=[due] * count,
        priorities=[None] * count,
        queues=[None] * count,
        locks=[None] * count,
        spent=[True] * count,
        worker_id=worker_id,
        budget_names=list(tasks),
        budget_tasks=list(tasks),
        budget_ratios=[0.0] * len(tasks),
        budget_floors=[1.0] * len(tasks),
        budget_windows=[60.0] * len(tasks),
    )


async def doing_jobs(app: App, worker_id: int, count: int, task: str = "shared") -> list[int]:
    """`count` jobs of `task`, claimed by `worker_id` (no attempt yet)."""
    rows = await app.connector.execute_query_all_async(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, worker_id) "
        "SELECT 'default', %(task)s, '{}', 'doing', %(worker_id)s FROM generate_series(1, "
        "%(count)s) RETURNING id",
        worker_id=worker_id,
        count=count,
        task=task,
    )
    return [row["id"] for row in rows]


@postgres_only("concurrent statements on one row are the point: PostgreSQL's row locks")
async def test_concurrent_batches_never_share_a_slot(app: App, admin: App) -> None:
    """Four workers' batches written at once: 40 retries, 40 distinct slots 1 s apart."""
    await clear_budgets(app)
    await app.connector.execute_query_async(ADD_RETRY_BUDGETS, task_names=["shared"])
    due = datetime.datetime.now(datetime.UTC)
    batches = []
    for _ in range(4):
        worker_id = await app.job_manager.register_worker()
        batches.append((worker_id, await doing_jobs(app, worker_id, 10)))
    async with anyio.create_task_group() as group:
        for index, (worker_id, ids) in enumerate(batches):
            group.start_soon(record_retries, app if index % 2 else admin, worker_id, ids, due)
    times = sorted(row.scheduled_at for row in await job_rows(app) if row.scheduled_at)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert len(times) == 40
    assert gaps == pytest.approx([1.0] * 39, abs=1e-3)


@postgres_only("deadlocks between concurrent statements are the point: PostgreSQL's row locks")
async def test_concurrent_batches_of_two_budgeted_tasks_do_not_deadlock(
    app: App, admin: App
) -> None:
    """Batches holding both tasks' jobs, in either order, written at once: all recorded."""
    await clear_budgets(app)
    await app.connector.execute_query_async(ADD_RETRY_BUDGETS, task_names=["alpha", "beta"])
    due = datetime.datetime.now(datetime.UTC)
    for _ in range(5):
        batches = []
        for order in (("alpha", "beta"), ("beta", "alpha")) * 2:
            worker_id = await app.job_manager.register_worker()
            ids = [job for task in order for job in await doing_jobs(app, worker_id, 3, task)]
            batches.append((worker_id, ids))
        async with anyio.create_task_group() as group:
            for index, (worker_id, ids) in enumerate(batches):
                connection = app if index % 2 else admin
                group.start_soon(record_retries, connection, worker_id, ids, due, ("alpha", "beta"))
    rows = await job_rows(app)
    assert {row.status for row in rows} == {"todo"}
    for task in ("alpha", "beta"):
        times = [row.scheduled_at for row in rows if row.task_name == task]
        assert len(set(times)) == len(times) == 60


@postgres_only("compares the SQL with its Python twin, which the in-memory connector runs")
async def test_the_statement_places_retries_as_plan_retries_does(app: App) -> None:
    """Mixed due times and earlier first runs: the SQL's slots are plan_retries' slots."""
    await clear_budgets(app)
    await app.connector.execute_query_async(ADD_RETRY_BUDGETS, task_names=["shared"])
    worker_id = await app.job_manager.register_worker()
    ids = await doing_jobs(app, worker_id, 6)
    now = datetime.datetime.now(datetime.UTC)
    offsets = [5.0, 0.0, 0.3, 0.3, 2.9, 40.0]
    due = [now + datetime.timedelta(seconds=offset) for offset in offsets]
    count = len(ids)
    await app.connector.execute_query_one_async(
        RECORD_OUTCOMES_BUDGETED,
        ids=ids,
        statuses=["todo"] * count,
        retry_at=due,
        priorities=[None] * count,
        queues=[None] * count,
        locks=[None] * count,
        spent=[True] * count,
        worker_id=worker_id,
        budget_names=["shared"],
        budget_tasks=["shared"],
        budget_ratios=[1.0],
        budget_floors=[0.5],
        budget_windows=[60.0],
    )
    expected = plan_retries(
        FleetRetryBudget(ratio=1.0, min_per_second=0.5, window=60.0),
        BudgetRow(),
        first_runs=count,
        retries=list(zip(due, ids, strict=True)),
        now=now,
    )
    rows = {row.id: row.scheduled_at for row in await job_rows(app)}
    assert rows == pytest.approx(expected, abs=datetime.timedelta(milliseconds=1))
