"""The benchmark's measurement families, and the `--only` option that chooses some of them."""

from __future__ import annotations

import argparse

FAMILIES = (
    "defer",
    "worked",
    "floor",
    "inprocess",
    "features",
    "latency",
    "idle",
    "depth",
    "one_lock",
    "processes",
    "memory",
)
NEEDS = {"depth": ("worked",), "memory": ("depth", "worked")}  # figures each one starts from


def families(text: str) -> frozenset[str]:
    """The families named in `--only`, with those they need; unknown names refused."""
    chosen = {name.strip() for name in text.split(",")}
    if unknown := chosen - set(FAMILIES):
        raise argparse.ArgumentTypeError(
            f"unknown families {', '.join(sorted(unknown))}; choose among {', '.join(FAMILIES)}"
        )
    return frozenset(chosen.union(*(NEEDS.get(name, ()) for name in chosen)))
