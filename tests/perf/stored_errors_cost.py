"""What stored errors cost: drains of jobs that fail once then succeed, with and without them.

`python -m tests.perf.stored_errors_cost [--jobs N] [--rounds N] [--concurrency N]
[--cases stored,unstored,success]` on DAWDLE_TEST_DSN's server, in a database of its own
(dropped at the end). Each drain fills the queue, works it with `wait=False,
listen_notify=False` and gives jobs/s (jobs, not runs) over the worker's whole run, and this
process's CPU per job (the worker's own cost, less sensitive to a busy machine). "unstored"
turns stored errors off in the store (the statement without its `errors` CTE, as when the
table is missing). The success drain is the path stored errors must leave unchanged:
compare it with the same script run on the code before them (PYTHONPATH pointing at a copy
of that code's package).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
from procrastinate import schema
from psycopg import conninfo, sql

from dawdle import App, PsycopgConnector, RetryPolicy
from dawdle._dawdle_schema import DAWDLE_SCHEMA
from dawdle._worker.store import JobStore
from dawdle.backoff import Constant

FILL = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT 'default', %(task)s, '{}'::jsonb FROM generate_series(1, %(jobs)s)
"""
CHECK = """
SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempts = %(attempts)s) AS done,
       (SELECT count(*) FROM dawdle_job_errors) AS errors
  FROM procrastinate_jobs
"""


@contextlib.contextmanager
def database(server: str) -> Iterator[str]:
    """A new database with Procrastinate's schema and dawdle's tables; dropped at the end."""
    name = f"dawdle_errors_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = conninfo.make_conninfo(server, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema.SchemaManager.get_schema())
            conn.execute(DAWDLE_SCHEMA)
        yield dsn
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def refill(dsn: str, task: str, jobs: int) -> None:
    """Only `jobs` todo jobs of `task`, tables vacuumed and checkpointed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE")
        conn.execute(FILL, {"task": task, "jobs": jobs})
        for table in ("procrastinate_jobs", "procrastinate_events", "dawdle_job_errors"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        conn.execute("CHECKPOINT")


def errors_stored(on: bool) -> None:
    """Turn stored errors on or off in every JobStore (no-op on code without them)."""
    original: Any = JobStore.__dict__.get("_original_record", JobStore.record)
    if "store_errors" not in inspect.signature(original).parameters:
        return
    JobStore._original_record = original  # type: ignore[attr-defined]
    record = original if on else functools.partialmethod(original, store_errors=False)
    JobStore.record = record  # type: ignore[method-assign]


async def drain(dsn: str, concurrency: int) -> float:
    """Seconds a worker takes to work the queue empty."""
    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=2, max_size=4))
    policy = RetryPolicy(max_attempts=2, backoff=Constant(0.0))

    @app.task(name="flaky", retry=policy, pass_context=True)
    async def flaky(context: Any) -> None:
        if context.job.attempts == 0:
            raise ConnectionError("upstream refused the connection")

    @app.task(name="noop")
    async def noop() -> None:
        pass

    async with app.open_async():
        started = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency,
            wait=False,
            listen_notify=False,
            install_signal_handlers=False,
        )
        return time.perf_counter() - started


# Each case: its label, its task, whether errors are stored, the attempts of a job at the end.
CASES = {
    "stored": ("fail once, errors stored", "flaky", True, 2),
    "unstored": ("fail once, errors not stored", "flaky", False, 2),
    "success": ("success only", "noop", True, 1),
}


def measure(
    dsn: str, *, jobs: int, rounds: int, concurrency: int, cases: list[str]
) -> dict[str, list[float]]:
    """Jobs/s of each (case, runtime) over `rounds` rounds, configurations interleaved."""
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, task, on, attempts in (CASES[case] for case in cases):
            for backend in ("asyncio", "trio"):
                refill(dsn, task, jobs)
                errors_stored(on)
                cpu = time.process_time()
                seconds = anyio.run(drain, dsn, concurrency, backend=backend)
                cpu = time.process_time() - cpu
                with psycopg.connect(dsn) as conn:
                    row = conn.execute(CHECK, {"attempts": attempts}).fetchone()
                assert row is not None
                assert row[0] == jobs, f"{label}: {row[0]} of {jobs} jobs done"
                expected = jobs if (task == "flaky" and on and _has_errors()) else 0
                assert row[1] == expected, f"{label}: {row[1]} error rows, not {expected}"
                rates.setdefault(f"{label} [{backend}]", []).append(jobs / seconds)
                rates.setdefault(f"{label} [{backend}] CPU µs/job", []).append(cpu * 1e6 / jobs)
    return rates


def _has_errors() -> bool:
    try:
        import dawdle._worker.stored_errors  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def main() -> None:
    """Run the drains and print the median jobs/s of each configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--cases", default=",".join(CASES), help="of " + ", ".join(CASES))
    args = parser.parse_args()
    server = os.environ.get("DAWDLE_TEST_DSN")
    if not server:
        parser.error("set DAWDLE_TEST_DSN to a PostgreSQL server's connection string")
    with database(server) as dsn:
        rates = measure(
            dsn,
            jobs=args.jobs,
            rounds=args.rounds,
            concurrency=args.concurrency,
            cases=args.cases.split(","),
        )
    print(f"{args.jobs:,} jobs, concurrency {args.concurrency}, median of {args.rounds} rounds")
    for label, values in rates.items():
        spread = ", ".join(f"{value:,.0f}" for value in values)
        unit = "" if label.endswith("µs/job") else " jobs/s"
        print(f"{label:58} {statistics.median(values):>8,.0f}{unit}  ({spread})")


if __name__ == "__main__":
    main()
