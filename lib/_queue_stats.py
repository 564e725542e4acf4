"""Each queue's waiting, ready and running jobs (and failed ones, apart), as one row type.

`dawdle queues`, the dashboard's overview and the Prometheus gauges all read them here,
with the statements of `dawdle._sql.queues`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from dawdle._sql import ACTIVE_QUEUES, FAILED_QUEUES


class Queries(Protocol):
    """What reading the queues needs of a connector: Procrastinate's `execute_query_all_async`."""

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


async def read_queue_stats(connector: Queries) -> dict[str, QueueStats]:
    """Each queue with waiting or running jobs, by name (Procrastinate's partial index)."""
    rows = await connector.execute_query_all_async(ACTIVE_QUEUES)
    return {row["queue"]: _stats(row) for row in rows}


async def read_failed(connector: Queries) -> dict[str, int]:
    """Each queue's failed jobs, by name (a scan of the jobs table without their index)."""
    rows = await connector.execute_query_all_async(FAILED_QUEUES)
    return {row["queue"]: int(row["failed"]) for row in rows}


def shown_counts(stats: QueueStats | None, failed: int) -> dict[str, Any]:
    """What `dawdle queues` and the dashboard show of a queue.

    oldest_ready_age is None (shown as '-') when no job is ready.
    """
    return {
        "todo": stats.todo if stats else 0,
        "doing": stats.doing if stats else 0,
        "failed": failed,
        "oldest_ready_age": stats.oldest_ready_seconds if stats and stats.ready else None,
    }


def _stats(row: Any) -> QueueStats:
    """A row of ACTIVE_QUEUES as `QueueStats`."""
    age = row["oldest_ready_seconds"]
    return QueueStats(
        queue=row["queue"],
        todo=int(row["todo"]),
        ready=int(row["ready"]),
        doing=int(row["doing"]),
        oldest_ready_seconds=max(0.0, float(age)) if age is not None else 0.0,
    )
