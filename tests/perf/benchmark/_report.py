"""What a run prints and writes: the header, the table, the targets, and the JSON file."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import statistics
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.perf.benchmark._configurations import CONFIGURATIONS
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings
from tests.perf.benchmark._targets import Verdict

PACKAGES = ("dawdle", "procrastinate", "psycopg", "psycopg-pool", "anyio", "trio", "awa-pg")
COLUMNS = (
    "procrastinate",
    "dawdle/aio",
    "dawdle/trio",
    "ratio aio",
    "ratio trio",
    "trio÷aio",
    "floor",
    "÷ floor",
)
WIDTHS = (15, 12, 12, 10, 11, 10, 9, 12)
LOWER = " ↓"  # marks the rows where lower is better
PEER_WIDTH = 11  # each peer's column (its figure), and then dawdle/aio ÷ it


@dataclass
class Run:
    """Everything a run measured, and where and when."""

    settings: Settings
    date: datetime
    database: str  # where the server came from
    server: str  # its version()
    load_average: tuple[float, float]  # 1-minute, before and after
    sections: list[Section]
    retry_micros: dict[str, float]
    verdicts: list[Verdict]
    wall_seconds: float


def machine() -> dict[str, Any]:
    """The platform, cores and Python the run used."""
    return {
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
    }


def versions() -> dict[str, str]:
    """The installed versions of the packages under test (a peer's only if installed)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def header(run: Run) -> str:
    """Machine, versions, server, date, mode and load."""
    host = machine()
    return "\n".join(
        [
            f"{host['platform']}, {host['cores']} cores, Python {host['python']}",
            ", ".join(f"{name} {version}" for name, version in versions().items()),
            f"server ({run.database}): {run.server}",
            f"{run.date:%Y-%m-%d %H:%M:%S %Z}, {run.settings.mode} run: rounds "
            f"{run.settings.rounds} in process, {run.settings.idle_rounds} idle, "
            f"{run.settings.process_rounds} with processes, 1 for memory; each round runs "
            "every configuration once, in a rotated order; the table shows medians",
            f"1-minute load average before / after: {run.load_average[0]:.2f} / "
            f"{run.load_average[1]:.2f} (the benchmark adds about 1; more means other "
            "processes shared the cores)",
        ]
    )


def _ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator):
        return "-"
    return f"{numerator / denominator:.2f}" if denominator else "n/a"


def _figure(value: float, style: str) -> str:
    return "-" if math.isnan(value) else f"{value:{style}}"


def _row(metric: Metric, width: int, peers: list[str]) -> str:
    theirs, aio, trio = (metric.median(c) for c in CONFIGURATIONS)
    label = metric.label + (LOWER if metric.better == "lower" and metric.compare else "")
    cells = [_figure(value, metric.style) for value in (theirs, aio, trio)]
    if metric.compare:
        cells += [_ratio(aio, theirs), _ratio(trio, theirs), _ratio(trio, aio)]
    else:
        cells += [""] * 3
    if metric.floor:  # the plain-SQL floor (`_floor`): its rate, and dawdle's share of it
        floor = statistics.median(metric.floor)
        cells += [f"{floor:{metric.style}}", f"{_ratio(aio, floor)}/{_ratio(trio, floor)}"]
    else:
        cells += [""] * 2
    for peer in peers:  # blank where the peer was not measured
        figure = metric.median(peer)
        cells += [_figure(figure, metric.style), _ratio(aio, figure)]
    widths = [*WIDTHS, *[PEER_WIDTH] * 2 * len(peers)]
    return (
        f"{label:<{width}}" + "".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
    ).rstrip()


def table(sections: list[Section]) -> str:
    """One row per metric shown, grouped by section, with the section's notes beneath.

    Peers (other queues measured on some rows) get two columns each: their figure, and
    dawdle/asyncio's divided by it.
    """
    shown = [metric for section in sections for metric in section.metrics if metric.in_table]
    peers = sorted({peer for metric in shown for peer in metric.peers})
    width = max(len(metric.label) for metric in shown) + len(LOWER) + 1
    titles = [*COLUMNS, *[t for peer in peers for t in (peer, f"aio÷{peer}")]]
    widths = [*WIDTHS, *[PEER_WIDTH] * 2 * len(peers)]
    lines = [
        f"{'median':<{width}}" + "".join(f"{t:>{w}}" for t, w in zip(titles, widths, strict=True))
    ]
    lines.append("-" * len(lines[0]))
    for section in sections:
        lines.append(f"[{section.title}]")
        lines += [_row(metric, width, peers) for metric in section.metrics if metric.in_table]
        lines += [f"    {note}" for note in section.notes]
    lines.append(
        "ratio = dawdle ÷ procrastinate, trio÷aio = dawdle/trio ÷ dawdle/asyncio"
        + "".join(f", aio÷{peer} = dawdle/asyncio ÷ {peer}" for peer in peers)
        + f"; above 1 is better, except on rows marked{LOWER} (lower is better); - = not measured"
    )
    return "\n".join(lines)


def retry_line(micros: dict[str, float]) -> str:
    """The retry decision cost, both implementations in one line."""
    figures = ", ".join(f"{name} {value:.2f} µs" for name, value in micros.items())
    return f"retry decision cost (get_retry_decision, no database): {figures}"


def targets(verdicts: list[Verdict]) -> str:
    """One line per verdict: met, NOT met or not measured, with its figure."""
    words = {True: "met", False: "NOT met", None: "skipped"}
    lines = ["targets (issues 6 and 16), on the medians above:"]
    lines += [f"  {words[v.met]:<8} {v.configuration:<15} {v.target}: {v.figure}" for v in verdicts]
    return "\n".join(lines)


def render(run: Run) -> str:
    """Everything printed at the end of a run."""
    return "\n\n".join(
        [
            header(run),
            table(run.sections),
            retry_line(run.retry_micros),
            targets(run.verdicts),
            f"wall time {run.wall_seconds:.0f} s",
        ]
    )


def as_json(run: Run, charts: list[Path]) -> dict[str, Any]:
    """Every figure with its rounds, the samples, and the context of the run."""
    return {
        "mode": run.settings.mode,
        "date": run.date.isoformat(),
        "wall_seconds": run.wall_seconds,
        "machine": machine(),
        "versions": versions(),
        "database": run.database,
        "server": run.server,
        "load_average_1min": {"before": run.load_average[0], "after": run.load_average[1]},
        "settings": asdict(run.settings),
        "sections": [section.as_json() for section in run.sections],
        "retry_decision_us": run.retry_micros,
        "targets": [asdict(verdict) for verdict in run.verdicts],
        "charts": [chart.name for chart in charts],
    }


def write_json(run: Run, charts: list[Path], stem: Path) -> list[Path]:
    """`<stem>.json`, and the same as `latest-<mode>.json` beside it."""
    text = json.dumps(as_json(run, charts), indent=1, ensure_ascii=False) + "\n"
    paths = [stem.with_suffix(".json"), stem.with_name(f"latest-{run.settings.mode}.json")]
    for path in paths:
        path.write_text(text, encoding="utf-8")
    return paths
