"""Fixtures shared by every suite: a real PostgreSQL server and a fresh database per module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server named by DAWDLE_TEST_DSN, else an embedded one started for this session."""
    configured = os.environ.get("DAWDLE_TEST_DSN")
    if configured:
        yield configured
        return
    import pgserver  # noqa: PLC0415 (only needed, and only installed, for the embedded default)

    # A short path: the server's Unix socket lives in its data directory (108-byte limit).
    data_dir = Path(tmp_path_factory.mktemp("pg", numbered=True))
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
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
