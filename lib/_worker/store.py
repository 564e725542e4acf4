"""The worker's job store: every state change it makes to Procrastinate's tables.

Queries are dawdle's own (`dawdle._sql`) or Procrastinate's job manager. Database errors
the worker must act on come out as dawdle's errors, so the worker never sees psycopg's.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, LiteralString

import anyio
import psycopg
from procrastinate import exceptions, jobs

from dawdle._budget_fleet import FleetRetryBudget
from dawdle._errors import DawdleError
from dawdle._sql import (
    ADD_RETRY_BUDGETS,
    CLAIM_JOBS_TIMED,
    CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    FETCH_JOBS,
    FETCH_JOBS_IGNORING_PAUSES,
    HEARTBEAT,
    PUBLISH_TASKS,
    RECLAIM_JOBS,
    RECORD_OUTCOMES,
    RECORD_OUTCOMES_BUDGETED,
    RECOVER_STALLED_JOBS,
)
from dawdle._worker.outcomes import Verdict

if TYPE_CHECKING:
    import procrastinate

# The longest a claim or an outcome write may take before it counts as failed (and is
# retried): what a half-open connection would otherwise hold up forever (Procrastinate #1513).
QUERY_TIMEOUT: Final = 30.0

# Without dawdle_queue_pauses, how long the claims ignore pauses before trying the table
# again (so `dawdle schema --apply` takes effect without restarting the worker).
PAUSES_RECHECK: Final = 60.0

# Without dawdle_retry_budgets, how long outcomes are written without the fleet retry
# budget before trying the table again.
BUDGETS_RECHECK: Final = 60.0

logger = logging.getLogger("dawdle.worker")


# Each claim, and the same claim with the first run of the jobs of tasks with a deadline.
_TIMED_CLAIMS: Final[dict[str, LiteralString]] = {
    FETCH_JOBS: CLAIM_JOBS_TIMED,
    FETCH_JOBS_IGNORING_PAUSES: CLAIM_JOBS_TIMED_IGNORING_PAUSES,
}


class WorkerNotRegistered(DawdleError):  # noqa: N818 (reads as a state)
    """The worker's row is gone (pruned as stalled by another worker): register again."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed job, and for a task with a job deadline, how long ago its first run began."""

    job: jobs.Job
    first_run_age: float | None = None
    """Seconds from the job's first recorded run to the claim, by the database's clock; None
    when no earlier run is recorded (this is its first) or its task was not asked about."""


@dataclass(frozen=True, slots=True)
class PushedRetry:
    """A retry that its task's fleet retry budget moved later than its backoff said."""

    job_id: int
    task_name: str
    due_at: datetime.datetime
    runs_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class Recorded:
    """What an outcome write did: how many verdicts found their job, and retries pushed."""

    count: int
    pushed: tuple[PushedRetry, ...] = ()


class JobStore:
    """Claims, outcomes, recovery and the worker's registration, on one app's connector."""

    def __init__(self, app: procrastinate.App) -> None:
        self._connector = app.connector
        self._manager = app.job_manager
        self._tasks = app.tasks
        # When the claim last found no dawdle_queue_pauses (anyio's clock); None: it has it.
        self._pauses_missing_at: float | None = None
        # Every name and alias of a task with a fleet retry budget: its task and budget.
        self._budgets: dict[str, tuple[str, FleetRetryBudget]] = {
            name: (task.name, budget)
            for name, task in app.tasks.items()
            if (budget := getattr(task, "dawdle_retry_budget", None)) is not None
        }
        # Whether the budget rows of this worker's tasks were added, and when the outcome
        # write last found no dawdle_retry_budgets (anyio's clock; None: it has it).
        self._budget_rows_added = False
        self._budgets_missing_at: float | None = None

    async def register(self) -> int:
        """Add a row for the worker in procrastinate_workers; its id."""
        return await self._manager.register_worker()

    async def unregister(self, worker_id: int) -> None:
        """Remove the worker's row; its jobs must have been written or put back first."""
        await self._manager.unregister_worker(worker_id)

    async def publish_tasks(self, worker_id: int) -> bool:
        """Publish the task names and aliases this worker knows, for `dawdle healthcheck`.

        False if the database lacks dawdle's table (`dawdle schema --apply` was not run).
        A row pruned meanwhile publishes nothing: the next heartbeat registers the worker
        again, which publishes then.
        """
        try:
            await self._connector.execute_query_async(
                PUBLISH_TASKS, worker_id=worker_id, task_names=sorted(self._tasks)
            )
        except exceptions.ConnectorException as exc:
            if isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                return False
            if not isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                raise
        return True

    async def heartbeat(self, worker_id: int | None) -> bool:
        """Beat the worker's heart; False if its row is gone (pruned as stalled)."""
        rows = await self._connector.execute_query_all_async(HEARTBEAT, worker_id=worker_id)
        return bool(rows)

    async def claim(
        self,
        *,
        queues: list[str] | None,
        task_names: list[str] | None,
        limit: int,
        worker_id: int | None,
        timed_tasks: list[str] | None = None,
    ) -> list[Claimed]:
        """Take up to `limit` ready jobs for the worker, highest priority first.

        Only jobs of `task_names` (None: of any task) and of `queues` (None: any queue),
        never of a paused queue. Without dawdle's table of pauses, claims ignore pauses
        (one warning) and try the table again every PAUSES_RECHECK seconds. The jobs of
        `timed_tasks` (tasks with a job deadline) come with the age of their first run,
        read in the same statement.
        """
        arguments: dict[str, Any] = {
            "queues": queues,
            "task_names": task_names,
            "limit": limit,
            "worker_id": worker_id,
        }
        if timed_tasks:  # apps without job deadlines send the plain claim
            arguments["timed_tasks"] = timed_tasks
        missing_at = self._pauses_missing_at
        now = anyio.current_time()
        if missing_at is not None and now - missing_at < PAUSES_RECHECK:
            rows = await self._fetch(FETCH_JOBS_IGNORING_PAUSES, arguments)
        else:
            try:
                rows = await self._fetch(FETCH_JOBS, arguments)
            except exceptions.ConnectorException as exc:
                if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                    raise
                if missing_at is None:
                    logger.warning(
                        "queue pauses are ignored: the database has no dawdle_queue_pauses "
                        "table; run `dawdle schema --apply`",
                        extra={"action": "queue_pauses_ignored"},
                    )
                self._pauses_missing_at = now
                rows = await self._fetch(FETCH_JOBS_IGNORING_PAUSES, arguments)
            else:
                self._pauses_missing_at = None
        claimed = [Claimed(jobs.Job.from_row(row), row.get("first_run_age")) for row in rows]
        claimed.sort(key=lambda one: (-one.job.priority, one.job.id))
        return claimed

    async def _fetch(self, query: LiteralString, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a claim statement, within QUERY_TIMEOUT; a pruned worker's claim is refused.

        With `timed_tasks` among the arguments, the claim that also reads first runs.
        """
        if "timed_tasks" in arguments:
            query = _TIMED_CLAIMS[query]
        try:
            with anyio.fail_after(QUERY_TIMEOUT):
                return await self._connector.execute_query_all_async(query, **arguments)
        except exceptions.ConnectorException as exc:
            if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                worker_id = arguments["worker_id"]
                raise WorkerNotRegistered(f"worker {worker_id} has no row any more") from exc
            raise

    async def record(self, verdicts: Sequence[Verdict], *, worker_id: int | None) -> Recorded:
        """Write the verdicts of jobs still 'doing' for this worker; what it wrote.

        Shielded from cancellation, but not forever: a write cut off is simply written
        again, since it only touches jobs still 'doing' for this worker. With tasks that
        have a fleet retry budget, the same statement counts their runs and spaces their
        retries; without dawdle's table for it, the budget is off (one warning) and the
        table is tried again every BUDGETS_RECHECK seconds.
        """
        arguments: dict[str, Any] = {
            "ids": [verdict.job_id for verdict in verdicts],
            "statuses": [verdict.status for verdict in verdicts],
            "retry_at": [verdict.retry_at for verdict in verdicts],
            "priorities": [verdict.priority for verdict in verdicts],
            "queues": [verdict.queue for verdict in verdicts],
            "locks": [verdict.lock for verdict in verdicts],
            "spent": [verdict.spends_attempt for verdict in verdicts],
            "worker_id": worker_id,
        }
        if not self._budgets or not await self._budget_table_ready():
            row = await self._write(RECORD_OUTCOMES, arguments)
            return Recorded(int(row["recorded"]))
        names = sorted(self._budgets)
        settings = [self._budgets[name] for name in names]
        arguments |= {
            "budget_names": names,
            "budget_tasks": [task for task, _ in settings],
            "budget_ratios": [budget.ratio for _, budget in settings],
            "budget_floors": [budget.min_per_second for _, budget in settings],
            "budget_windows": [budget.window for _, budget in settings],
        }
        try:
            row = await self._write(RECORD_OUTCOMES_BUDGETED, arguments)
        except exceptions.ConnectorException as exc:
            if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                raise
            self._budget_table_missing()
            return await self.record(verdicts, worker_id=worker_id)
        pushed = zip(
            row["pushed_ids"],
            row["pushed_tasks"],
            row["pushed_from"],
            row["pushed_to"],
            strict=True,
        )
        return Recorded(int(row["recorded"]), tuple(PushedRetry(*one) for one in pushed))

    async def _write(self, query: LiteralString, arguments: dict[str, Any]) -> dict[str, Any]:
        with anyio.fail_after(QUERY_TIMEOUT, shield=True):
            return await self._connector.execute_query_one_async(query, **arguments)

    async def _budget_table_ready(self) -> bool:
        """Whether outcomes can be written with the budget (its rows added once per worker)."""
        missing_at = self._budgets_missing_at
        if missing_at is not None and anyio.current_time() - missing_at < BUDGETS_RECHECK:
            return False
        if not self._budget_rows_added:
            tasks = sorted({task for task, _ in self._budgets.values()})
            try:
                with anyio.fail_after(QUERY_TIMEOUT, shield=True):
                    await self._connector.execute_query_async(ADD_RETRY_BUDGETS, task_names=tasks)
            except exceptions.ConnectorException as exc:
                if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                    raise
                self._budget_table_missing()
                return False
            self._budget_rows_added = True
        self._budgets_missing_at = None
        return True

    def _budget_table_missing(self) -> None:
        """Write without the budget for BUDGETS_RECHECK seconds; warn the first time."""
        if self._budgets_missing_at is None:
            logger.warning(
                "fleet retry budgets are off: the database has no dawdle_retry_budgets "
                "table; run `dawdle schema --apply`",
                extra={"action": "retry_budgets_off"},
            )
        self._budgets_missing_at = anyio.current_time()
        self._budget_rows_added = False

    async def prune_stalled_workers(self, seconds: float) -> None:
        """Remove the rows of workers silent for `seconds` (their jobs become stalled)."""
        await self._manager.prune_stalled_workers(seconds)

    async def recover_stalled(
        self, *, seconds: float, own_job_ids: list[int], worker_id: int | None
    ) -> list[dict[str, Any]]:
        """Put back jobs of stalled workers, and this worker's unknown ones; the rows changed."""
        return await self._connector.execute_query_all_async(
            RECOVER_STALLED_JOBS, seconds=seconds, own_jobs=own_job_ids, worker_id=worker_id
        )

    async def reclaim(self, *, worker_id: int, job_ids: list[int]) -> set[int]:
        """Take back `job_ids` that pruning left without a worker; the ids taken back."""
        rows = await self._connector.execute_query_all_async(
            RECLAIM_JOBS, worker_id=worker_id, ids=job_ids
        )
        return {row["id"] for row in rows}

    async def jobs_to_abort(self) -> list[int]:
        """Ids of running jobs whose abort was requested."""
        return list(await self._manager.list_jobs_to_abort_async())
