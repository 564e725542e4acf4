"""A private embedded PostgreSQL server, for tests that restart or stop it (never a shared one)."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator

import pgserver


def pg_ctl(server: pgserver.PostgresServer, *args: str) -> None:
    """Run `pg_ctl -w ARGS` on `server`'s data directory, as the server's system user."""
    pgserver.pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user)


@contextlib.contextmanager
def private_server(prefix: str) -> Iterator[pgserver.PostgresServer]:
    """A new server in a fresh `prefix`* temporary directory; stopped and deleted at the end."""
    server = pgserver.get_server(tempfile.mkdtemp(prefix=prefix), cleanup_mode="delete")
    try:
        yield server
    finally:
        # pgserver stops only the postmaster it started, long gone after a restart: stop
        # the current one first, or it outlives its deleted data directory.
        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(server, "stop", "-m", "fast")
        server.cleanup()
