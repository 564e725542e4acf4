"""The CLI's failures and how each is reported: one line, never a password, never SQL text.

Exit codes: 1 a failure at run time, 2 bad input (a usage error, or a value dawdle or libpq
refuses: `ConfigurationError`, `UnsupportedValue`, a connection string that does not
parse), 130 interrupted. Every line printed goes through `redact()`, the last line of
defence for passwords whatever a message contains; `-v` adds the traceback, redacted too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from typing import Final
from urllib.parse import unquote

import psycopg
from procrastinate import exceptions as procrastinate_exceptions

from dawdle._errors import ConfigurationError, DawdleError, UnsupportedValue, leaves

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

# A message longer than this is cut: a value it quotes may be megabytes long.
MAX_LINE: Final = 500

# What replaces a password.
HIDDEN: Final = "***"

# `user:secret@` in a URI's authority (the secret may hold '@': the last one ends it).
_URI_PASSWORD: Final = re.compile(r"(?P<head>://[^:/?#@\s]*:)(?P<secret>[^\s/?#]*)@")
# libpq's `password=secret` or `password = 'quoted \' secret'` (also a URI's ?password=),
# and a Python repr's 'password': 'secret'.
_KEYWORD_PASSWORD: Final = re.compile(
    r"(?P<head>\bpassword\s*=\s*|['\"]password['\"]\s*:\s*)"
    r"(?P<secret>'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|\S+)",
    re.IGNORECASE,
)
# Where the CLI's connection strings come from; their passwords are hidden wherever they
# appear, even in a message that quotes one alone (libpq's "invalid percent-encoded token").
_DSN_VARIABLES: Final = ("DAWDLE_DSN", "DATABASE_URL")
# Shorter known secrets are left to the patterns: hiding every "ab" would garble messages.
_MIN_KNOWN_SECRET: Final = 3

# SQLSTATEs of a missing table, type or function: the schema was not applied.
_UNDEFINED: Final = frozenset({"42P01", "42704", "42883"})


class UsageError(ConfigurationError):
    """The command line asks for something impossible; reported like argparse (exit 2)."""


class CommandError(DawdleError):
    """The command ran and the answer is no (e.g. schema missing); exit 1 with the message."""


def _unquoted(value: str) -> str:
    """A libpq keyword value without its quotes and backslash escapes."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def known_secrets() -> set[str]:
    """The passwords in the environment's connection strings and PGPASSWORD, as written."""
    secrets = {os.environ.get("PGPASSWORD", "")}
    for variable in _DSN_VARIABLES:
        dsn = os.environ.get(variable, "")
        for match in _URI_PASSWORD.finditer(dsn):
            secrets.update({match["secret"], unquote(match["secret"])})
        for match in _KEYWORD_PASSWORD.finditer(dsn):
            secrets.update({match["secret"], _unquoted(match["secret"])})
    return {secret for secret in secrets if len(secret) >= _MIN_KNOWN_SECRET}


def redact(text: str) -> str:
    """`text` with every password hidden: known ones, and any that looks like one."""
    for secret in sorted(known_secrets(), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    text = _URI_PASSWORD.sub(rf"\g<head>{HIDDEN}@", text)
    return _KEYWORD_PASSWORD.sub(rf"\g<head>{HIDDEN}", text)


def first_line(text: str) -> str:
    """The first line of a message, whitespace collapsed: psycopg puts SQL on later lines."""
    lines = text.strip().splitlines()
    return " ".join(lines[0].split()) if lines else ""


def shown(value: str, limit: int = 60) -> str:
    """`value` quoted for an error line; a long one cut, with its length."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def _schema_hint(exc: BaseException) -> str:
    """A pointer to `dawdle schema --apply` when `exc` (or its cause) is a missing object."""
    for error in (exc, exc.__cause__):
        if isinstance(error, psycopg.Error) and error.sqlstate in _UNDEFINED:
            message = str(error)
            if "procrastinate_" in message or "dawdle_" in message:
                return " (is the schema applied? run `dawdle schema --apply`)"
    return ""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, redacted and cut (its type's name if it has none)."""
    text = first_line(str(exc))
    cause = exc.__cause__
    if (
        isinstance(exc, procrastinate_exceptions.ConnectorException)
        and not isinstance(exc, DawdleError)
        and cause is not None
    ):
        # Procrastinate's wrapper says only "Database error."; the cause says which.
        text = f"{text} {first_line(str(cause))}".strip()
    text = (text or type(exc).__name__) + _schema_hint(exc)
    text = redact(text)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}... (cut at {MAX_LINE} characters)"
    return text


def is_bad_input(exc: BaseException) -> bool:
    """True when `exc` says a value given to dawdle is wrong (exit 2), not that a run failed.

    psycopg's client-side ProgrammingError (no SQLSTATE) reaching the CLI comes from a
    connection string libpq cannot parse; a server's error always has a SQLSTATE.
    """
    if isinstance(exc, ConfigurationError | UnsupportedValue):
        return True
    return isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None


def _is_expected(exc: BaseException) -> bool:
    """True for errors that explain themselves: dawdle's, Procrastinate's, the database's."""
    expected = (DawdleError, procrastinate_exceptions.ProcrastinateException, psycopg.Error)
    return isinstance(exc, expected)


def describe(failure: BaseException, *, verbose: bool) -> str:
    """One failure's line: its message, after its type's name unless dawdle's or Procrastinate's.

    An error that does not explain itself (a bug, an OSError) says so, and where to see more.
    """
    line = one_line(failure)
    if isinstance(failure, psycopg.Error):
        return f"{type(failure).__name__}: {line}"
    if _is_expected(failure):
        return line
    line = f"unexpected {type(failure).__name__}: {line}"
    return line if verbose else f"{line} (-v for the traceback)"


def print_traceback(exc: BaseException) -> None:
    """`exc`'s traceback on stderr (for -v), passwords hidden."""
    print(redact("".join(traceback.format_exception(exc))), end="", file=sys.stderr)


def report_failure(prefix: str, exc: BaseException, *, verbose: bool) -> int:
    """Print each failure in `exc` (an exception group may hold several) on one line.

    Returns the exit code: EXIT_USAGE if every failure is bad input, else EXIT_FAILURE.
    An error that does not explain itself (a bug, an OSError) also names its type.
    """
    if verbose:
        print_traceback(exc)
    failures = leaves(exc)
    printed: set[str] = set()
    for failure in failures:
        line = describe(failure, verbose=verbose)
        if line not in printed:
            printed.add(line)
            print(f"{prefix}: error: {line}", file=sys.stderr)
    return EXIT_USAGE if all(is_bad_input(failure) for failure in failures) else EXIT_FAILURE


class RedactingFormatter(logging.Formatter):
    """A log formatter that hides passwords in the whole record, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record, redacted."""
        return redact(super().format(record))
