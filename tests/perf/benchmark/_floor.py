"""The plain-SQL floor: the fastest a client can drain Procrastinate's schema, and a deep drain.

The floor is one synchronous psycopg connection looping on two prepared statements: claim
FLOOR_BATCH todo jobs with `FOR UPDATE SKIP LOCKED` in one `UPDATE ... RETURNING`, then mark
them succeeded with one `UPDATE ... WHERE id = ANY(...)`, the schema's triggers firing as
usual. No task runs, nothing is decoded but the ids: what is left is the database's own cost
of a claim and an outcome, the floor under any worker on this schema.

In the same round every configuration drains the same queue (DRAIN_DEPTH no-op jobs,
concurrency DRAIN_CONCURRENCY) and the table shows each one's rate beside the floor's.
"""

from __future__ import annotations

import time
from typing import Final

import psycopg

from tests.perf.benchmark._configurations import rotations, work
from tests.perf.benchmark._database import refill, tally
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

DRAIN_DEPTH: Final = 20_000
QUICK_DRAIN_DEPTH: Final = 5_000
DRAIN_CONCURRENCY: Final = 50
FLOOR_BATCH: Final = 100
DRAIN_WINDOW: Final = 20.0  # seconds; a slower worker is timed over this window (Procrastinate)

CLAIM: Final = """
UPDATE procrastinate_jobs AS job SET status = 'doing'
  FROM (SELECT id FROM procrastinate_jobs
         WHERE status = 'todo' AND queue_name = 'default'
         ORDER BY priority DESC, id
         LIMIT %(batch)s
           FOR UPDATE SKIP LOCKED) AS ready
 WHERE job.id = ready.id
RETURNING job.id
"""
SUCCEED: Final = """
UPDATE procrastinate_jobs SET status = 'succeeded', attempts = attempts + 1
 WHERE id = ANY(%(ids)s)
"""


def floor_rate(dsn: str, jobs: int) -> float:
    """Jobs/s of the plain-SQL loop draining the `jobs` todo jobs in the queue."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")  # connected before the clock starts
        drained = 0
        started = time.perf_counter()
        while True:
            rows = conn.execute(CLAIM, {"batch": FLOOR_BATCH}, prepare=True).fetchall()
            if not rows:
                break
            conn.execute(SUCCEED, {"ids": [row[0] for row in rows]}, prepare=True)
            drained += len(rows)
        elapsed = time.perf_counter() - started
    assert drained == jobs, f"the floor drained {drained} of {jobs} jobs"
    return jobs / elapsed


def _drain(configuration: str, dsn: str, depth: int) -> tuple[float, float]:
    """Jobs/s and client CPU µs per job of one configuration draining `depth` no-op jobs."""
    refill(dsn, depth)
    run = work(configuration, dsn, concurrency=DRAIN_CONCURRENCY, window=DRAIN_WINDOW)
    succeeded = tally(dsn, total=depth).succeeded
    assert succeeded == run.worked > 0, "the worker's count and the table disagree"
    return succeeded / run.elapsed, run.cpu * 1e6 / succeeded


def measure(dsn: str, settings: Settings) -> Section:
    """Each configuration's deep drain, and the floor's, in every round."""
    depth = DRAIN_DEPTH if settings.mode == "full" else QUICK_DRAIN_DEPTH
    key = f"drain.c{DRAIN_CONCURRENCY}"
    rate = Metric(key, f"no-op, depth {depth:,}, concurrency {DRAIN_CONCURRENCY} (jobs/s)")
    cpu = Metric(
        f"{key}.cpu",
        f"no-op, depth {depth:,}, concurrency {DRAIN_CONCURRENCY} (client CPU µs/job)",
        "lower",
        in_table=False,
    )
    for order in rotations(settings.rounds):
        refill(dsn, depth)
        rate.floor.append(floor_rate(dsn, depth))
        for configuration in order:
            jobs_per_second, micros = _drain(configuration, dsn, depth)
            rate.add(configuration, jobs_per_second)
            cpu.add(configuration, micros)
    return Section(
        "deep drain and the plain-SQL floor",
        [rate, cpu],
        notes=[
            f"floor: one psycopg connection claiming {FLOOR_BATCH} jobs per UPDATE ... "
            "FOR UPDATE SKIP LOCKED RETURNING and marking them succeeded by id = ANY(...); "
            "÷ floor = dawdle's rate ÷ the floor's (aio/trio), measured in the same round; a "
            f"worker not done after {DRAIN_WINDOW:g} s is stopped and rated over that window"
        ],
    )
