"""Where dawdle looks for its database when the App is given no connector."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from dawdle import ConfigurationError
from dawdle._connector import embedded

LIBPQ = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE", "PGUSER")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAWDLE_DSN", "DATABASE_URL", *LIBPQ):
        monkeypatch.delenv(name, raising=False)


class FakeServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def get_uri(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.data_dir}"


def test_dawdle_dsn_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """DAWDLE_DSN wins over libpq's variables and DATABASE_URL."""
    monkeypatch.setenv("DAWDLE_DSN", "postgresql://a/first")
    monkeypatch.setenv("PGHOST", "elsewhere")
    monkeypatch.setenv("DATABASE_URL", "postgresql://b/second")
    assert embedded.default_conninfo() == "postgresql://a/first"


def test_libpq_environment_is_left_to_libpq(monkeypatch: pytest.MonkeyPatch) -> None:
    """With PGHOST or PGDATABASE set, the conninfo is empty so that libpq reads them."""
    monkeypatch.setenv("PGDATABASE", "jobs")
    monkeypatch.setenv("DATABASE_URL", "postgresql://b/second")
    assert embedded.default_conninfo() == ""


def test_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_URL is used when nothing more specific is set."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://b/second")
    assert embedded.default_conninfo() == "postgresql://b/second"


def test_embedded_server_in_a_per_user_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Otherwise pgserver starts one in $XDG_DATA_HOME/dawdle/pgdata, said in one log line."""
    import pgserver  # noqa: PLC0415

    started: list[dict[str, Any]] = []

    def get_server(data_dir: Path, cleanup_mode: str | None) -> FakeServer:
        started.append({"data_dir": data_dir, "cleanup_mode": cleanup_mode})
        return FakeServer(data_dir)

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(pgserver, "get_server", get_server)
    with caplog.at_level(logging.INFO, logger="dawdle.connector"):
        uri = embedded.default_conninfo()
    expected_dir = tmp_path / "dawdle" / "pgdata"
    assert started == [{"data_dir": expected_dir, "cleanup_mode": None}]
    assert uri.endswith(f"host={expected_dir}")
    assert [record.getMessage() for record in caplog.records] == [
        f"dawdle: using the embedded PostgreSQL server in {expected_dir}"
    ]


def test_without_pgserver_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration and no pgserver: a ConfigurationError naming the ways out."""
    monkeypatch.setitem(__import__("sys").modules, "pgserver", None)
    with pytest.raises(ConfigurationError, match=r"DAWDLE_DSN.*dawdle\[embedded\]"):
        embedded.default_conninfo()
