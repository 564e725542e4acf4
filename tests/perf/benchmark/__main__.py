"""`python -m tests.perf.benchmark [--quick] [--only FAMILIES] [--output DIR] [--dsn DSN]`.

One run, one fresh database, three configurations (see `_configurations`). The families run
in this order: defer rates, worked jobs by concurrency (with awa-pg's drains as a peer
column where it is installed), the deep drain beside the plain-SQL floor (`_floor`), a
producer and a worker in one process, the features' cost, defer-to-start latency, the idle
worker, throughput by queue depth, a claim on one lock's 300,000 jobs, several worker
processes, and memory (whose job count comes from the depth-100,000 rates). `--only` runs
some of them (and those they need). Progress goes to stderr; the report to stdout; the JSON
and the charts to `--output`.

`--scenario outage` runs the outage scenario instead (`_outage`), on a fresh database too;
`--scenario pgbouncer` the pooler scenario (`_pgbouncer`, when PgBouncer is installed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from tests.perf.benchmark import (
    _awa,
    _charts,
    _defer,
    _depth,
    _features,
    _floor,
    _idle,
    _inprocess,
    _latency,
    _memory,
    _one_lock,
    _outage,
    _pgbouncer,
    _processes,
    _retry,
    _worked,
)
from tests.perf.benchmark._child import ROOT
from tests.perf.benchmark._configurations import CONFIGURATIONS
from tests.perf.benchmark._database import fresh_database, server, server_version
from tests.perf.benchmark._families import FAMILIES, families
from tests.perf.benchmark._figures import Section
from tests.perf.benchmark._report import Run, render, write_json
from tests.perf.benchmark._settings import FULL, QUICK, Settings
from tests.perf.benchmark._targets import check


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.benchmark", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="one short round of everything (under 2 minutes)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "perf-results",
        help="directory for the JSON and the charts (default: perf-results/ in the repository)",
    )
    parser.add_argument(
        "--scenario",
        choices=("standard", "outage", "pgbouncer"),
        default="standard",
        help="standard: the comparison with Procrastinate (default); outage: a dependency "
        "down for 30 s under four worker processes, without and with the retry budget and "
        "the breaker (about 4 minutes; see _outage); pgbouncer: defer and worked jobs/s "
        "direct and through PgBouncer in both modes (about 3 minutes; see _pgbouncer)",
    )
    parser.add_argument(
        "--only",
        type=families,
        default=frozenset(FAMILIES),
        metavar="FAMILY[,FAMILY...]",
        help=f"run only these families (and those they need): {', '.join(FAMILIES)}",
    )
    parser.add_argument(
        "--dsn",
        help="PostgreSQL server to create the run's database on (default: $DAWDLE_TEST_DSN, "
        "else an embedded server started for the run)",
    )
    return parser.parse_args(argv)


def _measure(dsn: str, settings: Settings, started: float, only: frozenset[str]) -> list[Section]:
    def step(what: str) -> bool:
        print(f"[{time.perf_counter() - started:5.0f} s] {what}", file=sys.stderr, flush=True)
        return True

    sections: dict[str, Section] = {}
    if "defer" in only and step("defer rates"):
        sections["defer"] = _defer.measure(dsn, settings)
    if "worked" in only and step("worked jobs by concurrency"):
        worked = sections["worked"] = _worked.measure(dsn, settings)
        step("awa-pg's drains")
        rates = {c: worked.metric(f"worked.c{c}") for c in settings.concurrencies}
        worked.notes.append(_awa.measure(dsn, settings, rates))
    if "floor" in only and step("deep drain and the plain-SQL floor"):
        sections["floor"] = _floor.measure(dsn, settings)
    if "inprocess" in only and step("producer and worker in one process"):
        sections["inprocess"] = _inprocess.measure(dsn, settings)
    if "features" in only and step("the features' cost"):
        sections["features"] = _features.measure(dsn, settings)
    if "latency" in only and step("defer-to-start latency"):
        sections["latency"] = _latency.measure(dsn, settings)
    if "idle" in only and step("idle worker"):
        sections["idle"] = _idle.measure(dsn, settings)
    depths = ", ".join(f"{d:,}" for d in settings.deep_depths)
    if "depth" in only and step(f"throughput at depths {depths}"):
        shallow = sections["worked"].metric(f"worked.c{settings.depth_concurrency}")
        sections["depth"] = _depth.measure(dsn, settings, shallow)
    if "one_lock" in only and step("claim on one lock's 300,000 jobs"):
        sections["one_lock"] = _one_lock.measure(dsn, settings)
    if "processes" in only and step("worker processes"):
        sections["processes"] = _processes.measure(dsn, settings)
    if "memory" in only and step("memory"):
        rates = sections["depth"].metric(f"depth.{settings.deep_depths[0]}")
        sections["memory"] = _memory.measure(
            dsn, settings, {c: rates.median(c) for c in CONFIGURATIONS}
        )
    order = (
        "defer",
        "worked",
        "floor",
        "inprocess",
        "features",
        "latency",
        "depth",
        "one_lock",
        "idle",
        "memory",
    )
    return [sections[name] for name in (*order, "processes") if name in sections]


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark, print the report, write the JSON and the charts."""
    args = _parse(argv)
    if args.scenario == "outage":
        with server(args.dsn) as (server_dsn, _), fresh_database(server_dsn) as dsn:
            _outage.main(dsn, quick=args.quick, output=args.output)
        return
    if args.scenario == "pgbouncer":
        with server(args.dsn) as (server_dsn, _), fresh_database(server_dsn) as dsn:
            _pgbouncer.main(dsn, quick=args.quick)
        return
    settings = QUICK if args.quick else FULL
    started, date, load = time.perf_counter(), datetime.now().astimezone(), os.getloadavg()[0]
    with server(args.dsn) as (server_dsn, source), fresh_database(server_dsn) as dsn:
        version = server_version(dsn)
        sections = _measure(dsn, settings, started, args.only)
    retry_micros = _retry.measure(settings)
    run = Run(
        settings=settings,
        date=date,
        database=source,
        server=version,
        load_average=(load, os.getloadavg()[0]),
        sections=sections,
        retry_micros=retry_micros,
        verdicts=check({m.key: m for section in sections for m in section.metrics}),
        wall_seconds=time.perf_counter() - started,
    )
    args.output.mkdir(parents=True, exist_ok=True)
    stem = args.output / f"{date:%Y%m%d-%H%M%S}-{settings.mode}"
    title = f"{settings.mode} run {date:%Y-%m-%d %H:%M}"
    by_title = {section.title: section for section in sections}
    charts = []
    if "queue depth" in by_title:
        path = stem.with_name(f"{stem.name}-depth.png")
        charts.append(_charts.throughput(by_title["queue depth"], title, path))
    if "latency" in by_title:
        path = stem.with_name(f"{stem.name}-latency.png")
        charts.append(_charts.latency(by_title["latency"], title, path))
    written = write_json(run, charts, stem)
    print(render(run))
    print("\nwrote " + ", ".join(str(path) for path in [*written, *charts]))


if __name__ == "__main__":
    main()
