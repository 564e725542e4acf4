"""The database of a run: which server, a fresh database on it, and the jobs table's state.

Jobs are put in the queue by one INSERT ... SELECT generate_series, which fires
Procrastinate's triggers as a defer does (a `deferred` event per job, a NOTIFY nobody
hears), then the tables are VACUUM ANALYZEd and CHECKPOINTed so that every configuration
meets the same fresh table, with no dead index entries and no dirty page of the fill left
for a checkpoint during a measurement.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import psycopg
from psycopg import conninfo, sql
from psycopg.rows import dict_row

import dawdle
from tests.durability.private_server import private_server

TRUNCATE = "TRUNCATE procrastinate_jobs RESTART IDENTITY CASCADE"
FILL = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT 'default', %(task)s, jsonb_build_object('i', n) FROM generate_series(1, %(jobs)s) AS n
"""
TALLY = """
SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'succeeded' AND attempts <> 1) AS not_once,
       count(*) FILTER (WHERE status = 'todo') AS todo,
       count(*) FILTER (WHERE status = 'doing') AS doing,
       count(*) FILTER (WHERE status NOT IN ('succeeded', 'todo', 'doing')) AS other
  FROM procrastinate_jobs
"""


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[tuple[str, str]]:
    """The server to use and where it came from: `dsn`, else DAWDLE_TEST_DSN, else embedded.

    The embedded server lives in a new temporary directory, stopped and deleted at the end.
    """
    if dsn:
        yield dsn, "--dsn"
        return
    configured = os.environ.get("DAWDLE_TEST_DSN")
    if configured:
        yield configured, "DAWDLE_TEST_DSN"
        return
    with private_server("dawdle-pg-") as embedded:
        yield embedded.get_uri(), "embedded (dawdle's launcher)"


@contextlib.contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """A database created for this run, with the schema applied; dropped at the end."""
    name = f"dawdle_perf_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = conninfo.make_conninfo(server_dsn, dbname=name)
        anyio.run(_apply_schema, dsn, backend="asyncio")
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def _apply_schema(dsn: str) -> None:
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, min_size=1, max_size=1))
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


def server_version(dsn: str) -> str:
    """The server's `version()`."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT version()").fetchone()
    assert row is not None
    return str(row[0])


def _freshen(conn: psycopg.Connection[object]) -> None:
    conn.execute("VACUUM ANALYZE procrastinate_jobs")
    conn.execute("VACUUM ANALYZE procrastinate_events")
    _checkpoint(conn)


def _checkpoint(conn: psycopg.Connection[object]) -> None:
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # CHECKPOINT needs superuser
        conn.execute("CHECKPOINT")


def empty(dsn: str) -> None:
    """No job, no event."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)


def refill(dsn: str, jobs: int, task: str = "noop") -> None:
    """Empty the jobs table, put `jobs` todo jobs of `task` in it, and leave it fresh."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)
        conn.execute(FILL, {"task": task, "jobs": jobs})
        _freshen(conn)


def burst(dsn: str, jobs: int) -> None:
    """`jobs` todo no-op jobs arrive in a queue last analysed when all its jobs had finished.

    The steady state of a healthy queue: its jobs succeeded, autovacuum analysed the table,
    the finished jobs were deleted. Then a burst of `jobs` defers, before autovacuum's next
    pass: the planner still believes there are no todo jobs.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)
        conn.execute(FILL, {"task": "noop", "jobs": jobs})
        conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded', attempts = 1")
        _freshen(conn)
        conn.execute("DELETE FROM procrastinate_jobs")
        conn.execute(FILL, {"task": "noop", "jobs": jobs})
        _checkpoint(conn)


def top_up(dsn: str, depth: int, task: str = "noop") -> None:
    """Delete the succeeded jobs, insert as many todo ones as were consumed, leave it fresh."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs WHERE status = 'succeeded'")
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
        assert row is not None
        conn.execute(FILL, {"task": task, "jobs": depth - row[0]})
        _freshen(conn)
    assert tally(dsn, total=depth).todo == depth


@dataclass(frozen=True)
class Counts:
    """How many jobs succeeded and how many are still to do."""

    succeeded: int
    todo: int


def tally(dsn: str, *, total: int) -> Counts:
    """What became of the `total` jobs, with the sanity facts asserted.

    No succeeded job ran more than once, none is left 'doing' after its worker stopped,
    none failed or was aborted, and none was lost.
    """
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(TALLY).fetchone()
    assert row is not None
    assert row["not_once"] == 0, "a succeeded job ran more than once"
    assert row["doing"] == 0, "a job was left 'doing' after its worker stopped"
    assert row["other"] == 0, "a job failed or was aborted"
    assert row["succeeded"] + row["todo"] == total, f"expected {total} jobs: {row}"
    return Counts(succeeded=row["succeeded"], todo=row["todo"])
