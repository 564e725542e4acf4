"""Defer rates: jobs/s of `defer_async` (sequential, and from concurrent tasks) and of batches.

Also plain round trips (sequential SELECT 1), which bound what one sequential defer can do.
The jobs table is emptied before each measurement and checked after it: every id distinct,
every job in the table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from tests.perf.benchmark._configurations import Bench, make_bench, opened, rotations, run_on
from tests.perf.benchmark._database import TRUNCATE
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings


class _Stopwatch:
    """Operations per second, and this process's CPU µs per operation, of timed blocks."""

    def __init__(self) -> None:
        self.results: dict[str, float] = {}

    @contextmanager
    def timing(self, name: str, operations: int) -> Iterator[None]:
        started, cpu = time.perf_counter(), time.process_time()
        yield
        self.results[name] = operations / (time.perf_counter() - started)
        self.results[f"{name}.cpu"] = (time.process_time() - cpu) * 1e6 / operations


async def _check_and_empty(bench: Bench, ids: list[int], expected: int) -> None:
    assert len(ids) == expected
    assert len(set(ids)) == expected
    row = await bench.app.connector.execute_query_one_async(
        "SELECT count(*) AS n FROM procrastinate_jobs"
    )
    assert row["n"] == expected
    await bench.app.connector.execute_query_async(TRUNCATE)


async def _round(configuration: str, dsn: str, settings: Settings) -> dict[str, float]:
    bench = make_bench(configuration, dsn)
    task = bench.app.tasks["noop"]
    stopwatch = _Stopwatch()
    async with opened(bench):
        await bench.app.connector.execute_query_async(TRUNCATE)
        query = bench.app.connector.execute_query_one_async
        with stopwatch.timing("select1", settings.round_trips):
            rows = [await query("SELECT 1 AS one") for _ in range(settings.round_trips)]
        assert rows == [{"one": 1}] * settings.round_trips

        with stopwatch.timing("sequential", settings.sequential_defers):
            ids = [await task.defer_async(i=i) for i in range(settings.sequential_defers)]
        await _check_and_empty(bench, ids, settings.sequential_defers)

        ids = []

        async def defer_many(first: int) -> None:
            for i in range(first, first + settings.defers_per_task):
                ids.append(await task.defer_async(i=i))

        concurrent = settings.defer_tasks * settings.defers_per_task
        with stopwatch.timing("concurrent", concurrent):
            async with anyio.create_task_group() as tg:
                for number in range(settings.defer_tasks):
                    tg.start_soon(defer_many, number * settings.defers_per_task)
        await _check_and_empty(bench, ids, concurrent)

        batch: list[dict[str, Any]] = [{"i": i} for i in range(settings.batch_size)]
        batched = settings.batches * settings.batch_size
        with stopwatch.timing("batch", batched):
            ids = [i for _ in range(settings.batches) for i in await task.batch_defer_async(*batch)]
        await _check_and_empty(bench, ids, batched)
    return stopwatch.results


def measure(dsn: str, settings: Settings) -> Section:
    """Defer rates and round trips of every configuration, median of `settings.rounds`."""
    names = {
        "select1": ("SELECT 1, sequential", "queries/s"),
        "sequential": ("defer_async, sequential", "jobs/s"),
        "concurrent": (f"defer_async from {settings.defer_tasks} tasks", "jobs/s"),
        "batch": (f"batch_defer_async x{settings.batch_size:,}", "jobs/s"),
    }
    metrics = {
        name: Metric(f"defer.{name}", f"{label} ({unit})") for name, (label, unit) in names.items()
    }
    metrics |= {
        f"{name}.cpu": Metric(
            f"defer.{name}.cpu", f"{label} (client CPU µs/op)", "lower", in_table=False
        )
        for name, (label, _) in names.items()
    }
    for order in rotations(settings.rounds):
        for configuration in order:
            results = run_on(configuration, _round, configuration, dsn, settings)
            for name, value in results.items():
                metrics[name].add(configuration, value)
    return Section(
        "defer",
        list(metrics.values()),
        notes=[
            f"{settings.sequential_defers:,} sequential defers; {settings.defer_tasks} tasks x "
            f"{settings.defers_per_task:,} defers; {settings.batches} batches of "
            f"{settings.batch_size:,}; the jobs table emptied before each"
        ],
    )
