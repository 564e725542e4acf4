"""Where dawdle's default database is: DAWDLE_DSN, libpq's environment, or an embedded server."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("dawdle.connector")

# libpq reads these itself when the connection string leaves them out.
_LIBPQ_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE", "PGUSER")

# Root's embedded server runs as a system user, which must reach the data without dawdle
# opening root's home (0700): it lives where services keep theirs.
_ROOT_DATA_DIR = Path("/var/lib/dawdle/pgdata")


def embedded_data_dir() -> Path:
    """The data directory of the embedded server, kept across runs.

    $XDG_DATA_HOME/dawdle/pgdata, else ~/.local/share/dawdle/pgdata; as root (without
    XDG_DATA_HOME) /var/lib/dawdle/pgdata.
    """
    base = os.environ.get("XDG_DATA_HOME")
    if base:
        return Path(base) / "dawdle" / "pgdata"
    if os.geteuid() == 0:
        return _ROOT_DATA_DIR
    return Path.home() / ".local" / "share" / "dawdle" / "pgdata"


def default_conninfo() -> str:
    """DAWDLE_DSN, else libpq's environment, else an embedded server's conninfo (started if needed).

    Blocking: it may start a PostgreSQL server; call it in a worker thread from async code.
    """
    configured = os.environ.get("DAWDLE_DSN")
    if configured:
        return configured
    if any(os.environ.get(name) for name in _LIBPQ_VARIABLES):
        return ""  # an empty conninfo makes libpq take everything from its environment
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    return _start_embedded(embedded_data_dir())


def _start_embedded(data_dir: Path) -> str:
    """The conninfo of the embedded server in `data_dir`, started unless it runs."""
    # Imported here: Unix only (pwd, fcntl), and needed only without a configured database.
    from dawdle._embedded import EmbeddedServer  # noqa: PLC0415

    # It keeps running when this process exits, for the next one: a local service.
    dsn = EmbeddedServer(data_dir).ensure_running()
    logger.info(
        "dawdle: using the embedded PostgreSQL server in %s (`dawdle embedded stop` stops it)",
        data_dir,
    )
    return dsn
