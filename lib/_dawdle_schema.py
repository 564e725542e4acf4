"""dawdle's own tables and indexes, beside Procrastinate's: their DDL, and which are missing.

Procrastinate's tables are never changed, only given an index of dawdle's (which a
Procrastinate worker sharing the database neither sees nor needs), so it works as before.
dawdle's tables only refer to Procrastinate's (a worker's published tasks go with its
`procrastinate_workers` row), and every feature that reads or writes them keeps
working, degraded and with a one-line warning, where `dawdle schema --apply` was not run.

Versioning: each table has its DDL constant, idempotent (`IF NOT EXISTS`), with a table
comment naming the dawdle schema version that brought it ('dawdle schema 1: ...');
`DAWDLE_TABLES` lists the tables and `DAWDLE_SCHEMA` joins their DDL, in order; applying
runs all of it, every time. A later version adds a table as a new constant appended to
both (`SchemaStatus.dawdle_missing` names it until applied), or changes one with
statements appended to its constant (`ALTER TABLE ... ADD COLUMN IF NOT EXISTS ...`, a
comment with the new version, and a check of its own); statements already released are
never edited, so applying is safe on any earlier state. Indexes go the same way, listed
in `DAWDLE_INDEXES` (an index counts as missing while it is invalid, as a failed
`CREATE INDEX CONCURRENTLY` leaves it).
"""

from __future__ import annotations

from typing import Final

WORKER_TASKS_TABLE: Final = "dawdle_worker_tasks"

# The task names (and aliases) each running worker knows, so that `dawdle healthcheck` can
# name ready jobs that no live worker would run. The row goes with its worker's row
# (unregistered, or pruned as stalled by any worker, Procrastinate's included).
WORKER_TASKS_DDL: Final = """
CREATE TABLE IF NOT EXISTS dawdle_worker_tasks (
    worker_id bigint PRIMARY KEY REFERENCES procrastinate_workers(id) ON DELETE CASCADE,
    task_names text[] NOT NULL,
    published_at timestamp with time zone NOT NULL DEFAULT now()
);
COMMENT ON TABLE dawdle_worker_tasks IS
    'dawdle schema 1: the task names each worker knows, published when it registers';
"""

TODO_TASK_INDEX: Final = "dawdle_jobs_todo_task_idx"

# Ready jobs by task, in claim order: a worker that claims only its known tasks reads them
# from here (`dawdle._sql.FETCH_JOBS_BY_TASK`) instead of walking past every ready job of
# tasks it does not know. Without it the worker claims as before, slower behind such jobs.
# Not CONCURRENTLY: the script runs as one multi-statement string, an implicit transaction
# that CONCURRENTLY refuses; and a failed concurrent build leaves an invalid index that
# IF NOT EXISTS would then keep forever. The plain build blocks writes to
# procrastinate_jobs while it reads the 'todo' rows; where that is too long, create the
# same index CONCURRENTLY by hand first (this statement then leaves it alone).
TODO_TASK_INDEX_DDL: Final = """
CREATE INDEX IF NOT EXISTS dawdle_jobs_todo_task_idx
    ON procrastinate_jobs (task_name, priority DESC, id) WHERE status = 'todo';
COMMENT ON INDEX dawdle_jobs_todo_task_idx IS
    'dawdle schema 2: ready jobs by task in claim order, for workers that claim known tasks';
"""

DAWDLE_TABLES: Final = (WORKER_TASKS_TABLE,)
DAWDLE_INDEXES: Final = (TODO_TASK_INDEX,)

# All of dawdle's DDL in one script, applied as Procrastinate applies its own schema.
DAWDLE_SCHEMA: Final = WORKER_TASKS_DDL + TODO_TASK_INDEX_DDL


def missing_objects(present: list[str]) -> tuple[str, ...]:
    """The tables, then indexes, of dawdle's that are not among `present`, in creation order."""
    return tuple(name for name in DAWDLE_TABLES + DAWDLE_INDEXES if name not in present)
