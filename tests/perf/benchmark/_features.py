"""What the features added since the first benchmark cost at their defaults: with and without.

Each figure is a ratio of two drains made back to back by dawdle on the same runtime (the
worked-jobs drain: polling, a queue refilled before each), one with the feature as a user
gets it and one without it, so the machine's load weighs on both alike; the table shows
the median of each round's ratio (1.00: no cost; 0.95: 5 % slower with the feature):

- unknown-task filter: claims name the app's tasks (`unknown_tasks="leave"`, the default)
  against claims of any task (`"fail"`);
- built-in hooks: the worker's `StatsHook` and `OutcomeLog` against none (taken out by a
  patch of the benchmark's own; no option removes them), and one user hook whose
  `job_started`, `job_finished` and `jobs_claimed` do nothing added to them (a bare
  `Hooks()` overrides nothing, so the worker never calls it);
- budgets and breakers: a `FleetRetryBudget()` and a `Breaker()` on the task, which switch
  the claims and outcome writes to their statements, against neither;
- stored errors: jobs that fail once and then succeed (every run a retry, then a success),
  with the `dawdle_job_errors` table and without it (dropped, then created again).

Each pair is drained in the order with, without, without, with, and its ratio is that of
the two sums, so that a load rising or falling through the four drains weighs on both sides.
A first row divides the no-op drain by itself the same way: how far from 1.00 the machine's
noise alone moves a ratio in this run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest.mock import patch

import anyio
import psycopg

import dawdle
from dawdle._hooks_dispatch import HookDispatch
from dawdle._worker import worker as worker_module
from dawdle._worker.builtin_hooks import OutcomeLog, StatsHook
from tests.perf.benchmark._configurations import (
    CONFIGURATIONS,
    POOL_SIZE,
    Bench,
    opened,
    rotations,
    run_on,
    run_worker,
)
from tests.perf.benchmark._database import _apply_schema, refill
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

DAWDLE = tuple(c for c in CONFIGURATIONS if c.startswith("dawdle"))


class NoOpHook(dawdle.Hooks):
    """A user's hook on every run and claim that does nothing: the cost of being called."""

    def job_started(self, event: dawdle.JobStarted) -> None:
        """Nothing."""

    def job_finished(self, event: dawdle.JobFinished) -> None:
        """Nothing."""

    def jobs_claimed(self, event: dawdle.JobsClaimed) -> None:
        """Nothing."""


@dataclass(frozen=True)
class Variant:
    """One drain: its task, whether the task is guarded, worker options, hooks patched out."""

    task: str = "noop"
    guarded: bool = False  # a FleetRetryBudget and a Breaker on the task
    options: tuple[tuple[str, Any], ...] = ()
    without_builtin_hooks: bool = False
    without_errors_table: bool = False


VARIANTS = {
    "baseline": Variant(),
    "baseline_again": Variant(),
    "unknown_any": Variant(options=(("unknown_tasks", "fail"),)),
    "no_hooks": Variant(without_builtin_hooks=True),
    "user_hook": Variant(options=(("hooks", (NoOpHook(),)),)),
    "guarded": Variant(guarded=True),
    "flaky": Variant(task="flaky"),
    "flaky_no_table": Variant(task="flaky", without_errors_table=True),
}
# (key, label, numerator, denominator): each row's ratio, per round.
RATIOS = (
    ("noise", "no-op ÷ the same no-op: the noise", "baseline", "baseline_again"),
    ("unknown_tasks", "unknown-task filter on ÷ off, no-op", "baseline", "unknown_any"),
    ("builtin_hooks", "built-in hooks ÷ no hooks, no-op", "baseline", "no_hooks"),
    ("user_hook", "one user no-op hook ÷ built-ins only, no-op", "user_hook", "baseline"),
    ("guarded", "FleetRetryBudget + Breaker on the task ÷ neither", "guarded", "baseline"),
    ("stored_errors", "failing once: errors table ÷ no table", "flaky", "flaky_no_table"),
)


@contextmanager
def _builtin_hooks_removed(remove: bool) -> Iterator[None]:
    """The worker's hook dispatch made without StatsHook and OutcomeLog, while in the block."""
    if not remove:
        yield
        return

    def without(hooks: tuple[Any, ...]) -> HookDispatch:
        return HookDispatch(h for h in hooks if not isinstance(h, StatsHook | OutcomeLog))

    with patch.object(worker_module, "HookDispatch", without):
        yield


def _bench(configuration: str, dsn: str, guarded: bool) -> Bench:
    """An app with `noop` (guarded or not) and `flaky`, which fails its first run of each job."""
    app = dawdle.App(
        connector=dawdle.PsycopgConnector(conninfo=dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    )
    bench = Bench(configuration, app)
    failed: set[int] = set()
    guards: dict[str, Any] = (
        {"retry_budget": dawdle.FleetRetryBudget(), "breaker": dawdle.Breaker()} if guarded else {}
    )

    @app.task(name="noop", **guards)
    async def noop(i: int) -> None:
        bench.worked += 1

    @app.task(name="flaky", retry=1)
    async def flaky(i: int) -> None:
        if i not in failed:
            failed.add(i)
            raise RuntimeError(f"job {i} fails its first run")
        bench.worked += 1

    return bench


async def _drain(configuration: str, dsn: str, variant: Variant, concurrency: int) -> float:
    bench = _bench(configuration, dsn, variant.guarded)
    async with opened(bench):
        with _builtin_hooks_removed(variant.without_builtin_hooks):
            elapsed = await run_worker(
                bench,
                concurrency=concurrency,
                wait=False,
                listen_notify=False,
                **dict(variant.options),
            )
    return bench.worked / elapsed


SUCCEEDED = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
DROP_ERRORS = "DROP TABLE dawdle_job_errors"


def _rate(configuration: str, dsn: str, variant: Variant, settings: Settings) -> float:
    """Jobs/s of one drain of the variant's task, the errors table dropped if it says so."""
    refill(dsn, settings.features_depth, variant.task)
    if variant.without_errors_table:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(DROP_ERRORS)
    try:
        rate = run_on(
            configuration, _drain, configuration, dsn, variant, settings.features_concurrency
        )
    finally:
        if variant.without_errors_table:
            anyio.run(_apply_schema, dsn, backend="asyncio")  # creates the table again
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(SUCCEEDED).fetchone()
    assert row is not None
    assert row[0] == settings.features_depth, f"not drained: {row[0]} succeeded"
    return rate


def measure(dsn: str, settings: Settings) -> Section:
    """Each feature's with ÷ without ratio, per dawdle configuration; the rates in the JSON."""
    rates = {
        name: Metric(
            f"features.{name}.rate",
            f"{name} drain (jobs/s)",
            in_table=False,
            compare=False,
        )
        for name in VARIANTS
    }
    ratios = {
        key: Metric(f"features.{key}", f"{label} (ratio)", style=".2f", compare=False)
        for key, label, _, _ in RATIOS
    }
    for order in rotations(settings.rounds):
        for configuration in (c for c in order if c in DAWDLE):
            for key, _, numerator, denominator in RATIOS:
                sides = (numerator, denominator, denominator, numerator)
                drained = [_rate(configuration, dsn, VARIANTS[n], settings) for n in sides]
                for name, rate in zip(sides, drained, strict=True):
                    rates[name].add(configuration, rate)
                ratios[key].add(configuration, (drained[0] + drained[3]) / sum(drained[1:3]))
    return Section(
        "features at their defaults: with ÷ without",
        [*ratios.values(), *rates.values()],
        notes=[
            f"each ratio: drains of {settings.features_depth:,} jobs, with / without / without / "
            "with, back to back, "
            f"concurrency {settings.features_concurrency}, polling; dawdle only; the failing "
            "drain's jobs fail once, then succeed; the rates in the JSON"
        ],
    )
