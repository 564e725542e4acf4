"""The issue's performance targets, checked against the medians a run measured.

Each target is checked for dawdle on each runtime and gives a verdict with the figure it
was judged on: met, NOT met, or not measured (a depth that quick mode skips).
"""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from tests.perf.benchmark._figures import Metric

DAWDLE = ("dawdle/asyncio", "dawdle/trio")
PROCRASTINATE = "procrastinate/asyncio"
WORKED_FLOOR = 5_000  # no-op jobs/s at depth 1,000, at the better of concurrency 10 and 100
DEEP_SLOWDOWN = 0.20  # depth 1,000,000 at most this much slower than depth 1,000
DEEP_FACTOR = 20  # times Procrastinate's jobs/s at depth 100,000
TRIO_SLOWDOWN = 0.15  # trio at most this much slower than asyncio on any rate
SINGLE_DEFER_FLOOR = 2_000  # jobs/s, defer_async one at a time from 10 tasks
BATCH_DEFER_FLOOR = 20_000  # jobs/s, batch_defer_async
P99_CEILING_MS = 20.0  # defer to start, on an idle worker
IDLE_CPU_CEILING = 1.0  # % of one core
BATCH_DEFER_FACTOR = 2.0  # times Procrastinate's batch_defer_async jobs/s (issue 16)
FLOOR_SHARE = 0.8  # of the plain-SQL floor's jobs/s, on the deep drain (issue 16)
WORKED_TRIO_SHARE = 0.9  # trio ÷ asyncio on every worked-jobs row (issue 16)
CPU_CEILING = 30.0  # client CPU µs per no-op job at concurrency 10 (issue 16)
INPROCESS_FLOOR = 5_000  # jobs/s, producer and worker in one loop, at the highest concurrency
FEATURE_COST = 0.05  # each feature at its defaults at most this much slower than without


@dataclass(frozen=True)
class Verdict:
    """A target checked for one configuration: None for `met` when it was not measured."""

    target: str
    configuration: str
    figure: str
    met: bool | None


def _worked(metrics: dict[str, Metric], configuration: str) -> Verdict:
    rates = {c: metrics[f"worked.c{c}"].median(configuration) for c in (10, 100)}
    best = max(rates, key=rates.__getitem__)
    return Verdict(
        f"worked no-op jobs/s at depth 1,000 >= {WORKED_FLOOR:,} (the better concurrency)",
        configuration,
        ", ".join(f"c{c} {rate:,.0f}" for c, rate in rates.items()) + f"; best c{best}",
        rates[best] >= WORKED_FLOOR,
    )


def _deep(metrics: dict[str, Metric], configuration: str) -> Verdict:
    target = f"depth 1,000,000 within {DEEP_SLOWDOWN:.0%} of depth 1,000"
    if "depth.1000000" not in metrics:
        return Verdict(target, configuration, "not measured (quick mode, or --only)", None)
    deep = metrics["depth.1000000"].median(configuration)
    shallow = metrics["depth.1000"].median(configuration)
    return Verdict(
        target,
        configuration,
        f"{deep:,.0f} vs {shallow:,.0f} jobs/s ({deep / shallow - 1:+.0%})",
        deep >= (1 - DEEP_SLOWDOWN) * shallow,
    )


def _times_procrastinate(metric: Metric, configuration: str, condition: str) -> Verdict:
    ours, theirs = metric.median(configuration), metric.median(PROCRASTINATE)
    return Verdict(
        f">= {DEEP_FACTOR}x Procrastinate at depth 100,000 ({condition})",
        configuration,
        f"{ours / theirs:.1f}x ({ours:,.0f} vs {theirs:,.0f} jobs/s)",
        ours >= DEEP_FACTOR * theirs,
    )


def _batch_defer(metrics: dict[str, Metric], configuration: str) -> Verdict:
    ours, theirs = (metrics["defer.batch"].median(c) for c in (configuration, PROCRASTINATE))
    return Verdict(
        f"batch_defer_async >= {BATCH_DEFER_FACTOR:g}x Procrastinate's",
        configuration,
        f"{ours / theirs:.2f}x ({ours:,.0f} vs {theirs:,.0f} jobs/s)",
        ours >= BATCH_DEFER_FACTOR * theirs,
    )


def _one_lock(metrics: dict[str, Metric], configuration: str) -> Verdict:
    """The claims of 1 and of 10 on one lock's 300,000 jobs against Procrastinate's."""
    claims = [m for key, m in metrics.items() if key.startswith("one_lock.")]
    theirs = claims[0].median(PROCRASTINATE)
    ours = {m.key.removeprefix("one_lock.claim"): m.median(configuration) for m in claims}
    return Verdict(
        "claim on one lock's 300,000 jobs no slower than Procrastinate's",
        configuration,
        ", ".join(f"taking {n}: {ms:,.1f} ms" for n, ms in ours.items()) + f" vs {theirs:,.1f} ms",
        max(ours.values()) <= theirs,
    )


def _trio(metrics: dict[str, Metric]) -> Verdict:
    """Trio against asyncio on every rate in the table (jobs/s): the worst one decides."""
    shown = [m for m in metrics.values() if m.in_table and m.compare and "jobs/s" in m.label]
    rates = list({id(m.values): m for m in shown}.values())  # depth 1,000 is the c10 drain
    worst = min(rates, key=lambda m: m.median("dawdle/trio") / m.median("dawdle/asyncio"))
    ratio = worst.median("dawdle/trio") / worst.median("dawdle/asyncio")
    return Verdict(
        f"trio within {TRIO_SLOWDOWN:.0%} of asyncio (the worst of {len(rates)} jobs/s rows)",
        "dawdle/trio",
        f"trio ÷ aio {ratio:.2f} at {worst.label}",
        ratio >= 1 - TRIO_SLOWDOWN,
    )


def _floor(metrics: dict[str, Metric], configuration: str) -> Verdict:
    """The deep drain against the plain-SQL floor measured in the same rounds."""
    drain = metrics["drain.c50"]
    ours, floor = drain.median(configuration), statistics.median(drain.floor)
    share = ours / floor
    return Verdict(
        f">= {FLOOR_SHARE} of the plain-SQL floor ({drain.label})",
        configuration,
        f"{ours / floor:.2f} ({ours:,.0f} vs {floor:,.0f})",
        share >= FLOOR_SHARE,
    )


def _worked_trio(metrics: dict[str, Metric]) -> Verdict:
    """Trio against asyncio on every worked-jobs row: the worst one decides."""
    rows = [m for m in metrics.values() if m.key.startswith(("worked.", "drain.")) and m.in_table]
    rates = [m for m in rows if "jobs/s" in m.label]
    worst = min(rates, key=lambda m: m.median("dawdle/trio") / m.median("dawdle/asyncio"))
    ratio = worst.median("dawdle/trio") / worst.median("dawdle/asyncio")
    return Verdict(
        f"trio >= {WORKED_TRIO_SHARE} of asyncio on every worked-jobs row ({len(rates)})",
        "dawdle/trio",
        f"trio ÷ aio {ratio:.2f} at {worst.label}",
        ratio >= WORKED_TRIO_SHARE,
    )


@dataclass(frozen=True)
class _Bound:
    """A target that is one metric's median against a fixed limit."""

    key: str
    target: str
    shown: str  # how the figure is written: a str.format template
    limit: float
    holds: Callable[[float, float], bool]  # (figure, limit) -> met


BOUNDS = (
    _Bound(
        "defer.concurrent",
        f"defer_async from 10 tasks >= {SINGLE_DEFER_FLOOR:,} jobs/s",
        "{:,.0f}",
        SINGLE_DEFER_FLOOR,
        operator.ge,
    ),
    _Bound(
        "defer.batch",
        f"batch_defer_async >= {BATCH_DEFER_FLOOR:,} jobs/s",
        "{:,.0f}",
        BATCH_DEFER_FLOOR,
        operator.ge,
    ),
    _Bound(
        "latency.p99",
        f"p99 defer to start <= {P99_CEILING_MS:g} ms",
        "{:.2f} ms",
        P99_CEILING_MS,
        operator.le,
    ),
    _Bound(
        "idle.cpu_percent",
        f"idle worker < {IDLE_CPU_CEILING:g} % CPU",
        "{:.2f} %",
        IDLE_CPU_CEILING,
        operator.lt,
    ),
    _Bound(
        "worked.c10.cpu",
        f"client CPU <= {CPU_CEILING:g} µs per no-op job at concurrency 10",
        "{:.1f} µs",
        CPU_CEILING,
        operator.le,
    ),
)
# The depth-100,000 metrics compared with Procrastinate, and the condition each measures.
VERSUS_PROCRASTINATE = (("depth.100000", "analysed"), ("depth.100000.burst", "after a burst"))


def _inprocess(metrics: dict[str, Metric], configuration: str) -> Verdict:
    key = max(
        (k for k in metrics if k.startswith("inprocess.c") and k[11:].isdigit()),
        key=lambda k: int(k[11:]),
    )
    figure = metrics[key].median(configuration)
    return Verdict(
        f"producer + worker in one loop >= {INPROCESS_FLOOR:,} jobs/s (concurrency {key[11:]})",
        configuration,
        f"{figure:,.0f}" + _beside_floor(metrics[key], "{:,.0f}"),
        figure >= INPROCESS_FLOOR,
    )


def _features(metrics: dict[str, Metric], configuration: str) -> list[Verdict]:
    ratios = [
        m
        for k, m in metrics.items()
        if k.startswith("features.") and m.in_table and k != "features.noise"
    ]
    return [
        Verdict(
            f"{m.label.removesuffix(' (ratio)')}: at most {FEATURE_COST:.0%} slower",
            configuration,
            f"{m.median(configuration):.2f}",
            m.median(configuration) >= 1 - FEATURE_COST,
        )
        for m in ratios
    ]


def _peers(metrics: dict[str, Metric], configuration: str) -> list[Verdict]:
    """Each peer behind dawdle on every worked-jobs row the peer was measured on."""
    rows = [m for k, m in metrics.items() if k.startswith("worked.") and m.peers]
    peers = sorted({peer for m in rows for peer in m.peers})
    verdicts = []
    for peer in peers:
        worst = min(
            (m for m in rows if peer in m.peers),
            key=lambda m: m.median(configuration) / m.median(peer),
        )
        ratio = worst.median(configuration) / worst.median(peer)
        verdicts.append(
            Verdict(
                f"ahead of {peer} on every worked-jobs row it ran",
                configuration,
                f"{ratio:.2f}x at {worst.label}",
                ratio > 1,
            )
        )
    return verdicts


def _beside_floor(metric: Metric, shown: str) -> str:
    """What follows a figure: the bound measured beside it in the same run (`_bounds`), if any."""
    if not metric.floor:
        return ""
    return f" (floor measured beside it: {shown.format(statistics.median(metric.floor))})"


def _bounded(bound: _Bound, metrics: dict[str, Metric], configuration: str) -> Verdict:
    metric = metrics[bound.key]
    figure = metric.median(configuration)
    return Verdict(
        bound.target,
        configuration,
        bound.shown.format(figure) + _beside_floor(metric, bound.shown),
        bound.holds(figure, bound.limit),
    )


def check(metrics: dict[str, Metric]) -> list[Verdict]:
    """Every target's verdicts, from a run's metrics by key.

    A target whose metrics the run did not measure (`--only`) is left out.
    """
    rules: list[Callable[[], list[Verdict]]] = [
        lambda: [_worked(metrics, c) for c in DAWDLE],
        lambda: [_deep(metrics, c) for c in DAWDLE],
        lambda: [_batch_defer(metrics, c) for c in DAWDLE],
        lambda: [_one_lock(metrics, c) for c in DAWDLE],
        lambda: [_floor(metrics, c) for c in DAWDLE],
        lambda: [_worked_trio(metrics)],
        lambda: [
            _times_procrastinate(metrics[key], c, condition)
            for key, condition in VERSUS_PROCRASTINATE
            for c in DAWDLE
        ],
        lambda: [_trio(metrics)],
        lambda: [_bounded(bound, metrics, c) for bound in BOUNDS for c in DAWDLE],
        lambda: [_inprocess(metrics, c) for c in DAWDLE],
        lambda: [v for c in DAWDLE for v in _features(metrics, c) + _peers(metrics, c)],
    ]
    verdicts: list[Verdict] = []
    for rule in rules:
        try:
            verdicts += rule()
        except (KeyError, IndexError, ValueError):  # not measured in this run (--only)
            continue
    return verdicts
