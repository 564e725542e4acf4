"""dawdle's own tables, beside Procrastinate's: their DDL, and which of them are missing.

Procrastinate's tables are never changed, so a Procrastinate worker sharing the database
works as before. dawdle's tables only refer to Procrastinate's (a worker's published tasks
go with its `procrastinate_workers` row), and every feature that reads or writes them keeps
working, degraded and with a one-line warning, where `dawdle schema --apply` was not run.
Version 1 brought `dawdle_worker_tasks`; version 2, `dawdle_queue_pauses`; version 3,
`dawdle_retry_budgets` and `dawdle_breakers`; version 4, `dawdle_job_errors`,
`dawdle_budget_pushed` and `dawdle_job_traces`.

Versioning: each table has its DDL constant, idempotent (`IF NOT EXISTS`), with a table
comment naming the dawdle schema version that brought it ('dawdle schema 1: ...');
`DAWDLE_TABLES` lists the tables and `DAWDLE_SCHEMA` joins their DDL, in order; applying
runs all of it whenever the check finds something missing (under `_schema`'s advisory
lock, so concurrent applies take turns). A later version adds a table as a new constant
appended to both (`SchemaStatus.dawdle_missing` names it until applied), or changes one with
statements appended to its constant (`ALTER TABLE ... ADD COLUMN IF NOT EXISTS ...`, a
comment with the new version, and a check of its own); statements already released are
never edited, so applying is safe on any earlier state.
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

QUEUE_PAUSES_TABLE: Final = "dawdle_queue_pauses"

# Paused queues, one row each: no dawdle worker claims their jobs, which wait as 'todo'.
# Not tied to Procrastinate's tables: a queue exists only by its jobs' queue_name, and a
# pause may come before its first job. queue_name has the type of procrastinate_jobs'.
QUEUE_PAUSES_DDL: Final = """
CREATE TABLE IF NOT EXISTS dawdle_queue_pauses (
    queue_name character varying(128) PRIMARY KEY,
    paused_at timestamp with time zone NOT NULL DEFAULT now(),
    paused_by text NOT NULL DEFAULT current_user,
    reason text
);
COMMENT ON TABLE dawdle_queue_pauses IS
    'dawdle schema 2: paused queues, whose jobs no dawdle worker claims until resumed';
"""

RETRY_BUDGETS_TABLE: Final = "dawdle_retry_budgets"

# The fleet retry budget of each task that has one (`FleetRetryBudget`), one small row per
# task, updated by the statement that records outcomes: the first runs counted with decay
# (as of counted_at), and the time before which no further retry of the task may run.
# previous_next_retry_at is that time before the last update, which the outcome statement
# reads back (PostgreSQL 15's RETURNING gives only new values) to place each retry.
RETRY_BUDGETS_DDL: Final = """
CREATE TABLE IF NOT EXISTS dawdle_retry_budgets (
    task_name text PRIMARY KEY,
    first_runs double precision NOT NULL DEFAULT 0,
    counted_at timestamp with time zone NOT NULL DEFAULT now(),
    next_retry_at timestamp with time zone NOT NULL DEFAULT 'epoch',
    previous_next_retry_at timestamp with time zone NOT NULL DEFAULT 'epoch',
    spacing double precision NOT NULL DEFAULT 0
);
COMMENT ON TABLE dawdle_retry_budgets IS
    'dawdle schema 3: the fleet retry budget of each task, updated with its outcomes';
"""

BREAKERS_TABLE: Final = "dawdle_breakers"

# The circuit breaker of each task that has one (`Breaker`), one small row per task: its
# state, the calls and failures counted with decay (as of counted_at), how many trips in a
# row (for the doubling of the open time), until when it stays open (when 'half_open':
# until when its probes hold their places), and the probes running. `names` are the task's
# name and aliases, which the claim filters jobs by; max_probes and probe_lease are the
# task's settings, written by its workers, which the claim reads. previous_state is the
# state before the last outcome write, which reads it back to log transitions.
BREAKERS_DDL: Final = """
CREATE TABLE IF NOT EXISTS dawdle_breakers (
    task_name text PRIMARY KEY,
    names text[] NOT NULL,
    state text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    previous_state text NOT NULL DEFAULT 'closed',
    calls double precision NOT NULL DEFAULT 0,
    failures double precision NOT NULL DEFAULT 0,
    counted_at timestamp with time zone NOT NULL DEFAULT now(),
    trips integer NOT NULL DEFAULT 0,
    open_until timestamp with time zone NOT NULL DEFAULT 'epoch',
    probes integer NOT NULL DEFAULT 0,
    max_probes integer NOT NULL DEFAULT 1,
    probe_lease double precision NOT NULL DEFAULT 600
);
COMMENT ON TABLE dawdle_breakers IS
    'dawdle schema 3: the circuit breaker of each task, counted with its outcomes';
"""

JOB_ERRORS_TABLE: Final = "dawdle_job_errors"

# What each failed or retried run raised, one row per job and attempt (the run's number,
# from 1), bounded in size by the writer; the rows go with their job.
JOB_ERRORS_DDL: Final = """
CREATE TABLE IF NOT EXISTS dawdle_job_errors (
    job_id bigint NOT NULL REFERENCES procrastinate_jobs(id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    failed_at timestamp with time zone NOT NULL DEFAULT now(),
    exception_type text NOT NULL,
    message text NOT NULL,
    traceback text NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
COMMENT ON TABLE dawdle_job_errors IS
    'dawdle schema 4: what each failed or retried run of a job raised';
"""

BUDGET_PUSHED_TABLE: Final = "dawdle_budget_pushed"

# The retries the fleet retry budget pushed past their due time, one row per job: when its
# backoff made it due, and the slot it was given. A retry of the same task that succeeds
# gives slots back: the earliest pushed retries then run at their due time (or at once).
# A row whose slot has passed, or whose job moved on, is stale and is deleted when met.
BUDGET_PUSHED_DDL: Final = """
CREATE TABLE IF NOT EXISTS dawdle_budget_pushed (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs(id) ON DELETE CASCADE,
    task_name text NOT NULL,
    due_at timestamp with time zone NOT NULL,
    slot_at timestamp with time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS dawdle_budget_pushed_task_slot
    ON dawdle_budget_pushed (task_name, slot_at);
COMMENT ON TABLE dawdle_budget_pushed IS
    'dawdle schema 4: retries the fleet retry budget pushed later, until their slot';
"""

JOB_TRACES_TABLE: Final = "dawdle_job_traces"

# The trace context of each job deferred with OpenTelemetry's hooks on (W3C traceparent and
# tracestate), written by the statement that inserts the job and read by the claims of
# workers that trace, so a run's span links to its defer's. Procrastinate's workers never
# see it: the job's args stay the task's keyword arguments. The row goes with its job.
JOB_TRACES_DDL: Final = """
CREATE TABLE IF NOT EXISTS dawdle_job_traces (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs(id) ON DELETE CASCADE,
    traceparent text NOT NULL,
    tracestate text
);
COMMENT ON TABLE dawdle_job_traces IS
    'dawdle schema 4: the trace context each job was deferred in, for its runs'' spans';
"""

DAWDLE_TABLES: Final = (
    WORKER_TASKS_TABLE,
    QUEUE_PAUSES_TABLE,
    RETRY_BUDGETS_TABLE,
    BREAKERS_TABLE,
    JOB_ERRORS_TABLE,
    BUDGET_PUSHED_TABLE,
    JOB_TRACES_TABLE,
)

# All of dawdle's DDL in one script, applied as Procrastinate applies its own schema.
DAWDLE_SCHEMA: Final = (
    WORKER_TASKS_DDL
    + QUEUE_PAUSES_DDL
    + RETRY_BUDGETS_DDL
    + BREAKERS_DDL
    + JOB_ERRORS_DDL
    + BUDGET_PUSHED_DDL
    + JOB_TRACES_DDL
)


def missing_tables(present: list[str]) -> tuple[str, ...]:
    """The tables of dawdle's that are not among `present`, in the order they are created."""
    return tuple(name for name in DAWDLE_TABLES if name not in present)
