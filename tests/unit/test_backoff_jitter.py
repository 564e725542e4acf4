"""Statistical checks of each jitter's distribution, with a fixed seed so they are repeatable."""

from __future__ import annotations

import random
import statistics

import pytest

from dawdle.backoff import Constant, Exponential

SAMPLES = 20_000


def draw(jitter: object, seed: int = 1234) -> list[float]:
    rng = random.Random(seed)
    backoff = Exponential(8.0, 2.0, jitter=jitter, max_delay=100.0)  # type: ignore[arg-type]
    return [backoff.delay(1, rng) for _ in range(SAMPLES)]


def uniform_fit(samples: list[float], low: float, high: float) -> float:
    """Kolmogorov-Smirnov distance between the samples and uniform [low, high]."""
    ordered = sorted(samples)
    n = len(ordered)
    return max(
        max((i + 1) / n - (x - low) / (high - low), (x - low) / (high - low) - i / n)
        for i, x in enumerate(ordered)
    )


# With 20,000 samples the KS distance of a true uniform stays under 0.012 with p > 0.999.
KS_LIMIT = 0.012


def test_full_jitter_is_uniform_between_zero_and_delay() -> None:
    """Full jitter: uniform in [0, d], mean d/2."""
    samples = draw("full")
    assert min(samples) >= 0.0
    assert max(samples) <= 8.0
    assert uniform_fit(samples, 0.0, 8.0) < KS_LIMIT
    assert statistics.fmean(samples) == pytest.approx(4.0, rel=0.02)


def test_equal_jitter_keeps_half_the_delay() -> None:
    """Equal jitter: d/2 plus uniform [0, d/2], so never below half the delay."""
    samples = draw("equal")
    assert min(samples) >= 4.0
    assert max(samples) <= 8.0
    assert uniform_fit(samples, 4.0, 8.0) < KS_LIMIT


def test_proportional_jitter_spreads_around_the_delay() -> None:
    """A float p: d * uniform [1 - p, 1 + p], centred on d."""
    samples = draw(0.25)
    assert min(samples) >= 6.0
    assert max(samples) <= 10.0
    assert uniform_fit(samples, 6.0, 10.0) < KS_LIMIT
    assert statistics.fmean(samples) == pytest.approx(8.0, rel=0.01)


def test_proportional_jitter_is_still_capped() -> None:
    """At the cap, proportional jitter is uniform below it: never beyond, never piled on it."""
    rng = random.Random(5)
    backoff = Exponential(10.0, jitter=0.5, max_delay=10.0)
    samples = [backoff.delay(1, rng) for _ in range(SAMPLES)]
    assert 10.0 not in samples
    assert min(samples) >= 5.0
    assert max(samples) <= 10.0
    assert uniform_fit(samples, 5.0, 10.0) < KS_LIMIT


def test_proportional_jitter_near_the_cap_puts_no_mass_on_it() -> None:
    """The issue's case: Exponential(1, 2, jitter=0.2, max_delay=10).delay(30) is never 10.0."""
    rng = random.Random(7)
    backoff = Exponential(1.0, 2.0, jitter=0.2, max_delay=10.0)
    samples = [backoff.delay(30, rng) for _ in range(SAMPLES)]
    assert samples.count(10.0) == 0
    assert uniform_fit(samples, 8.0, 10.0) < KS_LIMIT
    below_cap = Exponential(1.0, 2.0, jitter=0.2, max_delay=9.0)
    near = [below_cap.delay(4, rng) for _ in range(SAMPLES)]  # the curve is 8 s, the cap 9 s
    assert near.count(9.0) == 0
    assert uniform_fit(near, 6.4, 9.0) < KS_LIMIT


def test_no_jitter_is_exact() -> None:
    """No jitter returns the delay itself, whatever the rng."""
    assert set(draw("none")) == {8.0}


def test_constant_with_jitter_spreads_a_thundering_herd() -> None:
    """A thousand clients on the same constant delay do not retry at the same instant."""
    rng = random.Random(99)
    backoff = Constant(1.0, jitter="full")
    assert len({backoff.delay(1, rng) for _ in range(1_000)}) == 1_000
