"""Durability tests run on asyncio and on Trio against real PostgreSQL, on the real clock.

`schema_dsn` (the module's database with the schema applied) comes from tests/conftest.py.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Real clocks: virtual ones would jump while real I/O is pending."""
    return str(request.param)
