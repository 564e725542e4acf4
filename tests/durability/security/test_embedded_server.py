"""The embedded server is its owner's alone, whatever the path length and whoever runs it.

Issue 12: with a data directory path over ~93 bytes, pgserver put the socket in a shared
directory (0755, socket 0777) and another local user ran `COPY ... TO PROGRAM` as the
dawdle user; as root it opened every directory above the data. One server for the module
(a start costs a second or two), in a data directory whose path is over 100 bytes, under a
parent that others may not list. Tests that stop it start it again before they end. As
root the server runs as `dawdle-postgres`, and the test that another uid cannot connect
uses a throwaway system user; without root it cannot take another uid, and says so.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dawdle import App, ConfigurationError, DatabaseUnavailable, PsycopgConnector
from dawdle._cli import main
from dawdle._embedded import EmbeddedServer, ServerStatus, bundled_binaries
from dawdle._embedded._account import server_account
from dawdle._embedded._files import MAX_SOCKET_PATH, PID_FILE, SOCKET_NAME, Postmaster

AS_ROOT = os.geteuid() == 0
# Root's server runs as another user, who must search the parent (but need not list it).
PARENT_MODE = 0o711 if AS_ROOT else 0o700


@pytest.fixture(scope="module")
def data_home() -> Iterator[Path]:
    """The module's XDG_DATA_HOME: a long path under a fresh parent of mode PARENT_MODE."""
    parent = Path(tempfile.mkdtemp(prefix="dawdle-sec-"))
    parent.chmod(PARENT_MODE)
    yield parent / ("long-path-" * 8)
    shutil.rmtree(parent)


@pytest.fixture(scope="module")
def modes_before(data_home: Path) -> dict[Path, int]:
    """The mode of every existing directory above the data directory, before the start."""
    return {above: above.stat().st_mode for above in data_home.parents}


@pytest.fixture(scope="module")
def server(data_home: Path, modes_before: dict[Path, int]) -> Iterator[EmbeddedServer]:
    """The module's server, started as the default database starts it."""
    server = EmbeddedServer(data_home / "dawdle" / "pgdata")
    server.ensure_running()
    yield server
    server.stop()


def running(server: EmbeddedServer) -> ServerStatus:
    """The server's status, which must say it runs."""
    status = server.status()
    assert status.running, status
    assert status.socket_dir is not None
    return status


def test_data_directory_socket_directory_and_socket_are_owner_only(
    server: EmbeddedServer,
) -> None:
    """Data directory, socket directory and socket: 0700, the server user's, path fits."""
    status = running(server)
    assert status.socket_dir is not None
    account = server_account(create=False)
    assert account is not None
    assert len(str(server.data_dir / SOCKET_NAME)) > 100  # pgserver's shared-directory case
    socket = status.socket_dir / SOCKET_NAME
    assert len(str(socket)) <= MAX_SOCKET_PATH
    for path, kind in (
        (server.data_dir, stat.S_ISDIR),
        (status.socket_dir, stat.S_ISDIR),
        (socket, stat.S_ISSOCK),
    ):
        info = path.lstat()
        assert kind(info.st_mode), path
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, account.uid), path


def test_directories_above_the_data_are_unchanged(
    server: EmbeddedServer, modes_before: dict[Path, int]
) -> None:
    """Starting the server changed the mode of no directory above its data."""
    running(server)
    assert {above: above.stat().st_mode for above in modes_before} == modes_before
    assert stat.S_IMODE(next(iter(modes_before.values()))) == PARENT_MODE


@pytest.mark.anyio
async def test_no_tcp_listener(server: EmbeddedServer) -> None:
    """The server listens on no TCP address: listen_addresses is empty, the session local."""
    status = running(server)
    assert status.socket_dir is not None
    dsn = f"host={status.socket_dir} user=postgres dbname=postgres"
    async with App(connector=PsycopgConnector(conninfo=dsn)).open_async() as app:
        row = await app.connector.execute_query_one_async(
            "SELECT current_setting('listen_addresses') AS listen, "
            "inet_server_addr() IS NULL AS local"
        )
    assert row == {"listen": "", "local": True}
    postmaster = Postmaster.read(server.data_dir)
    assert postmaster is not None
    assert postmaster.listen_address == ""


def test_another_user_cannot_connect(server: EmbeddedServer) -> None:
    """Another uid's psql is refused at the socket (issue 12's COPY TO PROGRAM never runs)."""
    if not AS_ROOT:
        pytest.skip(
            "taking another uid needs root; without it, the modes checked by "
            "test_data_directory_socket_directory_and_socket_are_owner_only are what "
            "refuses other users (the kernel's permission check on the socket directory)"
        )
    status = running(server)
    psql = str(bundled_binaries().bin_dir / "psql")
    marker = Path(tempfile.gettempdir()) / f"dawdle-exploit-{uuid.uuid4().hex}"
    exploit = f"COPY (SELECT 1) TO PROGRAM 'id > {marker}'"
    command = [psql, "-X", "-h", str(status.socket_dir), "-U", "postgres", "-d", "postgres"]
    name = f"dawdle-t{uuid.uuid4().hex[:8]}"
    subprocess.run(  # noqa: S603 (our arguments)
        ["useradd", "--system", "--no-create-home", "--shell", "/bin/false", name],  # noqa: S607
        check=True,
    )
    try:
        other = pwd.getpwnam(name)
        attempt = subprocess.run(  # noqa: S603 (our arguments)
            [*command, "-c", exploit],
            user=other.pw_uid,
            group=other.pw_gid,
            extra_groups=[],
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/"},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        subprocess.run(["userdel", name], check=True)  # noqa: S603, S607
    assert attempt.returncode != 0
    assert "connection to server on socket" in attempt.stderr
    assert "Permission denied" in attempt.stderr
    assert not marker.exists()
    # The control: the same command as the owner (root, by its override) gets through.
    owner = subprocess.run(  # noqa: S603 (our arguments)
        [*command, "-c", "SELECT 1"], capture_output=True, text=True, check=False
    )
    assert owner.returncode == 0, owner.stderr


def test_a_parent_the_server_user_cannot_search_is_refused_not_opened() -> None:
    """As root: a data directory under a 0700 parent is refused in one line; the parent stays."""
    if not AS_ROOT:
        pytest.skip(
            "without root the server runs as this user, who may search its own 0700 "
            "directories: the module's server lives under one (see the test above)"
        )
    parent = Path(tempfile.mkdtemp(prefix="dawdle-sec-closed-"))
    try:
        data_dir = parent / "dawdle" / "pgdata"
        with pytest.raises(ConfigurationError) as caught:
            EmbeddedServer(data_dir).ensure_running()
        message = str(caught.value)
        assert "\n" not in message
        assert f"{parent} is mode 0700" in message
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700
        assert not (parent / "dawdle").exists()
    finally:
        shutil.rmtree(parent)


def test_status_path_and_stop_commands(
    server: EmbeddedServer,
    data_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dawdle embedded` status (exit 0, then 3), path and stop say what they did, in a line."""
    status = running(server)
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    assert main(["embedded", "path"]) == 0
    assert capsys.readouterr().out == f"{server.data_dir}\n"
    assert main(["embedded", "status"]) == 0
    bundled = bundled_binaries().version
    assert capsys.readouterr().out.splitlines() == [
        f"running: yes, pid {status.pid}",
        f"data directory: {server.data_dir}",
        f"socket directory: {status.socket_dir}",
        f"version: 16 (bundled binaries: {bundled})",
    ]
    try:
        assert main(["embedded", "stop"]) == 0
        assert capsys.readouterr().out == (
            f"stopped the embedded server in {server.data_dir} (pid {status.pid})\n"
        )
        assert status.socket_dir is not None
        assert not status.socket_dir.exists()  # its socket directory is removed with it
        assert main(["embedded", "status"]) == 3
        assert capsys.readouterr().out.splitlines()[0] == "running: no"
        assert main(["embedded", "stop"]) == 0
        assert capsys.readouterr().out == f"no embedded server runs in {server.data_dir}\n"
    finally:
        server.ensure_running()


def test_a_stale_pid_file_naming_a_live_process_is_replaced(
    server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A postmaster.pid naming a live unrelated pid (ours) is removed, said once; it starts."""
    server.stop()
    pid_file = server.data_dir / PID_FILE
    pid_file.write_text(f"{os.getpid()}\n{server.data_dir}\n0\n5432\n/tmp\n\n0 0\nready\n")
    with caplog.at_level(logging.WARNING, logger="dawdle.connector"):
        server.ensure_running()
    assert [record.getMessage() for record in caplog.records] == [
        f"dawdle: removed the stale {pid_file} (pid {os.getpid()} is not its server)"
    ]
    assert running(server).pid != os.getpid()


def test_a_server_open_to_others_is_restarted_owner_only(
    server: EmbeddedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server found with a socket directory others may enter (pgserver's) is restarted."""
    server.stop()
    account = server_account(create=False)
    assert account is not None
    shared = Path(tempfile.mkdtemp(prefix="pg-shared-"))
    try:
        os.chown(shared, account.uid, account.gid)
        shared.chmod(0o755)
        server.pg_ctl(
            "start", "-l", str(server.log_file),
            "-o", f"-c listen_addresses= -c unix_socket_directories={shared}",
        )  # fmt: skip
        assert running(server).socket_dir == shared
        with caplog.at_level(logging.WARNING, logger="dawdle.connector"):
            server.ensure_running()
        assert [record.getMessage() for record in caplog.records] == [
            f"dawdle: the embedded server in {server.data_dir} was reachable by other users "
            f"(its socket directory {shared} is open to others (mode 0755)); restarting it "
            "owner-only"
        ]
        socket_dir = running(server).socket_dir
        assert socket_dir is not None
        assert socket_dir != shared
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(shared)


def test_concurrent_starts_make_one_server() -> None:
    """Four threads starting one new data directory at once get one server and one conninfo."""
    parent = Path(tempfile.mkdtemp(prefix="dawdle-sec-race-"))
    parent.chmod(PARENT_MODE)
    data_dir = parent / "pgdata"
    try:
        with ThreadPoolExecutor(4) as pool:
            # Each start opens the data directory itself: their locks contend as processes' do.
            dsns = set(pool.map(lambda _: EmbeddedServer(data_dir).ensure_running(), range(4)))
        status = running(EmbeddedServer(data_dir))
        assert dsns == {f"host={status.socket_dir} port=5432 user=postgres dbname=postgres"}
    finally:
        EmbeddedServer(data_dir).stop()
        shutil.rmtree(parent)


def test_a_server_that_fails_to_start_says_why_in_one_line(server: EmbeddedServer) -> None:
    """A start that PostgreSQL refuses: one line with its FATAL reason and the log's path."""
    server.stop()
    config = server.data_dir / "postgresql.conf"
    original = config.read_text()
    config.write_text(original + "\nno_such_setting = 1\n")
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            server.ensure_running()
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith(f"the embedded server in {server.data_dir}: pg_ctl start failed:")
        assert message.endswith(
            f'failed: FATAL:  configuration file "{config}" contains errors '
            f"(log: {server.log_file})"
        )
    finally:
        config.write_text(original)
        server.ensure_running()
