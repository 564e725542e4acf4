"""Unit tests run every async test on asyncio and on Trio, both on virtual clocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import looptime
import pytest
import trio.testing

from dawdle import App, InMemoryConnector


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Virtual time: sleeps finish at once while the clock still reads the full wait."""
    if request.param == "asyncio":
        return ("asyncio", {"loop_factory": looptime.new_event_loop})
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.fixture
def in_memory_connector() -> InMemoryConnector:
    """Dawdle's in-memory connector, new for each test (so reset by construction)."""
    return InMemoryConnector()


@pytest.fixture
async def in_memory_app(in_memory_connector: InMemoryConnector) -> AsyncIterator[App]:
    """A dawdle App on the in-memory connector, opened on the test's runtime."""
    app = App(connector=in_memory_connector)
    async with app.open_async():
        yield app
