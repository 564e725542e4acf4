"""Trace carriers: a job's trace context, stored beside the job and read back by its claim.

Procrastinate's worker passes a job's `args` to its task as keyword arguments, so the trace
context cannot ride in them without breaking a mixed fleet. It goes in dawdle's table
`dawdle_job_traces` instead (dawdle schema 4), written by the statement that inserts the job
(so a worker never claims a job before its carrier exists) and read, only while
OpenTelemetry's hooks exist in the process, in one query per non-empty claim. Without the
table, jobs are deferred and run untraced-across, with one warning per minute at most.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Final, NamedTuple

import anyio
import psycopg
from procrastinate import connector as procrastinate_connector
from procrastinate import exceptions

from dawdle._sql import (
    CLAIM_JOBS_TIMED,
    CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    CLAIM_JOBS_TIMED_WITH_BREAKERS,
    FETCH_JOBS,
    FETCH_JOBS_IGNORING_PAUSES,
    FETCH_JOBS_WITH_BREAKERS,
)

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

# The statements whose rows are claimed jobs, after which a tracing process reads carriers.
CLAIMS: Final = frozenset(
    {
        FETCH_JOBS,
        FETCH_JOBS_IGNORING_PAUSES,
        FETCH_JOBS_WITH_BREAKERS,
        CLAIM_JOBS_TIMED,
        CLAIM_JOBS_TIMED_IGNORING_PAUSES,
        CLAIM_JOBS_TIMED_WITH_BREAKERS,
    }
)

# At most this long is added to a claim by the read of its carriers.
READ_TIMEOUT: Final = 1.0
# How long a missing table is believed missing before it is looked for again.
RECHECK_SECONDS: Final = 60.0
# Carriers read but not yet taken by a run (a claim lost, a hook removed) are dropped
# oldest first beyond this many, so the store never grows without bound.
MAX_PENDING: Final = 10_000


class Carrier(NamedTuple):
    """A job's W3C trace context, as its defer's span left it."""

    traceparent: str
    tracestate: str | None


class TableCheck:
    """Whether `dawdle_job_traces` exists, cached; a missing table warns, rechecked each minute."""

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


class ClaimCarriers:
    """The carriers of claimed jobs, by job id, until their run's hook takes them.

    One per process: connectors fill it after each claim while `enabled` (OpenTelemetry's
    hooks were made), hooks take from it in the runner; a lock, since sync defers and runs
    use threads.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._pending: OrderedDict[int, Carrier] = OrderedDict()
        self._lock = threading.Lock()
        self.table = TableCheck()
        """Whether the table exists, for defers and claims alike: one warning for both."""

    def take(self, job_id: int | None) -> Carrier | None:
        """The carrier of a claimed job, once; None if it has none."""
        if job_id is None:
            return None
        with self._lock:
            return self._pending.pop(job_id, None)

    def put(self, job_id: int, carrier: Carrier) -> None:
        """Keep a claimed job's carrier for its run (tests use it to stand in for a claim)."""
        with self._lock:
            self._pending[job_id] = carrier
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    async def after_claim(
        self,
        connector: procrastinate_connector.BaseConnector,
        query: str,
        rows: list[dict[str, Any]],
    ) -> None:
        """After a claim returned `rows`, read their carriers (one query), if tracing."""
        if not (self.enabled and rows and query in CLAIMS) or self.table.known() is False:
            return
        # The claim is already committed: its rows must reach the worker whatever happens
        # here, so the read is shielded from the claim's own timeout and bounded on its own,
        # and a failure only leaves these runs' spans unlinked.
        found: list[dict[str, Any]] = []
        with anyio.CancelScope(shield=True), anyio.move_on_after(READ_TIMEOUT):
            try:
                found = await connector.execute_query_all_async(
                    READ_JOB_TRACES, ids=[row["id"] for row in rows]
                )
            except exceptions.ConnectorException as exc:
                if isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                    self.table.record(present=False)
                else:
                    logger.warning(
                        "trace contexts of %d claimed jobs not read: %s",
                        len(rows),
                        exc,
                        extra={"action": "job_traces_not_read"},
                    )
        for row in found:
            self.put(row["job_id"], Carrier(row["traceparent"], row["tracestate"]))


CLAIMED: Final = ClaimCarriers()
