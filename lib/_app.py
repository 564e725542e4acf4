"""dawdle's App: Procrastinate's App on runtime-agnostic connectors."""

from __future__ import annotations

from typing import Any

import procrastinate
from procrastinate import connector as procrastinate_connector

from dawdle._schema import SchemaManager


class App(procrastinate.App):
    """Procrastinate's `App` (tasks, blueprints, job manager) that runs on asyncio and Trio.

    Without a connector it uses dawdle's `PsycopgConnector` on the default database:
    DAWDLE_DSN, else libpq's environment, else an embedded PostgreSQL server.
    """

    def __init__(
        self, *, connector: procrastinate_connector.BaseConnector | None = None, **kwargs: Any
    ) -> None:
        if connector is None:
            from dawdle._connector.psycopg import PsycopgConnector  # noqa: PLC0415

            connector = PsycopgConnector()
        super().__init__(connector=connector, **kwargs)

    @property
    def schema_manager(self) -> SchemaManager:
        """Applies the schema (`apply_schema_async`) and checks it (`check_schema_async`)."""
        return SchemaManager(connector=self.connector)
