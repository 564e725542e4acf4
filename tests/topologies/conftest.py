"""Topology tests: servers of their own (never a shared one), on asyncio and on Trio.

`server` is a private embedded PostgreSQL for the module; `database` a fresh database on
it with Procrastinate's schema and dawdle's tables, for one test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from procrastinate import schema
from psycopg import conninfo, sql

from dawdle._dawdle_schema import DAWDLE_SCHEMA
from tests.durability.private_server import PrivateServer, private_server


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Real clocks: the servers and pooler are real processes."""
    return str(request.param)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    """A private PostgreSQL server for the module."""
    with private_server("dawdle-topologies-") as server:
        yield server


def create_database(server_dsn: str, *, with_schema: bool = True) -> str:
    """A new database on `server_dsn`'s server (with the schema unless told); its DSN."""
    name = f"dawdle_topo_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = conninfo.make_conninfo(server_dsn, dbname=name)
    if with_schema:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema.SchemaManager.get_schema())
            conn.execute(DAWDLE_SCHEMA)
    return dsn


@pytest.fixture
def database(server: PrivateServer) -> str:
    """A fresh database with the schema, for one test (the server is deleted with the module)."""
    return create_database(server.get_uri())
