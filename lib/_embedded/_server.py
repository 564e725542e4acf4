"""Starting, inspecting and stopping the embedded server with pgserver's bundled binaries.

pgserver provides the binaries (initdb, pg_ctl, postgres: `_binaries.py`); dawdle runs
them itself, since pgserver puts the socket of a long data-directory path in a shared
directory, and as root opens every directory above the data. Every start or stop of one
data directory holds an exclusive lock on it (flock on the directory), so that concurrent
dawdle processes start one server between them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from psycopg import conninfo

from dawdle._embedded._account import Account, server_account
from dawdle._embedded._binaries import Binaries, bundled_binaries, reachable_binaries
from dawdle._embedded._files import (
    PID_FILE,
    PORT,
    Postmaster,
    check_private,
    ensure_data_dir,
    exposure,
    make_socket_dir,
    process_serves,
    remove_socket_dir,
)
from dawdle._errors import ConfigurationError, DatabaseUnavailable

logger = logging.getLogger("dawdle.connector")

SUPERUSER: Final = "postgres"
LOG_FILE: Final = "server.log"
START_TIMEOUT_SECONDS: Final = 60
# The server log's "2026-01-31 12:00:00.123 UTC [4242] " before each message.
_LOG_LINE_PREFIX: Final = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+ \S+ \[\d+\] ")


@dataclass(frozen=True)
class ServerStatus:
    """What `dawdle embedded status` reports about one data directory."""

    data_dir: Path
    pid: int | None  # None when no server runs on it
    socket_dir: Path | None
    data_version: str | None  # the cluster's major version (PG_VERSION), None if none yet
    bundled_version: str | None  # pgserver's binaries, None if pgserver is not installed

    @property
    def running(self) -> bool:
        """True if a server runs on the data directory."""
        return self.pid is not None


class EmbeddedServer:
    """The PostgreSQL server of one data directory, run as `Account` (see _account.py)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(os.path.abspath(data_dir))
        self.log_file = self.data_dir / LOG_FILE
        self._log_start = 0  # where this start's lines begin in the log, for error messages

    def ensure_running(self) -> str:
        """Start the server unless it runs (owner-only); its conninfo. Blocking."""
        account = server_account(create=True)
        assert account is not None  # noqa: S101 (create=True makes it or raises)
        binaries = reachable_binaries(bundled_binaries(), account)
        ensure_data_dir(self.data_dir, account)
        with self._locked():
            running = self._live_postmaster(account)
            if running is not None:
                reason = exposure(running, account)
                if reason is None:
                    return self._conninfo(running)
                # A server started before dawdle ran it itself (by pgserver, say).
                logger.warning(
                    "dawdle: the embedded server in %s was reachable by other users (%s); "
                    "restarting it owner-only",
                    self.data_dir,
                    reason,
                )
                self._pg_ctl(binaries, account, "stop", "-m", "fast")
                remove_socket_dir(running.socket_dir, account)
            return self._conninfo(self._start(binaries, account))

    def status(self) -> ServerStatus:
        """Whether a server runs on the data directory, and where; starts and changes nothing."""
        try:
            data_version: str | None = (self.data_dir / "PG_VERSION").read_text().strip()
        except FileNotFoundError:
            data_version = None
        except OSError as exc:
            raise self._unreadable(exc) from None
        try:
            bundled: str | None = bundled_binaries().version
        except ConfigurationError:
            bundled = None
        account = server_account(create=False)
        postmaster = Postmaster.read(self.data_dir) if data_version is not None else None
        if (
            account is None
            or postmaster is None
            or not process_serves(postmaster.pid, self.data_dir, account)
        ):
            return ServerStatus(self.data_dir, None, None, data_version, bundled)
        return ServerStatus(
            self.data_dir, postmaster.pid, postmaster.socket_dir, data_version, bundled
        )

    def stop(self) -> int | None:
        """Stop the server (fast shutdown: sessions are ended); its pid, or None if none ran."""
        account = server_account(create=False)
        try:
            if account is None or not self.data_dir.is_dir():
                return None
        except OSError as exc:
            raise self._unreadable(exc) from None
        with self._locked():
            running = self._live_postmaster(account)
            if running is None:
                return None
            self._pg_ctl(
                reachable_binaries(bundled_binaries(), account), account, "stop", "-m", "fast"
            )
            remove_socket_dir(running.socket_dir, account)
            return running.pid

    def pg_ctl(self, *args: str) -> None:
        """Run `pg_ctl -w ARGS` on the data directory as the server's user (tests restart it)."""
        account = server_account(create=False)
        assert account is not None  # noqa: S101 (only once the server has run)
        self._pg_ctl(reachable_binaries(bundled_binaries(), account), account, *args)

    # -- starting ------------------------------------------------------------------------------

    def _start(self, binaries: Binaries, account: Account) -> Postmaster:
        """Make the cluster if there is none, then start its server owner-only."""
        version_file = self.data_dir / "PG_VERSION"
        if not version_file.exists():
            self._initdb(binaries, account)
        version = version_file.read_text().strip()
        if version != binaries.major:
            raise ConfigurationError(
                f"the embedded server's data directory {self.data_dir} holds a PostgreSQL "
                f"{version} cluster, but the bundled server is PostgreSQL {binaries.version}: "
                f"upgrade it (pg_upgrade, or pg_dumpall with PostgreSQL {version}), or move "
                "it aside and dawdle makes a new one"
            )
        socket_dir = make_socket_dir(account)
        options = [
            *("-c", f"port={PORT}"),
            *("-c", "listen_addresses="),  # no TCP listener at all
            *("-c", f"unix_socket_directories={socket_dir}"),
            *("-c", "unix_socket_permissions=0700"),
        ]
        with contextlib.suppress(OSError):
            self._log_start = self.log_file.stat().st_size
        try:
            # pg_ctl passes -o to a shell: each option quoted for it. `pg_ctl restart`
            # reuses them (postmaster.opts), so a restarted server is as private.
            self._pg_ctl(
                binaries,
                account,
                "start",
                *("-t", str(START_TIMEOUT_SECONDS), "-l", str(self.log_file)),
                *("-o", shlex.join(options)),
            )
        except DatabaseUnavailable:
            remove_socket_dir(socket_dir, account)
            raise
        postmaster = Postmaster.read(self.data_dir)
        if postmaster is None or postmaster.socket_dir != socket_dir:
            raise DatabaseUnavailable(
                f"the embedded server in {self.data_dir} started but its {PID_FILE} does not "
                f"name its socket directory {socket_dir}; see {self.log_file}"
            )
        check_private(socket_dir, account)
        logger.debug(
            "dawdle: started the embedded server in %s (pid %d)", self.data_dir, postmaster.pid
        )
        return postmaster

    def _initdb(self, binaries: Binaries, account: Account) -> None:
        """Make a new cluster: superuser `postgres`, local connections trusted, TCP refused."""
        if any(self.data_dir.iterdir()):
            raise ConfigurationError(
                f"the embedded server's data directory {self.data_dir} holds files but no "
                "PostgreSQL cluster (no PG_VERSION): empty it or move it aside"
            )
        self._run(
            binaries,
            account,
            "initdb",
            *("-D", str(self.data_dir), f"--username={SUPERUSER}"),
            # Trust is safe only because the socket is its owner's alone; TCP is refused even
            # if someone turns a listener on. Started bare (`pg_ctl start` without dawdle's
            # options), the server listens nowhere, so it refuses to start.
            *("--auth-local=trust", "--auth-host=reject", "--encoding=UTF8", "--no-locale"),
            *("-c", "listen_addresses=", "-c", "unix_socket_directories="),
            *("-c", "unix_socket_permissions=0700"),
            "--no-instructions",
        )

    # -- helpers -------------------------------------------------------------------------------

    def _live_postmaster(self, account: Account) -> Postmaster | None:
        """The running server's postmaster.pid; a stale one is removed (logged once)."""
        pid_file = self.data_dir / PID_FILE
        if not pid_file.exists():
            return None
        postmaster = Postmaster.read(self.data_dir)
        if postmaster is not None and process_serves(postmaster.pid, self.data_dir, account):
            return postmaster
        # Its server is gone (a crash, a reboot, a restored backup): the pid in it is dead
        # or another process's, which would make PostgreSQL refuse to start.
        pid_file.unlink(missing_ok=True)
        if postmaster is not None:
            remove_socket_dir(postmaster.socket_dir, account)
        logger.warning(
            "dawdle: removed the stale %s (pid %s is not its server)",
            pid_file,
            "unknown" if postmaster is None else postmaster.pid,
        )
        return None

    def _conninfo(self, postmaster: Postmaster) -> str:
        """The conninfo of the server's socket, as its superuser."""
        return conninfo.make_conninfo(
            "", host=str(postmaster.socket_dir), port=PORT, user=SUPERUSER, dbname=SUPERUSER
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the data directory's lock: one start or stop at a time, across processes."""
        import fcntl  # noqa: PLC0415 (Unix only, as the embedded server)

        try:
            fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise self._unreadable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _unreadable(self, exc: OSError) -> ConfigurationError:
        return ConfigurationError(
            f"the embedded server's data directory {self.data_dir} cannot be read "
            f"({exc.strerror}): it belongs to another user, or fix its permissions"
        )

    def _pg_ctl(self, binaries: Binaries, account: Account, action: str, *args: str) -> None:
        self._run(binaries, account, "pg_ctl", action, "-D", str(self.data_dir), "-w", "-s", *args)

    def _run(self, binaries: Binaries, account: Account, program: str, *args: str) -> None:
        """Run one of the binaries as `account`; its failure as one line naming the cause."""
        # Without libpq's variables: PGPORT, say, would move the server.
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # A file, not a pipe: the server started by pg_ctl could keep a pipe open for ever.
        with tempfile.TemporaryFile("w+") as output:
            try:
                result = subprocess.run(  # noqa: S603 (our binaries, arguments as a list)
                    [str(binaries.bin_dir / program), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    env=environment,
                    cwd="/",
                    check=False,
                    **account.subprocess_options(),
                )
            except OSError as exc:  # could not even run it (as `account`)
                raise DatabaseUnavailable(
                    f"the embedded server in {self.data_dir}: {program} could not run as "
                    f"{account.name}: {exc.strerror} ({exc.filename or program})"
                ) from None
            if result.returncode == 0:
                return
            output.seek(0)
            said = output.read()
        command = f"pg_ctl {args[0]}" if program == "pg_ctl" else program
        raise DatabaseUnavailable(
            f"the embedded server in {self.data_dir}: {command} failed: {self._reason(said)}"
        )

    def _reason(self, said: str) -> str:
        """The most telling line of a failed command, or of the server's log."""
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        with contextlib.suppress(OSError), self.log_file.open("rb") as log:
            log.seek(self._log_start)
            lines += [
                _LOG_LINE_PREFIX.sub("", line.strip())
                for line in log.read().decode(errors="replace").splitlines()
            ]
        fatal = [line for line in lines if "FATAL" in line or "PANIC" in line]
        errors = [line for line in lines if "error:" in line]
        return (fatal or errors or lines or ["no output"])[-1] + f" (log: {self.log_file})"
