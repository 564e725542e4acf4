"""The connector of sync code: Procrastinate's SyncPsycopgConnector with dawdle's checks.

Procrastinate's job manager defers from sync code (a sync task's `defer()`) through
`connector.get_sync_connector()` directly, so the job checks of `_params` and the one-line
errors of `_failures` are applied here too, not only in PsycopgConnector's own methods.
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
import psycopg_pool
from procrastinate import sync_psycopg_connector

from dawdle._connector._failures import database_errors
from dawdle._connector._params import JobLimits, JsonDumps, query_params
from dawdle._connector._pool import has_gone_bad


def check_idle_connection(conn: psycopg.Connection[Any]) -> None:
    """Refuse a pooled connection that went bad while idle, without a round trip.

    It is closed first, so that psycopg_pool replaces it rather than offering it again.
    Procrastinate's pool sends an empty query before every use instead: a sync defer took
    572 µs with it here, 441 without.
    """
    if has_gone_bad(conn):
        conn.close()
        raise psycopg.OperationalError("the pooled connection went bad while idle")


class SyncConnector(sync_psycopg_connector.SyncPsycopgConnector):
    """Procrastinate's sync connector: jobs checked against `limits`, errors on one line."""

    def __init__(self, *, limits: JobLimits, json_dumps: JsonDumps | None, **kwargs: Any) -> None:
        super().__init__(json_dumps=json_dumps, **kwargs)
        self._limits = limits
        self._dumps = json_dumps

    @staticmethod
    def _create_pool(pool_args: dict[str, Any]) -> psycopg_pool.ConnectionPool:
        with database_errors():
            return psycopg_pool.ConnectionPool(**pool_args, open=False, check=check_idle_connection)

    def _wrap_json(self, arguments: dict[str, Any]) -> dict[str, Any]:
        # Every query method of Procrastinate's sync connector sends its arguments through this.
        return query_params(arguments, self._limits, self._dumps)

    def execute_query(self, query: LiteralString, **arguments: Any) -> None:
        """Run a statement."""
        with database_errors():
            super().execute_query(query, **arguments)

    def execute_query_one(self, query: LiteralString, **arguments: Any) -> dict[str, Any]:
        """Run a query and return its first row (Procrastinate's NoResult if none)."""
        with database_errors():
            return super().execute_query_one(query, **arguments)

    def execute_query_all(self, query: LiteralString, **arguments: Any) -> list[dict[str, Any]]:
        """Run a query and return all its rows."""
        with database_errors():
            return super().execute_query_all(query, **arguments)

    def execute_query_one_with_connection(
        self, connection: Any, query: LiteralString, **arguments: Any
    ) -> dict[str, Any]:
        """Like `execute_query_one`, on the caller's connection (and transaction)."""
        with database_errors():
            return super().execute_query_one_with_connection(connection, query, **arguments)

    def execute_query_all_with_connection(
        self, connection: Any, query: LiteralString, **arguments: Any
    ) -> list[dict[str, Any]]:
        """Like `execute_query_all`, on the caller's connection (and transaction)."""
        with database_errors():
            return super().execute_query_all_with_connection(connection, query, **arguments)
