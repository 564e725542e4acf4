"""Worked jobs/s: a shallow queue of no-op jobs drained at each concurrency, and sleeping jobs.

Before each measurement the queue is refilled (see `_database`); the worker polls
(`wait=False, listen_notify=False`) and stops once the queue is empty. The rate is succeeded
jobs over the worker's whole run, start-up and shutdown included. The no-op jobs show what
the worker itself costs per job; the jobs that sleep show how well it keeps its slots busy
when jobs wait on I/O.
"""

from __future__ import annotations

from tests.perf.benchmark._bounds import bare_worker_cpu
from tests.perf.benchmark._configurations import SLEEP_SECONDS, rotations, work
from tests.perf.benchmark._database import refill, tally
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings


def _drain(
    configuration: str, dsn: str, *, task: str, jobs: int, concurrency: int, window: float
) -> tuple[float, float]:
    """Jobs/s and client CPU µs per job of one drain of `jobs` jobs of `task`."""
    refill(dsn, jobs, task)
    run = work(configuration, dsn, concurrency=concurrency, window=window)
    succeeded = tally(dsn, total=jobs).succeeded
    assert succeeded == run.worked > 0, "the worker's count and the table disagree"
    return succeeded / run.elapsed, run.cpu * 1e6 / succeeded


def measure(dsn: str, settings: Settings) -> Section:
    """No-op jobs/s at each concurrency, client CPU per job, and sleeping jobs/s."""
    depth = settings.drain_depth
    rates = {
        c: Metric(f"worked.c{c}", f"no-op, depth {depth:,}, concurrency {c} (jobs/s)")
        for c in settings.concurrencies
    }
    cpu = {
        c: Metric(
            f"worked.c{c}.cpu",
            f"no-op, depth {depth:,}, concurrency {c} (client CPU µs/job)",
            "lower",
            in_table=c == settings.depth_concurrency,
        )
        for c in settings.concurrencies
    }
    sleeping = Metric(
        "worked.sleep",
        f"{SLEEP_SECONDS * 1000:g} ms sleep, concurrency {settings.sleep_concurrency} (jobs/s)",
    )
    shown_cpu = cpu[settings.depth_concurrency]
    for order in rotations(settings.rounds):
        shown_cpu.floor.append(bare_worker_cpu(dsn, depth, settings.depth_concurrency))
        for configuration in order:
            for c in settings.concurrencies:
                rate, micros = _drain(
                    configuration,
                    dsn,
                    task="noop",
                    jobs=depth,
                    concurrency=c,
                    window=settings.drain_window,
                )
                rates[c].add(configuration, rate)
                cpu[c].add(configuration, micros)
            rate, _ = _drain(
                configuration,
                dsn,
                task="sleep",
                jobs=settings.sleep_jobs,
                concurrency=settings.sleep_concurrency,
                window=settings.drain_window,
            )
            sleeping.add(configuration, rate)
    return Section(
        "worked jobs",
        [*rates.values(), sleeping, *cpu.values()],
        notes=[
            f"each drain: {depth:,} no-op or {settings.sleep_jobs:,} sleeping jobs, "
            "wait=False, listen_notify=False; rate = succeeded / the worker's whole run "
            f"(stopped after {settings.drain_window:g} s if not drained)",
            "floor of the CPU row: a bare asyncio loop on psycopg with dawdle's claim and "
            "outcome statements, one task per job, nothing else (`_bounds`)",
        ],
    )
