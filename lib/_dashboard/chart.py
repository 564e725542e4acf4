"""The overview's chart: runs ended per minute over the last hour, as SVG drawn here.

Only numbers go into the markup (counts, coordinates, minutes), so there is nothing to
escape; the page needs no script and no chart library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from markupsafe import Markup

WIDTH: Final = 720
HEIGHT: Final = 160
MARGIN: Final = 30


def svg(counts: Sequence[tuple[int, int]]) -> Markup:
    """A bar per minute (succeeded, failed), failures stacked on successes, the peak shown."""
    peak = max((ok + failed for ok, failed in counts), default=0) or 1
    plot = HEIGHT - 2 * MARGIN
    step = (WIDTH - 2 * MARGIN) / len(counts)
    bars = []
    for index, (ok, failed) in enumerate(counts):
        x = MARGIN + index * step
        ok_height = plot * ok / peak
        failed_height = plot * failed / peak
        base = HEIGHT - MARGIN
        ago = f"{len(counts) - 1 - index} min ago" if index < len(counts) - 1 else "this minute"
        bars.append(
            f'<rect class="ok" x="{x:.1f}" y="{base - ok_height:.1f}" width="{step - 1:.1f}" '
            f'height="{ok_height:.1f}"><title>{ago}: {ok} succeeded, '
            f"{failed} failed</title></rect>"
        )
        if failed:
            bars.append(
                f'<rect class="failed" x="{x:.1f}" y="{base - ok_height - failed_height:.1f}" '
                f'width="{step - 1:.1f}" height="{failed_height:.1f}"></rect>'
            )
    total = sum(ok + failed for ok, failed in counts)
    axis = (
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" '
        f'y2="{HEIGHT - MARGIN}" class="axis"></line>'
        f'<text x="{MARGIN}" y="{MARGIN - 8}">{peak} per minute</text>'
        f'<text x="{MARGIN}" y="{HEIGHT - 8}">60 min ago</text>'
        f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - 8}" text-anchor="end">now</text>'
    )
    return Markup(  # noqa: S704 (numbers only, formatted above)
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="runs ended in the last hour: {total}">{axis}{"".join(bars)}</svg>'
    )
