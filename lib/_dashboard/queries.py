"""What the dashboard reads, each query bounded by an index or a range of ids.

Every page must render in well under 100 ms with a million jobs, so no query here walks
the whole jobs table: waiting and running jobs come from Procrastinate's partial index on
them, failed ones from `FAILED_INDEX` when it exists (else one scan of the table), a job's
story from its primary key and the events' index by job, and a list of jobs from a range of
ids (`SCAN_WINDOW` at most per page: a rare filter costs pages, never a full scan).
The job, its events, its stored errors and the workers are the admin CLI's own queries.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from dawdle._cli_jobs import read_errors
from dawdle._queue_stats import QueueStats, read_failed, read_queue_stats, shown_counts
from dawdle._sql import GET_JOB, JOB_EVENTS, LIST_WORKERS

if TYPE_CHECKING:
    from dawdle._app import App

# A page of the jobs list looks at this many ids at most (about 30 ms on the primary key
# with a filter no job matches, at 1,000,000 jobs on 2 cores).
SCAN_WINDOW: Final = 100_000
PAGE_SIZE: Final = 50

# A worker whose heartbeat is younger than this counts as alive (as `dawdle healthcheck`).
ALIVE_SECONDS: Final = 30

MINUTES: Final = 60
ONE_MINUTE: Final = datetime.timedelta(minutes=1)

STATUSES: Final = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")

# The index that makes failed counts cheap (the README's Dashboard section): failed jobs
# only, so small, built without blocking writes. Optional: without it they scan the table.
FAILED_INDEX: Final = "dawdle_jobs_failed"
CREATE_FAILED_INDEX: Final = (
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {FAILED_INDEX} "
    "ON procrastinate_jobs (queue_name) WHERE status = 'failed'"
)

# The minute now, and the window's first one: the chart has a bar for each of 60 minutes.
CLOCK: Final = """
SELECT date_trunc('minute', now()) AS minute,
       date_trunc('minute', now()) - interval '59 minutes' AS first
"""

# Runs ended per minute since `since`. The first event at or after it is found by a binary
# search on the events' primary key (ids grow with time, but for the few events of a
# transaction still open as others commit, and 'scheduled' ones, stamped with a due time,
# which the search skips): some 20 index probes, whatever the table's size. Then only the
# events since are read.
FINISHED_SINCE: Final = """
WITH RECURSIVE search(low, high) AS (
    SELECT COALESCE(min(id), 0), COALESCE(max(id), 0) + 1 FROM procrastinate_events
    UNION ALL
    SELECT CASE WHEN probe.id IS NULL OR probe.recent THEN search.low ELSE probe.id + 1 END,
           CASE WHEN probe.id IS NULL OR probe.recent THEN (search.low + search.high) / 2
                ELSE search.high END
      FROM search
      LEFT JOIN LATERAL (
           SELECT event.id, event.at >= %(since)s AS recent
             FROM procrastinate_events AS event
            WHERE event.id >= (search.low + search.high) / 2 AND event.type <> 'scheduled'
            ORDER BY event.id
            LIMIT 1) AS probe ON true
     WHERE search.low < search.high
)
SELECT date_trunc('minute', event.at) AS minute,
       count(*) FILTER (WHERE event.type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE event.type IN ('failed', 'aborted')) AS failed
  FROM procrastinate_events AS event
 WHERE event.id >= (SELECT max(low) FROM search)
   AND event.type IN ('succeeded', 'failed', 'aborted')
   AND event.at >= %(since)s
 GROUP BY 1
"""

FAILED_INDEXED: Final = f"SELECT to_regclass('{FAILED_INDEX}') IS NOT NULL AS indexed"

WORKERS_ALIVE: Final = """
SELECT count(*) AS alive FROM procrastinate_workers
 WHERE last_heartbeat > now() - make_interval(secs => %(seconds)s)
"""

# One page of jobs, newest first, among ids in [low, before): keyset pagination on the
# primary key (or Procrastinate's partial index on 'todo' and 'doing' jobs, which holds
# their ids), within a window so that a filter few jobs match never scans the table.
LIST_JOBS_WINDOW: Final = """
SELECT id, status::text AS status, queue_name::text AS queue_name,
       task_name::text AS task_name, attempts, scheduled_at, worker_id
  FROM procrastinate_jobs
 WHERE id < %(before)s AND id >= %(low)s
   AND (%(status)s::procrastinate_job_status IS NULL OR status = %(status)s)
   AND (%(queue)s::varchar IS NULL OR queue_name = %(queue)s)
   AND (%(task)s::varchar IS NULL OR task_name = %(task)s)
 ORDER BY id DESC
 LIMIT %(limit)s
"""

MAX_JOB_ID: Final = "SELECT COALESCE(max(id), 0) AS id FROM procrastinate_jobs"

RUNNING_JOBS: Final = """
SELECT id, worker_id, queue_name::text AS queue_name, task_name::text AS task_name, attempts
  FROM procrastinate_jobs
 WHERE worker_id = ANY(%(workers)s) AND status = 'doing'
 ORDER BY id
"""


class FinishedPerMinute:
    """Runs ended in each of the last 60 minutes, the minutes that are over kept in memory.

    A minute that is over is read once: each overview then reads only the events since the
    last minute it saw (a run's event written late, by a transaction that began in an
    earlier minute, is missed by the minute already counted).
    """

    def __init__(self) -> None:
        self.complete: dict[datetime.datetime, tuple[int, int]] = {}
        self.covered: datetime.datetime | None = None  # minutes before this one are kept

    async def read(self, app: App) -> list[tuple[int, int]]:
        """(succeeded, failed or aborted) for each of the last 60 minutes, oldest first."""
        connector = app.connector
        clock = await connector.execute_query_one_async(CLOCK)
        current, first = clock["minute"], clock["first"]
        since = first if self.covered is None or self.covered < first else self.covered
        rows = await connector.execute_query_all_async(FINISHED_SINCE, since=since)
        read = {row["minute"]: (row["succeeded"], row["failed"]) for row in rows}
        minute = since
        while minute < current:
            self.complete[minute] = read.get(minute, (0, 0))
            minute += ONE_MINUTE
        self.covered = max(current, self.covered or current)
        self.complete = {key: value for key, value in self.complete.items() if key >= first}
        minutes = [first + index * ONE_MINUTE for index in range(MINUTES)]
        return [self.complete.get(minute) or read.get(minute, (0, 0)) for minute in minutes]


@dataclass(frozen=True)
class JobFilter:
    """The jobs page's filters; None is any."""

    status: str | None = None
    queue: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class JobPage:
    """A page of jobs: the rows, and where the next page starts (None: no older jobs)."""

    rows: list[dict[str, Any]]
    next_before: int | None
    # The lowest id this page looked at: fewer rows than a page means none matched below.
    searched_down_to: int


async def overview(app: App, finished: FinishedPerMinute) -> dict[str, Any]:
    """Queues with their counts and pauses, runs ended per minute, live workers."""
    connector = app.connector
    active = await read_queue_stats(connector)
    failed = await read_failed(connector)
    queues = [
        {"name": state.name, "state": state, **_counts(state.name, active, failed)}
        for state in await app.list_queue_states_async()
    ]
    # A queue with waiting jobs always has a name in the index; this is for safety only.
    listed = {queue["name"] for queue in queues}
    queues.extend(
        {"name": name, "state": None, **_counts(name, active, failed)}
        for name in sorted((active.keys() | failed.keys()) - listed)
    )
    queues.sort(key=lambda queue: queue["name"])
    per_minute = await finished.read(app)
    alive = await connector.execute_query_one_async(WORKERS_ALIVE, seconds=ALIVE_SECONDS)
    indexed = await connector.execute_query_one_async(FAILED_INDEXED)
    return {
        "queues": queues,
        "per_minute": per_minute,
        "workers_alive": alive["alive"],
        "failed_indexed": indexed["indexed"],
    }


def _counts(name: str, active: dict[str, QueueStats], failed: dict[str, int]) -> dict[str, Any]:
    return shown_counts(active.get(name), failed.get(name, 0))


async def list_jobs(app: App, filters: JobFilter, *, before: int | None) -> JobPage:
    """Up to PAGE_SIZE jobs below `before` (all ids if None) that match, newest first."""
    connector = app.connector
    if before is None:
        before = (await connector.execute_query_one_async(MAX_JOB_ID))["id"] + 1
    low = max(0, before - SCAN_WINDOW)
    rows = await connector.execute_query_all_async(
        LIST_JOBS_WINDOW,
        before=before,
        low=low,
        status=filters.status,
        queue=filters.queue,
        task=filters.task,
        limit=PAGE_SIZE,
    )
    if len(rows) == PAGE_SIZE:
        next_before: int | None = rows[-1]["id"]
    else:
        next_before = low if low > 0 else None
    return JobPage(rows=rows, next_before=next_before, searched_down_to=low)


async def job_status(app: App, job_id: int) -> str | None:
    """The job's status; None if there is no such job."""
    found = await app.connector.execute_query_all_async(GET_JOB, id=job_id)
    return str(found[0]["status"]) if found else None


async def job_details(app: App, job_id: int) -> dict[str, Any] | None:
    """The job, its events and stored errors (None without their table); None if no job."""
    connector = app.connector
    found = await connector.execute_query_all_async(GET_JOB, id=job_id)
    if not found:
        return None
    events = await connector.execute_query_all_async(JOB_EVENTS, id=job_id)
    errors = await read_errors(app, job_id)
    return {"job": found[0], "events": events, "errors": errors}


async def workers(app: App) -> list[dict[str, Any]]:
    """Each registered worker with its heartbeat's age and the jobs it runs."""
    connector = app.connector
    rows = await connector.execute_query_all_async(LIST_WORKERS)
    running = await connector.execute_query_all_async(
        RUNNING_JOBS, workers=[row["id"] for row in rows]
    )
    jobs: dict[int, list[dict[str, Any]]] = {}
    for job in running:
        jobs.setdefault(job["worker_id"], []).append(job)
    return [
        {
            **row,
            "alive": row["heartbeat_age"] < ALIVE_SECONDS,
            "jobs": jobs.get(row["id"], []),
        }
        for row in rows
    ]
