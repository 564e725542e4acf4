"""What a retry decision costs, next to Procrastinate's own RetryStrategy, in one run.

A placeholder for the `perf` session until the worker benchmark lands; it prints its figures
with the machine and the versions, and keeps a floor that no healthy machine misses.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Callable

import pytest
from procrastinate import RetryStrategy
from procrastinate.jobs import Job

from dawdle.backoff import Exponential, RetryPolicy

ROUNDS = 20_000


def rate(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(ROUNDS):
        call()
    return ROUNDS / (time.perf_counter() - started)


@pytest.mark.perf
def test_retry_decisions_per_second() -> None:
    """Decisions per second for both, printed side by side; the floor is 10,000 per second."""
    job = Job(id=1, queue="q", lock=None, queueing_lock=None, task_name="t", attempts=3)
    ours = RetryPolicy(backoff=Exponential(1.0, jitter="full"), max_attempts=10)
    theirs = RetryStrategy(max_attempts=10, exponential_wait=2)
    error = ConnectionError()
    dawdle_rate = rate(lambda: ours.get_retry_decision(exception=error, job=job))
    procrastinate_rate = rate(lambda: theirs.get_retry_decision(exception=error, job=job))
    versions = {name: importlib.metadata.version(name) for name in ("dawdle", "procrastinate")}
    print(
        f"\n{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{versions}\n"
        f"{'retry decisions/s':<28}{'dawdle':>12}{'procrastinate':>15}{'ratio':>8}\n"
        f"{'get_retry_decision':<28}{dawdle_rate:>12,.0f}{procrastinate_rate:>15,.0f}"
        f"{dawdle_rate / procrastinate_rate:>8.2f}"
    )
    assert dawdle_rate > 10_000
