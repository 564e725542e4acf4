"""Worked throughput of no-op jobs: Procrastinate's worker next to dawdle's, in one run.

Three configurations share one database and one pytest process: Procrastinate 3.10's own
worker and connector on asyncio, and dawdle's worker and `PsycopgConnector` on asyncio and on
Trio. Before every measurement the jobs table is emptied (TRUNCATE ... RESTART IDENTITY
CASCADE), filled with `depth` no-op jobs by one INSERT ... SELECT generate_series (the
triggers fire as for a defer), then VACUUM ANALYZEd and CHECKPOINTed, so that every
configuration meets the same fresh table. The worker runs with `wait=False` and
`listen_notify=False` until the queue is empty or its window is over, then is cancelled (a
graceful stop: its running jobs finish). The rate is succeeded jobs over the worker's whole
run, start-up and shutdown included. Depth 1,000 drains the queue (the depth falls as it
goes); depth 100,000 works for a fixed window, far from draining it.

Each round runs every configuration once, in a rotating order, each in its own event loop
(`anyio.run`); the table shows the median of the rounds. EXPLAIN (ANALYZE, BUFFERS) of both
claims, in a transaction rolled back, shows what one fetch costs at each depth. Only sanity
facts are asserted (no job ran twice, none failed, none left 'doing'), never a speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import os
import platform
import re
import statistics
import time
from typing import Any

import anyio
import procrastinate
import psycopg
import pytest
from psycopg.rows import dict_row

import dawdle
from dawdle._sql import FETCH_JOBS

DEPTHS = (1_000, 100_000)
CONCURRENCIES = (1, 10)
# Depth 1,000 is cheap to refill and quick to drain: median of 5. Depth 100,000 takes ~3 s
# to fill and works for a fixed window: median of 3 short windows, within a few minutes.
ROUNDS = {1_000: 5, 100_000: 3}
WINDOW = {1_000: 10.0, 100_000: 4.0}  # seconds a worker may run before it is cancelled
POOL_SIZE = 10
EXPLAIN_LIMIT = 10  # the batch dawdle claims at concurrency 10 with every slot free
EXPLAIN_REPEATS = 5  # claims explained one after another; the fastest is shown

CONFIGURATIONS = ("procrastinate/asyncio", "dawdle/asyncio", "dawdle/trio")
TRUNCATE = "TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE"
FILL = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT 'default', 'noop', jsonb_build_object('i', n) FROM generate_series(1, %(depth)s) AS n
"""
TALLY = """
SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'succeeded' AND attempts <> 1) AS not_once,
       count(*) FILTER (WHERE status = 'todo') AS todo,
       count(*) FILTER (WHERE status = 'doing') AS doing,
       count(*) FILTER (WHERE status NOT IN ('succeeded', 'todo', 'doing')) AS other
  FROM procrastinate_jobs
"""


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

    @app.task(name="noop")
    async def noop(i: int) -> None:
        pass

    return app


async def warm_up(app: procrastinate.App) -> None:
    """Use every pooled connection once, so that no measurement pays for a connect."""

    async def borrow() -> None:
        for _ in range(3):
            await app.connector.execute_query_one_async("SELECT pg_sleep(0.01)")

    async with anyio.create_task_group() as tg:
        for _ in range(POOL_SIZE):
            tg.start_soon(borrow)


async def work(configuration: str, dsn: str, concurrency: int, window: float) -> dict[str, float]:
    """Run one worker on the filled queue until it is empty or `window` is over."""
    app = make_app(configuration, dsn)
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "wait": False,
        "install_signal_handlers": False,
        "listen_notify": False,
    }
    async with app.open_async():
        await warm_up(app)
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        if configuration.startswith("procrastinate"):
            # Procrastinate handles one asyncio cancellation (a graceful stop); anyio's
            # level cancellation would cancel its shutdown too, so use asyncio's edge.
            try:
                async with asyncio.timeout(window):
                    await app.run_worker_async(**options)
            except TimeoutError:
                pass
        else:
            with anyio.move_on_after(window):
                await app.run_worker_async(**options)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"elapsed": elapsed, "cpu": cpu}


def refill(dsn: str, depth: int) -> None:
    """Empty the jobs table, fill it with `depth` todo jobs, and leave it fresh."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)
        conn.execute(FILL, {"depth": depth})
        conn.execute("VACUUM ANALYZE procrastinate_jobs")
        conn.execute("VACUUM ANALYZE procrastinate_events")
        # No dirty page of the fill left for a checkpoint inside a window (needs superuser).
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def tally(dsn: str, depth: int) -> dict[str, int]:
    """What became of the jobs, with the sanity facts asserted."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(TALLY).fetchone()
    assert row is not None
    assert row["not_once"] == 0, "a succeeded job ran more than once"
    assert row["doing"] == 0, "a job was left 'doing' after the worker stopped"
    assert row["other"] == 0, "a no-op job failed or was aborted"
    assert row["succeeded"] + row["todo"] == depth
    assert row["succeeded"] > 0
    return dict(row)


def measure(configuration: str, dsn: str, depth: int, concurrency: int) -> dict[str, float]:
    refill(dsn, depth)
    backend = configuration.rsplit("/", 1)[-1]
    result = anyio.run(work, configuration, dsn, concurrency, WINDOW[depth], backend=backend)
    jobs = tally(dsn, depth)["succeeded"]
    return {
        "jobs/s": jobs / result["elapsed"],
        "cpu": result["cpu"] * 1e6 / jobs,
        "jobs": jobs,
        "seconds": result["elapsed"],
    }


def execution_ms(plan: list[str]) -> float:
    found = [re.search(r"Execution Time: ([\d.]+) ms", line) for line in plan]
    return next(float(match.group(1)) for match in found if match)


def explain_fetches(dsn: str, depth: int) -> tuple[float, float, list[str]]:
    """Fastest ms of dawdle's claim of EXPLAIN_LIMIT jobs and of Procrastinate's, and a plan.

    Both run in one transaction that is rolled back, so the claimed jobs stay 'todo'. The
    fastest of the repeats is the cost of the plan itself, the least disturbed by whatever
    else the machine was doing.
    """
    refill(dsn, depth)
    ours: list[float] = []
    theirs: list[float] = []
    plans: list[list[str]] = []
    with psycopg.connect(dsn) as conn:
        worker_id = conn.execute(
            "SELECT worker_id FROM procrastinate_register_worker_v1()"
        ).fetchone()
        assert worker_id is not None
        for _ in range(EXPLAIN_REPEATS):
            cursor = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + FETCH_JOBS,
                {"queues": None, "limit": EXPLAIN_LIMIT, "worker_id": worker_id[0]},
            )
            plans.append([row[0] for row in cursor.fetchall()])
            ours.append(execution_ms(plans[-1]))
            cursor = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS) "
                "SELECT * FROM procrastinate_fetch_job_v2(NULL::varchar[], %(worker_id)s)",
                {"worker_id": worker_id[0]},
            )
            theirs.append(execution_ms([row[0] for row in cursor.fetchall()]))
        conn.rollback()
    return min(ours), min(theirs), plans[ours.index(min(ours))]


async def prepare_database(dsn: str) -> str:
    """Apply Procrastinate's schema (once, through dawdle's App) and return the server version."""
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, min_size=1, max_size=1))
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        row = await app.connector.execute_query_one_async("SELECT version() AS version")
    return str(row["version"])


def header(server: str, load: tuple[float, float]) -> str:
    packages = ("dawdle", "procrastinate", "psycopg", "psycopg-pool", "anyio", "trio")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in packages)
    rounds = "; ".join(
        f"depth {depth:,}: {ROUNDS[depth]} round{'s' * (ROUNDS[depth] > 1)}, "
        f"window {WINDOW[depth]:g} s"
        for depth in DEPTHS
    )
    return (
        f"{platform.platform()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()} ({platform.python_implementation()})\n"
        f"{versions}\n"
        f"server: {server}\n"
        f"no-op async jobs; {rounds}; pools of {POOL_SIZE} connections; wait=False, "
        "listen_notify=False;\nthe queue refilled, VACUUM ANALYZEd and CHECKPOINTed before "
        "each measurement; depth = todo jobs when the worker starts (1,000 drains)\n"
        f"1-minute load average before / after: {load[0]:.2f} / {load[1]:.2f} (the benchmark "
        "adds about 1; more means other processes shared the cores)"
    )


def table(medians: dict[tuple[int, int], dict[str, dict[str, float]]]) -> str:
    labels = ["procrastinate", "dawdle/aio", "dawdle/trio", "÷ (aio)", "÷ (trio)"]
    widths = [15, 12, 12, 9, 9]
    lines = [f"{'median of the rounds':<52}"]
    lines[0] += "".join(f"{t:>{w}}" for t, w in zip(labels, widths, strict=True))
    for key, unit, style in (("jobs/s", "jobs/s", ",.0f"), ("cpu", "client CPU µs/job", ",.0f")):
        for (depth, concurrency), cells in medians.items():
            theirs, ours_aio, ours_trio = (cells[c][key] for c in CONFIGURATIONS)
            label = f"depth {depth:,}, concurrency {concurrency} ({unit})"
            lines.append(
                f"{label:<52}{theirs:>15{style}}{ours_aio:>12{style}}{ours_trio:>12{style}}"
                f"{ours_aio / theirs:>9.2f}{ours_trio / theirs:>9.2f}"
            )
    lines.append(
        "÷ = dawdle ÷ procrastinate: above 1 is faster for rates, below 1 is cheaper for CPU"
    )
    return "\n".join(lines)


def spread(rounds: dict[tuple[int, int], dict[str, list[dict[str, float]]]]) -> str:
    """The noisiest rate among the cells with several rounds: max over min."""
    worst = max(
        (
            (max(rates) / min(rates), configuration, cell)
            for cell, by_configuration in rounds.items()
            for configuration, results in by_configuration.items()
            for rates in [[result["jobs/s"] for result in results]]
            if len(rates) > 1
        ),
        default=None,
    )
    if worst is None:
        return "one round per cell"
    (depth, concurrency), configuration = worst[2], worst[1]
    return (
        f"noisiest cell: depth {depth:,}, concurrency {concurrency} on {configuration}, "
        f"max/min over the rounds {worst[0]:.2f}"
    )


@pytest.mark.perf
@pytest.mark.timeout(600)
def test_worker_throughput_next_to_procrastinate(database_dsn: str) -> None:
    """Jobs/s of Procrastinate's worker and dawdle's on both backends, at two queue depths."""
    started, load = time.perf_counter(), os.getloadavg()[0]
    server = anyio.run(prepare_database, database_dsn, backend="asyncio")
    rounds: dict[tuple[int, int], dict[str, list[dict[str, float]]]] = {}
    for depth in DEPTHS:
        for concurrency in CONCURRENCIES:
            cell = rounds[depth, concurrency] = {c: [] for c in CONFIGURATIONS}
            for round_number in range(ROUNDS[depth]):
                # Rotate the order so that no configuration always runs first (or last).
                shift = round_number % len(CONFIGURATIONS)
                for configuration in CONFIGURATIONS[shift:] + CONFIGURATIONS[:shift]:
                    cell[configuration].append(
                        measure(configuration, database_dsn, depth, concurrency)
                    )
    medians = {
        key: {
            configuration: {
                name: statistics.median(result[name] for result in results) for name in results[0]
            }
            for configuration, results in cell.items()
        }
        for key, cell in rounds.items()
    }
    explained = {depth: explain_fetches(database_dsn, depth) for depth in DEPTHS}
    print(f"\n{header(server, (load, os.getloadavg()[0]))}\n{table(medians)}\n{spread(rounds)}")
    for depth, (ours, theirs, _) in explained.items():
        print(
            f"one claim at depth {depth:,} (EXPLAIN ANALYZE, best of {EXPLAIN_REPEATS}): "
            f"dawdle FETCH_JOBS limit {EXPLAIN_LIMIT} {ours:.3f} ms, "
            f"procrastinate_fetch_job_v2 (1 job, a plpgsql call) {theirs:.3f} ms"
        )
    print(f"dawdle's fastest plan at depth {DEPTHS[-1]:,}:")
    print("\n".join(f"    {line}" for line in explained[DEPTHS[-1]][2]))
    print(f"wall time {time.perf_counter() - started:.1f} s")
    assert all(
        result["jobs/s"] > 0
        for cell in medians.values()
        for result in cell.values()  # every configuration worked some jobs
    )
