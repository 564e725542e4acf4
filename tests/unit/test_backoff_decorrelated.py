"""DecorrelatedJitter follows AWS's recursion, checked against a direct simulation of it."""

from __future__ import annotations

import bisect
import itertools
import random
import statistics

import pytest
from procrastinate.jobs import Job

from dawdle.backoff import DecorrelatedJitter, RetryPolicy, instant_sleeps, retrying

SAMPLES = 20_000
# Two-sample Kolmogorov-Smirnov critical distance at p = 0.001 for 20,000 + 20,000 samples:
# 1.95 * sqrt(2 / 20,000) = 0.0195. The seeds are fixed, so each run draws the same samples.
KS_LIMIT = 0.0195


def aws(retry: int, rng: random.Random, base: float = 1.0, cap: float = 3600.0) -> float:
    """The wait before retry `retry` by AWS's recursion: sleep = min(cap, U(base, 3 * sleep))."""
    sleep = base
    for _ in range(retry):
        sleep = min(cap, rng.uniform(base, sleep * 3))
    return sleep


def ks_distance(first: list[float], second: list[float]) -> float:
    """The largest gap between the two samples' empirical distribution functions."""
    first, second = sorted(first), sorted(second)
    return max(
        abs(
            bisect.bisect_right(first, x) / len(first)
            - bisect.bisect_right(second, x) / len(second)
        )
        for x in first + second
    )


def quartiles(samples: list[float]) -> list[float]:
    return statistics.quantiles(samples, n=4)


def job(job_id: int, attempts: int) -> Job:
    return Job(
        id=job_id, queue="q", lock=None, queueing_lock=None, task_name="t", attempts=attempts
    )


@pytest.mark.parametrize(("retry", "cap"), [(1, 3600.0), (2, 3600.0), (8, 3600.0), (40, 1e12)])
def test_replayed_wait_has_aws_distribution(retry: int, cap: float) -> None:
    """Without a previous wait, the wait before retry n is distributed as AWS's recursion.

    (Where the cap binds, the two differ on purpose: see the saturated test below.)
    """
    expected = [aws(retry, random.Random(seed), cap=cap) for seed in range(SAMPLES)]
    backoff = DecorrelatedJitter(1.0, max_delay=cap)
    rng = random.Random(99)
    ours = [backoff.delay(retry, rng) for _ in range(SAMPLES)]
    assert ks_distance(ours, expected) < KS_LIMIT
    # Each of our quartiles sits at the same rank among AWS's waits (heavy tails make a
    # comparison of the values themselves too loose or too strict).
    ranked = sorted(expected)
    for share, quartile in zip((0.25, 0.5, 0.75), quartiles(ours), strict=True):
        assert bisect.bisect_right(ranked, quartile) / SAMPLES == pytest.approx(share, abs=0.02)


def test_median_before_retry_8_is_about_16_seconds() -> None:
    """The issue's figure: initial 1 s, one-hour cap, the median wait before retry 8 is ~16 s."""
    rng = random.Random(8)
    backoff = DecorrelatedJitter(1.0, max_delay=3600.0)
    median = statistics.median(backoff.delay(8, rng) for _ in range(SAMPLES))
    assert 14.0 < median < 19.0


def test_job_waits_have_aws_distribution_and_replay() -> None:
    """decide_job over many jobs gives AWS's distribution, and the same job decides the same."""
    policy = RetryPolicy(backoff=DecorrelatedJitter(1.0), max_attempts=None)
    waits = [
        policy.decide_job(OSError(), job=job(job_id, attempts=7), elapsed=None).delay
        for job_id in range(SAMPLES)
    ]
    expected = [aws(8, random.Random(seed)) for seed in range(SAMPLES, 2 * SAMPLES)]
    assert ks_distance([w for w in waits if w is not None], expected) < KS_LIMIT
    again = policy.decide_job(OSError(), job=job(5, attempts=7), elapsed=None)
    assert again.delay == waits[5]


def test_one_step_from_a_known_previous_wait() -> None:
    """Given the previous wait, the next is uniform in [initial, 3 * previous]."""
    backoff = DecorrelatedJitter(1.0, max_delay=3600.0)
    rng = random.Random(4)
    samples = [backoff.delay(50, rng, previous=10.0) for _ in range(SAMPLES)]
    assert min(samples) >= 1.0
    assert max(samples) <= 30.0
    assert statistics.fmean(samples) == pytest.approx(15.5, rel=0.02)


def test_saturated_waits_spread_below_the_cap() -> None:
    """Where AWS would clamp a draw to the cap, the wait spreads below it: no mass on the cap."""
    backoff = DecorrelatedJitter(1.0, max_delay=100.0)
    rng = random.Random(6)
    samples = [backoff.delay(10**6, rng) for _ in range(SAMPLES // 10)]
    assert 100.0 not in samples
    assert max(samples) <= 100.0
    from_cap = [backoff.delay(2, rng, previous=100.0) for _ in range(SAMPLES)]
    assert statistics.fmean(from_cap) == pytest.approx(50.5, rel=0.02)


def test_retrying_feeds_each_wait_into_the_next() -> None:
    """In-process, each wait is drawn from the previous one: within [1, 3 * previous]."""
    waits: list[float] = []
    policy = RetryPolicy(
        backoff=DecorrelatedJitter(1.0, max_delay=1e6), max_attempts=30, rng=random.Random(3)
    )
    with instant_sleeps(), pytest.raises(OSError, match="down"):
        for attempt in retrying(policy, on_retry=lambda event: waits.append(event.delay)):
            with attempt:
                raise OSError("down")
    assert len(waits) == 29
    assert 1.0 <= waits[0] <= 3.0
    for previous, wait in itertools.pairwise(waits):
        assert 1.0 <= wait <= 3.0 * previous


def test_neighbouring_jobs_draw_unrelated_waits() -> None:
    """Jobs n and n + 1 (and attempts k and k + 1) get uncorrelated waits: no shared streams."""
    policy = RetryPolicy(backoff=DecorrelatedJitter(1.0), max_attempts=None)

    def wait(job_id: int, attempts: int) -> float:
        delay = policy.decide_job(OSError(), job=job(job_id, attempts), elapsed=None).delay
        assert delay is not None
        return delay

    jobs = [wait(n, 5) for n in range(4_001)]
    assert abs(statistics.correlation(jobs[:-1], jobs[1:])) < 0.05
    later = [wait(n, 6) for n in range(4_000)]
    assert abs(statistics.correlation(jobs[:-1], later)) < 0.05
    assert len(set(jobs)) == len(jobs)
