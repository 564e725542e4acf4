"""dawdle's own queries: claims and outcomes on Procrastinate's tables, a worker's tasks on ours."""

from __future__ import annotations

from typing import Final

# The claim, in two versions: FETCH_JOBS skips paused queues; FETCH_JOBS_IGNORING_PAUSES is
# for a database without dawdle_queue_pauses (`dawdle schema --apply` not run).
# A job is ready when it is 'todo', of the worker's queues, due, and of no paused queue
# ({paused}); {tasks} chooses the tasks.
_READY_JOB: Final = """
           job.status = 'todo'
       AND (%(queues)s::varchar[] IS NULL OR job.queue_name = ANY(%(queues)s::varchar[])){tasks}
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
                             OR (other.priority = job.priority AND other.id < job.id))))))"""
_KNOWN_TASKS: Final = """
       -- Jobs of tasks this worker does not know stay for a worker that knows them
       -- (NULL: take any, and fail the unknown ones as Procrastinate does).
       AND (%(task_names)s::text[] IS NULL
            OR job.task_name = ANY(%(task_names)s::text[]))"""
_CLAIMED_COLUMNS: Final = """job.id, job.status, job.task_name, job.priority, job.lock,
          job.queueing_lock, job.args, job.scheduled_at, job.queue_name, job.attempts,
          job.worker_id, job.abort_requested"""
_FETCH_JOBS_TEMPLATE: Final = """
WITH candidate AS (
    SELECT job.id
      FROM procrastinate_jobs AS job
     WHERE{ready}
     ORDER BY job.priority DESC, job.id ASC
     LIMIT %(limit)s
     FOR UPDATE OF job SKIP LOCKED
)
UPDATE procrastinate_jobs AS job
   SET status = 'doing', worker_id = %(worker_id)s
  FROM candidate
 WHERE job.id = candidate.id
RETURNING {claimed_columns}
""".replace("{ready}", _READY_JOB.replace("{tasks}", _KNOWN_TASKS)).replace(
    "{claimed_columns}", _CLAIMED_COLUMNS
)
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
FETCH_JOBS: Final = _FETCH_JOBS_TEMPLATE.replace("{paused}", _SKIP_PAUSED_QUEUES)
FETCH_JOBS_IGNORING_PAUSES: Final = _FETCH_JOBS_TEMPLATE.replace("{paused}", "")

# The claim of a worker whose app has tasks with a circuit breaker (`Breaker`), on a
# database with dawdle's tables. Jobs of a task whose breaker is not closed are skipped
# (its names read once per claim, the pauses' pattern and planner trap); a job stays
# 'todo', still first in its lock's order. Breakers that may probe (open time over, or
# half-open with probes to spare, or whose last probes' lease ran out) are locked, SKIP
# LOCKED (a claim that finds one locked leaves it to the claim that holds it), so claims
# take turns on each: a claim takes at most the probes left, counts them and makes the
# breaker half-open with their lease (probe_lease seconds) running, all in this statement.
# The jobs come back with `probe_of`, the breaker's state before this claim ('open' on
# the first probe of a trip: the worker logs the half-open transition) or NULL. Probes
# come first within `limit`; the limits are constants, so that the planner knows the claim
# is small (with the limit as an expression it planned a hash join over every job, and
# PostgreSQL compiled it with JIT: 400 ms a claim at 100,000 jobs).
_BLOCKED_BY_BREAKERS: Final = """
       AND (job.task_name::text || '') <> ALL (
            ARRAY(SELECT unnest(breaker.names) FROM dawdle_breakers AS breaker
                   WHERE breaker.state <> 'closed'))"""
_PROBING_TEMPLATE: Final = """
WITH probing AS (
    SELECT breaker.task_name, breaker.names, breaker.state,
           CASE WHEN breaker.open_until <= now() THEN breaker.max_probes
                ELSE breaker.max_probes - breaker.probes END AS free
      FROM dawdle_breakers AS breaker
     WHERE breaker.state <> 'closed'
       AND (breaker.open_until <= now()
            OR (breaker.state = 'half_open' AND breaker.probes < breaker.max_probes))
       AND (%(task_names)s::text[] IS NULL OR breaker.names && %(task_names)s::text[])
     ORDER BY breaker.task_name
       FOR UPDATE SKIP LOCKED
), probe AS (
    SELECT chosen.id, probing.task_name, probing.state
      FROM probing
     CROSS JOIN LATERAL (
           SELECT job.id
             FROM procrastinate_jobs AS job
            WHERE job.task_name = ANY(probing.names)
              AND{ready}
            ORDER BY job.priority DESC, job.id ASC
            LIMIT probing.free
              FOR UPDATE OF job SKIP LOCKED) AS chosen
     LIMIT %(limit)s
), candidate AS (
    SELECT job.id
      FROM procrastinate_jobs AS job
     WHERE{ready_unblocked}
     ORDER BY job.priority DESC, job.id ASC
     LIMIT %(limit)s
     FOR UPDATE OF job SKIP LOCKED
), probed AS (
    UPDATE dawdle_breakers AS breaker
       SET probes = CASE WHEN breaker.open_until <= now() THEN 0 ELSE breaker.probes END
                    + taken.count,
           state = 'half_open',
           open_until = now() + make_interval(secs => breaker.probe_lease)
      FROM (SELECT task_name, count(*) AS count FROM probe GROUP BY task_name) AS taken
     WHERE breaker.task_name = taken.task_name
), claimed AS (
    UPDATE procrastinate_jobs AS job
       SET status = 'doing', worker_id = %(worker_id)s
      FROM (SELECT id, state AS probe_of FROM probe
            UNION ALL SELECT id, NULL FROM candidate
            LIMIT %(limit)s) AS chosen
     WHERE job.id = chosen.id
    RETURNING {claimed_columns}, chosen.probe_of
)
SELECT claimed.*{first_run_age} FROM claimed
"""

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
){budget}{breaker}, removed AS (
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
SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM updated) AS recorded{pushed}{moved}
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
# The circuit breakers (`Breaker`), in the same statement: `calls` classifies each verdict
# (decided in Python, `dawdle._breaker.call_kind`): 'success' or 'failure' (a call of the
# dependency), 'probe_success' or 'probe_failure' (a half-open breaker's probe), or
# 'probe_released' (a probe that ended without a verdict: put back, snoozed, aborted);
# NULL for the rest. Each breaker row of a task in the batch is locked in name
# order and moves as `dawdle._breaker.record_calls` says (its Python twin): closed, it
# counts calls and failures with decay over `window` and opens once there are min_calls
# and the failures reach failure_ratio; half-open, a failed probe opens it again (open
# time doubled per trip in a row, up to max_open_for), else a successful one closes it.
# The statement returns the tasks whose breaker changed state (closed -> open,
# half_open -> open or closed), for the worker to log.
_DECAY: Final = """exp(-least(
                   greatest(extract(epoch FROM now() - breaker.counted_at)::float8, 0)
                   / judged.window_seconds, 700))"""
_CALLS: Final = f"(breaker.calls * {_DECAY} + judged.calls)"
_FAILURES: Final = f"(breaker.failures * {_DECAY} + judged.failures)"
_REOPENED: Final = "(breaker.state = 'half_open' AND judged.probe_failures > 0)"
_CLOSED_AGAIN: Final = (
    "(breaker.state = 'half_open' AND judged.probe_failures = 0 AND judged.probe_successes > 0)"
)
_TRIPPED: Final = f"""(breaker.state = 'closed' AND {_CALLS} >= judged.min_calls
                   AND {_FAILURES} >= judged.failure_ratio * {_CALLS})"""
_OPENS: Final = f"({_REOPENED} OR {_TRIPPED})"
_BREAKER_CTES_TEMPLATE: Final = """, judged AS (
    SELECT setting.task_name, setting.failure_ratio, setting.window_seconds,
           setting.min_calls, setting.open_for, setting.max_open_for, setting.half_open_probes,
           count(*) FILTER (WHERE call.kind IN ('success', 'failure')) AS calls,
           count(*) FILTER (WHERE call.kind = 'failure') AS failures,
           count(*) FILTER (WHERE call.kind = 'probe_success') AS probe_successes,
           count(*) FILTER (WHERE call.kind = 'probe_failure') AS probe_failures,
           count(*) FILTER (WHERE call.kind = 'probe_released') AS released
      FROM unnest(%(ids)s::bigint[], %(calls)s::text[]) AS call(id, kind)
      JOIN procrastinate_jobs AS job ON job.id = call.id
      JOIN unnest(%(breaker_names)s::text[], %(breaker_tasks)s::text[],
                  %(breaker_ratios)s::float8[], %(breaker_windows)s::float8[],
                  %(breaker_min_calls)s::integer[], %(breaker_open_for)s::float8[],
                  %(breaker_max_open_for)s::float8[], %(breaker_probes)s::integer[])
           AS setting(name, task_name, failure_ratio, window_seconds, min_calls, open_for,
                      max_open_for, half_open_probes)
        ON setting.name = job.task_name
     WHERE call.kind IS NOT NULL AND job.status = 'doing' AND job.worker_id = %(worker_id)s
     GROUP BY setting.task_name, setting.failure_ratio, setting.window_seconds,
              setting.min_calls, setting.open_for, setting.max_open_for,
              setting.half_open_probes
), breakers_locked AS (
    SELECT breaker.task_name
      FROM dawdle_breakers AS breaker
     WHERE breaker.task_name IN (SELECT task_name FROM judged)
     ORDER BY breaker.task_name
       FOR UPDATE
), breaker_moved AS (
    UPDATE dawdle_breakers AS breaker
       SET previous_state = breaker.state,
           state = CASE WHEN <OPENS> THEN 'open'
                        WHEN <CLOSED_AGAIN> THEN 'closed'
                        ELSE breaker.state END,
           calls = CASE WHEN breaker.state = 'closed' AND NOT <OPENS> THEN <CALLS>
                        ELSE 0 END,
           failures = CASE WHEN breaker.state = 'closed' AND NOT <OPENS> THEN <FAILURES>
                           ELSE 0 END,
           counted_at = now(),
           trips = CASE WHEN <OPENS> THEN breaker.trips + 1
                        WHEN <CLOSED_AGAIN> THEN 0
                        ELSE breaker.trips END,
           open_until = CASE WHEN <OPENS> THEN now() + make_interval(secs => least(
                                 judged.open_for * power(2::float8, least(breaker.trips, 60)),
                                 judged.max_open_for))
                             ELSE breaker.open_until END,
           probes = CASE WHEN <OPENS> OR <CLOSED_AGAIN> THEN 0
                         ELSE greatest(breaker.probes - judged.released, 0) END,
           max_probes = judged.half_open_probes,
           probe_lease = judged.max_open_for
      FROM judged
      JOIN breakers_locked USING (task_name)
     WHERE breaker.task_name = judged.task_name
    RETURNING breaker.task_name, breaker.previous_state, breaker.state, breaker.open_until
)"""
_BREAKER_CTES: Final = (
    _BREAKER_CTES_TEMPLATE.replace("<OPENS>", _OPENS)
    .replace("<CLOSED_AGAIN>", _CLOSED_AGAIN)
    .replace("<CALLS>", _CALLS)
    .replace("<FAILURES>", _FAILURES)
)
_MOVED: Final = """,
       ARRAY(SELECT task_name FROM breaker_moved WHERE state <> previous_state
              ORDER BY task_name) AS moved_tasks,
       ARRAY(SELECT state FROM breaker_moved WHERE state <> previous_state
              ORDER BY task_name) AS moved_states,
       ARRAY(SELECT open_until FROM breaker_moved WHERE state <> previous_state
              ORDER BY task_name) AS moved_open_until"""
_PUSHED: Final = """,
       ARRAY(SELECT id FROM pushed WHERE scheduled_at > retry_at ORDER BY id) AS pushed_ids,
       ARRAY(SELECT task_name FROM pushed WHERE scheduled_at > retry_at ORDER BY id)
           AS pushed_tasks,
       ARRAY(SELECT retry_at FROM pushed WHERE scheduled_at > retry_at ORDER BY id)
           AS pushed_from,
       ARRAY(SELECT scheduled_at FROM pushed WHERE scheduled_at > retry_at ORDER BY id)
           AS pushed_to"""


def _record_outcomes(*, budget: bool, breaker: bool) -> str:
    """The outcome statement, with the fleet retry budget and/or the breakers."""
    return _RECORD_OUTCOMES_TEMPLATE.format(
        budget=_BUDGET_CTES if budget else "",
        breaker=_BREAKER_CTES if breaker else "",
        retry_at="COALESCE(pushed.scheduled_at, outcome.retry_at)"
        if budget
        else "outcome.retry_at",
        pushed_join="\n      LEFT JOIN pushed ON pushed.id = outcome.id" if budget else "",
        pushed=_PUSHED if budget else "",
        moved=_MOVED if breaker else "",
    )


RECORD_OUTCOMES: Final = _record_outcomes(budget=False, breaker=False)
# With the fleet retry budget: it also returns the retries it pushed later.
RECORD_OUTCOMES_BUDGETED: Final = _record_outcomes(budget=True, breaker=False)
# With the breakers: it also returns the breakers it moved.
RECORD_OUTCOMES_WITH_BREAKERS: Final = _record_outcomes(budget=False, breaker=True)
RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS: Final = _record_outcomes(budget=True, breaker=True)

# Creates the budget rows of the worker's budgeted tasks (once per worker, before its first
# budgeted write); a row already there is kept as it is.
ADD_RETRY_BUDGETS: Final = """
INSERT INTO dawdle_retry_budgets (task_name)
SELECT unnest(%(task_names)s::text[])
ON CONFLICT (task_name) DO NOTHING
"""

# Creates (or refreshes) the breaker row of a task with a breaker, once per worker before
# its first claim: its names (and aliases) and the probe settings the claim reads; the
# state is kept as it is.
ADD_BREAKER: Final = """
INSERT INTO dawdle_breakers (task_name, names, max_probes, probe_lease)
VALUES (%(task_name)s, %(names)s::text[], %(max_probes)s, %(probe_lease)s)
ON CONFLICT (task_name) DO UPDATE
   SET names = EXCLUDED.names, max_probes = EXCLUDED.max_probes,
       probe_lease = EXCLUDED.probe_lease
"""

# Jobs left 'doing' by workers whose heartbeat stopped (or that were pruned): put back
# without spending an attempt (the run was cut short by its worker's end, not decided by the
# task), so rolling restarts never use up `max_attempts`; the doing -> todo change leaves
# its 'deferred_for_retry' event. Also this worker's own 'doing' jobs that it does not know:
# a claim committed but its reply was lost, so they never ran. The worker holds its claim
# lock meanwhile, so no claim of its own is in flight.
#
# A poison job (one that kills its worker each run: a segfault, the OOM killer) would be put
# back for ever, so a job of a stalled worker whose last `max_recoveries` runs all ended
# this way fails instead (NULL: no limit). `runs` counts them from Procrastinate's events:
# the job's 'started' events since its last 'scheduled' or 'retried' one. Every other way a
# run goes back to 'todo' (a retry, a snooze, a put-back, by dawdle or Procrastinate) sets
# `scheduled_at`, whose trigger writes a 'scheduled' event after the run's 'started'; a
# manual retry writes 'retried'. So this recovery puts the job back with scheduled_at NULL
# (due at once, as before, and no 'scheduled' event): the next recovery counts this run.
# The current run's own 'started' event is counted (its claim committed long ago). Events
# deleted by someone make the count smaller, never larger. One index lookup per recovered
# job, a rare path.
RECOVER_STALLED_JOBS: Final = """
WITH stalled AS (
    SELECT job.id, job.worker_id IS DISTINCT FROM %(worker_id)s AS of_stalled_worker
      FROM procrastinate_jobs AS job
      LEFT JOIN procrastinate_workers AS worker ON worker.id = job.worker_id
     WHERE job.status = 'doing'
       AND NOT job.id = ANY(%(own_jobs)s::bigint[])
       AND (worker.id IS NULL
            OR worker.last_heartbeat < now() - make_interval(secs => %(seconds)s)
            OR job.worker_id = %(worker_id)s)
     FOR UPDATE OF job SKIP LOCKED
), counted AS (
    SELECT stalled.id, runs.n AS runs,
           stalled.of_stalled_worker AND runs.n > %(max_recoveries)s::integer AS poisoned
      FROM stalled
     CROSS JOIN LATERAL (
           SELECT count(*) AS n
             FROM procrastinate_events AS event
            WHERE event.job_id = stalled.id AND event.type = 'started'
              AND event.id > COALESCE((SELECT max(mark.id)
                                         FROM procrastinate_events AS mark
                                        WHERE mark.job_id = stalled.id
                                          AND mark.type IN ('scheduled', 'retried')), 0)
     ) AS runs
)
UPDATE procrastinate_jobs AS job
   SET status = CASE WHEN job.abort_requested THEN 'aborted'::procrastinate_job_status
                     WHEN counted.poisoned THEN 'failed'::procrastinate_job_status
                     ELSE 'todo'::procrastinate_job_status END,
       abort_requested = false,
       scheduled_at = CASE WHEN job.abort_requested OR counted.poisoned THEN job.scheduled_at
                           ELSE NULL END,
       worker_id = NULL
  FROM counted
 WHERE job.id = counted.id
RETURNING job.id, job.task_name, job.status, counted.runs
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
_FIRST_RUN_AGE: Final = """,
       CASE WHEN claimed.task_name = ANY(%(timed_tasks)s::text[]) THEN (
           SELECT extract(epoch FROM now() - min(event.at))::float8
             FROM procrastinate_events AS event
            WHERE event.job_id = claimed.id AND event.type = 'started'
              AND event.id > COALESCE((SELECT max(retried.id)
                                         FROM procrastinate_events AS retried
                                        WHERE retried.job_id = claimed.id
                                          AND retried.type = 'retried'), 0)
       ) END AS first_run_age"""
_WITH_FIRST_RUN_AGE: Final = "\nWITH claimed AS ({claim})\nSELECT claimed.*{age}\n  FROM claimed\n"
CLAIM_JOBS_TIMED: Final = _WITH_FIRST_RUN_AGE.replace("{claim}", FETCH_JOBS).replace(
    "{age}", _FIRST_RUN_AGE
)
CLAIM_JOBS_TIMED_IGNORING_PAUSES: Final = _WITH_FIRST_RUN_AGE.replace(
    "{claim}", FETCH_JOBS_IGNORING_PAUSES
).replace("{age}", _FIRST_RUN_AGE)
# The claims with breakers (they need dawdle_queue_pauses too: both come with `dawdle
# schema --apply`), plain and with first runs.
_PROBING: Final = (
    _PROBING_TEMPLATE.replace(
        "{ready_unblocked}", _READY_JOB.replace("{tasks}", _KNOWN_TASKS + _BLOCKED_BY_BREAKERS)
    )
    .replace("{ready}", _READY_JOB.replace("{tasks}", _KNOWN_TASKS))
    .replace("{paused}", _SKIP_PAUSED_QUEUES)
    .replace("{claimed_columns}", _CLAIMED_COLUMNS)
)
FETCH_JOBS_WITH_BREAKERS: Final = _PROBING.replace("{first_run_age}", "")
CLAIM_JOBS_TIMED_WITH_BREAKERS: Final = _PROBING.replace("{first_run_age}", _FIRST_RUN_AGE)
