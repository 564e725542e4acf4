"""Retry-After hints: how a policy reads one from an exception, and how it uses it."""

from __future__ import annotations

import datetime
import email.utils
import math
from typing import Final, Literal, TypeAlias

from dawdle._errors import ConfigurationError
from dawdle._validate import is_number
from dawdle.backoff._exceptions import nodes

RetryAfter: TypeAlias = Literal["max", "hint", "ignore"]
"""How a Retry-After hint is used: the larger of hint and backoff, the hint alone, or not."""

RETRY_AFTER_MODES: Final = ("max", "hint", "ignore")


def hint_seconds(value: object, now: datetime.datetime) -> float | None:
    """A Retry-After hint in seconds (inf past the float range), or None if it is not one.

    Seconds (int or float), a timedelta, an absolute datetime (naive ones read as UTC) or an
    HTTP header's text (delay-seconds or an HTTP-date). A date in the past means now (0 s);
    a negative or NaN delay is not a hint, as RFC 9110 allows none.
    """
    if isinstance(value, str):
        value = value.strip()
        if value.isdigit():
            value = int(value)
        else:
            try:
                value = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
    if isinstance(value, datetime.datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return max(0.0, (when - now).total_seconds())
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if not is_number(value) or value != value or value < 0:  # noqa: PLR0124 (NaN test)
        return None
    return float(value) if value < 2**1023 else math.inf


def retry_after_hint(exc: BaseException, now: datetime.datetime | None) -> float | None:
    """The longest valid `retry_after` hint carried by `exc`, its groups or their leaves."""
    if not isinstance(exc, BaseExceptionGroup) and not hasattr(exc, "retry_after"):
        return None  # the common case, without building lists or reading the clock
    now = now or datetime.datetime.now(datetime.UTC)
    hints = (hint_seconds(getattr(node, "retry_after", None), now) for node in nodes(exc))
    return max((hint for hint in hints if hint is not None), default=None)


def retry_after_mode(value: object) -> RetryAfter:
    """`value` as a mode; True and False, the earlier spelling, mean "max" and "ignore"."""
    if value is True:
        return "max"
    if value is False:
        return "ignore"
    for mode in RETRY_AFTER_MODES:
        if value == mode:
            return mode
    raise ConfigurationError(
        f'RetryPolicy: retry_after must be "max", "hint" or "ignore", got {value!r}'
    )
