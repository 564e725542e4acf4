"""PNG charts of a run: throughput by depth, and the distribution of latency.

They are drawn on matplotlib's Agg canvas directly, without pyplot's global state, so no
display is needed.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from tests.perf.benchmark._configurations import CONFIGURATIONS
from tests.perf.benchmark._figures import Section
from tests.perf.benchmark._targets import P99_CEILING_MS


def _plain(*axes: Axis) -> None:
    """Label a logarithmic axis 2, 5, 1,000 rather than in powers of ten."""
    for axis in axes:
        formatter = FuncFormatter(lambda value, _: f"{value:,.10g}")
        axis.set_major_formatter(formatter)
        axis.set_minor_formatter(formatter)


def _save(figure: Figure, axes: Axes, path: Path) -> Path:
    axes.grid(visible=True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    FigureCanvasAgg(figure).print_figure(path)
    return path


def throughput(depth: Section, title: str, path: Path) -> Path:
    """Median jobs/s by queue depth, a line per configuration, both axes logarithmic.

    The rate just after a burst (stale statistics) is a hollow marker at its depth.
    """
    depths = depth.raw["depths"]
    burst = next(m for m in depth.metrics if m.key.endswith(".burst"))
    burst_depth = int(burst.key.split(".")[1])
    figure = Figure(figsize=(7, 4.5), dpi=120)
    axes = figure.subplots()
    for configuration in CONFIGURATIONS:
        rates = [depth.metric(f"depth.{d}").median(configuration) for d in depths]
        (line,) = axes.plot(depths, rates, marker="o", label=configuration)
        axes.plot(
            [burst_depth],
            [burst.median(configuration)],
            marker="o",
            markerfacecolor="none",
            color=line.get_color(),
            linestyle="none",
            label=f"{configuration}, after a burst",
        )
    axes.set(
        xscale="log",
        yscale="log",
        xlabel="todo jobs when the worker starts",
        ylabel="no-op jobs/s",
        title=f"throughput by queue depth, {title}",
    )
    _plain(axes.yaxis)
    axes.yaxis.set_minor_formatter(NullFormatter())  # 1,000 and 10,000 only: no crowding
    axes.xaxis.set_major_locator(FixedLocator(depths))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_minor_formatter(NullFormatter())
    return _save(figure, axes, path)


def latency(section: Section, title: str, path: Path) -> Path:
    """The distribution (CDF) of defer-to-start ms over every round, per configuration."""
    figure = Figure(figsize=(7, 4.5), dpi=120)
    axes = figure.subplots()
    for configuration in CONFIGURATIONS:
        samples = sorted(s for found in section.raw["samples_ms"][configuration] for s in found)
        fractions = [(rank + 1) / len(samples) for rank in range(len(samples))]
        axes.step(samples, fractions, where="post", label=configuration)
    axes.axvline(P99_CEILING_MS, color="grey", linestyle="--", label="p99 target")
    axes.set(
        xscale="log",
        xlabel="defer to start (ms)",
        ylabel="fraction of jobs started",
        title=f"defer-to-start latency, idle worker, {title}",
    )
    _plain(axes.xaxis)
    return _save(figure, axes, path)
