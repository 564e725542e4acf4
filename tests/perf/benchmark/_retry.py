"""What a retry decision costs: dawdle's `RetryPolicy` next to Procrastinate's `RetryStrategy`.

A worker asks its task's retry strategy once per failed job, so this is the per-failure
overhead of choosing dawdle's policy (jittered, capped, with exception filters). It needs no
database and no event loop: one figure per implementation, median of the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from procrastinate import RetryStrategy
from procrastinate.jobs import Job

from dawdle.backoff import Exponential, RetryPolicy
from tests.perf.benchmark._settings import Settings


def _micros(call: Callable[[], object], calls: int, rounds: int) -> float:
    """Median over `rounds` of the µs per call of `calls` calls in a row."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        timings.append((time.perf_counter() - started) * 1e6 / calls)
    return statistics.median(timings)


def measure(settings: Settings) -> dict[str, float]:
    """µs per `get_retry_decision` call of each, for a job on its third attempt."""
    job = Job(id=1, queue="q", lock=None, queueing_lock=None, task_name="t", attempts=3)
    ours = RetryPolicy(backoff=Exponential(1.0, jitter="full"), max_attempts=10)
    theirs = RetryStrategy(max_attempts=10, exponential_wait=2)
    error = ConnectionError()
    calls, rounds = settings.retry_decisions, max(settings.rounds, 3)
    return {
        "dawdle RetryPolicy": _micros(
            lambda: ours.get_retry_decision(exception=error, job=job), calls, rounds
        ),
        "procrastinate RetryStrategy": _micros(
            lambda: theirs.get_retry_decision(exception=error, job=job), calls, rounds
        ),
    }
