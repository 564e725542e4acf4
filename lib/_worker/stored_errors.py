"""Stored errors: what a failed or retried run raised, kept in `dawdle_job_errors`.

The runner builds a `JobError` only for a run that failed or will retry (a success costs
nothing); the outcome statement inserts it in the same round trip as the verdict, for jobs
still 'doing' for this worker. Without the table (dawdle schema 4 not applied), outcomes
are written without errors, one warning, and the table is tried again every minute.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from dawdle._dawdle_schema import JOB_ERRORS_TABLE
from dawdle._worker.outcomes import Outcome, Verdict

logger = logging.getLogger("dawdle.worker")

# The most characters stored of an exception's message, and of its formatted traceback.
MAX_MESSAGE_CHARS: Final = 2_000
MAX_TRACEBACK_CHARS: Final = 16_384


@dataclass(frozen=True, slots=True)
class JobError:
    """One run's error as its row stores it: the run's number, when, type, message, traceback."""

    attempt: int
    failed_at: datetime.datetime
    exception_type: str
    message: str
    traceback: str


def with_error(
    verdict: Verdict,
    failure: BaseException,
    *,
    attempt: int,
    task_code: types.CodeType | None = None,
) -> Verdict:
    """`verdict` carrying `failure` as its `JobError` if it failed or retries, else unchanged.

    Aborted, snoozed and put-back runs store nothing: the worker or the task chose to
    stop them (the exception is the cancellation or the `Snooze`), they did not fail.
    """
    if verdict.outcome not in (Outcome.FAILED, Outcome.RETRY):
        return verdict
    error = job_error(failure, attempt=attempt, task_code=task_code)
    return dataclasses.replace(verdict, error=error)


def job_error(
    failure: BaseException, *, attempt: int, task_code: types.CodeType | None = None
) -> JobError:
    """`failure` as stored: qualified type name, bounded message and traceback.

    The traceback starts at the task's own frame (`task_code`) when it is there: the
    worker's frames above it say nothing of the failure. An exception group's traceback
    shows every leaf (as Python prints it).
    """
    kind = type(failure)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    try:
        message = str(failure)
    except Exception:  # noqa: BLE001 (a broken __str__ must not lose the verdict)
        message = f"<unprintable {name}>"
    text = _formatted(failure, task_code)
    return JobError(
        attempt=attempt,
        failed_at=datetime.datetime.now(datetime.UTC),
        exception_type=_storable(name),
        message=bounded(message, MAX_MESSAGE_CHARS, keep_head=1.0),
        traceback=bounded(text, MAX_TRACEBACK_CHARS, keep_head=0.25),
    )


def _formatted(failure: BaseException, task_code: types.CodeType | None) -> str:
    """The traceback of `failure`, from the task's frame on if it has one.

    The frames above the task's are skipped before formatting, so their source lines are
    never read.
    """
    start = failure.__traceback__
    while start is not None and start.tb_frame.f_code is not task_code:
        start = start.tb_next
    report = traceback.TracebackException(
        type(failure), failure, start if start is not None else failure.__traceback__
    )
    return "".join(report.format())


def bounded(text: str, limit: int, *, keep_head: float) -> str:
    """`text` storable in PostgreSQL, cut to `limit` characters around a marker if longer.

    `keep_head` is the share of what is kept taken from the start; the rest is the end
    (a traceback's last lines say what was raised).
    """
    text = _storable(text)
    if len(text) <= limit:
        return text
    kept = limit - len(_marker(len(text)))  # the marker never gets longer than this
    head = int(kept * keep_head)
    tail = kept - head
    return text[:head] + _marker(len(text) - kept) + (text[len(text) - tail :] if tail else "")


def _marker(cut: int) -> str:
    return f"\n... [{cut} characters cut] ...\n"


def _storable(text: str) -> str:
    """Without what PostgreSQL's text refuses (NUL) or UTF-8 cannot encode (lone surrogates).

    Either would fail the whole batch's statement, again at every retry of the write.
    """
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def error_arguments(verdicts: Sequence[Verdict]) -> dict[str, list[Any]]:
    """The errors of `verdicts` as the outcome statement's `error_*` arrays."""
    errors = [(verdict.job_id, verdict.error) for verdict in verdicts if verdict.error]
    return {
        "error_ids": [job_id for job_id, _ in errors],
        "error_attempts": [error.attempt for _, error in errors],
        "error_times": [error.failed_at for _, error in errors],
        "error_types": [error.exception_type for _, error in errors],
        "error_messages": [error.message for _, error in errors],
        "error_tracebacks": [error.traceback for _, error in errors],
    }


def warn_errors_off() -> None:
    """Say once that outcomes are written without errors until the table is there."""
    logger.warning(
        "stored errors are off: the database lacks dawdle schema 4's table %s; "
        "run `dawdle schema --apply`",
        JOB_ERRORS_TABLE,
        extra={"action": "job_errors_off"},
    )


def names_errors_table(missing: str | None) -> bool:
    """Whether an undefined-table error's primary message names dawdle_job_errors."""
    return missing is not None and f'"{JOB_ERRORS_TABLE}"' in missing
