"""Query parameters as Procrastinate sends them: dicts as jsonb, checked for what jsonb refuses."""

from __future__ import annotations

import math
from typing import Any

from psycopg.types.json import Jsonb

from dawdle._errors import UnsupportedValue

_CONTAINERS = (dict, list, tuple)


def _check_jsonb(value: Any, path: str) -> None:
    """Refuse what JSON or PostgreSQL's jsonb cannot hold, naming where it is."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsupportedValue(f"{path} = {value!r}: NaN and Infinity are not JSON")
    if isinstance(value, str) and "\x00" in value:
        raise UnsupportedValue(f"{path} = {value!r:.60}: jsonb cannot hold \\u0000 (NUL)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_jsonb(key, f"{path} key")
            _check_jsonb(item, f"{path}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_jsonb(item, f"{path}[{index}]")


def _jsonb(value: Any) -> Any:
    if isinstance(value, dict):
        _check_jsonb(value, "job argument")
        return Jsonb(value)
    if isinstance(value, list):
        # Arrays of plain values (the worker's batches of ids, statuses...) go as they are.
        if not any(isinstance(item, _CONTAINERS) for item in value):
            return value
        return [_jsonb(item) for item in value]
    if isinstance(value, tuple):  # NamedTuples too (JobToDefer): sent as a plain record
        return tuple(_jsonb(item) for item in value)
    return value


def query_params(arguments: dict[str, Any]) -> dict[str, Any]:
    """Procrastinate's arguments with dicts sent as jsonb, as its own connector does."""
    return {key: _jsonb(value) for key, value in arguments.items()}
