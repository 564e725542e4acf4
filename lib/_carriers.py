"""Trace carriers: a job's trace context, stored beside the job and read back by its claim.

Procrastinate's worker passes a job's `args` to its task as keyword arguments, so the trace
context cannot ride in them without breaking a mixed fleet. It goes in dawdle's table
`dawdle_job_traces` instead (dawdle schema 4), written by the statement that inserts the job
(so a worker never claims a job before its carrier exists) and read by a worker one of whose
hooks wants it (`Hooks.wants_trace_context`), in one query per non-empty claim. Without the
table, jobs are deferred and run untraced-across, with one warning per minute at most.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import anyio
import psycopg
from procrastinate import connector as procrastinate_connector
from procrastinate import exceptions

from dawdle._hooks import TraceContext

logger = logging.getLogger("dawdle.otel")

# Procrastinate's defer statement, plus the carriers: procrastinate_defer_jobs_v1 returns
# the ids in the order of its input, as Procrastinate's own statement relies on.
DEFER_JOBS_TRACED: Final = """
WITH deferred AS (
    SELECT deferred.id, deferred.n
      FROM unnest(procrastinate_defer_jobs_v1(%(jobs)s::procrastinate_job_to_defer_v1[]))
           WITH ORDINALITY AS deferred(id, n)
), traced AS (
    INSERT INTO dawdle_job_traces (job_id, traceparent, tracestate)
    SELECT deferred.id, carrier.traceparent, carrier.tracestate
      FROM deferred
      JOIN unnest(%(traceparents)s::text[], %(tracestates)s::text[])
           WITH ORDINALITY AS carrier(traceparent, tracestate, n) USING (n)
)
SELECT id FROM deferred ORDER BY n
"""

# Procrastinate's periodic defer (NULL when another worker deferred this tick), plus the
# carrier of the job it inserted.
DEFER_PERIODIC_JOB_TRACED: Final = """
WITH deferred AS (
    SELECT procrastinate_defer_periodic_job_v2(%(queue)s, %(lock)s, %(queueing_lock)s,
           %(task_name)s, %(priority)s, %(periodic_id)s, %(defer_timestamp)s, %(args)s) AS id
), traced AS (
    INSERT INTO dawdle_job_traces (job_id, traceparent, tracestate)
    SELECT id, %(traceparent)s::text, %(tracestate)s::text FROM deferred WHERE id IS NOT NULL
)
SELECT id FROM deferred
"""

HAS_JOB_TRACES: Final = """
SELECT to_regclass('dawdle_job_traces') IS NOT NULL AS present
"""

READ_JOB_TRACES: Final = """
SELECT job_id, traceparent, tracestate FROM dawdle_job_traces WHERE job_id = ANY(%(ids)s)
"""

# At most this long is added to a claim by the read of its carriers.
READ_TIMEOUT: Final = 1.0
# How long a missing table is believed missing before it is looked for again.
RECHECK_SECONDS: Final = 60.0


class TableCheck:
    """Whether `dawdle_job_traces` exists, cached; a missing table warns, rechecked each minute.

    One per app (its `JobManager`), shared by its defers and its workers' claims: one
    database, one answer, one warning.
    """

    def __init__(self) -> None:
        self._present_until = 0.0
        self._missing_until = 0.0

    def known(self) -> bool | None:
        """True or False while the last answer holds, None when the table must be looked for."""
        now = time.monotonic()
        if now < self._missing_until:
            return False
        return True if now < self._present_until else None

    def record(self, *, present: bool) -> bool:
        """Keep an answer (a present table is trusted for good); warn when it is missing."""
        if present:
            self._present_until = float("inf")
        else:
            self._missing_until = time.monotonic() + RECHECK_SECONDS
            logger.warning(
                "jobs are deferred without their trace context: the database has no "
                "dawdle_job_traces table; run `dawdle schema --apply`",
                extra={"action": "job_traces_missing"},
            )
        return present


async def read_carriers(
    connector: procrastinate_connector.BaseConnector, ids: list[int], table: TableCheck
) -> dict[int, TraceContext]:
    """The carriers of the claimed jobs `ids`, by job id, in one query; none without the table.

    The claim is already committed: its jobs must reach the worker whatever happens here, so
    the read is shielded from the claim's own timeout and bounded on its own, and a failure
    only leaves these runs' spans unlinked.
    """
    if not ids or table.known() is False:
        return {}
    rows = None
    with anyio.CancelScope(shield=True), anyio.move_on_after(READ_TIMEOUT):
        try:
            rows = await connector.execute_query_all_async(READ_JOB_TRACES, ids=ids)
        except exceptions.ConnectorException as exc:
            if isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                table.record(present=False)
            else:
                logger.warning(
                    "trace contexts of %d claimed jobs not read: %s",
                    len(ids),
                    exc,
                    extra={"action": "job_traces_not_read"},
                )
    if rows is None:
        return {}
    if table.known() is None:
        table.record(present=True)
    return {row["job_id"]: TraceContext(row["traceparent"], row["tracestate"]) for row in rows}
