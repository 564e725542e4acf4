"""A private embedded PostgreSQL server, for tests that restart or stop it (never a shared one).

dawdle's own launcher (`dawdle._embedded`), as the default database uses, in a fresh
temporary directory: stopped and deleted at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dawdle._embedded import EmbeddedServer


class PrivateServer:
    """One test module's server: its conninfo, and pg_ctl for restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedServer(data_dir)
        self.dsn = self.server.ensure_running()

    def get_uri(self) -> str:
        """The conninfo of the server's owner-only socket."""
        return self.dsn

    def ensure_postgres_running(self) -> None:
        """Start the server again if a test left it stopped, on the same socket.

        `restart`, not `start`: it reuses the options the server last ran with.
        """
        if not self.server.status().running:
            self.server.pg_ctl("restart")


def pg_ctl(server: PrivateServer, *args: str) -> None:
    """Run `pg_ctl -w ARGS` on `server`'s data directory, as the server's user."""
    server.server.pg_ctl(*args)


@contextlib.contextmanager
def private_server(prefix: str) -> Iterator[PrivateServer]:
    """A new server in a fresh `prefix`* temporary directory; stopped and deleted at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        server = PrivateServer(data_dir)
        yield server
    finally:
        EmbeddedServer(data_dir).stop()
        shutil.rmtree(data_dir, ignore_errors=True)
