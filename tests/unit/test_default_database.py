"""Where dawdle looks for its database when the App is given no connector.

Also what the embedded server's launcher refuses before it starts anything: no server runs
in these tests (tests/durability/security/test_embedded_server.py starts one).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dawdle import ConfigurationError
from dawdle._connector import embedded
from dawdle._embedded import EmbeddedServer, _binaries, _files
from dawdle._embedded._account import current_account, server_account

LIBPQ = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE", "PGUSER")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAWDLE_DSN", "DATABASE_URL", *LIBPQ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A new directory (0755) that the server's user may search, even when we are root."""
    path = Path(tempfile.mkdtemp(prefix="dawdle-unit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


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
    """Otherwise the embedded server of $XDG_DATA_HOME/dawdle/pgdata, said in one log line."""
    started: list[Path] = []

    def ensure_running(server: EmbeddedServer) -> str:
        started.append(server.data_dir)
        return "host=/tmp/dawdle-x port=5432 user=postgres dbname=postgres"

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setattr(EmbeddedServer, "ensure_running", ensure_running)
    with caplog.at_level(logging.INFO, logger="dawdle.connector"):
        dsn = embedded.default_conninfo()
    expected_dir = tmp_path / "dawdle" / "pgdata"
    assert started == [expected_dir]
    assert dsn == "host=/tmp/dawdle-x port=5432 user=postgres dbname=postgres"
    assert [record.getMessage() for record in caplog.records] == [
        f"dawdle: using the embedded PostgreSQL server in {expected_dir} "
        "(`dawdle embedded stop` stops it)"
    ]


def test_data_directory_without_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    """~/.local/share/dawdle/pgdata, or as root /var/lib/dawdle/pgdata (no home to open)."""
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert embedded.embedded_data_dir() == Path.home() / ".local/share/dawdle/pgdata"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert embedded.embedded_data_dir() == Path("/var/lib/dawdle/pgdata")


def test_without_pgserver_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration and no pgserver: a ConfigurationError naming the ways out."""
    monkeypatch.setitem(__import__("sys").modules, "pgserver", None)
    with pytest.raises(ConfigurationError, match=r"DAWDLE_DSN.*dawdle\[embedded\]"):
        embedded.default_conninfo()


def test_another_major_version_is_refused_in_one_line(reachable_dir: Path) -> None:
    """A data directory of PostgreSQL 12 names both versions, the path and the way out."""
    data_dir = reachable_dir / "pgdata"
    data_dir.mkdir(mode=0o700)
    (data_dir / "PG_VERSION").write_text("12\n")
    account = server_account(create=True)
    assert account is not None
    os.chown(data_dir, account.uid, account.gid)
    bundled = _binaries.bundled_binaries().version
    with pytest.raises(ConfigurationError) as caught:
        EmbeddedServer(data_dir).ensure_running()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{data_dir} holds a PostgreSQL 12 cluster" in message
    assert f"bundled server is PostgreSQL {bundled}" in message
    assert "pg_upgrade" in message
    assert not (data_dir / "postmaster.pid").exists()


def test_an_unwritable_data_directory_is_refused_in_one_line(reachable_dir: Path) -> None:
    """A data directory its server's user cannot write: one line with the chmod that fixes it."""
    data_dir = reachable_dir / "pgdata"
    data_dir.mkdir(mode=0o700)
    account = server_account(create=True)
    assert account is not None
    os.chown(data_dir, account.uid, account.gid)
    data_dir.chmod(0o500)
    with pytest.raises(
        ConfigurationError, match=r"not writable .*mode 0500.*chmod u\+rwx"
    ) as caught:
        EmbeddedServer(data_dir).ensure_running()
    assert str(data_dir) in str(caught.value)


def test_a_read_only_file_system_is_named(
    reachable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data directory on a read-only mount: one line saying so, naming the directory."""
    real_statvfs = os.statvfs

    class ReadOnly:
        def __init__(self, path: Path) -> None:
            self.f_flag = real_statvfs(path).f_flag | os.ST_RDONLY

    monkeypatch.setattr(_files.os, "statvfs", ReadOnly)
    data_dir = reachable_dir / "pgdata"
    with pytest.raises(ConfigurationError, match="read-only file system") as caught:
        EmbeddedServer(data_dir).ensure_running()
    assert str(data_dir) in str(caught.value)


def test_files_without_a_cluster_are_refused(reachable_dir: Path) -> None:
    """A data directory holding files but no PG_VERSION is never initdb'd over."""
    data_dir = reachable_dir / "pgdata"
    data_dir.mkdir(mode=0o700)
    (data_dir / "notes.txt").write_text("mine")
    account = server_account(create=True)
    assert account is not None
    os.chown(data_dir, account.uid, account.gid)
    with pytest.raises(ConfigurationError, match="holds files but no PostgreSQL cluster"):
        EmbeddedServer(data_dir).ensure_running()
    assert (data_dir / "notes.txt").read_text() == "mine"


def test_someone_elses_data_directory_is_refused(reachable_dir: Path) -> None:
    """A data directory of another uid: refused by name, never taken over."""
    data_dir = reachable_dir / "pgdata"
    data_dir.mkdir(mode=0o700)
    (data_dir / "PG_VERSION").write_text("16\n")
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another uid; covered when run as root")
    os.chown(data_dir, 65534, 65534)
    with pytest.raises(ConfigurationError, match=rf"{data_dir} belongs to uid 65534"):
        EmbeddedServer(data_dir).ensure_running()
    assert data_dir.stat().st_uid == 65534


def test_a_live_pid_of_another_program_is_not_the_server(
    reachable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pid file naming a live process that is not a server of this directory is stale."""
    account = current_account()
    assert not _files.process_serves(os.getpid(), reachable_dir, account)
    assert not _files.process_serves(2**22 + 1, reachable_dir, account)  # above pid_max
    monkeypatch.chdir(reachable_dir)  # now this process looks like a server of it
    assert _files.process_serves(os.getpid(), reachable_dir, account)


def test_socket_directories_are_new_and_private() -> None:
    """Each socket directory is made fresh, 0700, ours, and short enough for a socket."""
    account = current_account()
    first, second = _files.make_socket_dir(account), _files.make_socket_dir(account)
    try:
        assert first != second
        for path in (first, second):
            info = path.lstat()
            assert stat.S_ISDIR(info.st_mode)
            assert stat.S_IMODE(info.st_mode) == 0o700
            assert info.st_uid == os.geteuid()
            assert len(str(path / _files.SOCKET_NAME)) <= _files.MAX_SOCKET_PATH
    finally:
        _files.remove_socket_dir(first, account)
        _files.remove_socket_dir(second, account)
    assert not first.exists()
    assert not second.exists()


def test_a_server_reachable_by_others_is_exposed() -> None:
    """A TCP listener or a socket directory others may enter counts as exposed."""
    account = current_account()
    private = _files.make_socket_dir(account)
    try:
        assert _files.exposure(_files.Postmaster(1, private, "", "ready"), account) is None
        reason = _files.exposure(_files.Postmaster(1, private, "127.0.0.1", "ready"), account)
        assert reason == "it listens on TCP (127.0.0.1)"
        private.chmod(0o755)
        reason = _files.exposure(_files.Postmaster(1, private, "", "ready"), account)
        assert reason == f"its socket directory {private} is open to others (mode 0755)"
    finally:
        _files.remove_socket_dir(private, account)


def test_binaries_out_of_the_server_users_reach_are_copied_once(
    monkeypatch: pytest.MonkeyPatch, reachable_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As root: binaries under a 0700 directory are copied where dawdle-postgres runs them."""
    if os.geteuid() != 0:
        pytest.skip("without root the server runs as this user, who reaches what it imports")
    bundled = _binaries.bundled_binaries()
    closed = Path(tempfile.mkdtemp(prefix="dawdle-closed-"))  # 0700, root's
    try:
        shutil.copytree(bundled.bin_dir.parent, closed / "pginstall", symlinks=True)
        hidden = _binaries.Binaries(closed / "pginstall" / "bin", bundled.version)
        monkeypatch.setattr(_binaries, "COPY_ROOT", reachable_dir / "lib")
        account = server_account(create=True)
        assert account is not None
        with caplog.at_level(logging.WARNING, logger="dawdle.connector"):
            copy = _binaries.reachable_binaries(hidden, account)
            assert _binaries.reachable_binaries(hidden, account) == copy
        target = reachable_dir / "lib" / f"pginstall-{bundled.version}"
        assert copy == _binaries.Binaries(target / "bin", bundled.version)
        assert [record.getMessage() for record in caplog.records] == [
            f"dawdle: copied PostgreSQL's binaries to {target}, since dawdle-postgres (which "
            f"runs the embedded server) cannot reach them in {closed / 'pginstall'}"
        ]
        assert stat.S_IMODE(closed.stat().st_mode) == 0o700  # the original stays closed
        version = subprocess.run(  # noqa: S603 (our arguments)
            [str(copy.bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            **account.subprocess_options(),
        )
        assert version.stdout.split()[-1] == bundled.version
    finally:
        shutil.rmtree(closed)


def test_binaries_that_cannot_be_copied_are_one_line(
    monkeypatch: pytest.MonkeyPatch, reachable_dir: Path
) -> None:
    """As root: no place for the copy (under a file here) gives one line naming both paths."""
    if os.geteuid() != 0:
        pytest.skip("without root the server runs as this user, who reaches what it imports")
    closed = Path(tempfile.mkdtemp(prefix="dawdle-closed-"))  # 0700, root's
    try:
        (reachable_dir / "file").write_text("")
        monkeypatch.setattr(_binaries, "COPY_ROOT", reachable_dir / "file" / "lib")
        hidden = _binaries.Binaries(closed / "pginstall" / "bin", "16.2")
        account = server_account(create=True)
        assert account is not None
        with pytest.raises(ConfigurationError) as caught:
            _binaries.reachable_binaries(hidden, account)
        assert str(caught.value).startswith(
            f"cannot copy PostgreSQL's binaries from {closed / 'pginstall'} to "
            f"{reachable_dir / 'file' / 'lib' / 'pginstall-16.2'} (Not a directory)"
        )
    finally:
        shutil.rmtree(closed)


def test_a_data_directory_that_cannot_be_made_is_one_line(reachable_dir: Path) -> None:
    """A data directory dawdle cannot create (under a file here): one line naming it."""
    (reachable_dir / "file").write_text("")
    data_dir = reachable_dir / "file" / "dawdle" / "pgdata"
    with pytest.raises(ConfigurationError) as caught:
        EmbeddedServer(data_dir).ensure_running()
    assert str(caught.value) == (
        f"cannot create the embedded server's directory {reachable_dir / 'file' / 'dawdle'}: "
        "Not a directory; set XDG_DATA_HOME to a writable place"
    )
