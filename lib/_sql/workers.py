"""A worker's own rows: heartbeat, recovery of stalled jobs, taking jobs back, its tasks."""

from __future__ import annotations

from typing import Final

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
