"""Whether Procrastinate's schema and dawdle's tables are in the database; applying them."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from procrastinate import schema

from dawdle._dawdle_schema import DAWDLE_SCHEMA, missing_tables
from dawdle._errors import SchemaOutdated

CHECK_SCHEMA_QUERY: Final = """
SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present,
       ARRAY(SELECT p.proname::text FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = ANY(current_schemas(false))
               AND p.proname LIKE 'procrastinate\\_%%') AS functions,
       ARRAY(SELECT c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = ANY(current_schemas(false))
               AND c.relkind = 'r'
               AND c.relname LIKE 'dawdle\\_%%') AS tables
"""

_CREATED_FUNCTION = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(?:public\.)?(procrastinate_\w+)"
)


@dataclass(frozen=True)
class SchemaStatus:
    """What `check_schema_async` found: is the schema there, how recent, what is missing.

    `present`, `version` and `missing` are about Procrastinate's schema, which the worker
    needs; `dawdle_missing` names dawdle's own tables that are absent, without which the
    worker runs degraded (see `dawdle._dawdle_schema`).
    """

    present: bool
    version: str | None
    missing: tuple[str, ...]
    dawdle_missing: tuple[str, ...]

    @property
    def current(self) -> bool:
        """True when the schema has every function the installed Procrastinate uses."""
        return self.present and not self.missing

    @property
    def complete(self) -> bool:
        """True when `current` and dawdle's tables are all there: nothing left to apply."""
        return self.current and not self.dawdle_missing


@functools.cache
def expected_functions() -> frozenset[str]:
    return frozenset(_CREATED_FUNCTION.findall(schema.SchemaManager.get_schema()))


@functools.cache
def _introduced_in() -> dict[str, tuple[int, ...]]:
    """For each function name, the Procrastinate version whose migration first created it."""
    first: dict[str, tuple[int, ...]] = {}
    migrations = sorted(Path(schema.SchemaManager.get_migrations_path()).glob("*.sql"))
    for migration in migrations:
        version = tuple(int(part) for part in migration.name.split("_", 1)[0].split("."))
        for name in _CREATED_FUNCTION.findall(migration.read_text()):
            first.setdefault(name, version)
    return first


def schema_status(*, present: bool, functions: list[str], tables: list[str]) -> SchemaStatus:
    """Interpret the result of CHECK_SCHEMA_QUERY."""
    dawdle_missing = missing_tables(tables)
    if not present:
        return SchemaStatus(
            present=False,
            version=None,
            missing=tuple(sorted(expected_functions())),
            dawdle_missing=dawdle_missing,
        )
    introduced = _introduced_in()
    versions = [introduced[name] for name in functions if name in introduced]
    version = ".".join(str(part) for part in max(versions)) if versions else None
    missing = tuple(sorted(expected_functions().difference(functions)))
    return SchemaStatus(
        present=True, version=version, missing=missing, dawdle_missing=dawdle_missing
    )


def refuse_outdated(status: SchemaStatus) -> None:
    """Raise SchemaOutdated if the schema is there but lacks functions Procrastinate uses.

    An absent schema passes: applying the schema creates it, and the CLI words that case itself.
    """
    if status.present and status.missing:
        raise SchemaOutdated(
            f"the database has Procrastinate's schema of version {status.version} without "
            f"{', '.join(status.missing)}: apply Procrastinate's migrations first"
        )


def _status_of(row: dict[str, Any]) -> SchemaStatus:
    return schema_status(
        present=row["present"], functions=list(row["functions"]), tables=list(row["tables"])
    )


class SchemaManager(schema.SchemaManager):
    """Procrastinate's schema manager, made idempotent, plus dawdle's tables and a check."""

    async def apply_schema_async(self) -> None:
        """Create Procrastinate's schema unless it is there, then dawdle's (idempotent) DDL.

        An outdated Procrastinate schema is refused before anything is created.
        """
        status = await self.check_schema_async()
        refuse_outdated(status)
        if not status.present:
            await super().apply_schema_async()
        await self.connector.execute_query_async(DAWDLE_SCHEMA)

    def apply_schema(self) -> None:
        """Synchronous `apply_schema_async`."""
        connector = self.connector.get_sync_connector()
        status = _status_of(connector.execute_query_one(CHECK_SCHEMA_QUERY))
        refuse_outdated(status)
        if not status.present:
            super().apply_schema()
        connector.execute_query(DAWDLE_SCHEMA)

    async def check_schema_async(self) -> SchemaStatus:
        """Tell whether the schema is present, which version it matches and what it lacks.

        Missing functions mean the database needs Procrastinate's migrations; missing
        dawdle tables, `dawdle schema --apply`.
        """
        return _status_of(await self.connector.execute_query_one_async(CHECK_SCHEMA_QUERY))
