"""Where dawdle's default database is: DAWDLE_DSN, libpq's environment, or an embedded server."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dawdle._errors import ConfigurationError

logger = logging.getLogger("dawdle.connector")

# libpq reads these itself when the connection string leaves them out.
_LIBPQ_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE", "PGUSER")


def embedded_data_dir() -> Path:
    """The per-user data directory of the embedded server, kept across runs."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dawdle" / "pgdata"


def default_conninfo() -> str:
    """DAWDLE_DSN, else libpq's environment, else an embedded server's URI (started if needed).

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
    try:
        import pgserver  # noqa: PLC0415 (optional dependency, imported only when needed)
    except ImportError as exc:
        raise ConfigurationError(
            "no database configured: set DAWDLE_DSN (or PGHOST / DATABASE_URL), or install "
            "dawdle[embedded] to let dawdle start its own PostgreSQL"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None leaves the server running for the next process, like a local service.
    # pgserver re-exports get_server without __all__, which strict mypy does not see.
    server = pgserver.get_server(data_dir, cleanup_mode=None)  # type: ignore[attr-defined]
    logger.info("dawdle: using the embedded PostgreSQL server in %s", data_dir)
    return str(server.get_uri())
