"""The claim statements: which ready jobs a worker takes, with pauses, breakers, first runs."""

from __future__ import annotations

from typing import Final

from dawdle._sql.compact import compact

# How many of the first ready locked jobs a claim reads to know their locks' first jobs.
LOCK_FRONT: Final = 100

# The claim, in two versions: FETCH_JOBS skips paused queues; FETCH_JOBS_IGNORING_PAUSES is
# for a database without dawdle_queue_pauses (`dawdle schema --apply` not run).
# A job is ready when it is 'todo', of the worker's queues, due, and of no paused queue
# ({paused}); {tasks} chooses the tasks.
_READY_JOB: Final = """
           job.status = 'todo'
       AND (%(queues)s::varchar[] IS NULL OR job.queue_name = ANY(%(queues)s::varchar[])){tasks}
       AND (job.scheduled_at IS NULL OR job.scheduled_at <= now()){paused}
       -- Only jobs with a lock pay for this check: none of its jobs may be running, and
       -- none that is ready may come before this one, i.e. it is the first ready job of its
       -- lock. A job scheduled in the future does not hold its lock back (Procrastinate
       -- issue #1599); a ready job of a task this worker does not know does (whoever knows
       -- it runs it first: the lock's order holds across workers), so no job is filtered
       -- by task here. Within one statement the snapshot is shared, so a batch never takes
       -- two jobs of one lock. Each set below is read once per claim, and only by a claim
       -- that meets a locked job: the running locks (from the unique index of running
       -- locks), and the front: the first {front} ready locked jobs in the claim's order,
       -- in which each lock's first job is its first ready job. A job of a lock seen in
       -- the front is checked by a hash lookup; another looks its lock's first ready job
       -- up in the claim's index order. As a NOT EXISTS over earlier jobs, the planner
       -- chose a sequential scan per job (synchronized scans start where the last one
       -- stopped): a claim of 10 on 300,000 jobs of one lock took minutes.
       AND (job.lock IS NULL OR (
            job.lock NOT IN (SELECT running.lock FROM procrastinate_jobs AS running
                              WHERE running.status = 'doing' AND running.lock IS NOT NULL)
            AND CASE WHEN job.lock IN (SELECT front.lock FROM {front_jobs} AS front)
                THEN job.id IN (SELECT DISTINCT ON (front.lock) front.id
                                  FROM {front_jobs} AS front
                                 ORDER BY front.lock, front.priority DESC, front.id ASC)
                ELSE job.id = (SELECT other.id
                                 FROM procrastinate_jobs AS other
                                WHERE other.status = 'todo' AND other.lock = job.lock
                                  AND (other.scheduled_at IS NULL
                                       OR other.scheduled_at <= now())
                                ORDER BY other.priority DESC, other.id ASC
                                LIMIT 1)
                END))""".replace(
    "{front_jobs}",
    """(
                SELECT locked.lock, locked.id, locked.priority
                  FROM procrastinate_jobs AS locked
                 WHERE locked.status = 'todo' AND locked.lock IS NOT NULL
                   AND (locked.scheduled_at IS NULL OR locked.scheduled_at <= now())
                 ORDER BY locked.priority DESC, locked.id ASC
                 LIMIT {front})""",
).replace("{front}", str(LOCK_FRONT))
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
FETCH_JOBS: Final = compact(_FETCH_JOBS_TEMPLATE.replace("{paused}", _SKIP_PAUSED_QUEUES))
FETCH_JOBS_IGNORING_PAUSES: Final = compact(_FETCH_JOBS_TEMPLATE.replace("{paused}", ""))

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
# A breaker of the worker's tasks that may probe now.
_MAY_PROBE: Final = """
           breaker.state <> 'closed'
       AND (breaker.open_until <= now()
            OR (breaker.state = 'half_open' AND breaker.probes < breaker.max_probes))
       AND (%(task_names)s::text[] IS NULL OR breaker.names && %(task_names)s::text[])"""
_PROBING_TEMPLATE: Final = """
WITH probing AS (
    SELECT breaker.task_name, breaker.names, breaker.state,
           CASE WHEN breaker.open_until <= now() THEN breaker.max_probes
                ELSE breaker.max_probes - breaker.probes END AS free
      FROM dawdle_breakers AS breaker
     WHERE{may_probe}
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

# The claim with breakers while none of the worker's tasks' breakers may probe: the claim
# above without its probes, which costs twice the planning of a plain claim (its ready jobs
# are read in two places) and is planned again at every call (PostgreSQL finds no generic
# plan as cheap as a custom one). Its `gate` reads the breakers once (an InitPlan on a
# table of a few rows); if one may probe, the claim takes nothing (the gate filters the
# candidates before any is read) and answers a single row with `probes_due` true, for the
# worker to send the claim with probes instead. Else it answers as that claim would (the
# jobs of tasks whose breaker is not closed skipped, and no probes), each row with
# `probes_due` false, and a single row with a NULL id when it took nothing.
_UNLESS_PROBES_TEMPLATE: Final = """
WITH gate AS (
    SELECT EXISTS (SELECT FROM dawdle_breakers AS breaker WHERE{may_probe}) AS probes_due
), candidate AS (
    SELECT job.id
      FROM procrastinate_jobs AS job
     WHERE NOT (SELECT gate.probes_due FROM gate)
       AND{ready_unblocked}
     ORDER BY job.priority DESC, job.id ASC
     LIMIT %(limit)s
     FOR UPDATE OF job SKIP LOCKED
), claimed AS (
    UPDATE procrastinate_jobs AS job
       SET status = 'doing', worker_id = %(worker_id)s
      FROM candidate
     WHERE job.id = candidate.id
    RETURNING {claimed_columns}
)
SELECT claimed.*{first_run_age}, gate.probes_due
  FROM gate
  LEFT JOIN claimed ON true
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
CLAIM_JOBS_TIMED: Final = compact(
    _WITH_FIRST_RUN_AGE.replace("{claim}", FETCH_JOBS).replace("{age}", _FIRST_RUN_AGE)
)
CLAIM_JOBS_TIMED_IGNORING_PAUSES: Final = compact(
    _WITH_FIRST_RUN_AGE.replace("{claim}", FETCH_JOBS_IGNORING_PAUSES).replace(
        "{age}", _FIRST_RUN_AGE
    )
)
# The claims with breakers (they need dawdle_queue_pauses too: both come with `dawdle
# schema --apply`), plain and with first runs.
_PROBING: Final = (
    _PROBING_TEMPLATE.replace("{may_probe}", _MAY_PROBE)
    .replace(
        "{ready_unblocked}", _READY_JOB.replace("{tasks}", _KNOWN_TASKS + _BLOCKED_BY_BREAKERS)
    )
    .replace("{ready}", _READY_JOB.replace("{tasks}", _KNOWN_TASKS))
    .replace("{paused}", _SKIP_PAUSED_QUEUES)
    .replace("{claimed_columns}", _CLAIMED_COLUMNS)
)
FETCH_JOBS_WITH_BREAKERS: Final = compact(_PROBING.replace("{first_run_age}", ""))
CLAIM_JOBS_TIMED_WITH_BREAKERS: Final = compact(_PROBING.replace("{first_run_age}", _FIRST_RUN_AGE))
# The same two while no breaker may probe (a worker with breakers sends these first).
_UNLESS_PROBES: Final = (
    _UNLESS_PROBES_TEMPLATE.replace("{may_probe}", _MAY_PROBE)
    .replace(
        "{ready_unblocked}", _READY_JOB.replace("{tasks}", _KNOWN_TASKS + _BLOCKED_BY_BREAKERS)
    )
    .replace("{paused}", _SKIP_PAUSED_QUEUES)
    .replace("{claimed_columns}", _CLAIMED_COLUMNS)
)
FETCH_JOBS_UNLESS_PROBES: Final = compact(_UNLESS_PROBES.replace("{first_run_age}", ""))
CLAIM_JOBS_TIMED_UNLESS_PROBES: Final = compact(
    _UNLESS_PROBES.replace("{first_run_age}", _FIRST_RUN_AGE)
)
