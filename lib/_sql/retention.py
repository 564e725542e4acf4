"""Deleting finished jobs in small batches: `dawdle prune` and the worker's retention."""

from __future__ import annotations

from typing import Final

# Held (for one batch's transaction) by the worker whose retention prunes, so that one
# worker at a time does; transaction-scoped, so it also works behind PgBouncer's
# transaction pooling. Any fixed key will do; this one is "dawdle prune" folded to 32 bits.
PRUNE_LOCK_KEY: Final = 0x64707275

# One batch of a prune. A job's end is its finishing event ('succeeded', 'failed',
# 'cancelled', 'aborted': Procrastinate's trigger writes one on each of those changes),
# so the batch walks procrastinate_events by id (its primary key, in insertion order, hence
# by time) from `after`, reading at most `batch` finishing events: the cost of a batch is
# bounded whatever the table holds. Their jobs are deleted if the event is older than
# `older_than` seconds, the job's status is one of `statuses` (checked again on the
# deleted row, so a job retried meanwhile stays) and no later event of the job is recent
# (a job retried and finished again). Deleting a job deletes its events and dawdle's rows
# of it (ON DELETE CASCADE) and unlinks its periodic defer (Procrastinate's trigger).
# `first_recent_id` is the first scanned event that is not old yet: the caller stops there,
# since the events after it are newer still (an event without a time never stops it), and
# may start its next prune of the same statuses and duration just before it: every job of
# an event before it was deleted, or kept for good (a status not listed), or has a later
# event. With `exclusive`, nothing is scanned unless this transaction gets the advisory
# lock (`held` says whether it did).
PRUNE_JOBS: Final = """
WITH lock AS (
    SELECT NOT %(exclusive)s OR pg_try_advisory_xact_lock(%(lock_key)s) AS held
), scanned AS (
    SELECT event.id, event.job_id, event.at < now() - make_interval(secs => %(older_than)s) AS old
      FROM procrastinate_events AS event
     WHERE event.id > %(after)s
       AND event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
       AND (SELECT held FROM lock)
     ORDER BY event.id
     LIMIT %(batch)s
), deleted AS (
    DELETE FROM procrastinate_jobs AS job
     WHERE job.id IN (SELECT scanned.job_id FROM scanned WHERE scanned.old)
       AND job.status = ANY(%(statuses)s::procrastinate_job_status[])
       AND NOT EXISTS (SELECT FROM procrastinate_events AS later
                        WHERE later.job_id = job.id
                          AND later.type <> 'scheduled'
                          AND later.at >= now() - make_interval(secs => %(older_than)s))
    RETURNING job.id
)
SELECT (SELECT held FROM lock) AS held,
       (SELECT count(*) FROM deleted) AS deleted,
       (SELECT count(*) FROM scanned) AS scanned,
       (SELECT min(id) FROM scanned WHERE NOT old) AS first_recent_id,
       (SELECT max(id) FROM scanned) AS last_event_id
"""
