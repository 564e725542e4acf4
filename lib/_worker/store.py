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

from dawdle._carriers import TableCheck, read_carriers
from dawdle._defer import JobManager
from dawdle._errors import DawdleError
from dawdle._hooks import TraceContext
from dawdle._sql import (
    CLAIM_JOBS_TIMED,
    CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    CLAIM_JOBS_TIMED_UNLESS_PROBES,
    CLAIM_JOBS_TIMED_WITH_BREAKERS,
    FETCH_JOBS,
    FETCH_JOBS_IGNORING_PAUSES,
    FETCH_JOBS_UNLESS_PROBES,
    FETCH_JOBS_WITH_BREAKERS,
    HEARTBEAT,
    PUBLISH_TASKS,
    RECLAIM_JOBS,
    RECOVER_STALLED_JOBS,
)
from dawdle._worker.fleet import Fleet, outcome_write
from dawdle._worker.outcomes import Verdict
from dawdle._worker.stored_errors import error_arguments, names_errors_table, warn_errors_off
from dawdle._worker.table_watch import TableWatch

if TYPE_CHECKING:
    import procrastinate

# The longest a claim or an outcome write may take before it counts as failed (and is
# retried): what a half-open connection would otherwise hold up forever (Procrastinate #1513).
QUERY_TIMEOUT: Final = 30.0

logger = logging.getLogger("dawdle.worker")


# Each claim, and the same claim with the first run of the jobs of tasks with a deadline.
_TIMED_CLAIMS: Final[dict[str, LiteralString]] = {
    FETCH_JOBS: CLAIM_JOBS_TIMED,
    FETCH_JOBS_IGNORING_PAUSES: CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    FETCH_JOBS_WITH_BREAKERS: CLAIM_JOBS_TIMED_WITH_BREAKERS,
    FETCH_JOBS_UNLESS_PROBES: CLAIM_JOBS_TIMED_UNLESS_PROBES,
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
    trace_context: TraceContext | None = None
    """Its defer's trace context, when the claim was asked for them and it has one."""


@dataclass(frozen=True, slots=True)
class PushedRetry:
    """A retry that its task's fleet retry budget moved later than its backoff said."""

    job_id: int
    task_name: str
    due_at: datetime.datetime
    runs_at: datetime.datetime


@dataclass(frozen=True, slots=True)
class Recorded:
    """What an outcome write did: verdicts that found their job, retries pushed, breakers moved."""

    count: int
    pushed: tuple[PushedRetry, ...] = ()
    moved: tuple[BreakerMoved, ...] = ()
    released: int = 0
    """Pushed retries that the batch's successful retries released (run now or when due)."""


@dataclass(frozen=True, slots=True)
class BreakerMoved:
    """A task's breaker that an outcome write opened or closed."""

    task_name: str
    state: str
    open_until: datetime.datetime


class JobStore:
    """Claims, outcomes, recovery and the worker's registration, on one app's connector."""

    def __init__(self, app: procrastinate.App) -> None:
        self._connector = app.connector
        self._manager = app.job_manager
        self._tasks = app.tasks
        # When the claim last found no dawdle_queue_pauses (anyio's clock); None: it has it.
        self._pauses = TableWatch()
        self._fleet = Fleet(app, timeout=QUERY_TIMEOUT)
        self._errors_table = TableWatch()
        # Whether dawdle_job_traces exists: the app's check when its job manager is dawdle's
        # (one answer, one warning for its defers and claims), else the store's own.
        manager = app.job_manager
        self._traces_table = (
            manager.traces_table if isinstance(manager, JobManager) else TableCheck()
        )

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
        trace_contexts: bool = False,
    ) -> list[Claimed]:
        """Take up to `limit` ready jobs for the worker, highest priority first.

        Only jobs of `task_names` (None: of any task) and of `queues` (None: any queue),
        never of a paused queue. Without dawdle's table of pauses, claims ignore pauses
        (one warning) and try the table again every TABLE_RECHECK seconds. The jobs of
        `timed_tasks` (tasks with a job deadline) come with the age of their first run,
        read in the same statement. With `trace_contexts`, a non-empty claim reads its jobs'
        trace contexts too, in one more query (`_carriers.read_carriers`).
        """
        arguments: dict[str, Any] = {
            "queues": queues,
            "task_names": task_names,
            "limit": limit,
            "worker_id": worker_id,
        }
        if timed_tasks:  # apps without job deadlines send the plain claim
            arguments["timed_tasks"] = timed_tasks
        rows = await self._claim_with_breakers(arguments)
        if rows is None:
            rows = await self._claim_rows(arguments)
        ids = [row["id"] for row in rows]
        carriers = (
            await read_carriers(self._connector, ids, self._traces_table) if trace_contexts else {}
        )
        claimed = [
            Claimed(jobs.Job.from_row(row), row.get("first_run_age"), carriers.get(row["id"]))
            for row in rows
        ]
        claimed.sort(key=lambda one: (-one.job.priority, one.job.id))
        return claimed

    async def _claim_with_breakers(self, arguments: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The claim that skips tasks whose breaker is open and takes probes; None: no breakers.

        The claim without probes goes first: cheaper, it takes the same jobs while no
        breaker may probe, and takes nothing when one may (then the claim with probes is
        sent). Logs the half-open transition of a breaker whose first probe this claim took.
        """
        if not self._fleet.breakers or not await self._fleet.ready():
            return None
        try:
            rows = await self._fetch(FETCH_JOBS_UNLESS_PROBES, arguments)
            if rows[0]["probes_due"]:
                rows = await self._fetch(FETCH_JOBS_WITH_BREAKERS, arguments)
            else:
                rows = [row for row in rows if row["id"] is not None]
        except exceptions.ConnectorException as exc:
            if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                raise
            self._fleet.missing()
            return None
        half_open: dict[str, int] = {}
        for row in rows:
            if row.get("probe_of") is not None:
                self._fleet.probes.add(row["id"])
                if row["probe_of"] == "open":
                    half_open.setdefault(row["task_name"], row["id"])
        for task_name, job_id in half_open.items():
            logger.info(
                "breaker of task %s half-open: job %d probes",
                task_name,
                job_id,
                extra={"action": "breaker_half_open", "task_name": task_name, "job_id": job_id},
            )
        return rows

    async def _claim_rows(self, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        """The claim without breakers: skipping paused queues if the database has pauses."""
        if not self._pauses.ready():
            return await self._fetch(FETCH_JOBS_IGNORING_PAUSES, arguments)
        try:
            rows = await self._fetch(FETCH_JOBS, arguments)
        except exceptions.ConnectorException as exc:
            if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                raise
            if self._pauses.missing():
                logger.warning(
                    "queue pauses are ignored: the database has no dawdle_queue_pauses "
                    "table; run `dawdle schema --apply`",
                    extra={"action": "queue_pauses_ignored"},
                )
            return await self._fetch(FETCH_JOBS_IGNORING_PAUSES, arguments)
        self._pauses.found()
        return rows

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

    async def record(
        self, verdicts: Sequence[Verdict], *, worker_id: int | None, store_errors: bool = True
    ) -> Recorded:
        """Write the verdicts of jobs still 'doing' for this worker; what it wrote.

        Shielded from cancellation, but not forever: a write cut off is simply written
        again, since it only touches jobs still 'doing' for this worker. With tasks that
        have a fleet retry budget, the same statement counts their runs and spaces their
        retries; with tasks that have a breaker, it counts their calls and moves their
        breakers. Without their tables both are off (one warning each) and the tables are
        tried again every TABLE_RECHECK seconds.
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
        fleet = await self._fleet.ready()
        budget = fleet and bool(self._fleet.budgets)
        breaker = fleet and bool(self._fleet.breakers)
        if budget:
            arguments |= self._fleet.budget_arguments(verdicts)
        if breaker:
            arguments |= self._fleet.breaker_arguments(verdicts)
        # Only a batch with errors sends them: successes write as they did before.
        errors = (
            store_errors
            and any(verdict.error for verdict in verdicts)
            and self._errors_table.ready()
        )
        if errors:
            arguments |= error_arguments(verdicts)
        write = outcome_write(budget=budget, breaker=breaker, errors=errors)
        try:
            row = await self._write(write, arguments)
        except exceptions.ConnectorException as exc:
            cause = exc.__cause__
            if not isinstance(cause, psycopg.errors.UndefinedTable):
                raise
            if errors and names_errors_table(cause.diag.message_primary):
                if self._errors_table.missing():
                    warn_errors_off()
                return await self.record(verdicts, worker_id=worker_id, store_errors=False)
            if not fleet:
                raise
            self._fleet.missing()
            return await self.record(verdicts, worker_id=worker_id, store_errors=store_errors)
        if errors:
            self._errors_table.found()
        self._fleet.probes.difference_update(verdict.job_id for verdict in verdicts)
        pushed = zip(
            row.get("pushed_ids", ()),
            row.get("pushed_tasks", ()),
            row.get("pushed_from", ()),
            row.get("pushed_to", ()),
            strict=True,
        )
        moved = zip(
            row.get("moved_tasks", ()),
            row.get("moved_states", ()),
            row.get("moved_open_until", ()),
            strict=True,
        )
        return Recorded(
            int(row["recorded"]),
            tuple(PushedRetry(*one) for one in pushed),
            tuple(BreakerMoved(*one) for one in moved),
            int(row.get("released", 0)),
        )

    async def _write(self, query: LiteralString, arguments: dict[str, Any]) -> dict[str, Any]:
        with anyio.fail_after(QUERY_TIMEOUT, shield=True):
            return await self._connector.execute_query_one_async(query, **arguments)

    async def prune_stalled_workers(self, seconds: float) -> None:
        """Remove the rows of workers silent for `seconds` (their jobs become stalled)."""
        await self._manager.prune_stalled_workers(seconds)

    async def recover_stalled(
        self,
        *,
        seconds: float,
        own_job_ids: list[int],
        worker_id: int | None,
        max_recoveries: int | None,
    ) -> list[dict[str, Any]]:
        """Put back jobs of stalled workers (failing poison jobs), and this worker's unknown ones.

        The rows changed: id, task_name, status, and `runs`, the job's last runs in a row
        that ended with their worker dead or stalled, this one included.
        """
        return await self._connector.execute_query_all_async(
            RECOVER_STALLED_JOBS,
            seconds=seconds,
            own_jobs=own_job_ids,
            worker_id=worker_id,
            max_recoveries=max_recoveries,
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
