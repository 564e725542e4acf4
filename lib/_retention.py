"""Retention: finished jobs deleted once old enough, by `dawdle prune` and by the workers.

A prune deletes in small batches (`PRUNE_BATCH` finishing events read per statement, each
its own short transaction, with a pause between them), so it never holds locks for long
nor starves the claims of a busy worker. `App(retention={"succeeded": "1d", ...})` has the
workers apply it every `RETENTION_INTERVAL`; one worker at a time does, by a transaction-
scoped advisory lock each batch tries (so it also works behind PgBouncer): a worker that
finds it taken leaves the round to the one that holds it.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio

from dawdle._errors import ConfigurationError
from dawdle._hooks import Hooks, JobsPruned
from dawdle._sql import PRUNE_JOBS, PRUNE_LOCK_KEY
from dawdle._validate import is_number

if TYPE_CHECKING:
    from procrastinate import connector as procrastinate_connector

logger = logging.getLogger("dawdle.retention")

# The statuses a job ends in; only those are ever pruned.
FINISHED_STATUSES: Final = ("succeeded", "failed", "cancelled", "aborted")
# Finishing events read per batch, and the pause after a batch that found old jobs.
PRUNE_BATCH: Final = 500
BATCH_PAUSE: Final = 0.02
# How often a worker applies its app's retention (the first round at its start).
RETENTION_INTERVAL: Final = 60.0

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"(?P<count>\d+(?:\.\d+)?)(?P<unit>[smhdw])")
# A duration past this is a typo (and past what PostgreSQL's intervals take comfortably).
MAX_DURATION: Final = 100 * 365 * 86400.0


def parse_duration(value: object, *, where: str) -> float:
    """Seconds > 0 from '45s', '30m', '12h', '7d', '2w', a number of seconds or a timedelta."""
    seconds: float | None = None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif is_number(value):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip().lower())):
        seconds = float(match["count"]) * _UNITS[match["unit"]]
    if seconds is None or not 0 < seconds <= MAX_DURATION:
        raise ConfigurationError(
            f"{where} must be a duration like '45s', '30m', '12h', '7d' or '2w' (or seconds, "
            f"or a timedelta) above 0 and at most 100 years, got {value!r:.100}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """'7d', '12h', '90s': the largest unit up to days that divides `seconds`."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if unit == "w":
            continue
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def check_statuses(statuses: Iterable[object], *, where: str) -> tuple[str, ...]:
    """`statuses` if each is a finished status (no repeats kept), else a ConfigurationError."""
    checked: list[str] = []
    for status in statuses:
        if status not in FINISHED_STATUSES:
            raise ConfigurationError(
                f"{where}: {status!r:.100} is not a finished status; expected some of "
                f"{', '.join(FINISHED_STATUSES)}"
            )
        if status not in checked:
            checked.append(str(status))
    if not checked:
        raise ConfigurationError(f"{where}: no status given")
    return tuple(checked)


@dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept, by status, in seconds; statuses not named are kept."""

    keep: Mapping[str, float]

    @classmethod
    def from_option(cls, value: object) -> Retention | None:
        """The checked `retention=` of an App: None, or a mapping of status to duration."""
        if value is None:
            return None
        if not isinstance(value, Mapping) or not value:
            raise ConfigurationError(
                "retention must be a non-empty dict of finished status to duration, like "
                f"{{'succeeded': '1d', 'failed': '30d'}}, got {value!r:.100}"
            )
        check_statuses(value, where="retention")
        return cls(
            {
                status: parse_duration(duration, where=f"retention[{status!r}]")
                for status, duration in value.items()
            }
        )

    def prunes(self) -> list[tuple[tuple[str, ...], float]]:
        """The statuses that share a duration, with it: one prune each, shortest first."""
        by_duration: dict[float, list[str]] = {}
        for status, seconds in self.keep.items():
            by_duration.setdefault(seconds, []).append(status)
        return [(tuple(by_duration[seconds]), seconds) for seconds in sorted(by_duration)]


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune did: the jobs it deleted, and where the next prune may start."""

    deleted: int
    position: int
    """The id of the last event the prune is done with: a later prune of the same statuses
    and duration may start after it (0: from the first event)."""


async def prune(
    connector: procrastinate_connector.BaseConnector,
    *,
    statuses: Sequence[str],
    older_than: float,
    exclusive: bool = False,
    after: int = 0,
    batch: int = PRUNE_BATCH,
    pause: float = BATCH_PAUSE,
) -> Pruned | None:
    """Delete jobs of `statuses` that finished more than `older_than` seconds ago.

    It reads the finishing events after the event id `after`. With `exclusive`, each batch
    first tries the advisory lock: None if another worker held it before any batch ran
    (that worker prunes), else what was done up to then.
    """
    deleted = 0
    first = True
    while True:
        row = await connector.execute_query_one_async(
            PRUNE_JOBS,
            exclusive=exclusive,
            lock_key=PRUNE_LOCK_KEY,
            statuses=list(statuses),
            older_than=older_than,
            after=after,
            batch=batch,
        )
        if not row["held"]:
            return None if first else Pruned(deleted, after)
        first = False
        deleted += int(row["deleted"])
        if row["first_recent_id"] is not None:
            return Pruned(deleted, int(row["first_recent_id"]) - 1)
        if row["last_event_id"] is not None:
            after = int(row["last_event_id"])
        if row["scanned"] < batch:
            return Pruned(deleted, after)
        if row["deleted"]:
            await anyio.sleep(pause)


def app_hooks(app: object) -> list[Hooks]:
    """The app's hooks: its `hooks` attribute, one Hooks or several (none if it has none)."""
    hooks: Any = getattr(app, "hooks", None)
    if hooks is None:
        return []
    return [hooks] if isinstance(hooks, Hooks) else list(hooks)


async def apply_retention(
    connector: procrastinate_connector.BaseConnector,
    retention: Retention,
    hooks: Sequence[Hooks] = (),
    positions: dict[tuple[str, ...], int] | None = None,
) -> int:
    """One round of `retention`; how many jobs it deleted.

    A prune per duration, a `JobsPruned` hook event per prune that deleted jobs, and one
    INFO record for the round if it deleted any. `positions` (the caller's, kept from round
    to round) says where each prune stopped, so that the next starts there.
    """
    positions = {} if positions is None else positions
    total = 0
    parts: list[str] = []
    pruned: list[str] = []
    for statuses, seconds in retention.prunes():
        done = await prune(
            connector,
            statuses=statuses,
            older_than=seconds,
            exclusive=True,
            after=positions.get(statuses, 0),
        )
        if done is None:  # another worker holds the lock: this round is its
            break
        positions[statuses] = done.position
        if count := done.deleted:
            total += count
            parts.append(f"{count} {'/'.join(statuses)} (older than {format_duration(seconds)})")
            pruned += statuses
            event = JobsPruned(count=count, statuses=statuses)
            for hook in hooks:
                try:
                    hook.jobs_pruned(event)
                except Exception:
                    logger.exception("hook %r failed on jobs_pruned", hook)
    if total:
        logger.info(
            "pruned %d finished job%s: %s",
            total,
            "" if total == 1 else "s",
            ", ".join(parts),
            extra={"action": "jobs_pruned", "count": total, "statuses": pruned},
        )
    return total
