"""Retry-After hints as a policy choice: larger of hint and backoff, hint alone, or ignored."""

from __future__ import annotations

import datetime
import email.utils
import random

import pytest

from dawdle.backoff import Constant, RetryPolicy

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


class HintedError(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__("hinted")
        self.retry_after = retry_after


def policy(**options: object) -> RetryPolicy:
    return RetryPolicy(backoff=Constant(10.0, max_delay=60.0), max_attempts=5, **options)  # type: ignore[arg-type]


def test_default_waits_the_larger_of_hint_and_backoff() -> None:
    """retry_after="max" (the default): a 30 s hint beats a 10 s backoff, a 3 s one does not."""
    longer = policy().decide(HintedError(30), attempt=1)
    assert longer.delay == 30.0
    assert "retry_after=30s, above the backoff's 10.000s" in longer.reason
    shorter = policy().decide(HintedError(3), attempt=1)
    assert shorter.delay == 10.0
    assert "backoff, above retry_after=3s" in shorter.reason


def test_hint_alone_and_ignored() -> None:
    """retry_after="hint" waits the hint even when shorter; "ignore" waits the backoff."""
    assert policy(retry_after="hint").decide(HintedError(3), attempt=1).delay == 3.0
    ignored = policy(retry_after="ignore").decide(HintedError(30), attempt=1)
    assert ignored.delay == 10.0
    assert "(backoff)" in ignored.reason


def test_a_hint_above_the_ceiling_gives_up() -> None:
    """A hint above retry_after_max is not capped: the policy gives up and names both values."""
    decision = policy(retry_after_max=120).decide(HintedError(600), attempt=1)
    assert not decision.retry
    assert "retry_after=600s is above retry_after_max=120s" in decision.reason
    assert policy(retry_after_max=600).decide(HintedError(600), attempt=1).delay == 600.0


def test_absolute_dates_and_http_headers_are_hints() -> None:
    """A datetime, an HTTP-date and delay-seconds text are read as hints, measured from now."""
    in_a_minute = NOW + datetime.timedelta(minutes=1)
    naive = in_a_minute.replace(tzinfo=None)
    header = email.utils.format_datetime(in_a_minute, usegmt=True)
    for hint in (in_a_minute, naive, header, "60", " 60 "):
        decision = policy().decide(HintedError(hint), attempt=1, now=NOW)
        assert decision.delay == 60.0, hint


def test_a_date_in_the_past_means_now() -> None:
    """A hint date already past is a 0 s hint: the backoff's wait stands."""
    past = NOW - datetime.timedelta(hours=1)
    assert policy().decide(HintedError(past), attempt=1, now=NOW).delay == 10.0
    assert policy(retry_after="hint").decide(HintedError(past), attempt=1, now=NOW).delay == 0.0


@pytest.mark.parametrize("hint", [-5, -0.5, float("nan"), "soon", "", "-5", None, object()])
def test_invalid_hints_are_ignored(hint: object) -> None:
    """A negative, NaN or unreadable hint is no hint: the backoff decides (not a 0 s wait)."""
    decision = policy(retry_after="hint").decide(HintedError(hint), attempt=1, now=NOW)
    assert decision.delay == 10.0
    assert "retry_after" not in decision.reason


def test_jitter_on_hints_only_lengthens_them() -> None:
    """retry_after_jitter=0.5 spreads a 30 s hint over [30, 45] s, never shorter."""
    seeded = RetryPolicy(
        backoff=Constant(1.0), retry_after_jitter=0.5, max_attempts=5, rng=random.Random(2)
    )
    waits = [seeded.decide(HintedError(30), attempt=1).delay or 0.0 for _ in range(2_000)]
    assert min(waits) >= 30.0
    assert max(waits) <= 45.0
    assert max(waits) - min(waits) > 10.0


def test_jittered_hint_is_named_with_the_wait_it_gave() -> None:
    """The reason names the hint as stretched, so it matches the delay."""
    seeded = RetryPolicy(
        backoff=Constant(1.0), retry_after_jitter=0.5, max_attempts=5, rng=random.Random(2)
    )
    decision = seeded.decide(HintedError(30), attempt=1)
    assert decision.delay is not None
    assert f"retry_after={decision.delay:g}s" in decision.reason


def test_the_longest_hint_of_a_group_counts_and_the_group_itself_may_carry_one() -> None:
    """Hints on a group and on its leaves: the longest valid one counts."""

    class HintedGroup(ExceptionGroup):  # type: ignore[type-arg]
        retry_after = 40

    group = HintedGroup("g", [HintedError(20), HintedError(float("nan"))])
    assert policy().decide(group, attempt=1).delay == 40.0
