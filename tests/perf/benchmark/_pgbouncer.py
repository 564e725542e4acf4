"""The pooler scenario: what PgBouncer, and switching prepared statements off, cost.

`python -m tests.perf.benchmark --scenario pgbouncer` (needs /usr/sbin/pgbouncer). Each
route is one way to reach the same database, with dawdle's connector (pool of 10):

- `direct`: straight to PostgreSQL, psycopg preparing statements (dawdle's default);
- `direct, unprepared`: the same with prepare_threshold=None;
- `session`: through PgBouncer in session mode (pool_size 10), statements prepared;
- `transaction`: through PgBouncer in transaction mode, `pooler="transaction"` (unprepared).

For each, on asyncio and on Trio: sequential `defer_async`, `defer_async` from 10 tasks,
and no-op jobs worked by one worker (concurrency 10, polling) from a queue of `--quick`
1,000 / 5,000 jobs; the median of 1 / 3 rounds, routes in rotated order. The database has
`synchronous_commit = off` for the run: a commit's wait for the disk is the same on every
route and, on a shared machine, by far its noisiest part; what differs is the path to it.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
from collections.abc import Iterator
from typing import Any, Final

import anyio
import psycopg
from psycopg import sql

import dawdle
from tests.perf.benchmark._database import TRUNCATE, refill, tally
from tests.perf.benchmark._report import machine, versions
from tests.topologies.pgbouncer import PGBOUNCER, pgbouncer

POOL: Final = 10
ROUTES: Final = ("direct", "direct, unprepared", "session", "transaction")
BACKENDS: Final = ("asyncio", "trio")


@contextlib.contextmanager
def routes(dsn: str) -> Iterator[dict[str, tuple[str, dict[str, Any]]]]:
    """Each route's DSN and connector options; the two PgBouncers stopped at the end."""
    with (
        pgbouncer(dsn, "session", pool_size=POOL) as session,
        pgbouncer(dsn, "transaction", pool_size=POOL) as transaction,
    ):
        yield {
            "direct": (dsn, {}),
            "direct, unprepared": (dsn, {"prepare_threshold": None}),
            "session": (session, {"pooler": "session"}),
            "transaction": (transaction, {"pooler": "transaction"}),
        }


def _app(dsn: str, options: dict[str, Any]) -> dawdle.App:
    connector = dawdle.PsycopgConnector(conninfo=dsn, min_size=POOL, max_size=POOL, **options)
    app = dawdle.App(connector=connector)

    @app.task(name="noop")
    async def noop(i: int) -> None:
        return None

    return app


async def _defers(dsn: str, options: dict[str, Any], jobs: int) -> tuple[float, float]:
    """Sequential and concurrent (10 tasks) defer_async jobs/s."""
    app = _app(dsn, options)
    task = app.tasks["noop"]
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        started = time.perf_counter()
        for i in range(jobs):
            await task.defer_async(i=i)
        sequential = jobs / (time.perf_counter() - started)

        async def defer_many(first: int) -> None:
            for i in range(first, jobs, POOL):
                await task.defer_async(i=i)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for first in range(POOL):
                tg.start_soon(defer_many, first)
        concurrent = jobs / (time.perf_counter() - started)
        row = await app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs"
        )
        assert row["n"] == 2 * jobs
    return sequential, concurrent


async def _worked(dsn: str, options: dict[str, Any]) -> float:
    """Seconds one worker took to drain the queue (polling, concurrency 10)."""
    app = _app(dsn, options)
    async with app.open_async():
        started = time.perf_counter()
        await app.run_worker_async(
            wait=False, concurrency=POOL, listen_notify=False, install_signal_handlers=False
        )
        return time.perf_counter() - started


def _cell(values: list[float]) -> str:
    """The median, and the range of the rounds: the noise of the machine is in plain sight."""
    text = f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"
    return f"{text:>20}"


def main(dsn: str, *, quick: bool) -> None:
    """Measure every route on both backends; print the table."""
    jobs, depth, rounds = (500, 1_000, 1) if quick else (2_000, 5_000, 3)
    figures: dict[tuple[str, str], dict[str, list[float]]] = {
        (route, backend): {"sequential": [], "concurrent": [], "worked": []}
        for route in ROUTES
        for backend in BACKENDS
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                sql.Identifier(conn.info.dbname)
            )
        )
    with routes(dsn) as by_route:
        for number in range(rounds):
            order = ROUTES[number % len(ROUTES) :] + ROUTES[: number % len(ROUTES)]
            for route in order:
                route_dsn, options = by_route[route]
                for backend in BACKENDS:
                    row = figures[route, backend]
                    sequential, concurrent = anyio.run(
                        _defers, route_dsn, options, jobs, backend=backend
                    )
                    row["sequential"].append(sequential)
                    row["concurrent"].append(concurrent)
                    refill(dsn, depth)
                    seconds = anyio.run(_worked, route_dsn, options, backend=backend)
                    assert tally(dsn, total=depth).succeeded == depth
                    row["worked"].append(depth / seconds)
    host = machine()
    with psycopg.connect(dsn) as conn:
        server = conn.execute("SELECT version()").fetchone()
    print(f"{host['platform']}, {host['cores']} cores, Python {host['python']}")
    print(", ".join(f"{name} {version}" for name, version in versions().items()))
    bouncer = subprocess.run(  # noqa: S603 (a fixed program)
        [PGBOUNCER, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    print(f"server: {server[0] if server else '?'}; {bouncer}")
    print(
        f"median of {rounds} round(s); defers: {jobs:,} each; worked: a queue of {depth:,}; "
        "synchronous_commit = off"
    )
    print(f"{'route':<20} {'backend':<8} {'defer seq/s':>12} {'defer x10/s':>12} {'worked/s':>10}")
    for (route, backend), row in figures.items():
        cells = " ".join(_cell(row[name]) for name in ("sequential", "concurrent", "worked"))
        print(f"{route:<20} {backend:<8} {cells}")
