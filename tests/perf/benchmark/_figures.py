"""What a measurement family gives back: figures by configuration and round, in sections."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.perf.benchmark._configurations import CONFIGURATIONS


@dataclass
class Metric:
    """One figure of every configuration, one value per round; the table shows the median."""

    key: str  # stable name in the JSON, e.g. "worked.c10"
    label: str  # the table's row label, unit included
    better: Literal["higher", "lower"] = "higher"
    style: str = ",.0f"  # format of its values in the table
    in_table: bool = True  # False: JSON only
    compare: bool = True  # whether ratios between configurations mean anything
    values: dict[str, list[float]] = field(
        default_factory=lambda: {configuration: [] for configuration in CONFIGURATIONS}
    )
    floor: list[float] = field(default_factory=list)  # the plain-SQL floor's rounds (`_floor`)
    # Other queues measured the same way (e.g. "awa-pg"), shown as extra columns.
    peers: dict[str, list[float]] = field(default_factory=dict)

    def add(self, configuration: str, value: float) -> None:
        """Record one round's value of a configuration."""
        self.values[configuration].append(value)

    def median(self, configuration: str) -> float:
        """The median over the rounds of a configuration (or a peer); NaN if not measured."""
        rounds = self.values.get(configuration) or self.peers.get(configuration)
        return statistics.median(rounds) if rounds else math.nan

    def add_peer(self, peer: str, value: float) -> None:
        """Record one round's value of another queue measured the same way."""
        self.peers.setdefault(peer, []).append(value)

    def as_json(self) -> dict[str, Any]:
        """The metric with its medians and every round."""
        return {
            "key": self.key,
            "label": self.label,
            "better": self.better if self.compare else None,
            "median": {
                c: None if math.isnan(m := self.median(c)) else m
                for c in [*CONFIGURATIONS, *self.peers]
            },
            "rounds": self.values | self.peers,
            **(
                {"floor": {"median": statistics.median(self.floor), "rounds": self.floor}}
                if self.floor
                else {}
            ),
        }


@dataclass
class Section:
    """A measurement family's metrics, notes on how it measured, and raw data for charts."""

    title: str
    metrics: list[Metric]
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def metric(self, key: str) -> Metric:
        """The metric named `key`."""
        return next(metric for metric in self.metrics if metric.key == key)

    def as_json(self) -> dict[str, Any]:
        """The section with every metric, its notes and its raw data."""
        return {
            "title": self.title,
            "notes": self.notes,
            "metrics": [metric.as_json() for metric in self.metrics],
            **self.raw,
        }
