"""A primary and a streaming standby of a test's own, from the embedded server's binaries.

initdb, pg_basebackup (-R writes standby.signal and primary_conninfo), `pg_ctl promote`:
as the embedded server's user (PostgreSQL refuses root), on TCP ports of 127.0.0.1 with
trust authentication, in a fresh directory deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dawdle._embedded._account import Account, server_account
from dawdle._embedded._binaries import Binaries, bundled_binaries, reachable_binaries
from tests.topologies.pgbouncer import free_port


class Node:
    """One server of the cluster: its data directory, its port, pg_ctl."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.data_dir = cluster.root / name
        self.port = free_port()
        self.log = cluster.root / f"{name}.log"

    def start(self, *settings: str) -> None:
        """Start it, with `settings` (`name=value`) on its command line only."""
        options = [
            *("-c", f"port={self.port}"),
            *("-c", "listen_addresses=127.0.0.1"),
            *("-c", f"unix_socket_directories={self.cluster.root}"),
            *(option for setting in settings for option in ("-c", setting)),
        ]
        self.pg_ctl("start", "-l", str(self.log), "-o", shlex.join(options))

    def pg_ctl(self, action: str, *args: str) -> None:
        """`pg_ctl ACTION -w -D data_dir ARGS` as the server's user."""
        self.cluster.run("pg_ctl", action, "-w", "-D", str(self.data_dir), *args)

    def stop(self, mode: str = "fast") -> None:
        """Stop it (`immediate`: as a crash, no shutdown checkpoint)."""
        self.pg_ctl("stop", "-m", mode)

    def dsn(self, dbname: str = "postgres") -> str:
        """Its own conninfo."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"


class Cluster:
    """A directory of servers, run by one account with one set of binaries."""

    def __init__(self, root: Path, account: Account, binaries: Binaries) -> None:
        self.root = root
        self.account = account
        self.binaries = binaries
        self.nodes: list[Node] = []

    def run(self, program: str, *args: str) -> None:
        """Run one of the binaries as the server's user; its output in the error if it fails."""
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        result = subprocess.run(  # noqa: S603 (our binaries, arguments as a list)
            [str(self.binaries.bin_dir / program), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=environment,
            cwd="/",
            check=False,
            **self.account.subprocess_options(),
        )
        if result.returncode:
            raise RuntimeError(f"{program} {args[0]} failed: {result.stdout}{result.stderr}")

    def primary(self) -> Node:
        """A new primary, started."""
        node = Node(self, "primary")
        self.run(
            "initdb",
            *("-D", str(node.data_dir), "--username=postgres", "--auth=trust"),
            *("--encoding=UTF8", "--no-locale", "--no-instructions"),
        )
        self.nodes.append(node)
        node.start()
        return node

    def standby_of(self, primary: Node) -> Node:
        """A streaming standby of `primary` (not started)."""
        node = Node(self, "standby")
        self.run(
            "pg_basebackup",
            *("-D", str(node.data_dir), "-h", "127.0.0.1", "-p", str(primary.port)),
            *("-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast"),
        )
        self.nodes.append(node)
        return node

    def multi_host_dsn(self, dbname: str) -> str:
        """The libpq DSN of every node, the writable one chosen (target_session_attrs)."""
        hosts = ",".join("127.0.0.1" for _ in self.nodes)
        ports = ",".join(str(node.port) for node in self.nodes)
        return (
            f"host={hosts} port={ports} user=postgres dbname={dbname} "
            "target_session_attrs=read-write"
        )


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """An empty cluster directory; every server in it stopped and deleted at the end."""
    account = server_account(create=True)
    assert account is not None
    binaries = reachable_binaries(bundled_binaries(), account)
    root = Path(tempfile.mkdtemp(prefix="dawdle-cluster-"))
    os.chown(root, account.uid, account.gid)
    made = Cluster(root, account, binaries)
    try:
        yield made
    finally:
        for node in made.nodes:
            with contextlib.suppress(RuntimeError):
                node.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
