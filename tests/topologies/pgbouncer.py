"""A PgBouncer of a test's own: its ini, its port, trust auth, in front of one server.

It runs as the user the embedded server runs as (PgBouncer, like PostgreSQL, refuses root;
that user may also reach the embedded server's owner-only socket), in a fresh directory
that is deleted with it. Every database name maps to the same name on the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import conninfo

from dawdle._embedded._account import server_account

PGBOUNCER = "/usr/sbin/pgbouncer"
START_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_accepting(dsn: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll (an external process: no event to wait on) until PgBouncer answers a query."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited at start: {log.read_text()[-2000:]}")
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return


@contextlib.contextmanager
def pgbouncer(server_dsn: str, mode: str, *, pool_size: int = 10) -> Iterator[str]:
    """A PgBouncer in `mode` ("transaction" or "session") for `server_dsn`'s server; its DSN.

    The DSN keeps `server_dsn`'s database and user; `pool_size` server connections at most
    per database and user, as PgBouncer's default_pool_size.
    """
    account = server_account(create=True)
    assert account is not None
    target = conninfo.conninfo_to_dict(server_dsn)
    user = str(target.get("user") or "postgres")
    host = str(target.get("host") or "127.0.0.1")
    server_port = str(target.get("port") or 5432)
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="dawdle-pgbouncer-"))
    os.chown(directory, account.uid, account.gid)
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={host} port={server_port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {directory / 'users.txt'}",
                f"pool_mode = {mode}",
                "max_client_conn = 1000",
                f"default_pool_size = {pool_size}",
                f"logfile = {directory / 'pgbouncer.log'}",
                "ignore_startup_parameters = extra_float_digits,options",
                "",
            ]
        )
    )
    for path in directory.iterdir():
        os.chown(path, account.uid, account.gid)
    log = directory / "pgbouncer.log"
    process = subprocess.Popen(  # noqa: S603 (a fixed program, our arguments)
        [PGBOUNCER, str(directory / "pgbouncer.ini")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=directory,
        **account.subprocess_options(),
    )
    dsn = conninfo.make_conninfo(server_dsn, host="127.0.0.1", port=port)
    try:
        _wait_until_accepting(dsn, process, log)
        yield dsn
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)
