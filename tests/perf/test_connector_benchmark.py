"""Round trips and defer rates: Procrastinate's connector next to dawdle's, in one run.

Three configurations share one database and one pytest process: Procrastinate's own
`PsycopgConnector` (psycopg_pool) on asyncio, and `dawdle.PsycopgConnector` on asyncio and on
Trio. Each round runs every configuration once, in a rotating order, each in its own event
loop (`anyio.run`); the table shows the median of the rounds, so that machine noise falls on
all three alike. Both pools hold `POOL_SIZE` connections, opened before anything is timed, and
the jobs table is emptied before each measurement. Only sanity facts are asserted (every
deferred job is in `procrastinate_jobs`), never a speed.
"""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import procrastinate
import pytest

import dawdle

ROUNDS = 5
POOL_SIZE = 10
ROUND_TRIPS = 1_500  # sequential SELECT 1
SINGLE_DEFERS = 600  # sequential defer_async
CONCURRENCY = 10
CONCURRENT_DEFERS = 100  # defer_async per concurrent task: CONCURRENCY x this jobs in all
BATCH_SIZE = 1_000
BATCHES = 4  # batch_defer_async calls of BATCH_SIZE jobs each

CONFIGURATIONS = ("procrastinate/asyncio", "dawdle/asyncio", "dawdle/trio")
MEASUREMENTS = (
    ("SELECT 1, sequential", "queries/s"),
    ("defer_async, sequential", "jobs/s"),
    (f"defer_async, {CONCURRENCY} tasks", "jobs/s"),
    (f"batch_defer_async x{BATCH_SIZE}", "jobs/s"),
)
CPU = "client CPU µs/op: "
TRUNCATE = "TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE"
COUNT_JOBS = "SELECT count(*) AS n FROM procrastinate_jobs WHERE task_name = 'bench'"


def make_app(configuration: str, dsn: str) -> procrastinate.App:
    if configuration.startswith("procrastinate"):
        connector: Any = procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        app = procrastinate.App(connector=connector)
    else:
        app = dawdle.App(
            connector=dawdle.PsycopgConnector(conninfo=dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        )

    @app.task(name="bench", queue="bench")
    async def bench(n: int) -> None: ...

    return app


@contextmanager
def stopwatch(results: dict[str, float], name: str, operations: int) -> Iterator[None]:
    """Operations per second under `name`, and this process's CPU µs per operation under CPU."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    yield
    results[name] = operations / (time.perf_counter() - started)
    results[CPU + name] = (time.process_time() - cpu) * 1e6 / operations


async def empty_jobs_table(app: procrastinate.App) -> None:
    await app.connector.execute_query_async(TRUNCATE)


async def check_jobs(app: procrastinate.App, ids: list[int], expected: int) -> None:
    """Every id distinct and every job in the table; then empty it for the next measurement."""
    assert len(ids) == expected
    assert len(set(ids)) == expected
    row = await app.connector.execute_query_one_async(COUNT_JOBS)
    assert row["n"] == expected
    await empty_jobs_table(app)


async def warm_up(app: procrastinate.App) -> None:
    """Use every pooled connection once, so that no measurement pays for a connect."""

    async def borrow() -> None:
        for _ in range(5):
            await app.connector.execute_query_one_async("SELECT pg_sleep(0.01)")

    async with anyio.create_task_group() as tg:
        for _ in range(POOL_SIZE):
            tg.start_soon(borrow)
    for _ in range(100):
        await app.connector.execute_query_one_async("SELECT 1 AS one")
    await empty_jobs_table(app)


async def measure(configuration: str, dsn: str) -> dict[str, float]:
    """One round of every measurement for one configuration, on the running event loop."""
    app = make_app(configuration, dsn)
    task = app.tasks["bench"]
    names = [name for name, _ in MEASUREMENTS]
    results: dict[str, float] = {}
    async with app.open_async():
        await warm_up(app)
        query = app.connector.execute_query_one_async

        with stopwatch(results, names[0], ROUND_TRIPS):
            rows = [await query("SELECT 1 AS one") for _ in range(ROUND_TRIPS)]
        assert rows == [{"one": 1}] * ROUND_TRIPS

        with stopwatch(results, names[1], SINGLE_DEFERS):
            ids = [await task.defer_async(n=n) for n in range(SINGLE_DEFERS)]
        await check_jobs(app, ids, SINGLE_DEFERS)

        ids = []

        async def defer_many(first: int) -> None:
            for n in range(first, first + CONCURRENT_DEFERS):
                ids.append(await task.defer_async(n=n))

        with stopwatch(results, names[2], CONCURRENCY * CONCURRENT_DEFERS):
            async with anyio.create_task_group() as tg:
                for worker in range(CONCURRENCY):
                    tg.start_soon(defer_many, worker * CONCURRENT_DEFERS)
        await check_jobs(app, ids, CONCURRENCY * CONCURRENT_DEFERS)

        batch = [{"n": n} for n in range(BATCH_SIZE)]
        with stopwatch(results, names[3], BATCHES * BATCH_SIZE):
            ids = [job for _ in range(BATCHES) for job in await task.batch_defer_async(*batch)]
        await check_jobs(app, ids, BATCHES * BATCH_SIZE)
    return results


def run_on(configuration: str, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    backend = configuration.rsplit("/", 1)[-1]
    return anyio.run(function, *args, backend=backend)


async def prepare_database(dsn: str) -> str:
    """Apply Procrastinate's schema (once, through dawdle's App) and return the server version."""
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, min_size=1, max_size=1))
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        row = await app.connector.execute_query_one_async("SELECT version() AS version")
    return str(row["version"])


def header(server: str) -> str:
    packages = ("dawdle", "procrastinate", "psycopg", "psycopg-pool", "anyio", "trio")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in packages)
    return (
        f"{platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({platform.python_implementation()})\n"
        f"{versions}\n"
        f"server: {server}\n"
        f"{ROUNDS} rounds; pools of {POOL_SIZE} connections; Procrastinate's connector as it "
        "comes (psycopg_pool: a transaction per query, a check on every checkout)"
    )


def table(medians: dict[str, dict[str, float]]) -> str:
    labels = ["procrastinate", "dawdle/aio", "dawdle/trio", "÷ (aio)", "÷ (trio)"]
    widths = [15, 12, 12, 9, 9]
    lines = [f"{'median of the rounds':<44}"]
    lines[0] += "".join(f"{t:>{w}}" for t, w in zip(labels, widths, strict=True))
    rows = [(name, f"{name} ({unit})", ",.0f") for name, unit in MEASUREMENTS]
    rows += [(CPU + name, CPU + name, ",.1f") for name, _ in MEASUREMENTS]
    for key, label, style in rows:
        theirs, ours_aio, ours_trio = (medians[c][key] for c in CONFIGURATIONS)
        lines.append(
            f"{label:<44}{theirs:>15{style}}{ours_aio:>12{style}}{ours_trio:>12{style}}"
            f"{ours_aio / theirs:>9.2f}{ours_trio / theirs:>9.2f}"
        )
    lines.append(
        "÷ = dawdle ÷ procrastinate: above 1 is faster for rates, below 1 is cheaper for CPU"
    )
    return "\n".join(lines)


def spread(rounds: dict[str, list[dict[str, float]]]) -> str:
    """The noisiest cell: its largest value over its smallest, across the rounds."""
    worst = max(
        (max(values) / min(values), configuration, name)
        for configuration, results in rounds.items()
        for name in results[0]
        for values in [[result[name] for result in results]]
    )
    return f"noisiest cell: {worst[2]!r} on {worst[1]}, max/min over the rounds {worst[0]:.2f}"


@pytest.mark.perf
def test_connector_round_trips_and_defer_rates(database_dsn: str) -> None:
    """Round trips and defer rates of Procrastinate's connector and dawdle's, side by side."""
    started = time.perf_counter()
    server = anyio.run(prepare_database, database_dsn, backend="asyncio")
    rounds: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGURATIONS}
    for round_number in range(ROUNDS):
        # Rotate the order so that no configuration always runs first (or last).
        shift = round_number % len(CONFIGURATIONS)
        for configuration in CONFIGURATIONS[shift:] + CONFIGURATIONS[:shift]:
            rounds[configuration].append(
                run_on(configuration, measure, configuration, database_dsn)
            )
    medians = {
        configuration: {
            name: statistics.median(result[name] for result in results) for name in results[0]
        }
        for configuration, results in rounds.items()
    }
    print(f"\n{header(server)}\n{table(medians)}\n{spread(rounds)}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    assert all(rate > 0 for results in medians.values() for rate in results.values())
