"""Each queue's job counts: what `dawdle queues`, the dashboard and the Prometheus gauges read.

Two statements, for their costs differ: the waiting and running jobs are found through
Procrastinate's partial index on them (procrastinate_jobs_id_lock_idx_v1, status 'todo' or
'doing'), so the cost follows the unfinished jobs, never the finished ones a busy database
keeps by the million; failed jobs are in no index of Procrastinate's, and counting them
scans the table unless the optional `dawdle_jobs_failed` index (the README's Dashboard
section) holds them. The gauges read only the first.
"""

from __future__ import annotations

from typing import Final

# Per queue with waiting or running jobs: the counts, and the age of the oldest ready job,
# from its due time: the earliest past `scheduled_at`, or, for a job due at once
# (scheduled_at NULL), when it last became 'todo': its newest deferred, deferred_for_retry
# (a stalled run put back) or retried event. Ids grow with insertion, so the lowest id is
# the oldest of those: one indexed lookup of its events per queue.
ACTIVE_QUEUES: Final = """
WITH active AS (
    SELECT queue_name,
           count(*) FILTER (WHERE status = 'todo') AS todo,
           count(*) FILTER (WHERE status = 'todo'
                              AND (scheduled_at IS NULL OR scheduled_at <= now())) AS ready,
           count(*) FILTER (WHERE status = 'doing') AS doing,
           min(scheduled_at) FILTER (WHERE status = 'todo' AND scheduled_at <= now())
               AS oldest_scheduled,
           min(id) FILTER (WHERE status = 'todo' AND scheduled_at IS NULL) AS oldest_unscheduled
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
     GROUP BY queue_name
)
SELECT active.queue_name::text AS queue, active.todo, active.ready, active.doing,
       extract(epoch FROM now() - LEAST(
           active.oldest_scheduled,
           (SELECT max(event.at) FROM procrastinate_events AS event
             WHERE event.job_id = active.oldest_unscheduled
               AND event.type IN ('deferred', 'deferred_for_retry', 'retried'))
       ))::float AS oldest_ready_seconds
  FROM active
"""

# Per queue with failed jobs, their count.
FAILED_QUEUES: Final = """
SELECT queue_name::text AS queue, count(*) AS failed
  FROM procrastinate_jobs
 WHERE status = 'failed'
 GROUP BY queue_name
"""
