"""`python -m tests.perf.prune_under_load [--dsn DSN] [--jobs N]`: a big prune beside a busy worker.

On a fresh database: N (1,000,000) jobs that succeeded 8 days ago (three events each, as
Procrastinate's triggers leave them), then a worker at full speed on a backlog of no-op
jobs kept topped up. Its throughput is measured for `BASELINE` seconds alone, then while
`dawdle._retention.prune` deletes the N old jobs (statuses 'succeeded', older than 7
days, in its small batches). Prints the machine, versions, both rates and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Final

import anyio
import psycopg

import dawdle
from dawdle._retention import prune
from tests.perf.benchmark._database import fresh_database, server, server_version
from tests.perf.benchmark._report import machine, versions

BASELINE: Final = 30.0
CONCURRENCY: Final = 10
# The worker's backlog is topped up to LOW..LOW + TOP_UP ready jobs every half second.
LOW: Final = 20_000
TOP_UP: Final = 20_000

OLD_JOBS = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
SELECT 'default', 'old', jsonb_build_object('i', n), 'succeeded', 1
  FROM generate_series(1, %(jobs)s) AS n
"""
OLD_EVENTS = """
INSERT INTO procrastinate_events (job_id, type, at)
SELECT job.id, event.type::procrastinate_job_event_type, now() - interval '8 days' + event.shift
  FROM procrastinate_jobs AS job
 CROSS JOIN (VALUES ('deferred', interval '0'), ('started', interval '1 s'),
                    ('succeeded', interval '2 s')) AS event(type, shift)
 WHERE job.task_name = 'old'
 ORDER BY job.id, event.shift
"""
BACKLOG = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT 'default', 'noop', '{}' FROM generate_series(1, %(jobs)s)
"""
READY = "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'"


def fill(dsn: str, jobs: int) -> None:
    """The old jobs and their events, then VACUUM ANALYZE and a checkpoint."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(OLD_JOBS, {"jobs": jobs})
        conn.execute(OLD_EVENTS)
        conn.execute(BACKLOG, {"jobs": LOW + TOP_UP})
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


async def top_up_forever(app: dawdle.App) -> None:
    """Keep the worker's backlog of ready jobs from running dry."""
    while True:
        row = await app.connector.execute_query_one_async(READY)
        if row["n"] < LOW:
            await app.connector.execute_query_async(BACKLOG, jobs=TOP_UP)
        await anyio.sleep(0.5)


def done(worker: dawdle.Worker) -> int:
    """Jobs the worker has finished so far."""
    return sum(worker.stats.jobs.values())


async def measure(dsn: str, jobs: int) -> dict[str, Any]:
    """Run the worker alone for BASELINE seconds, then beside the prune; the rates."""
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, max_size=20))

    @app.task(name="noop")
    async def noop() -> None:
        """Nothing: the worker's overhead is what is measured."""

    admin = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, max_size=2))
    worker = dawdle.Worker(app, concurrency=CONCURRENCY, install_signal_handlers=False)
    async with app.open_async(), admin.open_async(), anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        tg.start_soon(top_up_forever, admin)
        await anyio.sleep(5.0)  # warm up: pool filled, claims in their rhythm
        start, before = time.monotonic(), done(worker)
        await anyio.sleep(BASELINE)
        baseline = (done(worker) - before) / (time.monotonic() - start)
        start, before = time.monotonic(), done(worker)
        outcome = await prune(admin.connector, statuses=["succeeded"], older_than=7 * 86400.0)
        pruned = 0 if outcome is None else outcome.deleted
        prune_seconds = time.monotonic() - start
        during = (done(worker) - before) / prune_seconds
        worker.stop()
        tg.cancel_scope.cancel()
    return {
        "jobs": jobs,
        "pruned": pruned,
        "prune_seconds": prune_seconds,
        "baseline": baseline,
        "during": during,
    }


def main() -> None:
    """Parse the options, run once, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m tests.perf.prune_under_load")
    parser.add_argument("--dsn", help="the server (default: $DAWDLE_TEST_DSN, else embedded)")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="old jobs to prune")
    args = parser.parse_args()
    with server(args.dsn) as (server_dsn, _), fresh_database(server_dsn) as dsn:
        fill(dsn, args.jobs)
        load_before = os.getloadavg()[0]
        result = anyio.run(measure, dsn, args.jobs, backend="asyncio")
        load_after = os.getloadavg()[0]
        host = machine()
        print(f"{host['platform']}, {host['cores']} cores, Python {host['python']}")
        print(", ".join(f"{name} {version}" for name, version in versions().items()))
        print(f"server: {server_version(dsn)}")
        # The machine may be shared: its load says how far the rates can be trusted.
        print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
        print(
            f"pruned {result['pruned']:,} of {result['jobs']:,} old jobs in "
            f"{result['prune_seconds']:.1f} s ({result['pruned'] / result['prune_seconds']:,.0f}"
            " jobs/s)"
        )
        print(f"worker alone ({BASELINE:g} s): {result['baseline']:,.0f} jobs/s")
        print(f"worker during the prune: {result['during']:,.0f} jobs/s")
        print(f"ratio: {result['during'] / result['baseline']:.2f}")


if __name__ == "__main__":
    main()
