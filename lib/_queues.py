"""Pausing and resuming queues: their queries, and what `App` and `dawdle queue` call.

A paused queue has a row in `dawdle_queue_pauses`; no dawdle worker claims its jobs, which
wait as 'todo' (running ones finish). Resuming deletes the row and, in the same statement,
sends a `queue_resumed` notification on Procrastinate's channels (the queue's and the
any-queue one), so listening workers claim at once rather than at their next poll. A
notification is only a hint to claim: a forged one costs one claim query. Procrastinate's
own workers know nothing of pauses and go on claiming.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from dawdle._errors import ConfigurationError

if TYPE_CHECKING:
    from procrastinate import connector as procrastinate_connector

# procrastinate_jobs.queue_name is a varchar(128); a reason is for people, kept short.
MAX_QUEUE_NAME: Final = 128
MAX_REASON: Final = 1000

# A pause already in place is left as it is (its time, role and reason are the first's).
PAUSE_QUEUE: Final = """
INSERT INTO dawdle_queue_pauses (queue_name, reason)
VALUES (%(queue)s, %(reason)s)
ON CONFLICT (queue_name) DO NOTHING
RETURNING queue_name
"""

# pg_notify refuses a channel name of 64 bytes or more (Procrastinate's own trigger fails on
# such a queue's jobs too): the hint for a queue that long goes to the any-queue channel only.
RESUME_QUEUE: Final = """
WITH resumed AS (
    DELETE FROM dawdle_queue_pauses
     WHERE queue_name = %(queue)s
    RETURNING queue_name
), hint AS (
    SELECT pg_notify(channel.name,
                     json_build_object('type', 'queue_resumed',
                                       'queue', resumed.queue_name)::text)
      FROM resumed
     CROSS JOIN LATERAL (VALUES ('procrastinate_any_queue_v1'),
                                ('procrastinate_queue_v1#' || resumed.queue_name))
           AS channel(name)
     WHERE octet_length(channel.name) < 64
)
SELECT (SELECT count(*) FROM resumed) AS resumed, (SELECT count(*) FROM hint) AS hints
"""

# Every queue that has jobs (of any status) or a pause. The queues with jobs are found by a
# skip scan of Procrastinate's queue_name index: one index probe per queue, not a scan of
# every job.
LIST_QUEUES: Final = """
WITH RECURSIVE with_jobs AS (
    SELECT min(queue_name) AS name FROM procrastinate_jobs
    UNION ALL
    SELECT (SELECT min(job.queue_name) FROM procrastinate_jobs AS job
             WHERE job.queue_name > with_jobs.name)
      FROM with_jobs
     WHERE with_jobs.name IS NOT NULL
), queue AS (
    SELECT name FROM with_jobs WHERE name IS NOT NULL
    UNION
    SELECT queue_name FROM dawdle_queue_pauses
)
SELECT queue.name::text AS queue_name, pause.paused_at, pause.paused_by, pause.reason
  FROM queue
  LEFT JOIN dawdle_queue_pauses AS pause ON pause.queue_name = queue.name
 ORDER BY queue.name
"""


@dataclass(frozen=True)
class QueueState:
    """A queue and whether it is paused: since when, by which database role, and why."""

    name: str
    paused_at: datetime.datetime | None = None
    paused_by: str | None = None
    reason: str | None = None

    @property
    def paused(self) -> bool:
        """True while no dawdle worker claims the queue's jobs."""
        return self.paused_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready values (`paused_at` in ISO 8601), for `--json`."""
        return {
            "queue": self.name,
            "paused": self.paused,
            "paused_at": None if self.paused_at is None else self.paused_at.isoformat(),
            "paused_by": self.paused_by,
            "reason": self.reason,
        }


def check_queue_name(queue: object) -> str:
    """`queue` if it can name a queue: a non-blank str of 128 characters at most."""
    if not isinstance(queue, str) or not queue.strip() or len(queue) > MAX_QUEUE_NAME:
        raise ConfigurationError(
            f"a queue name must be a non-blank str of at most {MAX_QUEUE_NAME} characters, "
            f"got {queue!r:.200}"
        )
    return queue


def check_reason(reason: object) -> str | None:
    """`reason` if it is None or a str of 1,000 characters at most."""
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise ConfigurationError(
            f"a pause's reason must be a str of at most {MAX_REASON} characters, "
            f"got {reason!r:.200}"
        )
    return reason


async def pause_queue(
    connector: procrastinate_connector.BaseConnector, queue: str, *, reason: str | None
) -> bool:
    """Pause `queue`; False if it was paused already (that pause is kept as it is)."""
    rows = await connector.execute_query_all_async(
        PAUSE_QUEUE, queue=check_queue_name(queue), reason=check_reason(reason)
    )
    return bool(rows)


async def resume_queue(connector: procrastinate_connector.BaseConnector, queue: str) -> bool:
    """Resume `queue` and wake the workers listening for it; False if it was not paused."""
    row = await connector.execute_query_one_async(RESUME_QUEUE, queue=check_queue_name(queue))
    return bool(row["resumed"])


async def list_queue_states(
    connector: procrastinate_connector.BaseConnector,
) -> list[QueueState]:
    """Every queue with jobs or a pause, by name."""
    rows = await connector.execute_query_all_async(LIST_QUEUES)
    return [
        QueueState(
            name=row["queue_name"],
            paused_at=row["paused_at"],
            paused_by=row["paused_by"],
            reason=row["reason"],
        )
        for row in rows
    ]
