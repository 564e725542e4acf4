"""What a LISTEN notification says, checked: notifications are hints, never orders.

Any role that can connect may `pg_notify` on Procrastinate's channels, no privilege needed,
so a payload is parsed defensively and acted on only where a forged one is harmless: a
`job_inserted` wakes the claimer (a forged one costs one claim query), an
`abort_job_requested` makes the worker ask the database which of its jobs were really
asked to abort, a `queue_resumed` (dawdle's, sent when a queue is resumed) wakes the claimer
as well. Anything else is ignored, with one warning per kind of problem.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Final, Literal

logger = logging.getLogger("dawdle.worker")

HINT_TYPES: Final = ("job_inserted", "abort_job_requested", "queue_resumed")
# The most of a bad payload that a warning quotes.
QUOTED: Final = 100


@dataclass(frozen=True, slots=True)
class Hint:
    """A well-formed notification from Procrastinate's triggers (or anyone who forged one)."""

    type: Literal["job_inserted", "abort_job_requested"]
    job_id: int


@dataclass(frozen=True, slots=True)
class QueueResumed:
    """dawdle's hint that a queue was resumed (or anyone's forged one): time to claim."""

    queue: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A payload that is not a notification dawdle knows; `problem` names the kind."""

    problem: str


def parse(payload: str) -> Hint | QueueResumed | Malformed:
    """The hint a payload carries, or what is wrong with it."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested too deep for the parser
        return Malformed("not JSON")
    if not isinstance(data, dict):
        return Malformed("not a JSON object")
    kind = data.get("type")
    if kind not in HINT_TYPES:
        return Malformed("an unknown type")
    if kind == "queue_resumed":
        queue = data.get("queue")
        return QueueResumed(queue) if isinstance(queue, str) else Malformed("no string queue")
    job_id = data.get("job_id")
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        return Malformed("no integer job_id")
    return Hint(kind, job_id)


class MalformedLog:
    """Warns once per kind of malformed payload, so a flood of forged ones cannot flood logs."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def ignored(self, *, channel: str, payload: str, malformed: Malformed) -> None:
        """Note a malformed payload that was ignored: a warning the first time of its kind."""
        if malformed.problem in self._seen:
            return
        self._seen.add(malformed.problem)
        logger.warning(
            "ignored a notification on %s: its payload is %s (%r); the worker goes on, and "
            "does not log other payloads with this problem",
            channel,
            malformed.problem,
            payload[:QUOTED],
            extra={"action": "malformed_notification", "problem": malformed.problem},
        )
