"""Fixtures shared by every suite: a real PostgreSQL server and a fresh database per module."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import conninfo, sql


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The server named by DAWDLE_TEST_DSN, else an embedded one started for this session."""
    configured = os.environ.get("DAWDLE_TEST_DSN")
    if configured:
        yield configured
        return
    import pgserver  # noqa: PLC0415 (only needed, and only installed, for the embedded default)

    # Not under pytest's basetemp: pytest prunes old basetemps, which another session may
    # still be using, and the server runs as its own system user. A short path, too: the
    # server's Unix socket lives in its data directory (108-byte limit).
    server = pgserver.get_server(tempfile.mkdtemp(prefix="dawdle-pg-"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


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
