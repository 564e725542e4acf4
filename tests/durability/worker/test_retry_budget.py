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

from dawdle import App, FleetRetryBudget, InMemoryConnector, JobContext, RetryPolicy
from dawdle._budget_fleet import RETRY_SUCCESS_REFUND, BudgetRow, plan_retries
from dawdle._sql import ADD_RETRY_BUDGETS, RECORD_OUTCOMES_BUDGETED
from dawdle.backoff import Constant
from tests.durability.worker.helpers import (
    actions,
    dawdle_table_dropped,
    job_rows,
    make_worker,
    postgres_only,
    run_until,
    work,
)

pytestmark = pytest.mark.anyio

# One retry every 10 s at most: far longer than a test runs, so every spacing is visible.
SLOW_BUDGET = FleetRetryBudget(ratio=0.0, min_per_second=0.1, window=60.0)
BACKOFF = 30.0
ONE_MS = datetime.timedelta(milliseconds=1)


class Gate:
    """Holds each arriving task until `count` have arrived, then lets them all go."""

    def __init__(self, count: int) -> None:
        self._waiting = count
        self._open = anyio.Event()

    async def arrive(self) -> None:
        """Wait until all `count` tasks have arrived."""
        self._waiting -= 1
        if self._waiting == 0:
            self._open.set()
        await self._open.wait()


async def clear_budgets(app: App) -> None:
    """Start from no budget rows (the module's database outlives a test)."""
    if isinstance(app.connector, InMemoryConnector):
        app.connector.budgets = type(app.connector.budgets)()
    else:
        await app.connector.execute_query_async(
            "DELETE FROM dawdle_retry_budgets; DELETE FROM dawdle_budget_pushed"
        )


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
async def test_without_the_table_the_budget_is_off_with_one_warning(
    app: App, schema_dsn: str
) -> None:
    """No dawdle_retry_budgets: outcomes are written unbudgeted, one retry_budgets_off line."""
    with dawdle_table_dropped(schema_dsn, "dawdle_retry_budgets"):
        fails = failing_task(app, "no_table", SLOW_BUDGET)
        for _ in range(3):
            await fails.defer_async()
        with actions() as log:
            await work(app, concurrency=3)
        due = await retry_times(app)
        assert (due[-1] - due[0]).total_seconds() < 5
        assert len(log.of("retry_budgets_off")) == 1


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
        budget_successes=[],
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
        budget_successes=[],
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


async def test_retries_that_succeed_release_the_pushed_backlog(app: App) -> None:
    """A pushed backlog drains once retries succeed, long before its last slot.

    Ten first runs fail at once: nine retries are pushed 10 s apart (the last 90 s out).
    The first retry succeeds and releases two, each of which releases two more.
    """
    await clear_budgets(app)
    failing, done = Gate(10), anyio.Event()
    succeeded: list[int] = []

    @app.task(
        name="recovering",
        pass_context=True,
        retry=RetryPolicy(backoff=Constant(0.0), max_attempts=3),
        retry_budget=SLOW_BUDGET,
    )
    async def recovering(context: JobContext) -> None:
        assert context.job.id is not None
        if context.job.attempts == 0:
            await failing.arrive()  # all ten fail together: their retries share one chain
            raise RuntimeError("dependency down")
        succeeded.append(context.job.id)
        if len(succeeded) == 10:
            done.set()

    for _ in range(10):
        await recovering.defer_async()
    with actions() as log:
        seconds = await run_until(make_worker(app, concurrency=10), done, within=8.0)
    assert seconds < 8.0
    assert len(log.of("job_retry_budget_pushed")) == 9
    assert sum(record.released for record in log.of("retry_budget_released")) == 9
    assert {(row.status, row.attempts) for row in await job_rows(app)} == {("succeeded", 2)}


@postgres_only("drives the statement on rows made by SQL; the worker test above runs both")
async def test_the_statement_releases_the_earliest_pushed_retries(app: App) -> None:
    """Two retries succeed: the four earliest pushed retries are due at their own time.

    Six retries are pushed 1 s apart first. The released ones lose their rows in
    dawdle_budget_pushed, and the task's next free slot moves back by four.
    """
    await clear_budgets(app)
    await app.connector.execute_query_async(ADD_RETRY_BUDGETS, task_names=["shared"])
    worker_id = await app.job_manager.register_worker()
    now = datetime.datetime.now(datetime.UTC)
    pushed = await doing_jobs(app, worker_id, 6)
    await record_retries(app, worker_id, pushed, now + datetime.timedelta(seconds=30))
    before = {row.id: row.scheduled_at for row in await job_rows(app)}
    retried = await doing_jobs(app, worker_id, 2)
    await app.connector.execute_query_async(
        "UPDATE procrastinate_jobs SET attempts = 1 WHERE id = ANY(%(ids)s)", ids=retried
    )
    row = await app.connector.execute_query_one_async(
        RECORD_OUTCOMES_BUDGETED,
        ids=retried,
        statuses=["succeeded"] * 2,
        retry_at=[None] * 2,
        priorities=[None] * 2,
        queues=[None] * 2,
        locks=[None] * 2,
        spent=[True] * 2,
        worker_id=worker_id,
        budget_names=["shared"],
        budget_tasks=["shared"],
        budget_ratios=[0.0],
        budget_floors=[1.0],
        budget_windows=[60.0],
        budget_successes=retried,
    )
    assert row["released"] == 2 * RETRY_SUCCESS_REFUND
    after = {job.id: job.scheduled_at for job in await job_rows(app) if job.id in before}
    earliest = sorted(pushed, key=lambda job_id: before[job_id])
    released, kept = earliest[1 : 1 + 2 * RETRY_SUCCESS_REFUND], earliest[1 + 4 :]
    due = now + datetime.timedelta(seconds=30)
    assert all(after[job_id] == pytest.approx(due, abs=ONE_MS) for job_id in released)
    assert all(after[job_id] == before[job_id] for job_id in kept + earliest[:1])
    rows = await app.connector.execute_query_all_async(
        "SELECT job_id FROM dawdle_budget_pushed ORDER BY slot_at"
    )
    assert [one["job_id"] for one in rows] == kept
    budget = await app.connector.execute_query_one_async(
        "SELECT next_retry_at FROM dawdle_retry_budgets WHERE task_name = 'shared'"
    )
    last_slot = before[earliest[-1]] + datetime.timedelta(seconds=1)
    expected_next = last_slot - 2 * RETRY_SUCCESS_REFUND * datetime.timedelta(seconds=1)
    assert budget["next_retry_at"] == pytest.approx(expected_next, abs=ONE_MS)
