"""Classes and functions written as data: their importable dotted names, and back."""

from __future__ import annotations

import importlib
from typing import Any

from dawdle._errors import ConfigurationError


def dotted_name(where: str, value: object) -> str:
    """The importable `module.qualname` of a class or module-level function, checked."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        name = f"{module}.{qualname}"
        try:
            if resolve(where, name) is value:
                return name
        except ConfigurationError:
            pass
    raise ConfigurationError(
        f"{where}: {value!r} is not importable by name (a lambda, a local function or an "
        "instance), so it cannot be written as data"
    )


def resolve(where: str, name: object) -> Any:
    """The object a dotted name points at: the longest importable module, then attributes."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where} must be dotted names, got {name!r}")
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                value = getattr(value, attribute)
        except AttributeError:
            break
        return value
    raise ConfigurationError(f"{where}: {name!r} does not resolve to an importable object")
