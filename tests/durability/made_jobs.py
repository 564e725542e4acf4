"""Jobs walked to a status with plain UPDATEs, for the admin CLI's and the dashboard's tests.

Procrastinate's triggers write the events a real run leaves; `emptied` gives a connection
to the module's database with its jobs, workers, events and pauses deleted, `add_worker`
registers a worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events, dawdle_queue_pauses RESTART IDENTITY CASCADE"
)
# The status changes that lead to each status, as a worker makes them.
PATHS = {
    "todo": [],
    "doing": ["doing"],
    "succeeded": ["doing", "succeeded"],
    "failed": ["doing", "failed"],
    "aborted": ["doing", "aborted"],
    "cancelled": ["cancelled"],
}


def add_worker(conn: psycopg.Connection, *, age_seconds: float = 0) -> int:
    """A registered worker whose last heartbeat was `age_seconds` ago; its id."""
    row = conn.execute(
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - make_interval(secs => %s)) RETURNING id",
        (age_seconds,),
    ).fetchone()
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def emptied(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to `dsn`'s database, emptied first."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)
        yield conn


def make_job(
    conn: psycopg.Connection,
    status: str,
    *,
    task: str = "send",
    queue: str = "mail",
    args: str = '{"n": 1}',
    queueing_lock: str | None = None,
    worker_id: int | None = None,
) -> int:
    """A job inserted as 'todo' then moved to `status` (a run's end counts an attempt)."""
    row = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, queueing_lock) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (queue, task, args, queueing_lock),
    ).fetchone()
    assert row is not None
    for step in PATHS[status]:
        attempts = "attempts + 1" if step in {"succeeded", "failed", "aborted"} else "attempts"
        conn.execute(
            f"UPDATE procrastinate_jobs SET status = %s, worker_id = %s, attempts = {attempts} "  # noqa: S608 (constants)
            "WHERE id = %s",
            (step, worker_id if step == "doing" else None, row[0]),
        )
    return int(row[0])
