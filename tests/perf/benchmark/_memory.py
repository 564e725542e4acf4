"""Memory: the RSS of a worker process before, and its peak after, working many no-op jobs.

Each configuration's worker runs in a process of its own (see `_child`), reports its RSS
once its pool is warm, drains a queue of no-op jobs (concurrency 10, polling), and reports
its peak RSS: what a worker holds per job in flight, or leaks per job, shows as growth. A
configuration whose measured rate (at depth 100,000) would take longer than the run's
budget works fewer jobs; the table says how many each worked.
"""

from __future__ import annotations

from tests.perf.benchmark._child import Child
from tests.perf.benchmark._configurations import CONFIGURATIONS
from tests.perf.benchmark._database import refill, tally
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

START_TIMEOUT = 30.0  # seconds a child may take to connect and warm up


def job_count(settings: Settings, rate: float) -> int:
    """`settings.memory_jobs`, or as many thousands as `rate` works within the budget."""
    affordable = int(rate * settings.memory_budget) // 1_000 * 1_000
    return max(1_000, min(settings.memory_jobs, affordable))


def measure(dsn: str, settings: Settings, rates: dict[str, float]) -> Section:
    """RSS before and peak RSS after each configuration's drain; `rates` sizes the drains."""
    before = Metric("memory.rss_before", "RSS before working (KiB)", "lower")
    peak_before = Metric(
        "memory.peak_before", "peak RSS before working (KiB)", "lower", in_table=False
    )
    after = Metric("memory.peak_after", "peak RSS after working (KiB)", "lower")
    jobs = Metric("memory.jobs", "jobs worked for the RSS figure", compare=False)
    for configuration in CONFIGURATIONS:
        count = job_count(settings, rates[configuration])
        refill(dsn, count)
        # Generous: the budget is the drain's expected time at the measured rate.
        window = 3 * settings.memory_budget + 60
        with Child(
            "memory", configuration, dsn, concurrency=settings.concurrency, window=window
        ) as child:
            ready = child.read("ready", START_TIMEOUT)
            before.add(configuration, ready["rss_kib"])
            peak_before.add(configuration, ready["peak_kib"])
            child.go()
            result = child.read("done", window + 30)
        succeeded = tally(dsn, total=count).succeeded
        assert succeeded == result["worked"] > 0, "the worker's count and the table disagree"
        after.add(configuration, result["peak_kib"])
        jobs.add(configuration, succeeded)
    notes = [
        f"VmRSS and VmHWM of the worker's process, concurrency {settings.concurrency}; "
        "before = its pool open and warm"
    ]
    notes += [
        f"{configuration} worked {jobs.median(configuration):,.0f} jobs, not "
        f"{settings.memory_jobs:,}: its measured rate would take over "
        f"{settings.memory_budget:g} s"
        for configuration in CONFIGURATIONS
        if jobs.median(configuration) < settings.memory_jobs
    ]
    return Section("memory", [before, peak_before, after, jobs], notes=notes)
