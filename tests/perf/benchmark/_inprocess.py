"""A producer and a worker in one process and one event loop, as a web app embedding a worker.

The queue starts `inprocess_depth` jobs deep with jobs that await PAUSE_SECONDS (1 ms). One
producer task defers one job at a time (`defer_async` in a loop), pausing while the queue
(deferred minus worked) is that deep or deeper; the worker runs with its defaults (LISTEN/
NOTIFY on) at each concurrency. After `settle` seconds, the jobs worked and deferred over
`inprocess_window` seconds give the rates; then the producer and the worker stop.

Every defer commits, so one producer defers at most one job per WAL flush: on a busy disk
that flush, not dawdle, bounds the row. The same measurement at the highest concurrency with
`synchronous_commit=off` on every connection (commits no longer wait for the flush) shows
how much: the difference is the disk's.
"""

from __future__ import annotations

import functools
import time

import anyio
from psycopg import conninfo

from tests.perf.benchmark._bounds import commit_ceiling
from tests.perf.benchmark._configurations import (
    Bench,
    make_bench,
    opened,
    rotations,
    run_on,
    run_worker,
)
from tests.perf.benchmark._database import refill
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

TOP_UP_WAIT = 0.001  # seconds the producer waits when the queue is deep enough


async def _produce(
    bench: Bench, depth: int, start: int, deferred: list[int], stop: anyio.Event
) -> None:
    """Defer `pause` jobs one at a time, keeping about `depth` of them not yet worked.

    It stops between two defers once `stop` is set: a defer cancelled mid-query would cost
    its connection.
    """
    task, number = bench.app.tasks["pause"], start
    while not stop.is_set():
        if start + deferred[0] - bench.worked >= depth:
            await anyio.sleep(TOP_UP_WAIT)
            continue
        await task.defer_async(i=number)
        deferred[0] += 1
        number += 1


NO_FLUSH = "-c synchronous_commit=off"  # commits return before their WAL is on disk


async def _round(
    configuration: str, dsn: str, concurrency: int, settings: Settings
) -> tuple[float, float, int]:
    """Jobs/s worked and deferred over the window, and the queue's depth at its end."""
    depth = settings.inprocess_depth
    bench = make_bench(configuration, dsn)
    deferred = [0]
    stop = anyio.Event()
    async with opened(bench), anyio.create_task_group() as tg:
        tg.start_soon(_produce, bench, depth, depth, deferred, stop)
        tg.start_soon(functools.partial(run_worker, bench, stop=stop, concurrency=concurrency))
        await anyio.sleep(settings.settle)
        worked, produced, started = bench.worked, deferred[0], time.perf_counter()
        await anyio.sleep(settings.inprocess_window)
        elapsed = time.perf_counter() - started
        worked, produced = bench.worked - worked, deferred[0] - produced
        stop.set()
    assert worked > 0, "the worker worked nothing in the window"
    return worked / elapsed, produced / elapsed, depth + deferred[0] - bench.worked


def measure(dsn: str, settings: Settings) -> Section:
    """Jobs/s worked (and deferred) with the producer in the worker's loop, each concurrency."""
    depth, concurrencies = settings.inprocess_depth, settings.inprocess_concurrencies
    worked = {
        c: Metric(
            f"inprocess.c{c}",
            f"producer + worker in one loop, 1 ms jobs, concurrency {c} (jobs/s)",
        )
        for c in concurrencies
    }
    top = max(concurrencies)
    no_flush = Metric(
        f"inprocess.c{top}.no_flush",
        f"the same, concurrency {top}, synchronous_commit=off (jobs/s)",
    )
    deferred = {
        c: Metric(
            f"inprocess.c{c}.deferred",
            f"  of which the producer deferred, concurrency {c} (defers/s)",
        )
        for c in concurrencies
    }
    left = {
        c: Metric(
            f"inprocess.c{c}.depth_left",
            f"producer + worker in one loop, concurrency {c} (jobs left at the end)",
            in_table=False,
        )
        for c in concurrencies
    }
    unflushed = conninfo.make_conninfo(dsn, options=NO_FLUSH)
    for order in rotations(settings.rounds):
        worked[top].floor.append(commit_ceiling(dsn))
        for configuration in order:
            for c in concurrencies:
                refill(dsn, depth, "pause")
                rate, produced, remaining = run_on(
                    configuration, _round, configuration, dsn, c, settings
                )
                worked[c].add(configuration, rate)
                deferred[c].add(configuration, produced)
                left[c].add(configuration, remaining)
            refill(dsn, depth, "pause")
            rate, *_ = run_on(configuration, _round, configuration, unflushed, top, settings)
            no_flush.add(configuration, rate)
    rows = [metric for c in concurrencies for metric in (worked[c], deferred[c])]
    return Section(
        "producer and worker in one process",
        [*rows, no_flush, *left.values()],
        notes=[
            f"queue {depth:,} deep at the start, topped up by one task deferring one job at a "
            f"time; worker defaults (LISTEN/NOTIFY); rate over {settings.inprocess_window:g} s "
            f"after {settings.settle:g} s; once the start's backlog is worked, jobs/s worked can "
            "only be jobs/s deferred; the depth left at the end in the JSON",
            f"floor of the concurrency {top} row: single-row inserts one sequential psycopg "
            "client commits per second, the most one producer that waits for each defer "
            "can defer (`_bounds`)",
        ],
    )
