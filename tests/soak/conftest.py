"""The soak suite: long runs, selected only with `-m soak` (`nox -s soak`)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker here: pyproject's list belongs to the default suites."""
    config.addinivalue_line(
        "markers",
        "soak: long runs (DAWDLE_SOAK_SECONDS, default 600) selected by `-m soak` "
        "(`nox -s soak`), never by `nox -s tests`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave soak tests out unless the -m expression names them: a bare `pytest` stays short."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    soak = [item for item in items if item.get_closest_marker("soak")]
    if soak:
        config.hook.pytest_deselected(items=soak)
        items[:] = [item for item in items if not item.get_closest_marker("soak")]


@pytest.fixture
def anyio_backend() -> str:
    """One run: the workers cover both runtimes; this process only defers and reads."""
    return "asyncio"
