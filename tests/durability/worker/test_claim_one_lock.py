"""The claim on a deep queue of one lock: only the lock's first ready job, the rest passed over.

The claim (`_sql.FETCH_JOBS`) checks a locked job by looking up its lock's first ready job
(and the running ones once per claim); these scenarios pin what that check must keep: the
lock's order by priority then id, across tasks this worker does not know, and jobs without
a lock found behind the lock's waiting ones.
"""

from __future__ import annotations

from typing import Any

import pytest
from procrastinate import jobs

from dawdle import App
from dawdle._sql import FETCH_JOBS
from tests.durability.worker.helpers import postgres_only

pytestmark = [
    pytest.mark.anyio,
    postgres_only("the claim statement itself, on PostgreSQL's planner"),
]

LOCKED = 2_000


def _job(n: int, *, lock: str | None = None, priority: int = 0, task: str = "one.noop") -> jobs.Job:
    return jobs.Job(
        id=None,
        queue="default",
        task_name=task,
        task_kwargs={"n": n},
        lock=lock,
        queueing_lock=None,
        priority=priority,
    )


async def _claim(app: App, worker_id: int, limit: int) -> list[dict[str, Any]]:
    return await app.connector.execute_query_all_async(
        FETCH_JOBS, queues=None, task_names=["one.noop"], limit=limit, worker_id=worker_id
    )


async def _finish(app: App, job_ids: list[int]) -> None:
    await app.connector.execute_query_async(
        "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = ANY(%(ids)s)",
        ids=job_ids,
    )


async def test_a_deep_lock_gives_one_job_at_a_time_in_its_order(app: App) -> None:
    """Thousands of jobs of one lock, then free jobs: a claim takes the head and the free ones."""
    locked = await app.job_manager.batch_defer_jobs_async(
        [_job(n, lock="L") for n in range(LOCKED)]
    )
    free = await app.job_manager.batch_defer_jobs_async([_job(-n) for n in range(1, 6)])
    row = await app.connector.execute_query_one_async(
        "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
    )
    worker_id = row["id"]

    first = await _claim(app, worker_id, limit=20)
    assert sorted(r["id"] for r in first) == sorted([locked[0].id, *(job.id for job in free)])
    # The head runs: nothing of the lock until it ends, then the next in id order.
    assert await _claim(app, worker_id, limit=20) == []
    await _finish(app, [locked[0].id])
    assert [r["id"] for r in await _claim(app, worker_id, limit=20)] == [locked[1].id]


async def test_the_lock_order_holds_across_priorities_and_unknown_tasks(app: App) -> None:
    """A later job of higher priority comes first; a ready job of an unknown task blocks."""
    (low,) = await app.job_manager.batch_defer_jobs_async([_job(1, lock="L")])
    (high,) = await app.job_manager.batch_defer_jobs_async([_job(2, lock="L", priority=5)])
    (foreign,) = await app.job_manager.batch_defer_jobs_async(
        [_job(3, lock="M", task="other.task")]
    )
    (blocked,) = await app.job_manager.batch_defer_jobs_async([_job(4, lock="M")])
    row = await app.connector.execute_query_one_async(
        "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
    )
    worker_id = row["id"]

    assert [r["id"] for r in await _claim(app, worker_id, limit=10)] == [high.id]
    await _finish(app, [high.id])
    assert [r["id"] for r in await _claim(app, worker_id, limit=10)] == [low.id]
    await _finish(app, [foreign.id])
    assert [r["id"] for r in await _claim(app, worker_id, limit=10)] == [blocked.id]
