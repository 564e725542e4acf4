"""The benchmark's report: peer columns, targets of a run that measured only some families."""

from __future__ import annotations

import argparse

import pytest

from tests.perf.benchmark._families import families
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._report import table
from tests.perf.benchmark._targets import check


def _metric(key: str, label: str, values: dict[str, float], **options: object) -> Metric:
    metric = Metric(key, label, **options)  # type: ignore[arg-type]
    for configuration, value in values.items():
        metric.add(configuration, value)
    return metric


def test_a_peer_gets_its_column_and_dawdle_asyncio_divided_by_it() -> None:
    both = {"procrastinate/asyncio": 400.0, "dawdle/asyncio": 4000.0, "dawdle/trio": 3600.0}
    with_peer = _metric("worked.c10", "c10 (jobs/s)", both)
    with_peer.add_peer("awa-pg", 800.0)
    without_peer = _metric("worked.c1", "c1 (jobs/s)", both)

    lines = table([Section("worked jobs", [without_peer, with_peer])]).splitlines()

    assert "awa-pg" in lines[0]
    assert "aio÷awa-pg" in lines[0]
    peer_row = next(line for line in lines if line.startswith("c10"))
    assert peer_row.split()[-2:] == ["800", "5.00"]
    plain_row = next(line for line in lines if line.startswith("c1 "))
    assert plain_row.split()[-2:] == ["-", "-"]


def test_targets_of_a_partial_run_judge_only_what_it_measured() -> None:
    inprocess = _metric(
        "inprocess.c100",
        "in one loop (jobs/s)",
        {"procrastinate/asyncio": 200.0, "dawdle/asyncio": 6000.0, "dawdle/trio": 4000.0},
    )
    dawdle_only = {"compare": False, "style": ".2f"}
    guarded = _metric(
        "features.guarded",
        "budget (ratio)",
        {"dawdle/asyncio": 0.70, "dawdle/trio": 0.98},
        **dawdle_only,
    )
    halves = {"dawdle/asyncio": 0.5, "dawdle/trio": 0.5}
    noise = _metric("features.noise", "noise (ratio)", halves, **dawdle_only)
    metrics = {m.key: m for m in (inprocess, guarded, noise)}

    verdicts = {(v.target.split(" ")[0], v.configuration): v.met for v in check(metrics)}

    assert verdicts == {
        ("producer", "dawdle/asyncio"): True,
        ("producer", "dawdle/trio"): False,
        ("budget:", "dawdle/asyncio"): False,
        ("budget:", "dawdle/trio"): True,
        ("trio", "dawdle/trio"): False,  # 4,000 ÷ 6,000 on the one compared jobs/s row
        ("depth", "dawdle/asyncio"): None,  # said to be not measured
        ("depth", "dawdle/trio"): None,
    }


def test_only_adds_the_families_a_family_starts_from() -> None:
    assert families("memory") == {"memory", "depth", "worked"}
    assert families("features, inprocess") == {"features", "inprocess"}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown families bogus"):
        families("worked,bogus")


def test_a_verdict_shows_the_bound_measured_beside_its_figure() -> None:
    rates = {"procrastinate/asyncio": 200.0, "dawdle/asyncio": 900.0, "dawdle/trio": 800.0}
    inprocess = _metric("inprocess.c100", "in one loop (jobs/s)", rates)
    inprocess.floor += [1_200.0, 1_000.0, 1_100.0]

    figures = {v.configuration: v.figure for v in check({inprocess.key: inprocess})}

    assert figures["dawdle/asyncio"] == "900 (floor measured beside it: 1,100)"
    assert figures["dawdle/trio"] == "800 (floor measured beside it: 1,100)"
