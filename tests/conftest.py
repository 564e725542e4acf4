"""Fixtures shared by every suite: PostgreSQL, a database per module, an in-memory App.

A real PostgreSQL server (DAWDLE_TEST_DSN, else embedded), a fresh database per test module
(`database_dsn`, or `schema_dsn` with Procrastinate's schema applied), and dawdle's in-memory
connector and App (`in_memory_connector`, `in_memory_app`). Nothing here depends on the
clock: each suite's own conftest chooses its `anyio_backend` (virtual clocks for the unit
tests, real ones for durability and perf).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from procrastinate import schema
from psycopg import conninfo, sql

from dawdle import App, InMemoryConnector
from dawdle._dawdle_schema import DAWDLE_SCHEMA
from tests.durability.private_server import private_server


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The server named by DAWDLE_TEST_DSN, else an embedded one started for this session.

    The embedded one is dawdle's own (`dawdle._embedded`, as the default database uses), so
    the whole suite runs on it; stopped and deleted at the end. Not under pytest's basetemp:
    pytest prunes old basetemps, which another session may still be using.
    """
    configured = os.environ.get("DAWDLE_TEST_DSN")
    if configured:
        yield configured
        return
    with private_server("dawdle-pg-") as server:
        yield server.get_uri()


@pytest.fixture(scope="module")
def database_dsn(postgres_dsn: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database created empty for one test module and dropped after it."""
    module = request.module.__name__.rsplit(".", 1)[-1][:30]
    name = f"dawdle_{module}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(postgres_dsn, dbname=name)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def schema_dsn(database_dsn: str) -> str:
    """The module's database as `dawdle schema --apply` leaves it: Procrastinate's and dawdle's."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(schema.SchemaManager.get_schema())
        conn.execute(DAWDLE_SCHEMA)
    return database_dsn


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
