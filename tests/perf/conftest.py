"""The original guide's performance floors, kept as sanity tests that `nox -s tests` runs.

The benchmark itself is a program, tests/perf/benchmark (`nox -s perf`), not a test.

Every async test runs on asyncio and on Trio, on real clocks: timing needs a real clock.
`in_memory_app`, `in_memory_connector` and `schema_dsn` come from tests/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class PerformanceThreshold:
    """The original test guide's "Performance Benchmarks", at the top of each of its ranges.

    The guide gave them for the in-memory connector; test_throughput.py holds PostgreSQL
    to the same floors for deferral, processing and latency. They are sanity floors, not
    benchmarks: the code does one to two orders of magnitude better on an ordinary machine,
    so a test that misses one points at a regression (or a machine that is not healthy),
    never at noise. The benchmarks that measure speed are the `perf` ones.
    """

    defer_per_second: float = 200.0
    """Deferral rate: jobs deferred per second, one `defer_async` at a time (guide: > 50-200)."""

    process_per_second: float = 50.0
    """Processing rate: no-op jobs a worker runs to their outcome per second (guide: > 10-50)."""

    latency_seconds: float = 0.1
    """Single-task latency: from defer to the job running on an idle worker (guide: < 100 ms)."""

    queue_wait_seconds: float = 0.1
    """Queue wait: from defer to start while a worker keeps up with arrivals (guide: < 100 ms)."""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Real clocks: a virtual clock would make every rate infinite and every wait zero."""
    return str(request.param)


@pytest.fixture
def performance_threshold() -> PerformanceThreshold:
    """The guide's floors (see PerformanceThreshold): assert against these, print the rest."""
    return PerformanceThreshold()
