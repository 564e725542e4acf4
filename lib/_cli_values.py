"""The values of the `dawdle` command's options, each checked into what the commands use.

A bad value raises `argparse.ArgumentTypeError` naming it; the parser reports it on one line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, Final

from dawdle._cli_commands import NO_LIMIT
from dawdle._cli_errors import shown
from dawdle._validate import integer, number

# Deeper --json is refused: Procrastinate and psycopg walk job arguments recursively, and
# a few hundred levels already exhaust Python's recursion limit on the way to the database.
MAX_JSON_DEPTH: Final = 100

# PostgreSQL's integer, the type of a job's priority.
PRIORITY_RANGE: Final = (-(2**31), 2**31 - 1)

# A job scheduled further ahead than this is a typo; Python's dates end in year 9999.
MAX_SCHEDULE_IN: Final = 100 * 365 * 86400


def positive_int(text: str) -> int:
    """An int >= 1 for argparse, or its error naming the value."""
    try:
        return integer("a count", int(text), at_least=1)
    except ValueError:  # not an int (int()), or below 1 (integer()'s ConfigurationError)
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {shown(text)}") from None


def max_recoveries(text: str) -> int | str:
    """An int >= 0, or "none" (no limit), for argparse; or its error naming the value."""
    if text.strip().lower() == NO_LIMIT:
        return NO_LIMIT
    try:
        return integer("a count", int(text), at_least=0)
    except ValueError:  # not an int (int()), or below 0 (integer()'s ConfigurationError)
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 0 or 'none', got {shown(text)}"
        ) from None


def priority(text: str) -> int:
    """An int that fits PostgreSQL's integer, or argparse's error naming the value."""
    low, high = PRIORITY_RANGE
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(
            f"expected an integer from {low} to {high}, got {shown(text)}"
        )
    return value


def seconds_parser(*, above: float | None, at_most: float | None) -> Callable[[str], float]:
    """A parser of finite seconds (>= 0, or > `above`; <= `at_most`) for argparse."""

    def seconds(text: str) -> float:
        """Seconds for argparse, or its error naming the value."""
        try:
            return number(
                "seconds",
                float(text),
                at_least=None if above is not None else 0,
                above=above,
                at_most=at_most,
            )
        except ValueError:  # not a number (float()), or out of bounds, NaN, infinite (number())
            low = f"> {above:g}" if above is not None else ">= 0"
            high = f" and <= {at_most:g}" if at_most is not None else ""
            raise argparse.ArgumentTypeError(
                f"expected seconds (a number {low}{high}), got {shown(text)}"
            ) from None

    return seconds


seconds = seconds_parser(above=None, at_most=None)


def non_empty(what: str) -> Callable[[str], str]:
    """A parser refusing an empty (or blank) value: e.g. an unset shell variable."""

    def parse(text: str) -> str:
        """`text`, unless blank."""
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected a non-empty {what}, got {shown(text)}")
        return text

    return parse


def queues(text: str) -> list[str]:
    """A comma-separated list of queue names; an empty name is refused, not dropped."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"an empty queue name is not a queue, got {shown(text)} "
            "(expected names separated by commas, like 'mail,reports')"
        )
    return names


class _JsonConstantError(Exception):
    """NaN or Infinity in --json: Python reads them, JSON and PostgreSQL's jsonb do not."""


def _refuse_constant(name: str) -> Any:
    raise _JsonConstantError(name)


def _deeper_than(value: Any, limit: int) -> bool:
    """True if `value` nests lists and objects more than `limit` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (the task's keyword arguments), or an argparse error naming the value."""
    too_deep = f"nested more than {MAX_JSON_DEPTH} levels deep"
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {shown(text)} ({exc})") from None
    except _JsonConstantError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc} is not valid JSON (nor storable in jsonb), in {shown(text)}"
        ) from None
    except RecursionError:
        raise argparse.ArgumentTypeError(f"{too_deep}: {shown(text)}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of keyword arguments like '{{\"a\": 1}}', got {shown(text)}"
        )
    if _deeper_than(value, MAX_JSON_DEPTH):
        raise argparse.ArgumentTypeError(f"{too_deep}: {shown(text)}")
    return value
