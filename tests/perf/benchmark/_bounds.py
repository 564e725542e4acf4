"""Bounds measured beside dawdle in the same run: what no worker or producer on psycopg beats.

- `bare_worker_cpu`: the client CPU per job of the least an asyncio worker on psycopg does
  with dawdle's own two statements: claim a batch (`FETCH_JOBS`), start one task per job
  (its arguments unpacked into a no-op coroutine), record the batch's outcomes
  (`RECORD_OUTCOMES`). No hooks, logging, leases or retries: whatever dawdle's worker spends
  above it is its own machinery. Asyncio only: psycopg's async connection runs on asyncio.
- `commit_ceiling`: how many single-row inserts into `procrastinate_jobs` one sequential
  client commits per second (psycopg, autocommit, no dawdle and no Procrastinate code): a
  producer that defers one job at a time and waits for each defer cannot go faster here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import psycopg

from dawdle._sql.claims import FETCH_JOBS
from dawdle._sql.outcomes import RECORD_OUTCOMES
from tests.perf.benchmark._database import refill

COMMITS: Final = 2_000  # single-row inserts timed by `commit_ceiling`
INSERT_ONE: Final = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES ('default', 'pause', %s)
"""


async def _noop(**arguments: Any) -> None:
    """A job that does nothing."""


def _outcomes(ids: list[int], worker_id: int) -> dict[str, Any]:
    """`RECORD_OUTCOMES` parameters for a batch of successes."""
    n = len(ids)
    return {
        "ids": ids,
        "statuses": ["succeeded"] * n,
        "retry_at": [None] * n,
        "priorities": [None] * n,
        "queues": [None] * n,
        "locks": [None] * n,
        "spent": [True] * n,
        "worker_id": worker_id,
    }


async def _bare_loop(dsn: str, jobs: int, batch: int) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        row = await cursor.fetchone()
        assert row is not None
        worker_id, claim = row[0], {"queues": None, "task_names": ["noop"], "limit": batch}
        worked, cpu = 0, time.process_time()
        while True:
            cursor = await conn.execute(FETCH_JOBS, {**claim, "worker_id": worker_id})
            rows = await cursor.fetchall()
            if not rows:
                break
            await asyncio.gather(*(asyncio.create_task(_noop(**row[6])) for row in rows))
            await conn.execute(RECORD_OUTCOMES, _outcomes([row[0] for row in rows], worker_id))
            worked += len(rows)
        cpu = time.process_time() - cpu
        await conn.execute("DELETE FROM procrastinate_workers WHERE id = %s", [worker_id])
    assert worked == jobs, f"the bare loop worked {worked} of {jobs} jobs"
    return cpu * 1e6 / jobs


def bare_worker_cpu(dsn: str, jobs: int, batch: int) -> float:
    """Client CPU µs per job of the bare asyncio loop draining `jobs` no-op jobs by `batch`."""
    refill(dsn, jobs)
    return asyncio.run(_bare_loop(dsn, jobs, batch))


def commit_ceiling(dsn: str) -> float:
    """Single-row inserts committed per second by one sequential client."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(INSERT_ONE, ['{"i": 0}'], prepare=True)
        started = time.perf_counter()
        for number in range(COMMITS):
            conn.execute(INSERT_ONE, [f'{{"i": {number}}}'], prepare=True)
        elapsed = time.perf_counter() - started
        conn.execute("DELETE FROM procrastinate_jobs WHERE task_name = 'pause'")
    return COMMITS / elapsed
