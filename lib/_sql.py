"""dawdle's own queries: claims and outcomes on Procrastinate's tables, a worker's tasks on ours."""

from __future__ import annotations

from typing import Final

# The claim, in two versions: FETCH_JOBS skips paused queues; FETCH_JOBS_IGNORING_PAUSES is
# for a database without dawdle_queue_pauses (`dawdle schema --apply` not run).
_FETCH_JOBS_TEMPLATE: Final = """
WITH candidate AS (
    SELECT job.id
      FROM procrastinate_jobs AS job
     WHERE job.status = 'todo'
       AND (%(queues)s::varchar[] IS NULL OR job.queue_name = ANY(%(queues)s::varchar[]))
       -- Jobs of tasks this worker does not know stay for a worker that knows them
       -- (NULL: take any, and fail the unknown ones as Procrastinate does).
       AND (%(task_names)s::text[] IS NULL OR job.task_name = ANY(%(task_names)s::text[]))
       AND (job.scheduled_at IS NULL OR job.scheduled_at <= now()){paused}
       -- Only jobs with a lock pay for this check: none of its jobs may be running, and
       -- none that is ready may come before this one. A job scheduled in the future does
       -- not hold its lock back (Procrastinate issue #1599); a ready job of a task this
       -- worker does not know does (whoever knows it runs it first: the lock's order
       -- holds across workers), so `other` is not filtered by task. Within one statement
       -- the snapshot is shared, so a batch never takes two jobs of one lock.
       AND (job.lock IS NULL OR NOT EXISTS (
            SELECT 1
              FROM procrastinate_jobs AS other
             WHERE other.lock = job.lock
               AND (other.status = 'doing'
                    OR (other.status = 'todo'
                        AND (other.scheduled_at IS NULL OR other.scheduled_at <= now())
                        AND (other.priority > job.priority
                             OR (other.priority = job.priority AND other.id < job.id))))))
     ORDER BY job.priority DESC, job.id ASC
     LIMIT %(limit)s
     FOR UPDATE OF job SKIP LOCKED
)
UPDATE procrastinate_jobs AS job
   SET status = 'doing', worker_id = %(worker_id)s
  FROM candidate
 WHERE job.id = candidate.id
RETURNING job.id, job.status, job.task_name, job.priority, job.lock, job.queueing_lock,
          job.args, job.scheduled_at, job.queue_name, job.attempts, job.worker_id,
          job.abort_requested
"""
# The paused queues are read once per claim (an InitPlan: one scan of a table of a few
# rows), never per job. A paused queue's jobs wait as 'todo', and still come first in their
# lock's order (`other` above is not filtered), as for a task this worker does not know.
# `queue_name || ''` is an expression without statistics, so the planner estimates that the
# filter lets most jobs through: on the bare column, its statistics made it guess that a few
# unknown names leave one job in a thousand, costing the claim at 1,000 times its due, and
# PostgreSQL then compiled it with JIT (100 ms a claim at 100,000 jobs, against 0.3 ms).
_SKIP_PAUSED_QUEUES: Final = """
       AND (job.queue_name::text || '') <> ALL (
            ARRAY(SELECT pause.queue_name::text FROM dawdle_queue_pauses AS pause))"""
FETCH_JOBS: Final = _FETCH_JOBS_TEMPLATE.format(paused=_SKIP_PAUSED_QUEUES)
FETCH_JOBS_IGNORING_PAUSES: Final = _FETCH_JOBS_TEMPLATE.format(paused="")

# One statement for a batch of outcomes, of jobs this worker still owns (a job recovered
# from it after a lost heartbeat belongs to whoever runs it now). outcome.status is
# 'succeeded', 'failed' or 'aborted' (finished), 'todo' (again at retry_at, with optional
# new priority, queue and lock) or 'delete'. outcome.spent says whether the run counts in
# `attempts`: every run whose end the task decided does (as in Procrastinate); a run the
# worker put back (its shutdown, fencing) or that the task snoozed does not. Each doing ->
# todo change still leaves its 'deferred_for_retry' event (Procrastinate's trigger), so
# such runs stay visible. As in Procrastinate, a retry of a job whose abort was requested
# ends it; unlike Procrastinate (which marks it failed), as aborted.
_RECORD_OUTCOMES_TEMPLATE: Final = """
WITH outcome AS (
    SELECT *
      FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(retry_at)s::timestamptz[],
                  %(priorities)s::integer[], %(queues)s::varchar[], %(locks)s::text[],
                  %(spent)s::boolean[])
           AS o(id, status, retry_at, priority, queue_name, lock, spent)
){budget}, removed AS (
    DELETE FROM procrastinate_jobs AS job
     USING outcome
     WHERE job.id = outcome.id AND outcome.status = 'delete'
       AND job.status = 'doing' AND job.worker_id = %(worker_id)s
    RETURNING job.id
), updated AS (
    UPDATE procrastinate_jobs AS job
       SET status = CASE
               WHEN outcome.status <> 'todo' THEN outcome.status::procrastinate_job_status
               WHEN job.abort_requested THEN 'aborted'::procrastinate_job_status
               ELSE 'todo'::procrastinate_job_status
           END,
           abort_requested = false,
           attempts = job.attempts + CASE WHEN outcome.spent THEN 1 ELSE 0 END,
           scheduled_at = CASE
               WHEN outcome.status = 'todo' AND NOT job.abort_requested THEN {retry_at}
               ELSE job.scheduled_at
           END,
           priority = COALESCE(outcome.priority, job.priority),
           queue_name = COALESCE(outcome.queue_name, job.queue_name),
           lock = COALESCE(outcome.lock, job.lock)
      FROM outcome{pushed_join}
     WHERE job.id = outcome.id AND outcome.status <> 'delete'
       AND job.status = 'doing' AND job.worker_id = %(worker_id)s
    RETURNING job.id
)
SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM updated) AS recorded{pushed}
"""

# The fleet retry budget (`FleetRetryBudget`), in the same statement: the batch's jobs of
# budgeted tasks (`budget_names` are the names and aliases jobs carry, `budget_tasks` the
# task each stands for, with its settings) count their first runs (a spent run of a job
# with no attempt yet) and their retries (a spent run going back to 'todo'). The UPDATE
# locks each task's row, so concurrent batches take turns and each sees the last one's
# slots (on a row changed meanwhile, PostgreSQL re-evaluates SET on its new version).
# Retries take slots `spacing` seconds apart in order of due time: retry k (from 0) runs
# at k * spacing + greatest(next free slot, max over j <= k of (due_j - j * spacing)),
# the closed form of "the later of its due time and the previous retry's slot plus
# spacing". exp() is kept from underflowing (an error in PostgreSQL). A job whose task
# has no row yet (or no budget) keeps its due time.
# The first runs of the task, decayed since counted_at, with the batch's: their weight
# falls to 1/e in a window. SET sees the row as it was, so each expression starts from it.
_DECAYED_FIRST_RUNS: Final = """(budget.first_runs * exp(-least(
                   greatest(extract(epoch FROM now() - budget.counted_at)::float8, 0)
                   / counted.window_seconds, 700))
               + counted.first_runs)"""
# Seconds between two retries: the rate is ratio * first runs per second, plus the floor.
_SPACING: Final = f"""(1.0 / (counted.ratio * {_DECAYED_FIRST_RUNS} / counted.window_seconds
                     + counted.min_per_second))"""
_BUDGET_CTES_TEMPLATE: Final = """, budgeted AS (
    SELECT outcome.id, outcome.retry_at, setting.task_name, setting.ratio,
           setting.min_per_second, setting.window_seconds,
           outcome.spent AND job.attempts = 0 AS first_run,
           outcome.status = 'todo' AND outcome.spent AND NOT job.abort_requested AS retry
      FROM outcome
      JOIN procrastinate_jobs AS job ON job.id = outcome.id
      JOIN unnest(%(budget_names)s::text[], %(budget_tasks)s::text[],
                  %(budget_ratios)s::float8[], %(budget_floors)s::float8[],
                  %(budget_windows)s::float8[])
           AS setting(name, task_name, ratio, min_per_second, window_seconds)
        ON setting.name = job.task_name
     WHERE job.status = 'doing' AND job.worker_id = %(worker_id)s
), counted AS (
    SELECT task_name, ratio, min_per_second, window_seconds,
           count(*) FILTER (WHERE first_run) AS first_runs,
           count(*) FILTER (WHERE retry) AS retries
      FROM budgeted
     GROUP BY task_name, ratio, min_per_second, window_seconds
), ranked AS (
    SELECT id, task_name, retry_at,
           row_number() OVER (PARTITION BY task_name ORDER BY retry_at, id) - 1 AS rank
      FROM budgeted
     WHERE retry
), locked AS (
    -- Rows are locked in name order, so two batches of several budgeted tasks never
    -- deadlock; the UPDATE below only reaches a row through its lock here.
    SELECT budget.task_name
      FROM dawdle_retry_budgets AS budget
     WHERE budget.task_name IN (SELECT task_name FROM counted)
     ORDER BY budget.task_name
       FOR UPDATE
), budget AS (
    UPDATE dawdle_retry_budgets AS budget
       SET first_runs = {first_runs},
           counted_at = now(),
           spacing = {spacing},
           previous_next_retry_at = budget.next_retry_at,
           next_retry_at = COALESCE((
               SELECT greatest(budget.next_retry_at,
                               max(ranked.retry_at - ranked.rank
                                   * make_interval(secs => {spacing})))
                      + counted.retries * make_interval(secs => {spacing})
                 FROM ranked
                WHERE ranked.task_name = budget.task_name), budget.next_retry_at)
      FROM counted
      JOIN locked USING (task_name)
     WHERE budget.task_name = counted.task_name
    RETURNING budget.task_name, budget.previous_next_retry_at, budget.spacing
), pushed AS (
    SELECT id, task_name, retry_at,
           rank * make_interval(secs => spacing) + greatest(previous_next_retry_at, earliest)
               AS scheduled_at
      FROM (SELECT ranked.*, budget.previous_next_retry_at, budget.spacing,
                   max(ranked.retry_at - ranked.rank * make_interval(secs => budget.spacing))
                       OVER (PARTITION BY ranked.task_name ORDER BY ranked.rank) AS earliest
              FROM ranked
              JOIN budget USING (task_name)) AS slotted
)"""
_BUDGET_CTES: Final = _BUDGET_CTES_TEMPLATE.replace("{first_runs}", _DECAYED_FIRST_RUNS).replace(
    "{spacing}", _SPACING
)
RECORD_OUTCOMES: Final = _RECORD_OUTCOMES_TEMPLATE.format(
    budget="", retry_at="outcome.retry_at", pushed_join="", pushed=""
)
# The same, with the fleet retry budget; it also returns the retries it pushed later.
RECORD_OUTCOMES_BUDGETED: Final = _RECORD_OUTCOMES_TEMPLATE.format(
    budget=_BUDGET_CTES,
    retry_at="COALESCE(pushed.scheduled_at, outcome.retry_at)",
    pushed_join="\n      LEFT JOIN pushed ON pushed.id = outcome.id",
    pushed=""",
       ARRAY(SELECT id FROM pushed WHERE scheduled_at > retry_at ORDER BY id) AS pushed_ids,
       ARRAY(SELECT task_name FROM pushed WHERE scheduled_at > retry_at ORDER BY id)
           AS pushed_tasks,
       ARRAY(SELECT retry_at FROM pushed WHERE scheduled_at > retry_at ORDER BY id)
           AS pushed_from,
       ARRAY(SELECT scheduled_at FROM pushed WHERE scheduled_at > retry_at ORDER BY id)
           AS pushed_to""",
)

# Creates the budget rows of the worker's budgeted tasks (once per worker, before its first
# budgeted write); a row already there is kept as it is.
ADD_RETRY_BUDGETS: Final = """
INSERT INTO dawdle_retry_budgets (task_name)
SELECT unnest(%(task_names)s::text[])
ON CONFLICT (task_name) DO NOTHING
"""

# Jobs left 'doing' by workers whose heartbeat stopped (or that were pruned): put back
# without spending an attempt (the run was cut short by its worker's end, not decided by the
# task), so rolling restarts never use up `max_attempts`; the doing -> todo change leaves
# its 'deferred_for_retry' event. Also this worker's own 'doing' jobs that it does not know:
# a claim committed but its reply was lost, so they never ran. The worker holds its claim
# lock meanwhile, so no claim of its own is in flight.
RECOVER_STALLED_JOBS: Final = """
WITH stalled AS (
    SELECT job.id
      FROM procrastinate_jobs AS job
      LEFT JOIN procrastinate_workers AS worker ON worker.id = job.worker_id
     WHERE job.status = 'doing'
       AND NOT job.id = ANY(%(own_jobs)s::bigint[])
       AND (worker.id IS NULL
            OR worker.last_heartbeat < now() - make_interval(secs => %(seconds)s)
            OR job.worker_id = %(worker_id)s)
     FOR UPDATE OF job SKIP LOCKED
)
UPDATE procrastinate_jobs AS job
   SET status = CASE WHEN job.abort_requested THEN 'aborted'::procrastinate_job_status
                     ELSE 'todo'::procrastinate_job_status END,
       abort_requested = false,
       scheduled_at = CASE WHEN job.abort_requested THEN job.scheduled_at ELSE now() END,
       worker_id = NULL
  FROM stalled
 WHERE job.id = stalled.id
RETURNING job.id, job.task_name, job.status
"""

# The heartbeat; no row back means another worker pruned this one as stalled.
HEARTBEAT: Final = """
UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %(worker_id)s RETURNING id
"""

# After registering again, take back the running jobs that the pruning left without a worker.
RECLAIM_JOBS: Final = """
UPDATE procrastinate_jobs
   SET worker_id = %(worker_id)s
 WHERE id = ANY(%(ids)s::bigint[]) AND status = 'doing' AND worker_id IS NULL
RETURNING id
"""

# The task names this worker knows, for `dawdle healthcheck` (dawdle's own table, beside
# Procrastinate's). Written again on the same id (a retried registration) it is replaced.
PUBLISH_TASKS: Final = """
INSERT INTO dawdle_worker_tasks (worker_id, task_names)
VALUES (%(worker_id)s, %(task_names)s::text[])
ON CONFLICT (worker_id) DO UPDATE SET task_names = EXCLUDED.task_names, published_at = now()
"""

# The claim of a worker whose app has tasks with a job deadline (`timed_tasks`): either
# claim as it is, and for the jobs of those tasks `first_run_age`, the seconds from the job's
# first run to now, by the database's clock alone (no skew with the worker's). The first run
# is the earliest 'started' event that Procrastinate's trigger wrote (for claims by any
# worker, Procrastinate's included) since the job's last manual retry ('retried'). This
# claim's own 'started' events come from triggers of this statement, which its snapshot
# does not see: NULL means no earlier run is recorded (a first run, or events deleted).
# One index lookup per claimed job of a timed task; nothing for the others.
_WITH_FIRST_RUN_AGE: Final = """
WITH claimed AS ({claim})
SELECT claimed.*,
       CASE WHEN claimed.task_name = ANY(%(timed_tasks)s::text[]) THEN (
           SELECT extract(epoch FROM now() - min(event.at))::float8
             FROM procrastinate_events AS event
            WHERE event.job_id = claimed.id AND event.type = 'started'
              AND event.id > COALESCE((SELECT max(retried.id)
                                         FROM procrastinate_events AS retried
                                        WHERE retried.job_id = claimed.id
                                          AND retried.type = 'retried'), 0)
       ) END AS first_run_age
  FROM claimed
"""
CLAIM_JOBS_TIMED: Final = _WITH_FIRST_RUN_AGE.format(claim=FETCH_JOBS)
CLAIM_JOBS_TIMED_IGNORING_PAUSES: Final = _WITH_FIRST_RUN_AGE.format(
    claim=FETCH_JOBS_IGNORING_PAUSES
)
