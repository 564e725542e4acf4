"""Who runs the embedded server: the current user, or as root a dedicated system user.

PostgreSQL refuses to run as root. Rather than a shared account with a login shell (as
pgserver does), dawdle uses `dawdle-postgres`: a system user with no login and no home,
owning only the data and socket directories. Root still connects, through its override of
file permissions; no other user can.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from dawdle._errors import ConfigurationError

logger = logging.getLogger("dawdle.connector")

SERVICE_USER: Final = "dawdle-postgres"


@dataclass(frozen=True)
class Account:
    """The user the server runs as: its ids, its name (for messages) and its groups."""

    uid: int
    gid: int
    name: str
    groups: frozenset[int]

    @property
    def is_current(self) -> bool:
        """True if this process runs as this user (no switch needed to run the binaries)."""
        return self.uid == os.geteuid()

    def subprocess_options(self) -> dict[str, Any]:
        """`subprocess.run` keywords that run a program as this user (none if it is us)."""
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def may(self, path: Path, *, write: bool = False) -> bool:
        """True if this user may search (or, with `write`, write into) the directory `path`."""
        if self.uid == 0:
            return True
        info = path.stat()
        if info.st_uid == self.uid:
            bits = stat.S_IXUSR | (stat.S_IWUSR if write else 0)
        elif info.st_gid in self.groups:
            bits = stat.S_IXGRP | (stat.S_IWGRP if write else 0)
        else:
            bits = stat.S_IXOTH | (stat.S_IWOTH if write else 0)
        return info.st_mode & bits == bits

    def blocking_ancestor(self, path: Path) -> Path | None:
        """The highest existing directory above `path` this user may not search, or None."""
        return next(
            (above for above in reversed(path.parents) if above.is_dir() and not self.may(above)),
            None,
        )


def current_account() -> Account:
    """The user this process runs as."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry, as in some containers
        name = str(uid)
    return Account(uid, os.getegid(), name, frozenset([os.getegid(), *os.getgroups()]))


def server_account(*, create: bool) -> Account | None:
    """The user the embedded server runs as: us, or as root `dawdle-postgres`.

    As root, the user is created when missing if `create`; otherwise None then.
    """
    if os.geteuid() != 0:
        return current_account()
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        if not create:
            return None
        entry = _create_service_user()
    groups = frozenset(os.getgrouplist(SERVICE_USER, entry.pw_gid))
    return Account(entry.pw_uid, entry.pw_gid, SERVICE_USER, groups)


def _create_service_user() -> pwd.struct_passwd:
    """Create the system user `dawdle-postgres`: no login shell, no home directory."""
    useradd = shutil.which("useradd")
    if useradd is None:
        raise ConfigurationError(
            f"running as root, dawdle runs PostgreSQL as the system user {SERVICE_USER!r}, "
            "which does not exist, and useradd is not available to create it: create it "
            "(no login, no home), or run dawdle as an ordinary user"
        )
    shell = shutil.which("nologin") or "/bin/false"
    result = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            shell,
            SERVICE_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # another process may have created it at the same time: its entry counts
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        reason = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise ConfigurationError(
            f"running as root, dawdle runs PostgreSQL as the system user {SERVICE_USER!r}, "
            f"which useradd could not create ({reason}): create it, or run dawdle as an "
            "ordinary user"
        ) from None
    if result.returncode == 0:
        logger.warning(
            "dawdle: created the system user %s to run the embedded PostgreSQL server "
            "(PostgreSQL refuses to run as root)",
            SERVICE_USER,
        )
    return entry
