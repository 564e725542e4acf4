"""dawdle's defer statements: one job by a single-row INSERT, a batch by one set-based INSERT.

Procrastinate's `procrastinate_defer_jobs_v1` takes an array of composite records, which
psycopg adapts value by value in Python; plain arrays (text, integer, jsonb, timestamptz)
are adapted by its C dumpers, at about half the client CPU per job. The INSERT is the
same: one statement (a queueing lock clash fails it whole, inserting nothing), the same
columns, the same triggers of `procrastinate_jobs` firing per row (the `deferred` event
and the NOTIFY of each job). `job_*` are the parameters that `_connector._params.JobColumns`
expands to, after the connector's job checks.

A single job (`defer_async`, a web request's defer) is inserted by `DEFER_JOB`: one row of
scalar parameters, with no arrays to adapt, short enough for psycopg to cache its
conversion and prepare it. Its parameters are `_connector._params.JobRow`'s.
"""

from __future__ import annotations

from typing import Final

# Rows are inserted in the order of the arrays, so the ids that the sequence hands out
# within the statement grow in that order: sorted, they are the input's order.
_INSERT: Final = """
    INSERT INTO procrastinate_jobs
           (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
    SELECT *
      FROM unnest(%(job_queue_names)s::varchar[], %(job_task_names)s::varchar[],
                  %(job_priorities)s::integer[], %(job_locks)s::text[],
                  %(job_queueing_locks)s::text[], %(job_args)s::jsonb[],
                  %(job_scheduled_ats)s::timestamptz[])
    RETURNING id"""

DEFER_JOBS: Final = """
WITH deferred AS ({insert}
)
SELECT id FROM deferred ORDER BY id
""".replace("{insert}", _INSERT)

# The same, plus each job's trace context in dawdle_job_traces (dawdle schema 4), matched
# to its job by their rank in the input.
DEFER_JOBS_TRACED: Final = """
WITH deferred AS ({insert}
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n FROM deferred
), traced AS (
    INSERT INTO dawdle_job_traces (job_id, traceparent, tracestate)
    SELECT numbered.id, carrier.traceparent, carrier.tracestate
      FROM numbered
      JOIN unnest(%(traceparents)s::text[], %(tracestates)s::text[])
           WITH ORDINALITY AS carrier(traceparent, tracestate, n) USING (n)
)
SELECT id FROM numbered ORDER BY n
""".replace("{insert}", _INSERT)


# One job: the same columns, casts and triggers as one row of DEFER_JOBS.
DEFER_JOB: Final = """
INSERT INTO procrastinate_jobs
       (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
VALUES (%(job_queue_name)s::varchar, %(job_task_name)s::varchar, %(job_priority)s::integer,
        %(job_lock)s::text, %(job_queueing_lock)s::text, %(job_args)s::jsonb,
        %(job_scheduled_at)s::timestamptz)
RETURNING id"""

# The same, plus its trace context in dawdle_job_traces.
DEFER_JOB_TRACED: Final = """
WITH deferred AS ({insert}
), traced AS (
    INSERT INTO dawdle_job_traces (job_id, traceparent, tracestate)
    SELECT id, %(traceparent)s::text, %(tracestate)s::text FROM deferred
)
SELECT id FROM deferred
""".replace("{insert}", DEFER_JOB)
