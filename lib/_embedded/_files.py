"""The embedded server's files: its postmaster.pid, its socket directory, its data directory."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from dawdle._embedded._account import Account
from dawdle._errors import ConfigurationError

logger = logging.getLogger("dawdle.connector")

PID_FILE: Final = "postmaster.pid"
PORT: Final = 5432
# A Unix socket's path must fit in sun_path: 108 bytes on Linux, 104 on macOS, with its NUL.
MAX_SOCKET_PATH: Final = 103
SOCKET_NAME: Final = f".s.PGSQL.{PORT}"
SOCKET_DIR_PREFIX: Final = "dawdle-"
# What mkdtemp adds to the prefix: eight random characters.
_SOCKET_DIR_NAME_LENGTH: Final = len(SOCKET_DIR_PREFIX) + 8


@dataclass(frozen=True)
class Postmaster:
    """What a server's postmaster.pid says: its pid, socket directory, TCP address, status."""

    pid: int
    socket_dir: Path | None
    listen_address: str
    status: str

    @classmethod
    def read(cls, data_dir: Path) -> Postmaster | None:
        """The pid file of `data_dir`, or None if there is none (or no pid in it yet)."""
        try:
            lines = (data_dir / PID_FILE).read_text().splitlines()
        except FileNotFoundError:
            return None
        # Lines: pid, data directory, start time, port, first socket directory, first
        # TCP address, shared memory key, status. The server writes them in stages.
        fields = [line.strip() for line in lines] + [""] * 8
        try:
            pid = int(fields[0])
        except ValueError:
            return None
        return cls(
            pid=pid,
            socket_dir=Path(fields[4]) if fields[4] else None,
            listen_address=fields[5],
            status=fields[7],
        )


def process_serves(pid: int, data_dir: Path, account: Account) -> bool:
    """True if process `pid` is alive and a PostgreSQL server of `data_dir`.

    A postmaster runs as its data directory's owner with the data directory as its working
    directory: a live pid that is another user's, or whose working directory is elsewhere,
    only reuses the number of a server that is gone. Without /proc (not Linux) a live pid
    counts as the server, as PostgreSQL itself assumes.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False  # gone, or another user's: not a server running as `account`
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True
    try:
        owner = proc.stat().st_uid
        working = os.stat(proc / "cwd")
    except FileNotFoundError:
        return False  # exited meanwhile, or a zombie
    except PermissionError:
        return True  # cannot tell (a hardened /proc): leave the decision to PostgreSQL
    here = data_dir.stat()
    return owner == account.uid and (working.st_dev, working.st_ino) == (
        here.st_dev,
        here.st_ino,
    )


def exposure(postmaster: Postmaster, account: Account) -> str | None:
    """Why a running server is reachable by users other than `account`, or None if it is not."""
    if postmaster.listen_address:
        return f"it listens on TCP ({postmaster.listen_address})"
    if postmaster.socket_dir is None:
        return None
    try:
        info = postmaster.socket_dir.lstat()
    except FileNotFoundError:
        return f"its socket directory {postmaster.socket_dir} is gone"
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != account.uid or info.st_mode & 0o077:
        return (
            f"its socket directory {postmaster.socket_dir} is open to others "
            f"(mode {stat.S_IMODE(info.st_mode):04o})"
        )
    return None


def _safe_base(base: Path, account: Account) -> bool:
    """True if `base` may hold private directories: ours or root's, and sticky if shared.

    `account` must reach it, and its name need no quoting in PostgreSQL's list of socket
    directories.
    """
    if set(str(base)) & set(',"\\ '):
        return False
    try:
        info = base.stat()
        if account.blocking_ancestor(base / SOCKET_NAME) is not None:
            return False
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, os.geteuid()):
        return False
    shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return not shared or bool(info.st_mode & stat.S_ISVTX)


def make_socket_dir(account: Account) -> Path:
    """A new directory for the server's socket: short, 0700, owned by `account`.

    Made by mkdtemp (a fresh name, created atomically: never a directory that was already
    there) under the temporary directory, or /tmp if that is too long or shared unsafely.
    The server finds it in its command line; clients read it from postmaster.pid.
    """
    for base in dict.fromkeys([Path(tempfile.gettempdir()), Path("/tmp")]):  # noqa: S108
        room = len(str(base)) + 1 + _SOCKET_DIR_NAME_LENGTH + 1 + len(SOCKET_NAME)
        if room > MAX_SOCKET_PATH or not _safe_base(base, account):
            continue
        path = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=base))
        if not account.is_current:
            os.chown(path, account.uid, account.gid)
        check_private(path, account)
        return path
    raise ConfigurationError(
        "no place for the embedded server's socket: the temporary directory "
        f"{tempfile.gettempdir()} and /tmp are too long or writable by others without the "
        "sticky bit; set TMPDIR to a short directory of your own"
    )


def check_private(path: Path, account: Account) -> None:
    """Refuse `path` unless it is a real directory of `account`'s with mode 0700."""
    info = path.lstat()
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != account.uid or mode != 0o700:
        raise ConfigurationError(
            f"the embedded server's socket directory {path} is not private (mode {mode:04o}, "
            f"owner uid {info.st_uid}, expected 0700 and {account.name}): remove it"
        )


def remove_socket_dir(path: Path | None, account: Account) -> None:
    """Remove a socket directory dawdle made, once the server that used it is gone."""
    if path is None or not path.name.startswith(SOCKET_DIR_PREFIX):
        return
    with contextlib.suppress(OSError):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == account.uid:
            # A server killed without a shutdown leaves its socket and its lock file.
            for leftover in (SOCKET_NAME, f"{SOCKET_NAME}.lock"):
                (path / leftover).unlink(missing_ok=True)
            path.rmdir()


def _made(path: Path, mode: int) -> bool:
    """Make the directory `path` (True), or find it there (False); one line if neither."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return False  # made meanwhile, by another dawdle process say
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the embedded server's directory {path}: {exc.strerror}; set "
            "XDG_DATA_HOME to a writable place"
        ) from None
    return True


def ensure_data_dir(data_dir: Path, account: Account) -> None:
    """Make `data_dir` (0700, `account`'s) if missing; refuse one the server could not use.

    Directories above it are made if missing (as root: 0755, so that `account` can reach
    its data) and never changed when they exist.
    """
    blocker = account.blocking_ancestor(data_dir)
    if blocker is not None:
        raise ConfigurationError(
            f"the embedded server's data directory {data_dir} is out of reach of "
            f"{account.name}, which runs PostgreSQL: {blocker} is mode "
            f"{stat.S_IMODE(blocker.stat().st_mode):04o}. dawdle changes no directory above "
            "its data: pick one under directories others may search (XDG_DATA_HOME; as "
            "root the default is /var/lib/dawdle/pgdata)"
        )
    for above in reversed(data_dir.parents):
        if not above.exists() and _made(above, 0o777) and not account.is_current:
            above.chmod(0o755)  # ours, new: searchable by the server's user whatever the umask
    _made(data_dir, 0o700)
    info = data_dir.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(
            f"the embedded server's data directory {data_dir} is not a directory: remove it"
        )
    if info.st_uid != account.uid:
        if info.st_uid != os.geteuid() or any(data_dir.iterdir()):
            raise ConfigurationError(
                f"the embedded server's data directory {data_dir} belongs to uid "
                f"{info.st_uid}, not to {account.name} who runs the server: use a directory "
                f"of {account.name}'s (XDG_DATA_HOME) or remove it"
            )
        os.chown(data_dir, account.uid, account.gid)  # root's own empty directory, new
    if stat.S_IMODE(info.st_mode) & 0o077:
        data_dir.chmod(0o700)  # PostgreSQL refuses a data directory others may read
        logger.warning("dawdle: made the embedded server's data directory %s private", data_dir)
    if os.statvfs(data_dir).f_flag & os.ST_RDONLY:
        raise ConfigurationError(
            f"the embedded server's data directory {data_dir} is on a read-only file system: "
            "mount it read-write, or set XDG_DATA_HOME to a writable place"
        )
    if not account.may(data_dir, write=True) or not os.access(data_dir, os.W_OK):
        raise ConfigurationError(
            f"the embedded server's data directory {data_dir} is not writable by "
            f"{account.name} (mode {stat.S_IMODE(info.st_mode):04o}): chmod u+rwx {data_dir}"
        )
