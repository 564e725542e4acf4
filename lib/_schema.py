"""Whether Procrastinate's schema and dawdle's tables are in the database; applying them."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from procrastinate import schema

from dawdle._dawdle_schema import DAWDLE_SCHEMA, DAWDLE_TABLES, missing_tables
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


# Held by `apply` for its whole transaction, so that concurrent applies run one at a time
# and each sees what the previous one committed. Any fixed key will do; this one is "dawd".
APPLY_LOCK_KEY: Final = 0x64617764

# The objects whose creation `apply` reports: Procrastinate's first type, dawdle's tables.
# A table's row type and an enum are never updated, so their row's xmin is their creator's.
_CREATED_BY_QUERY: Final = """
SELECT t.typname::text AS name
  FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = ANY(current_schemas(false))
   AND t.typname = ANY(%(names)s)
   AND t.xmin::text = %(xid)s
"""
_PROCRASTINATE_MARKER: Final = "procrastinate_job_status"


@functools.cache
def apply_script() -> str:
    """One script, run as one transaction: lock, then create what is still missing.

    Its first statement waits for the lock and returns the transaction's id; the presence
    of Procrastinate's schema is checked after it, with a fresh snapshot (a PL/pgSQL
    statement's), so a concurrent apply that committed meanwhile is seen. `%` is escaped
    since the connectors pass the script through psycopg's placeholder parsing.
    """
    # Only constants: Procrastinate's packaged schema (a dollar-quoted string that cannot
    # contain the tag, as a test checks) and dawdle's own DDL.
    script = f"""
SELECT pg_advisory_xact_lock({APPLY_LOCK_KEY}), pg_current_xact_id()::xid::text AS xid;
DO $dawdle_apply$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relname = 'procrastinate_jobs' AND c.relkind = 'r'
                      AND n.nspname = ANY(current_schemas(false))) THEN
        EXECUTE $dawdle_schema${schema.SchemaManager.get_schema()}$dawdle_schema$;
    END IF;
END
$dawdle_apply$;
{DAWDLE_SCHEMA}"""  # noqa: S608
    return script.replace("%", "%%")


@dataclass(frozen=True)
class Applied:
    """What one `apply` created: Procrastinate's schema or not, and which dawdle tables.

    Both empty when everything was there already, or a concurrent apply created it first.
    """

    procrastinate: bool
    dawdle_tables: tuple[str, ...]


def _applied(created_rows: list[dict[str, Any]]) -> Applied:
    """What the rows of _CREATED_BY_QUERY say this apply created."""
    created = {row["name"] for row in created_rows}
    tables = tuple(name for name in DAWDLE_TABLES if name in created)
    return Applied(procrastinate=_PROCRASTINATE_MARKER in created, dawdle_tables=tables)


class SchemaManager(schema.SchemaManager):
    """Procrastinate's schema manager, idempotent and safe to run concurrently; dawdle's tables."""

    async def apply_schema_async(self) -> None:
        """Create what is missing of Procrastinate's schema and dawdle's tables (idempotent).

        See `apply_async`, which also says what it created.
        """
        await self.apply_async()

    async def apply_async(self) -> Applied:
        """Create Procrastinate's schema unless it is there, and dawdle's missing tables.

        An outdated Procrastinate schema is refused before anything is created. Concurrent
        applies (several processes starting at once) all succeed: they take turns under an
        advisory lock, and each creates only what the previous ones did not.
        """
        status = await self.check_schema_async()
        refuse_outdated(status)
        if status.complete:
            return Applied(procrastinate=False, dawdle_tables=())
        row = await self.connector.execute_query_one_async(apply_script())
        created = await self.connector.execute_query_all_async(
            _CREATED_BY_QUERY, names=[_PROCRASTINATE_MARKER, *DAWDLE_TABLES], xid=row["xid"]
        )
        return _applied(created)

    def apply_schema(self) -> None:
        """Synchronous `apply_schema_async`."""
        self.apply()

    def apply(self) -> Applied:
        """Synchronous `apply_async`."""
        connector = self.connector.get_sync_connector()
        status = _status_of(connector.execute_query_one(CHECK_SCHEMA_QUERY))
        refuse_outdated(status)
        if status.complete:
            return Applied(procrastinate=False, dawdle_tables=())
        row = connector.execute_query_one(apply_script())
        created = connector.execute_query_all(
            _CREATED_BY_QUERY, names=[_PROCRASTINATE_MARKER, *DAWDLE_TABLES], xid=row["xid"]
        )
        return _applied(created)

    async def check_schema_async(self) -> SchemaStatus:
        """Tell whether the schema is present, which version it matches and what it lacks.

        Missing functions mean the database needs Procrastinate's migrations; missing
        dawdle tables, `dawdle schema --apply`.
        """
        return _status_of(await self.connector.execute_query_one_async(CHECK_SCHEMA_QUERY))
