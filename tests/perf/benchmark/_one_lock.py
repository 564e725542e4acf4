"""One claim on a queue of 300,000 todo jobs sharing one lock: milliseconds, side by side.

Only the lock's first job may run, so a claim must pass over all the others. Procrastinate's
claim is `procrastinate_fetch_job_v2` (one job at a time); dawdle's is `_sql.FETCH_JOBS`,
asked for one job, and for as many as its worker at concurrency 10 asks for (it then passes
over every waiting job of the lock to look for more). Each claim runs in a transaction
rolled back, through the configuration's own connector and runtime, so that every claim
meets the same queue; the median of `CLAIMS` claims is the round's figure.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Final

import psycopg

from dawdle._sql import FETCH_JOBS
from tests.perf.benchmark._configurations import (
    is_procrastinate,
    make_bench,
    opened,
    rotations,
    run_on,
)
from tests.perf.benchmark._database import TRUNCATE
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

JOBS: Final = 300_000
CLAIMS: Final = 5
FILL_ONE_LOCK: Final = """
INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args)
SELECT 'default', 'noop', 'the-lock', jsonb_build_object('i', n)
  FROM generate_series(1, %(jobs)s) AS n
"""
PROCRASTINATE_CLAIM: Final = "SELECT id FROM procrastinate_fetch_job_v2(NULL, %(worker_id)s)"


def _fill(dsn: str) -> int:
    """The queue of JOBS jobs of one lock, fresh statistics; the id of a registered worker."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)
        # The triggers' events and NOTIFYs play no part in a claim: filled without them.
        with conn.transaction():
            conn.execute("ALTER TABLE procrastinate_jobs DISABLE TRIGGER USER")
            conn.execute(FILL_ONE_LOCK, {"jobs": JOBS})
            conn.execute("ALTER TABLE procrastinate_jobs ENABLE TRIGGER USER")
        conn.execute("VACUUM ANALYZE procrastinate_jobs")
        row = conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        worker = row.fetchone()
        assert worker is not None
        return int(worker[0])


async def _claims(configuration: str, dsn: str, worker_id: int, limit: int) -> float:
    """Median milliseconds of CLAIMS claims, each rolled back."""
    bench = make_bench(configuration, dsn)
    connector: Any = bench.app.connector
    times: list[float] = []
    async with opened(bench):
        for _ in range(CLAIMS):
            source = connector.pool if is_procrastinate(configuration) else connector
            async with source.connection() as conn, conn.transaction(force_rollback=True):
                started = time.perf_counter()
                if is_procrastinate(configuration):
                    cursor = await conn.execute(PROCRASTINATE_CLAIM, {"worker_id": worker_id})
                else:
                    cursor = await conn.execute(
                        FETCH_JOBS,
                        {
                            "queues": None,
                            "task_names": ["noop"],
                            "limit": limit,
                            "worker_id": worker_id,
                        },
                    )
                rows = await cursor.fetchall()
                times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == 1, "one job of the lock, and only one, is claimable"
    return statistics.median(times)


def measure(dsn: str, settings: Settings) -> Section:
    """Claim latency on one lock's 300,000 jobs, for a claim of 1 and of `concurrency`."""
    limits = (1, settings.concurrency)
    metrics = {
        limit: Metric(
            f"one_lock.claim{limit}",
            f"claim, one lock, {JOBS:,} jobs (dawdle takes {limit}; ms)",
            better="lower",
            style=",.1f",
        )
        for limit in limits
    }
    worker_id = _fill(dsn)
    for order in rotations(settings.rounds):
        for configuration in order:
            for limit, metric in metrics.items():
                if is_procrastinate(configuration) and limit != limits[0]:
                    # Procrastinate's claim takes one job whatever the worker's concurrency.
                    metric.add(configuration, metrics[limits[0]].values[configuration][-1])
                    continue
                milliseconds = run_on(configuration, _claims, configuration, dsn, worker_id, limit)
                metric.add(configuration, milliseconds)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)
    return Section(
        "one lock",
        list(metrics.values()),
        notes=[
            f"{JOBS:,} todo jobs of one lock, fresh statistics; median of {CLAIMS} claims, "
            "each rolled back; Procrastinate's claim takes one job"
        ],
    )
