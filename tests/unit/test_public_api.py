"""Every public name is exported deliberately and documented (anyio's test_all_attributes)."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import dawdle
import dawdle.backoff


@pytest.mark.parametrize("module", [dawdle, dawdle.backoff], ids=lambda m: m.__name__)
def test_all_names_exist_and_are_documented(module: ModuleType) -> None:
    """__all__ lists only real attributes, and every class and function has a docstring."""
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


@pytest.mark.parametrize("module", [dawdle, dawdle.backoff], ids=lambda m: m.__name__)
def test_no_public_name_is_left_out(module: ModuleType) -> None:
    """Every public class or function reachable on the module is in __all__."""
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public <= set(module.__all__)
