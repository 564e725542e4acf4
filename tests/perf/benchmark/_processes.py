"""Several worker processes on one deep queue: how throughput grows with processes.

For each count, that many worker processes (see `_child`, concurrency 10 each) connect, warm
up and report ready; all are told to go at once, work for a window, and report the jobs they
worked. The rate is the sum of their jobs over the longest of their runs. The jobs table
must agree with the sum (no job worked twice, none left 'doing'), and is topped back up to
its depth before the next count.
"""

from __future__ import annotations

from contextlib import ExitStack

from tests.perf.benchmark._child import Child
from tests.perf.benchmark._configurations import rotations
from tests.perf.benchmark._database import refill, tally, top_up
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

START_TIMEOUT = 60.0  # seconds children may take to connect and warm up, side by side


def _run(configuration: str, dsn: str, settings: Settings, count: int) -> float:
    """Jobs/s of `count` worker processes working the queue together."""
    with ExitStack() as stack:
        children = [
            stack.enter_context(
                Child(
                    "work",
                    configuration,
                    dsn,
                    concurrency=settings.concurrency,
                    window=settings.process_window,
                )
            )
            for _ in range(count)
        ]
        for child in children:
            child.read("ready", START_TIMEOUT)
        for child in children:
            child.go()
        results = [child.read("done", settings.process_window + 60) for child in children]
    worked = sum(int(result["worked"]) for result in results)
    succeeded = tally(dsn, total=settings.process_depth).succeeded
    assert succeeded == worked > 0, "the workers' counts and the table disagree"
    top_up(dsn, settings.process_depth)
    return worked / max(float(result["elapsed"]) for result in results)


def measure(dsn: str, settings: Settings) -> Section:
    """Jobs/s of 1, 2, ... worker processes, median of `settings.process_rounds`."""
    metrics = {
        count: Metric(
            f"processes.{count}",
            f"{count} process{'es' * (count > 1)} x concurrency {settings.concurrency} (jobs/s)",
        )
        for count in settings.process_counts
    }
    refill(dsn, settings.process_depth)
    for order in rotations(settings.process_rounds):
        for count in settings.process_counts:
            for configuration in order:
                metrics[count].add(configuration, _run(configuration, dsn, settings, count))
    return Section(
        "worker processes",
        list(metrics.values()),
        notes=[
            f"no-op jobs at depth {settings.process_depth:,} (topped back up after each run), "
            f"each process working for {settings.process_window:g} s; rate = sum of jobs / "
            "the longest run"
        ],
    )
