"""`Snooze`: what a task raises to run again later without spending one of its attempts."""

from __future__ import annotations

import datetime
import math

from dawdle._errors import ConfigurationError
from dawdle._validate import is_number
from dawdle.backoff import MAX_JOB_DELAY

# The latest time a job can be scheduled at: Python's last datetime (PostgreSQL reaches further).
LATEST: datetime.datetime = datetime.datetime.max.replace(tzinfo=datetime.UTC)


class Snooze(Exception):  # noqa: N818 (reads as what the task asks for, like River's JobSnooze)
    """Raised by a task: run this job again later, without spending an attempt.

    `Snooze(30)` or `Snooze(timedelta(seconds=30))` reschedules the job 30 s after its run
    ends (a delay over `dawdle.backoff.MAX_JOB_DELAY`, 100 years, is shortened to it, as a
    retry's is); `Snooze(datetime(..., tzinfo=UTC))` reschedules it at that time (a past
    time: at once). The job goes back to 'todo' with its `attempts` unchanged, so its retry policy's
    `max_attempts` is untouched; a job whose abort was requested ends aborted instead. A
    negative, NaN or infinite delay, or a naive datetime, is refused here with
    `ConfigurationError` naming it.
    """

    delay: float | None
    """Seconds to wait from the end of the run, or None when `until` is given."""
    until: datetime.datetime | None
    """When to run again (aware), or None when `delay` is given."""

    def __init__(self, when: float | datetime.timedelta | datetime.datetime) -> None:
        super().__init__(when)
        self.delay, self.until = _parse(when)

    def __str__(self) -> str:
        if self.until is not None:
            return f"snoozed until {self.until.isoformat()}"
        return f"snoozed for {self.delay:g} s"

    def scheduled_at(self, now: datetime.datetime) -> datetime.datetime:
        """When the job should run again, for a run that ended at `now` (aware)."""
        if self.until is not None:
            return self.until
        assert self.delay is not None  # noqa: S101 (one of the two is set)
        return later(now, self.delay)


def later(now: datetime.datetime, seconds: float) -> datetime.datetime:
    """`seconds` (finite, >= 0) after `now`, or LATEST if that is past the last date.

    Waits are at most MAX_JOB_DELAY; this keeps the sum a date even so, near year 9999.
    """
    if seconds >= (LATEST - now).total_seconds():
        return LATEST
    return now + datetime.timedelta(seconds=seconds)


def _parse(when: object) -> tuple[float | None, datetime.datetime | None]:
    """(delay, until) from what `Snooze` was given; a bad value raises ConfigurationError."""
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ConfigurationError(
                f"Snooze: a datetime must be aware (have a tzinfo), got naive {when!r}"
            )
        return None, when
    if isinstance(when, datetime.timedelta):
        if when < datetime.timedelta(0):
            raise ConfigurationError(f"Snooze: a timedelta must be >= 0, got {when!r}")
        return min(when.total_seconds(), MAX_JOB_DELAY), None
    if is_number(when):
        if when < 0 or (isinstance(when, float) and not math.isfinite(when)):
            raise ConfigurationError(
                f"Snooze: seconds must be a finite number >= 0, got {when!r:.100}"
            )
        # Shortened as a retry's wait is (an int too large for a float included).
        return float(min(when, MAX_JOB_DELAY)), None
    raise ConfigurationError(
        "Snooze: give seconds, a timedelta or an aware datetime, "
        f"got {type(when).__name__} {when!r:.100}"
    )
