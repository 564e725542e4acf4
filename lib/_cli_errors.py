"""The CLI's two failures (usage error, exit 2; refusal, exit 1) and how one is reported."""

from __future__ import annotations

from typing import Final

from procrastinate import exceptions as procrastinate_exceptions

from dawdle._errors import ConfigurationError, DawdleError

EXIT_FAILURE: Final = 1
EXIT_INTERRUPTED: Final = 130


class UsageError(ConfigurationError):
    """The command line asks for something impossible; reported like argparse (exit 2)."""


class CommandError(DawdleError):
    """The command ran and the answer is no (e.g. schema missing); exit 1 with the message."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name if it has none)."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if (
        isinstance(exc, procrastinate_exceptions.ConnectorException)
        and not isinstance(exc, DawdleError)
        and cause is not None
    ):
        # Procrastinate's wrapper says only "Database error."; the cause says which.
        text = f"{text} {' '.join(str(cause).split())}".strip()
    return text or type(exc).__name__
