"""Throughput by queue depth: whether a worker slows down when the queue holds a million jobs.

Depth 1,000 is the concurrency-10 drain of `_worked` (the queue empties as it goes). Each
deeper queue is filled once; each configuration works it for a fixed window, far from
draining it, and the queue is then topped back up to the exact depth (succeeded rows
deleted, as many todo jobs inserted, VACUUM ANALYZE), so that every configuration and every
round starts at the same depth.

Depth 100,000 is also measured just after a burst: 100,000 jobs deferred into a queue whose
statistics were taken when all its jobs had finished (a healthy queue's steady state), before
autovacuum analyses it again (it waits for a minute and for 10 % of the rows to change). The
planner then expects no todo job; Procrastinate's claim, planned as a nested loop, reads the
whole todo index for each job it takes. dawdle's claim checks other jobs only for a job
with a lock, whatever the plan.
"""

from __future__ import annotations

from tests.perf.benchmark._configurations import rotations, work
from tests.perf.benchmark._database import burst, refill, tally, top_up
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

BURST_DEPTH = 100_000


def measure(dsn: str, settings: Settings, drained: Metric) -> Section:
    """No-op jobs/s at each deep queue depth, next to `drained` (the depth-1,000 drain)."""
    concurrency = settings.depth_concurrency
    shallow = Metric(
        f"depth.{settings.drain_depth}",
        f"depth {settings.drain_depth:,} (drained: the c{concurrency} row above; jobs/s)",
        values=drained.values,
    )
    metrics = [shallow]
    for depth in settings.deep_depths:
        metric = Metric(
            f"depth.{depth}", f"depth {depth:,} (todo at start, {settings.deep_window:g} s; jobs/s)"
        )
        metrics.append(metric)
        refill(dsn, depth)
        for order in rotations(settings.rounds):
            for configuration in order:
                run = work(configuration, dsn, concurrency=concurrency, window=settings.deep_window)
                succeeded = tally(dsn, total=depth).succeeded
                assert succeeded == run.worked > 0, "the worker's count and the table disagree"
                metric.add(configuration, succeeded / run.elapsed)
                top_up(dsn, depth)
    metrics.append(_after_a_burst(dsn, settings))
    notes = [
        f"no-op jobs, concurrency {concurrency}; each deep queue worked for "
        f"{settings.deep_window:g} s, then topped back up to its depth"
    ]
    notes += [
        f"depth {depth:,} skipped in {settings.mode} mode" for depth in settings.skipped_depths
    ]
    return Section(
        "queue depth",
        metrics,
        notes=notes,
        raw={"depths": [settings.drain_depth, *settings.deep_depths]},
    )


def _after_a_burst(dsn: str, settings: Settings) -> Metric:
    """Jobs/s at depth 100,000 just after a burst, before autovacuum analyses the table."""
    depth = BURST_DEPTH
    metric = Metric(
        f"depth.{depth}.burst",
        f"depth {depth:,} after a burst (stale statistics; {settings.deep_window:g} s; jobs/s)",
    )
    for order in rotations(settings.rounds):
        for configuration in order:
            burst(dsn, depth)
            run = work(
                configuration,
                dsn,
                concurrency=settings.depth_concurrency,
                window=settings.deep_window,
            )
            succeeded = tally(dsn, total=depth).succeeded
            assert succeeded == run.worked > 0, "the worker's count and the table disagree"
            metric.add(configuration, succeeded / run.elapsed)
    return metric
