"""Unit tests run every async test on asyncio and on Trio, both on virtual clocks.

`in_memory_connector` and `in_memory_app` come from tests/conftest.py.
"""

from __future__ import annotations

from typing import Any

import looptime
import pytest
import trio.testing


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Virtual time: sleeps finish at once while the clock still reads the full wait."""
    if request.param == "asyncio":
        return ("asyncio", {"loop_factory": looptime.new_event_loop})
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
