"""Defer-to-start latency on an idle worker woken by LISTEN/NOTIFY.

A worker (`wait=True, listen_notify=True`) runs on an empty queue; once it has settled, the
same event loop defers jobs one at a time, sleeping between them so that each meets an idle
worker. Each job carries `time.perf_counter()` taken just before its defer call, and records
how long ago that was when it starts: the defer's own round trip, the notification, the
claim, and the hand-over to a slot.
"""

from __future__ import annotations

import functools
import statistics
import time

import anyio

from tests.perf.benchmark._configurations import (
    CONFIGURATIONS,
    make_bench,
    opened,
    rotations,
    run_on,
    run_worker,
)
from tests.perf.benchmark._database import empty, tally
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

PERCENTILES = {"p50": 50, "p99": 99}


async def _round(configuration: str, dsn: str, settings: Settings) -> list[float]:
    """Milliseconds from defer to start of `settings.latency_jobs` jobs."""
    bench = make_bench(configuration, dsn)
    task = bench.app.tasks["stamp"]
    async with opened(bench):
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                functools.partial(
                    run_worker,
                    bench,
                    stop=stop,
                    concurrency=settings.concurrency,
                    wait=True,
                    listen_notify=True,
                )
            )
            await anyio.sleep(settings.settle)
            for _ in range(settings.latency_jobs):
                await task.defer_async(deferred_at=time.perf_counter())
                await anyio.sleep(settings.latency_spacing)
            with anyio.fail_after(10):
                # The samples come from the worker's tasks, which know nothing of a total.
                while len(bench.latencies) < settings.latency_jobs:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            stop.set()
    return [seconds * 1000 for seconds in bench.latencies]


def percentile(samples: list[float], percent: int) -> float:
    """The `percent`th percentile of `samples`, interpolated between the nearest two."""
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def measure(dsn: str, settings: Settings) -> Section:
    """p50, p99 and max defer-to-start ms of each configuration, and every sample."""
    metrics = {
        name: Metric(f"latency.{name}", f"defer to start, {name} (ms)", "lower", ".2f")
        for name in (*PERCENTILES, "max")
    }
    samples: dict[str, list[list[float]]] = {c: [] for c in CONFIGURATIONS}
    for order in rotations(settings.rounds):
        for configuration in order:
            empty(dsn)
            found = run_on(configuration, _round, configuration, dsn, settings)
            tally(dsn, total=settings.latency_jobs)
            samples[configuration].append(found)
            for name, percent in PERCENTILES.items():
                metrics[name].add(configuration, percentile(found, percent))
            metrics["max"].add(configuration, max(found))
    return Section(
        "latency",
        list(metrics.values()),
        notes=[
            f"{settings.latency_jobs} jobs per round deferred one at a time, "
            f"{settings.latency_spacing * 1000:g} ms apart, to an idle worker "
            f"(concurrency {settings.concurrency}, listen_notify=True); median of the "
            "rounds' percentiles"
        ],
        raw={"samples_ms": samples},
    )
