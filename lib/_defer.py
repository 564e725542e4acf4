"""dawdle's job manager: Procrastinate's, whose defers emit `job_deferred` and carry traces.

Every defer path goes through the app's job manager: `defer_async`, `batch_defer_async`,
their sync twins and the periodic deferrer. With no hooks, each is Procrastinate's own call,
whose statement is, on dawdle's `PsycopgConnector`, the single-row `_sql.DEFER_JOB` for
one job and the set-based `_sql.DEFER_JOBS` for more.
With a hook that traces (`DeferTracer`, such as `OpenTelemetryHooks`), its spans begin
before the insert and their trace contexts are written by the insert itself
(`_carriers.DEFER_JOBS_TRACED`); after it, every hook gets `JobDeferred` with the stored job.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import psycopg
from procrastinate import connector as procrastinate_connector
from procrastinate import exceptions, manager
from procrastinate import jobs as jobs_module

from dawdle._carriers import (
    DEFER_JOBS_TRACED,
    DEFER_PERIODIC_JOB_TRACED,
    HAS_JOB_TRACES,
    TableCheck,
)
from dawdle._connector._params import JobColumns, JobRow
from dawdle._connector.psycopg import PsycopgConnector
from dawdle._hooks import Hooks, JobDeferred, TraceContext
from dawdle._sql import defers

logger = logging.getLogger("dawdle.hooks")

# The carriers of the defer under way in this context, which the defer statement writes.
_CARRIERS: contextvars.ContextVar[list[TraceContext] | None] = contextvars.ContextVar(
    "dawdle_defer_carriers", default=None
)


class PendingDefers(Protocol):
    """Spans begun for jobs about to be inserted."""

    @property
    def carriers(self) -> list[TraceContext]:
        """The trace context of each job's span, in the order of the jobs."""
        ...

    def inserted(self, jobs: Sequence[jobs_module.Job | None]) -> None:
        """The jobs as stored (None: not deferred, a periodic tick already taken)."""

    def failed(self, exception: BaseException) -> None:
        """The insert failed: the spans end in error."""


@runtime_checkable
class DeferTracer(Protocol):
    """A hook whose spans begin before a defer's insert, to store their context with it."""

    def begin_defers(self, jobs: Sequence[jobs_module.Job]) -> PendingDefers:
        """Begin a span per job."""
        ...


class _Guarded:
    """A tracer's pending spans, whose failures remove the tracer instead of the defer's."""

    def __init__(self, pending: PendingDefers, remove: Callable[[], None]) -> None:
        self._pending = pending
        self._remove = remove
        self.carriers = pending.carriers

    def inserted(self, jobs: Sequence[jobs_module.Job | None]) -> None:
        try:
            self._pending.inserted(jobs)
        except Exception:  # noqa: BLE001 (a hook's failure never stops a defer)
            self._remove()

    def failed(self, exception: BaseException) -> None:
        try:
            self._pending.failed(exception)
        except Exception:  # noqa: BLE001 (the defer's own error is what the caller gets)
            self._remove()


def _table_dropped(
    table: TableCheck,
    exc: exceptions.ConnectorException,
    carriers: list[TraceContext] | None,
    connection: Any | None,
) -> bool:
    """Whether a traced insert failed only for want of the table (dropped since it was seen).

    It is then sent again without carriers, unless on the caller's connection, whose
    transaction the failure aborted.
    """
    if carriers is None or connection is not None:
        return False
    if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
        return False
    table.record(present=False)
    return True


class JobManager(manager.JobManager):
    """Procrastinate's job manager; `hooks` gives the hooks to tell of each defer."""

    def __init__(
        self,
        connector: procrastinate_connector.BaseConnector,
        hooks: Callable[[], Sequence[Hooks]],
    ) -> None:
        super().__init__(connector)
        self._hooks = hooks
        self._broken: set[int] = set()
        self.traces_table = TableCheck()
        """Whether its database has `dawdle_job_traces`; the app's workers' claims share it."""
        # dawdle's PsycopgConnector (and its sync twin) expand `JobColumns` into the arrays of
        # the set-based defer; other connectors get Procrastinate's statement.
        self._set_based = isinstance(connector, PsycopgConnector)

    def _live_hooks(self) -> list[Hooks]:
        return [hook for hook in self._hooks() if id(hook) not in self._broken]

    async def batch_defer_jobs_async(
        self, jobs: list[jobs_module.Job], connection: Any | None = None
    ) -> list[jobs_module.Job]:
        """Insert the jobs (with their trace contexts), then tell the hooks."""
        hooks = self._live_hooks()
        if not hooks:
            return await super().batch_defer_jobs_async(jobs, connection)
        pending = self._begin(hooks, jobs)
        try:
            traced = pending is not None and await self._has_table_async()
            carriers = pending.carriers if traced and pending is not None else None
            deferred = await self._insert_async(jobs, connection, carriers)
        except BaseException as exc:
            if pending is not None:
                pending.failed(exc)
            raise
        self._emit(hooks, pending, deferred)
        return deferred

    async def _insert_async(
        self,
        jobs: list[jobs_module.Job],
        connection: Any | None,
        carriers: list[TraceContext] | None,
    ) -> list[jobs_module.Job]:
        token = _CARRIERS.set(carriers)
        try:
            return await super().batch_defer_jobs_async(jobs, connection)
        except exceptions.ConnectorException as exc:
            if not _table_dropped(self.traces_table, exc, carriers, connection):
                raise
        finally:
            _CARRIERS.reset(token)
        return await super().batch_defer_jobs_async(jobs, connection)

    def batch_defer_jobs(
        self, jobs: list[jobs_module.Job], connection: Any | None = None
    ) -> list[jobs_module.Job]:
        """The sync twin of `batch_defer_jobs_async`."""
        hooks = self._live_hooks()
        if not hooks:
            return super().batch_defer_jobs(jobs, connection)
        pending = self._begin(hooks, jobs)
        try:
            traced = pending is not None and self._has_table()
            carriers = pending.carriers if traced and pending is not None else None
            deferred = self._insert(jobs, connection, carriers)
        except BaseException as exc:
            if pending is not None:
                pending.failed(exc)
            raise
        self._emit(hooks, pending, deferred)
        return deferred

    def _insert(
        self,
        jobs: list[jobs_module.Job],
        connection: Any | None,
        carriers: list[TraceContext] | None,
    ) -> list[jobs_module.Job]:
        token = _CARRIERS.set(carriers)
        try:
            return super().batch_defer_jobs(jobs, connection)
        except exceptions.ConnectorException as exc:
            if not _table_dropped(self.traces_table, exc, carriers, connection):
                raise
        finally:
            _CARRIERS.reset(token)
        return super().batch_defer_jobs(jobs, connection)

    def _defer_jobs_query_kwargs(self, jobs: list[jobs_module.Job]) -> dict[str, Any]:
        arguments = super()._defer_jobs_query_kwargs(jobs)
        carriers = _CARRIERS.get()
        if self._set_based and len(jobs) == 1:
            # One job (each `defer_async`): scalar parameters, no arrays to adapt.
            arguments["jobs"] = JobRow(arguments["jobs"][0])
            arguments["query"] = defers.DEFER_JOB if carriers is None else defers.DEFER_JOB_TRACED
            if carriers is not None:
                (carrier,) = carriers
                arguments["traceparent"] = carrier.traceparent
                arguments["tracestate"] = carrier.tracestate
            return arguments
        if self._set_based:
            arguments["jobs"] = JobColumns(arguments["jobs"])
            arguments["query"] = defers.DEFER_JOBS if carriers is None else defers.DEFER_JOBS_TRACED
        elif carriers is not None:
            arguments["query"] = DEFER_JOBS_TRACED
        if carriers is not None:
            arguments["traceparents"] = [carrier.traceparent for carrier in carriers]
            arguments["tracestates"] = [carrier.tracestate for carrier in carriers]
        return arguments

    async def defer_periodic_job(
        self, job: jobs_module.Job, periodic_id: str, defer_timestamp: int
    ) -> int | None:
        """Procrastinate's periodic defer (None if this tick was taken), told to the hooks."""
        hooks = self._live_hooks()
        if not hooks:
            return await super().defer_periodic_job(job, periodic_id, defer_timestamp)
        pending = self._begin(hooks, [job])
        try:
            if pending is not None and await self._has_table_async():
                job_id = await self._defer_periodic_traced(
                    job, periodic_id, defer_timestamp, pending.carriers[0]
                )
            else:
                job_id = await super().defer_periodic_job(job, periodic_id, defer_timestamp)
        except BaseException as exc:
            if pending is not None:
                pending.failed(exc)
            raise
        stored = None if job_id is None else job.evolve(id=job_id, status="todo")
        self._emit(hooks, pending, [stored])
        return job_id

    async def _defer_periodic_traced(
        self, job: jobs_module.Job, periodic_id: str, defer_timestamp: int, carrier: TraceContext
    ) -> int | None:
        if job.task_kwargs.get("timestamp") != defer_timestamp:
            raise exceptions.InvalidTimestamp
        try:
            row = await self.connector.execute_query_one_async(
                DEFER_PERIODIC_JOB_TRACED,
                task_name=job.task_name,
                defer_timestamp=defer_timestamp,
                periodic_id=periodic_id,
                queue=job.queue,
                priority=job.priority,
                lock=job.lock,
                queueing_lock=job.queueing_lock,
                args=job.task_kwargs,
                traceparent=carrier.traceparent,
                tracestate=carrier.tracestate,
            )
        except exceptions.UniqueViolation as exc:
            self._raise_already_enqueued(exc=exc, queueing_lock=job.queueing_lock)
        except exceptions.ConnectorException as exc:
            if not _table_dropped(self.traces_table, exc, [carrier], None):
                raise
            return await super().defer_periodic_job(job, periodic_id, defer_timestamp)
        job_id: int | None = row["id"]
        return job_id

    def _begin(self, hooks: list[Hooks], jobs: list[jobs_module.Job]) -> PendingDefers | None:
        """The first tracing hook's spans for these jobs (one tracer carries the context)."""
        for hook in hooks:
            if isinstance(hook, DeferTracer):
                try:
                    remove = functools.partial(self._remove, hook, "spans")
                    return _Guarded(hook.begin_defers(jobs), remove)
                except Exception:  # noqa: BLE001 (a hook's failure never stops a defer)
                    self._remove(hook, "begin_defers")
        return None

    async def _has_table_async(self) -> bool:
        known = self.traces_table.known()
        if known is not None:
            return known
        row = await self.connector.execute_query_one_async(HAS_JOB_TRACES)
        return self.traces_table.record(present=bool(row["present"]))

    def _has_table(self) -> bool:
        known = self.traces_table.known()
        if known is not None:
            return known
        row = self.connector.get_sync_connector().execute_query_one(HAS_JOB_TRACES)
        return self.traces_table.record(present=bool(row["present"]))

    def _emit(
        self,
        hooks: list[Hooks],
        pending: PendingDefers | None,
        deferred: Sequence[jobs_module.Job | None],
    ) -> None:
        if pending is not None:
            pending.inserted(deferred)
        for job in deferred:
            if job is None:
                continue
            event = JobDeferred(job)
            for hook in hooks:
                if id(hook) in self._broken:
                    continue
                try:
                    hook.job_deferred(event)
                except Exception:  # noqa: BLE001 (a hook's failure never stops a defer)
                    self._remove(hook, "job_deferred")

    def _remove(self, hook: Hooks, method: str) -> None:
        """A hook that raised is logged once and no longer called, as trio does."""
        self._broken.add(id(hook))
        logger.exception(
            "hook %r raised in %s and is removed",
            hook,
            method,
            extra={"action": "hook_removed", "hook": repr(hook)},
        )
