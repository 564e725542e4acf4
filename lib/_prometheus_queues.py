"""Queue gauges for Prometheus: depth and the oldest ready job's age, per queue, cached.

One statement reads every queue; a scrape refreshes it at most every `max_age` seconds (and
at most every 20 times the last reading's duration), so frequent scrapes cost the database
one query per interval and worker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dawdle._validate import number

logger = logging.getLogger("dawdle.prometheus")

# Only unfinished jobs are read: the partial index on status IN ('todo', 'doing')
# (procrastinate_jobs_id_lock_idx_v1) finds them, so the cost follows the jobs waiting or
# running, never the finished ones a busy database keeps by the million. Failed jobs are not
# counted for that reason: no index has them, and counting them scans the whole table.
#
# A ready job is due since its scheduled_at; one never scheduled (scheduled_at NULL) since
# its deferral, which only its 'deferred' event knows. Ids grow with insertion, so the oldest
# of those is the smallest id, and one indexed lookup of its event per queue gives the age.
QUEUE_STATS: Final = """
WITH queues AS (
    SELECT queue_name,
           count(*) FILTER (WHERE status = 'todo') AS todo,
           count(*) FILTER (WHERE status = 'todo'
                              AND (scheduled_at IS NULL OR scheduled_at <= now())) AS ready,
           count(*) FILTER (WHERE status = 'doing') AS doing,
           min(scheduled_at) FILTER (WHERE status = 'todo' AND scheduled_at <= now())
               AS oldest_scheduled,
           min(id) FILTER (WHERE status = 'todo' AND scheduled_at IS NULL) AS oldest_unscheduled
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
     GROUP BY queue_name
)
SELECT queues.queue_name AS queue,
       queues.todo,
       queues.ready,
       queues.doing,
       extract(epoch FROM now() - least(queues.oldest_scheduled, deferred.at))::float
           AS oldest_ready_seconds
  FROM queues
  LEFT JOIN LATERAL (
       SELECT min(event.at) AS at
         FROM procrastinate_events AS event
        WHERE event.job_id = queues.oldest_unscheduled AND event.type = 'deferred'
  ) AS deferred ON true
"""

# Refreshed at most this often by default: Prometheus scrapes every 15 s or more.
DEFAULT_MAX_AGE: Final = 5.0

# A refresh that takes longer is given up (the gauges are left out of that scrape).
QUERY_TIMEOUT: Final = 5.0

# A slow reading (a backlog of a million jobs takes a few hundred ms) spaces out the next:
# not before this many times its duration, so the reading costs the database at most 5% of
# one backend per worker scraped, however often Prometheus asks.
COST_FACTOR: Final = 20


class Queries(Protocol):
    """What the gauges need of a connector: Procrastinate's `execute_query_all_async`."""

    def execute_query_all_async(self, query: str, **arguments: Any) -> Awaitable[list[Any]]:
        """The rows of `query`, as dicts."""
        ...


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue's unfinished jobs, as the gauges show them."""

    queue: str
    todo: int
    ready: int
    """'todo' jobs whose time has come: what a worker could claim now (locks and pauses aside)."""
    doing: int
    oldest_ready_seconds: float
    """Seconds since the oldest ready job was due; 0 when none is ready."""


class QueueGauges(Collector):
    """A Prometheus collector of `QueueStats` per queue, read from the database by `refresh()`.

    `collect()` (called by prometheus_client, synchronously) only reports the last reading.
    A queue seen once and then emptied is reported with zeros, not dropped: a gauge that
    vanishes reads as unknown. After a failed reading the queue gauges are left out until
    one succeeds, and `dawdle_queue_stats_failures_total` counts the failure.
    """

    def __init__(self, connector: Queries, *, max_age: float = DEFAULT_MAX_AGE) -> None:
        self._connector = connector
        self._max_age = number("max_age", max_age, at_least=0)
        self._lock = anyio.Lock()
        self._next_at: float | None = None
        self._stats: dict[str, QueueStats] | None = None
        self._seen: set[str] = set()
        self.failures = 0
        """Readings that failed or timed out, since this collector was made."""
        self.readings = 0
        """Readings sent to the database (successful or not)."""

    async def refresh(self) -> None:
        """Read the queues, unless the last reading is recent.

        Recent: younger than `max_age`, or than `COST_FACTOR` times its duration.
        Concurrent callers wait for one reading. A failure is logged and counted, never
        raised: a scrape still gets the worker's own metrics.
        """
        async with self._lock:
            start = anyio.current_time()
            if self._next_at is not None and start < self._next_at:
                return
            self.readings += 1
            try:
                with anyio.fail_after(QUERY_TIMEOUT):
                    rows = await self._connector.execute_query_all_async(QUEUE_STATS)
            except Exception as exc:  # noqa: BLE001 (the database's failures vary; all are logged)
                self._next_at = start + self._max_age
                self.failures += 1
                self._stats = None
                logger.warning(
                    "queue gauges not read: %s",
                    _first_line(exc),
                    extra={"action": "queue_stats_failed"},
                )
                return
            took = anyio.current_time() - start
            self._next_at = start + max(self._max_age, COST_FACTOR * took)
            self._stats = {row["queue"]: _stats(row) for row in rows}
            self._seen.update(self._stats)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The last reading's gauges, and the count of failed readings."""
        failures = CounterMetricFamily(
            "dawdle_queue_stats_failures", "Readings of the queue gauges that failed."
        )
        failures.add_metric([], self.failures)
        yield failures
        if self._stats is None:
            return
        families = {
            "todo": GaugeMetricFamily(
                "dawdle_queue_jobs_todo", "Jobs waiting ('todo'), due or not.", labels=["queue"]
            ),
            "ready": GaugeMetricFamily(
                "dawdle_queue_jobs_ready", "'todo' jobs already due.", labels=["queue"]
            ),
            "doing": GaugeMetricFamily(
                "dawdle_queue_jobs_doing", "Jobs running ('doing'), anywhere.", labels=["queue"]
            ),
            "oldest_ready_seconds": GaugeMetricFamily(
                "dawdle_queue_oldest_ready_seconds",
                "Seconds since the oldest ready job was due (0: none ready).",
                labels=["queue"],
            ),
        }
        for queue in sorted(self._seen):
            stats = self._stats.get(queue) or QueueStats(queue, 0, 0, 0, 0.0)
            for field, family in families.items():
                family.add_metric([queue], getattr(stats, field))
        yield from families.values()


def _stats(row: Any) -> QueueStats:
    """A row of QUEUE_STATS as `QueueStats`."""
    age = row["oldest_ready_seconds"]
    return QueueStats(
        queue=row["queue"],
        todo=int(row["todo"]),
        ready=int(row["ready"]),
        doing=int(row["doing"]),
        oldest_ready_seconds=max(0.0, float(age)) if age is not None else 0.0,
    )


def _first_line(exc: BaseException) -> str:
    """An error's first line (psycopg puts the SQL on the next ones), or its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
