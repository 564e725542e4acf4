"""Queue gauges for Prometheus: depth and the oldest ready job's age, per queue, cached.

One statement reads every queue (`ACTIVE_QUEUES`, over the unfinished jobs' partial index:
failed jobs are not counted, which without an index scans the table); a scrape refreshes it
at most every `max_age` seconds (and at most every 20 times the last reading's duration), so
frequent scrapes cost the database one query per interval and worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final

import anyio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dawdle._queue_stats import Queries, QueueStats, read_queue_stats
from dawdle._validate import number

logger = logging.getLogger("dawdle.prometheus")

# Refreshed at most this often by default: Prometheus scrapes every 15 s or more.
DEFAULT_MAX_AGE: Final = 5.0

# A refresh that takes longer is given up (the gauges are left out of that scrape).
QUERY_TIMEOUT: Final = 5.0

# A slow reading (a backlog of a million jobs takes a few hundred ms) spaces out the next:
# not before this many times its duration, so the reading costs the database at most 5% of
# one backend per worker scraped, however often Prometheus asks.
COST_FACTOR: Final = 20


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
                    stats = await read_queue_stats(self._connector)
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
            self._stats = stats
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


def _first_line(exc: BaseException) -> str:
    """An error's first line (psycopg puts the SQL on the next ones), or its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
