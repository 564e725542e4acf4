"""The outcome statements: a batch of verdicts, with the fleet retry budget and breakers."""

from __future__ import annotations

from typing import Final

from dawdle._budget_fleet import RETRY_SUCCESS_REFUND
from dawdle._sql.compact import compact

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
){errors}
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
           outcome.status = 'todo' AND outcome.spent AND NOT job.abort_requested AS retry,
           job.attempts > 0 AND outcome.id = ANY(%(budget_successes)s::bigint[])
               AS retry_succeeded
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
           count(*) FILTER (WHERE retry) AS retries,
           count(*) FILTER (WHERE retry_succeeded) AS retries_succeeded
      FROM budgeted
     GROUP BY task_name, ratio, min_per_second, window_seconds
), ranked AS (
    SELECT id, task_name, retry_at,
           row_number() OVER (PARTITION BY task_name ORDER BY retry_at, id) - 1 AS rank
      FROM budgeted
     WHERE retry
), refunded AS (
    -- Retries that succeeded give slots back: each releases up to {refund} of the task's
    -- earliest pushed retries, which run at their own due time (or at once if it has
    -- passed), and moves the task's next free slot back by as many.
    SELECT counted.task_name, candidate.job_id
      FROM counted
      CROSS JOIN LATERAL (
          SELECT pending.job_id
            FROM dawdle_budget_pushed AS pending
           WHERE pending.task_name = counted.task_name
             AND pending.slot_at > now()
             AND pending.job_id NOT IN (SELECT id FROM budgeted)
           ORDER BY pending.slot_at, pending.job_id
           LIMIT {refund} * counted.retries_succeeded
             FOR UPDATE SKIP LOCKED) AS candidate
     WHERE counted.retries_succeeded > 0
), locked AS (
    -- Rows are locked in name order, so two batches of several budgeted tasks never
    -- deadlock; the UPDATE below only reaches a row through its lock here. The new first
    -- runs and spacing are computed here once, from the row as locked: its latest version,
    -- which the UPDATE below changes (no other statement can change it in between).
    SELECT budget.task_name, {first_runs} AS first_runs, {spacing} AS spacing
      FROM dawdle_retry_budgets AS budget
      JOIN counted ON counted.task_name = budget.task_name
     ORDER BY budget.task_name
       FOR UPDATE OF budget
), budget AS (
    UPDATE dawdle_retry_budgets AS budget
       SET first_runs = locked.first_runs,
           counted_at = now(),
           spacing = locked.spacing,
           previous_next_retry_at = budget.next_retry_at,
           next_retry_at = greatest(
               COALESCE((
                   SELECT greatest(budget.next_retry_at,
                                   max(ranked.retry_at - ranked.rank
                                       * make_interval(secs => locked.spacing)))
                          + counted.retries * make_interval(secs => locked.spacing)
                     FROM ranked
                    WHERE ranked.task_name = budget.task_name), budget.next_retry_at)
               - (SELECT count(*) FROM refunded WHERE refunded.task_name = budget.task_name)
                 * make_interval(secs => locked.spacing),
               least(budget.next_retry_at, now()))
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
), pushed_kept AS (
    INSERT INTO dawdle_budget_pushed AS kept (job_id, task_name, due_at, slot_at)
    SELECT id, task_name, retry_at, scheduled_at FROM pushed WHERE scheduled_at > retry_at
    ON CONFLICT (job_id) DO UPDATE
       SET task_name = EXCLUDED.task_name, due_at = EXCLUDED.due_at, slot_at = EXCLUDED.slot_at
), ran AS (
    -- The batch's jobs ran: their rows are spent, unless pushed again above. (Each of
    -- these statements reaches its rows by index: `= ANY(ARRAY(...))`, not a join.)
    DELETE FROM dawdle_budget_pushed AS done
     WHERE done.job_id = ANY(ARRAY(
               SELECT id FROM budgeted
               EXCEPT SELECT id FROM pushed WHERE scheduled_at > retry_at))
), passed AS (
    -- So are rows whose slot has passed: those jobs are due (or moved on elsewhere).
    DELETE FROM dawdle_budget_pushed AS done
     WHERE done.task_name = ANY(ARRAY(SELECT task_name FROM counted))
       AND done.slot_at <= now()
       AND done.job_id <> ALL(ARRAY(SELECT id FROM budgeted))
), released AS (
    DELETE FROM dawdle_budget_pushed AS gone
     WHERE gone.job_id = ANY(ARRAY(SELECT job_id FROM refunded))
    RETURNING gone.job_id, gone.due_at, gone.slot_at
), moved_up AS (
    UPDATE procrastinate_jobs AS job
       SET scheduled_at = greatest(now(), released.due_at)
      FROM released
     WHERE job.id = ANY(ARRAY(SELECT job_id FROM refunded))
       AND job.id = released.job_id AND job.status = 'todo'
       AND job.scheduled_at = released.slot_at
    RETURNING job.id
)"""
_BUDGET_CTES: Final = (
    _BUDGET_CTES_TEMPLATE.replace("{first_runs}", _DECAYED_FIRST_RUNS)
    .replace("{spacing}", _SPACING)
    .replace("{refund}", str(RETRY_SUCCESS_REFUND))
)
# The circuit breakers (`Breaker`), in the same statement: `calls` classifies each verdict
# (decided in Python, `dawdle._worker.fleet.call_kind`): 'success' or 'failure' (a call of the
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
    -- Locked in name order; what the batch does to each is computed here once, from the
    -- row as locked: its latest version, which the UPDATE below changes.
    SELECT breaker.task_name, <CALLS> AS calls, <FAILURES> AS failures, <OPENS> AS opens,
           <CLOSED_AGAIN> AS closed_again
      FROM dawdle_breakers AS breaker
      JOIN judged ON judged.task_name = breaker.task_name
     ORDER BY breaker.task_name
       FOR UPDATE OF breaker
), breaker_moved AS (
    UPDATE dawdle_breakers AS breaker
       SET previous_state = breaker.state,
           state = CASE WHEN moved.opens THEN 'open'
                        WHEN moved.closed_again THEN 'closed'
                        ELSE breaker.state END,
           calls = CASE WHEN breaker.state = 'closed' AND NOT moved.opens THEN moved.calls
                        ELSE 0 END,
           failures = CASE WHEN breaker.state = 'closed' AND NOT moved.opens
                           THEN moved.failures ELSE 0 END,
           counted_at = now(),
           trips = CASE WHEN moved.opens THEN breaker.trips + 1
                        WHEN moved.closed_again THEN 0
                        ELSE breaker.trips END,
           open_until = CASE WHEN moved.opens THEN now() + make_interval(secs => least(
                                 judged.open_for * power(2::float8, least(breaker.trips, 60)),
                                 judged.max_open_for))
                             ELSE breaker.open_until END,
           probes = CASE WHEN moved.opens OR moved.closed_again THEN 0
                         ELSE greatest(breaker.probes - judged.released, 0) END,
           max_probes = judged.half_open_probes,
           probe_lease = judged.max_open_for
      FROM judged
      JOIN breakers_locked AS moved USING (task_name)
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
           AS pushed_to,
       (SELECT count(*) FROM moved_up) AS released"""


# The errors of failed and retried runs (`dawdle._worker.stored_errors`), in the same
# statement: inserted only for jobs this statement updated (still 'doing' for this worker,
# so a job recovered by another worker is never written twice; a deleted job keeps none).
# DO NOTHING on a row already there: (job_id, attempt) is unique unless attempts were set
# back by hand, and DO UPDATE would fail the whole batch (outcomes included) if one batch
# held a job twice; the first error kept is as true as a later one.
_ERRORS_CTE: Final = """, errors AS (
    INSERT INTO dawdle_job_errors
           (job_id, attempt, failed_at, exception_type, message, traceback)
    SELECT error.job_id, error.attempt, error.failed_at, error.exception_type,
           error.message, error.traceback
      FROM unnest(%(error_ids)s::bigint[], %(error_attempts)s::integer[],
                  %(error_times)s::timestamptz[], %(error_types)s::text[],
                  %(error_messages)s::text[], %(error_tracebacks)s::text[])
           AS error(job_id, attempt, failed_at, exception_type, message, traceback)
      JOIN updated ON updated.id = error.job_id
    ON CONFLICT (job_id, attempt) DO NOTHING
)"""


def _record_outcomes(*, budget: bool, breaker: bool, errors: bool = False) -> str:
    """The outcome statement, with the fleet retry budget, the breakers, stored errors.

    Compact (`compact`): the budgeted one with breakers is 17.5 KB with its comments.
    """
    statement = _RECORD_OUTCOMES_TEMPLATE.format(
        errors=_ERRORS_CTE if errors else "",
        budget=_BUDGET_CTES if budget else "",
        breaker=_BREAKER_CTES if breaker else "",
        retry_at="COALESCE(pushed.scheduled_at, outcome.retry_at)"
        if budget
        else "outcome.retry_at",
        pushed_join="\n      LEFT JOIN pushed ON pushed.id = outcome.id" if budget else "",
        pushed=_PUSHED if budget else "",
        moved=_MOVED if breaker else "",
    )
    return compact(statement)


RECORD_OUTCOMES: Final = _record_outcomes(budget=False, breaker=False)
# With the fleet retry budget: it also returns the retries it pushed later.
RECORD_OUTCOMES_BUDGETED: Final = _record_outcomes(budget=True, breaker=False)
# With the breakers: it also returns the breakers it moved.
RECORD_OUTCOMES_WITH_BREAKERS: Final = _record_outcomes(budget=False, breaker=True)
RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS: Final = _record_outcomes(budget=True, breaker=True)
# The same four, also storing the batch's errors (only sent for a batch that has some).
RECORD_OUTCOMES_WITH_ERRORS: Final = _record_outcomes(budget=False, breaker=False, errors=True)
RECORD_OUTCOMES_BUDGETED_WITH_ERRORS: Final = _record_outcomes(
    budget=True, breaker=False, errors=True
)
RECORD_OUTCOMES_WITH_BREAKERS_AND_ERRORS: Final = _record_outcomes(
    budget=False, breaker=True, errors=True
)
RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS_AND_ERRORS: Final = _record_outcomes(
    budget=True, breaker=True, errors=True
)

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
