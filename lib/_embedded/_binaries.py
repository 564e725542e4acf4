"""pgserver's PostgreSQL binaries: where they are, their version, and a copy root's user can run.

As root the server runs as `dawdle-postgres`, which may not reach a virtualenv under root's
0700 home. dawdle then copies the binaries once to /var/lib/dawdle/pginstall-VERSION
(root's, readable by all) rather than opening a directory of root's.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dawdle._embedded._account import Account
from dawdle._errors import ConfigurationError

logger = logging.getLogger("dawdle.connector")

# Where root's copy of the binaries goes: beside root's data, /var/lib/dawdle/pgdata.
COPY_ROOT = Path("/var/lib/dawdle")


@dataclass(frozen=True)
class Binaries:
    """PostgreSQL's programs (pgserver's `pginstall/bin`) and their version ("16.2")."""

    bin_dir: Path
    version: str

    @property
    def major(self) -> str:
        """The major version, as a data directory's PG_VERSION file names it."""
        return self.version.split(".")[0]


def bundled_binaries() -> Binaries:
    """The binaries pgserver ships, found without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no database configured: set DAWDLE_DSN (or PGHOST / DATABASE_URL), or install "
            "dawdle[embedded] to let dawdle start its own PostgreSQL"
        )
    return _binaries_in(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")


@functools.cache
def _binaries_in(bin_dir: Path) -> Binaries:
    """The binaries in `bin_dir`, with the version `postgres --version` reports."""
    try:
        output = subprocess.run(  # noqa: S603 (a fixed program of ours, no shell)
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigurationError(
            f"pgserver's PostgreSQL binaries in {bin_dir} do not run ({exc}): reinstall "
            "dawdle[embedded]"
        ) from None
    return Binaries(bin_dir, output.split()[-1])


def reachable_binaries(binaries: Binaries, account: Account) -> Binaries:
    """`binaries` if `account` can run them, else root's copy of them that it can."""
    if account.blocking_ancestor(binaries.bin_dir / "postgres") is None:
        return binaries
    target = COPY_ROOT / f"pginstall-{binaries.version}"
    if not target.is_dir():
        _copy(binaries.bin_dir.parent, target)
        logger.warning(
            "dawdle: copied PostgreSQL's binaries to %s, since %s (which runs the embedded "
            "server) cannot reach them in %s",
            target,
            account.name,
            binaries.bin_dir.parent,
        )
    copy = Binaries(target / "bin", binaries.version)
    blocker = account.blocking_ancestor(copy.bin_dir / "postgres")
    if blocker is not None:
        raise ConfigurationError(
            f"{account.name}, which runs the embedded PostgreSQL server, cannot reach its "
            f"binaries in {copy.bin_dir}: {blocker} is mode "
            f"{stat.S_IMODE(blocker.stat().st_mode):04o}. Install dawdle[embedded] where "
            "other users may read it, run dawdle as an ordinary user, or set DAWDLE_DSN"
        )
    return copy


def _copy(install: Path, target: Path) -> None:
    """Copy pgserver's `pginstall` tree to `target`, readable by all, all at once."""
    try:
        for above in reversed([target.parent, *target.parent.parents]):
            if not above.exists():
                os.mkdir(above)
                above.chmod(0o755)  # ours, new: searchable by the server's user
        staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=target.parent))
        try:
            copy = staging / "pginstall"
            shutil.copytree(install, copy, symlinks=True)
            for path in [copy, *copy.rglob("*")]:
                if not path.is_symlink():
                    executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
                    path.chmod(0o755 if executable else 0o644)
            # A rename, so that a concurrent start sees all of the copy or none of it.
            try:
                copy.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                # Another process's copy got there first (ENOTEMPTY): use it.
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot copy PostgreSQL's binaries from {install} to {target} ({exc.strerror}), "
            "where the embedded server's user could run them: install dawdle[embedded] where "
            "other users may read it, or set DAWDLE_DSN"
        ) from None
