"""How a run's error is stored: its type's name, bounded text PostgreSQL accepts."""

from __future__ import annotations

import pytest

from dawdle._worker.outcomes import Outcome, Verdict
from dawdle._worker.stored_errors import (
    MAX_MESSAGE_CHARS,
    MAX_TRACEBACK_CHARS,
    bounded,
    job_error,
    with_error,
)


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize("length", [99, 100, 101, 1_000, 1_000_000])
def test_bounded_text_fits_and_says_what_it_cut(length: int) -> None:
    """Never over the limit; a cut text keeps its ends and counts what it dropped."""
    text = "a" + "m" * (length - 2) + "z"
    kept = bounded(text, 100, keep_head=0.25)
    assert len(kept) <= 100
    if length <= 100:
        assert kept == text
        return
    head, marker, tail = kept.partition("\n... [")
    cut = int(marker and tail.split(" characters cut]")[0])
    assert head.startswith("a")
    assert kept.endswith("z")
    assert len(text) - cut == len(head) + len(tail.split("] ...\n", 1)[1])


def test_text_postgresql_refuses_is_written_out() -> None:
    """NUL and lone surrogates would fail the whole batch: they are escaped."""
    assert bounded("a\x00b\udcffc", 100, keep_head=1.0) == "a\\x00b\\udcffc"
    assert bounded("héllo ✓", 100, keep_head=1.0) == "héllo ✓"


def test_a_job_error_bounds_message_and_traceback() -> None:
    error = job_error(ValueError("x" * 50_000), attempt=3)
    assert error.attempt == 3
    assert error.exception_type == "ValueError"
    assert len(error.message) <= MAX_MESSAGE_CHARS
    assert len(error.traceback) <= MAX_TRACEBACK_CHARS
    assert error.traceback.startswith("ValueError: xxx")


def test_a_broken_str_still_gives_an_error() -> None:
    error = job_error(UnprintableError(), attempt=1)
    assert error.exception_type == f"{__name__}.UnprintableError"
    assert error.message == f"<unprintable {__name__}.UnprintableError>"


@pytest.mark.parametrize(
    ("outcome", "kept"),
    [
        (Outcome.FAILED, True),
        (Outcome.RETRY, True),
        (Outcome.ABORTED, False),
        (Outcome.SNOOZED, False),
        (Outcome.PUT_BACK, False),
    ],
)
def test_only_failures_and_retries_carry_their_error(outcome: Outcome, kept: bool) -> None:
    verdict = with_error(Verdict(1, outcome), KeyError("k"), attempt=1)
    assert (verdict.error is not None) is kept
