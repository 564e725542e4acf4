"""Durability tests run on asyncio and on Trio against real PostgreSQL, on the real clock."""

from __future__ import annotations

import psycopg
import pytest
from procrastinate import schema


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Real clocks: virtual ones would jump while real I/O is pending."""
    return str(request.param)


@pytest.fixture(scope="module")
def schema_dsn(database_dsn: str) -> str:
    """The module's database with Procrastinate's schema applied once."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(schema.SchemaManager.get_schema())
    return database_dsn
