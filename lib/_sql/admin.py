"""What the admin commands read and change: jobs, one job's story, retries, queues, workers.

Every query is bounded by an index of Procrastinate's (its primary keys, its partial
indexes on 'todo' and 'doing' jobs, its index of events by job) or by a LIMIT. The queues'
counts are `dawdle._sql.queues`'s.
"""

from __future__ import annotations

from typing import Final

# The newest jobs first, after the filters; `before` pages on (keyset: ids below it). The
# LIMIT is applied before the events are read: one index lookup per job shown. A status of
# 'todo' or 'doing' walks Procrastinate's partial index on those jobs; other statuses walk
# the primary key backwards until `limit` match (quick while they are common).
LIST_JOBS: Final = """
SELECT job.id, job.status::text AS status, job.queue_name::text AS queue_name,
       job.task_name::text AS task_name, job.attempts, job.scheduled_at, job.worker_id,
       last.at AS updated_at
  FROM (SELECT id, status, queue_name, task_name, attempts, scheduled_at, worker_id
          FROM procrastinate_jobs
         WHERE (%(status)s::procrastinate_job_status IS NULL OR status = %(status)s)
           AND (%(queue)s::varchar IS NULL OR queue_name = %(queue)s)
           AND (%(task)s::varchar IS NULL OR task_name = %(task)s)
           AND (%(before)s::bigint IS NULL OR id < %(before)s)
         ORDER BY id DESC
         LIMIT %(limit)s) AS job
  LEFT JOIN LATERAL (SELECT max(event.at) AS at FROM procrastinate_events AS event
                      WHERE event.job_id = job.id AND event.type <> 'scheduled') AS last ON true
 ORDER BY job.id DESC
"""

GET_JOB: Final = """
SELECT id, status::text AS status, queue_name::text AS queue_name,
       task_name::text AS task_name, priority, lock, queueing_lock, args, scheduled_at,
       attempts, abort_requested, worker_id
  FROM procrastinate_jobs
 WHERE id = %(id)s
"""

# 'scheduled' events are stamped with the time the job is due, not when it was written.
JOB_EVENTS: Final = """
SELECT type::text AS type, at FROM procrastinate_events WHERE job_id = %(id)s ORDER BY id
"""

JOB_ERRORS: Final = """
SELECT attempt, failed_at, exception_type, message, traceback
  FROM dawdle_job_errors
 WHERE job_id = %(id)s
 ORDER BY attempt
"""

# One batch of a retry: jobs of `statuses` (failed, cancelled, aborted), with ids above
# `after`, back to 'todo', due now. Failed ones go through Procrastinate's own
# procrastinate_retry_job_v2 (attempts + 1, its trigger writes 'retried'); it has none for
# cancelled or aborted jobs, which are put back here (attempts unchanged, the abort request
# cleared, a 'retried' event written as the trigger does for failed ones). A job whose
# queueing lock a waiting job holds is skipped (it would break Procrastinate's unique
# index; that check is the index's own lookup), and of several with one lock in a batch,
# only the first (the next batches see it waiting). A `job_inserted` hint per queue wakes
# the listening workers, as a defer does.
RETRY_JOBS: Final = """
WITH picked AS (
    SELECT job.id, job.status, job.queue_name, job.queueing_lock
      FROM procrastinate_jobs AS job
     WHERE job.status = ANY(%(statuses)s::procrastinate_job_status[])
       AND (%(id)s::bigint IS NULL OR job.id = %(id)s)
       AND (%(task)s::varchar IS NULL OR job.task_name = %(task)s)
       AND (%(queue)s::varchar IS NULL OR job.queue_name = %(queue)s)
       AND job.id > %(after)s
       AND (job.queueing_lock IS NULL
            OR NOT EXISTS (SELECT FROM procrastinate_jobs AS waiting
                            WHERE waiting.queueing_lock = job.queueing_lock
                              AND waiting.status = 'todo'))
     ORDER BY job.id
     LIMIT %(batch)s
     FOR UPDATE OF job SKIP LOCKED
), chosen AS (
    SELECT picked.id, picked.status FROM picked
     WHERE picked.queueing_lock IS NULL
        OR picked.id = (SELECT min(same.id) FROM picked AS same
                         WHERE same.queueing_lock = picked.queueing_lock)
), failed AS (
    SELECT chosen.id, procrastinate_retry_job_v2(chosen.id, now(), NULL, NULL, NULL)
      FROM chosen
     WHERE chosen.status = 'failed'
), stopped AS (
    UPDATE procrastinate_jobs AS job
       SET status = 'todo', scheduled_at = now(), abort_requested = false
      FROM chosen
     WHERE job.id = chosen.id AND chosen.status IN ('cancelled', 'aborted')
    RETURNING job.id
), marked AS (
    INSERT INTO procrastinate_events (job_id, type)
    SELECT stopped.id, 'retried' FROM stopped
), hint AS (
    SELECT pg_notify(channel.name,
                     json_build_object('type', 'job_inserted', 'job_id', queue.id)::text)
      FROM (SELECT queue_name, max(id) AS id FROM picked GROUP BY queue_name) AS queue
     CROSS JOIN LATERAL (VALUES ('procrastinate_any_queue_v1'),
                                ('procrastinate_queue_v1#' || queue.queue_name))
           AS channel(name)
     WHERE octet_length(channel.name) < 64
)
SELECT (SELECT count(*) FROM failed) + (SELECT count(*) FROM stopped) AS retried,
       (SELECT max(id) FROM picked) AS last_id,
       (SELECT count(*) FROM hint) AS hints
"""

# Runs that ended (succeeded, failed, aborted) in the last `window` seconds, per queue.
# The first event older than the window is found walking the events' primary key back
# from the newest; only the events after it are read (one index lookup per job for its
# queue). 'scheduled' events are stamped with a due time, so they do not mark the window.
FINISHED_RECENTLY: Final = """
WITH boundary AS (
    SELECT COALESCE((SELECT id FROM procrastinate_events
                      WHERE type <> 'scheduled'
                        AND at < now() - make_interval(secs => %(window)s)
                      ORDER BY id DESC
                      LIMIT 1), 0) AS id
)
SELECT job.queue_name::text AS queue_name, count(*) AS finished
  FROM procrastinate_events AS event
  JOIN procrastinate_jobs AS job ON job.id = event.job_id
 WHERE event.id > (SELECT id FROM boundary)
   AND event.type IN ('succeeded', 'failed', 'aborted')
   AND event.at >= now() - make_interval(secs => %(window)s)
 GROUP BY job.queue_name
"""

# Each registered worker, its heartbeat's age and its running jobs (Procrastinate's partial
# index on the 'doing' jobs' worker_id).
LIST_WORKERS: Final = """
SELECT worker.id, worker.last_heartbeat,
       extract(epoch FROM now() - worker.last_heartbeat)::float AS heartbeat_age,
       (SELECT count(*) FROM procrastinate_jobs AS job
         WHERE job.worker_id = worker.id AND job.status = 'doing') AS running
  FROM procrastinate_workers AS worker
 ORDER BY worker.id
"""
