"""Behind a connection pooler: which mode, and psycopg's prepared statements switched off.

A transaction-mode pooler (PgBouncer's `pool_mode = transaction`) gives each transaction
whichever server connection is free. Prepared statements are the server connection's, so a
client's `_pg3_0` may already exist there (DuplicatePreparedStatement), be missing
(InvalidSqlStatementName) or be another client's statement with other parameters. In each
case the server refused the statement before running it, so it is safe to send again,
unprepared. LISTEN is the server connection's too: notifications reach whoever holds it.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Literal

import psycopg

from dawdle._errors import ConfigurationError

logger = logging.getLogger("dawdle.connector")

Pooler = Literal["session", "transaction"]
POOLERS: Final = ("session", "transaction")

PREPARE_HINT: Final = (
    "prepared statements do not survive a transaction-mode pooler (PgBouncer before 1.21, "
    "or without max_prepared_statements): set prepare_threshold=None (or pooler='transaction')"
)


def check_pooler(pooler: object) -> Pooler | None:
    """`pooler` if it is None, "session" or "transaction"; ConfigurationError otherwise."""
    if pooler is None or pooler in POOLERS:
        return pooler
    raise ConfigurationError(
        f"PsycopgConnector: pooler={pooler!r} is not a pooler mode; expected 'transaction' "
        "(PgBouncer's pool_mode = transaction), 'session', or None (a direct connection)"
    )


def check_prepare_threshold(options: dict[str, Any], pooler: Pooler | None) -> None:
    """Check psycopg's prepare_threshold; a transaction pooler defaults it to None (never)."""
    if "prepare_threshold" not in options:
        if pooler == "transaction":
            options["prepare_threshold"] = None
        return
    value = options["prepare_threshold"]
    if value is not None and (type(value) is not int or value < 0):
        raise ConfigurationError(
            f"PsycopgConnector: prepare_threshold={value!r} is not a whole number >= 0 or "
            "None (never prepare)"
        )


def prepared_statement_lost(exc: psycopg.Error) -> bool:
    """True if the server refused a prepared statement of ours, at Parse or Bind, unrun."""
    if isinstance(
        exc, psycopg.errors.DuplicatePreparedStatement | psycopg.errors.InvalidSqlStatementName
    ):
        return True
    # Another client's statement under our name, with another number of parameters.
    primary = exc.diag.message_primary or ""
    return isinstance(exc, psycopg.errors.ProtocolViolation) and "prepared statement" in primary


class Preparing:
    """Whether the connector still lets psycopg prepare statements: stopped at the first loss."""

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options  # the factory's: new connections follow a stop
        self.stopped = options.get("prepare_threshold", 5) is None

    def stop(self, exc: psycopg.Error) -> None:
        """Prepare nothing more on this connector's connections, said once, with the fix."""
        if self.stopped:
            return
        self.stopped = True
        self._options["prepare_threshold"] = None
        reason = " ".join((exc.diag.message_primary or str(exc)).split())
        logger.warning(
            "the server lost a prepared statement (%s): a transaction-mode pooler? This "
            "connector no longer prepares statements and resent it; set prepare_threshold=None "
            "(or pooler='transaction') to say so from the start",
            reason,
            extra={"action": "prepared_statements_off"},
        )

    def follow(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Switch preparing off on a connection made before the stop."""
        if self.stopped and conn.prepare_threshold is not None:
            conn.prepare_threshold = None
