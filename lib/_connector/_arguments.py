"""Procrastinate's PsycopgConnector arguments, as dawdle's connector takes them.

Procrastinate passes its keywords on to psycopg's pool; dawdle's own pool honours the ones
that make sense for it and refuses the others by name, so none reaches libpq as an option.
"""

from __future__ import annotations

import os
import re
from typing import Any, Final

import psycopg
from psycopg import conninfo as libpq_conninfo

from dawdle._errors import ConfigurationError

# psycopg_pool's arguments that Procrastinate's PsycopgConnector passes on to its pool and
# dawdle's pool does not honour, with what to do instead. Refused by name: as keywords they
# would otherwise reach libpq as connection options.
REFUSED_POOL_ARGUMENTS: Final = {
    "open": "dawdle opens the pool in App.open_async(): remove it",
    "check": "dawdle checks every idle connection before lending it: remove it",
    "max_waiting": "waiters are served first come, first served without a limit; timeout= "
    "bounds how long each one waits",
    "max_lifetime": "pooled connections are replaced only when they go bad: remove it",
    "max_idle": "idle connections (at most max_size) are kept open: remove it",
    "reconnect_failed": "after reconnect_timeout the caller gets dawdle.DatabaseUnavailable: "
    "catch that instead",
    "num_workers": "connections are made by the task that needs one, not by background "
    "workers: remove it",
    "reset": "a connection goes back to the pool only when idle (an open transaction is "
    "rolled back) and nothing else is run on it: undo session changes where you make them",
    "connection_class": "connections are dawdle's own (psycopg's AsyncConnection driven by "
    "anyio): set them up with configure= instead",
    "pool_factory": "dawdle makes its own pool: size it with min_size and max_size",
    "close_returns": "dawdle's pool always takes its connections back: remove it",
}

# Connection options that name the server or the database. Given any of them without a
# conninfo, libpq takes the rest from its environment, as under Procrastinate (conninfo=""),
# instead of dawdle's default database: e.g. Django's settings passed as kwargs=.
TARGET_OPTIONS: Final = frozenset({"host", "hostaddr", "dbname", "service"})


# Used when neither the connection string, the options nor PGCONNECT_TIMEOUT set
# connect_timeout (libpq then waits forever, psycopg 130 s). A live server answers in
# milliseconds, TLS and SCRAM over a slow network in well under a second; 5 s leaves room for
# a loaded server and stays under `dawdle healthcheck`'s 10 s, so a server that accepts but
# never answers is named within seconds. Each address of a host gets its own 5 s, as in libpq.
DEFAULT_CONNECT_TIMEOUT: Final = 5

# A URI's password: from the ':' after the user to the last '@' (an unencoded '@' in the
# password would otherwise leave its end visible).
_URI_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@?#]*:)(.*)@", re.IGNORECASE | re.DOTALL)
# A key=value password, quoted or not; unquoted, it runs to the next `key=` so that a value
# with a space ("password=S3cret PW") is masked whole.
_KEYWORD_PASSWORD = re.compile(
    r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|.*?)(?=\s+\w+\s*=|$)", re.DOTALL
)


def mask_password(conninfo: str) -> str:
    """The connection string with any password shown as `***`, parsable or not."""
    masked = _URI_PASSWORD.sub(r"\1***@", conninfo, count=1)
    return _KEYWORD_PASSWORD.sub(r"\1***", masked)


def parse_conninfo(conninfo: str, options: dict[str, Any]) -> dict[str, Any]:
    """The parameters libpq reads from a connection string and options, or ConfigurationError.

    libpq's reason for refusing a string may quote the password (`invalid percent-encoded
    token: "S3cr%zzet"`), so the reason shown is that of the string with its password
    masked; if only the password was wrong, the message says so without showing it.
    """
    try:
        params = libpq_conninfo.conninfo_to_dict(conninfo, **options)
    except psycopg.ProgrammingError:
        masked = mask_password(conninfo)
        shown_options = {key: value for key, value in options.items() if key != "password"}
        try:
            libpq_conninfo.conninfo_to_dict(masked, **shown_options)
        except psycopg.ProgrammingError as exc:
            reason = " ".join(str(exc).split())
        else:
            reason = (
                "its password cannot be read: in a URI, percent-encode it (% as %25, @ as "
                "%40, a space as %20); in key=value form, put it in single quotes"
            )
        raise ConfigurationError(
            f"PsycopgConnector: conninfo {masked!r} is not a valid connection string: {reason}"
        ) from None
    timeout = params.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT"))
    if timeout is not None:
        try:
            int(timeout)
        except ValueError:
            raise ConfigurationError(
                f"PsycopgConnector: connect_timeout={timeout!r} is not a whole number of seconds"
            ) from None
    return params


def with_default_connect_timeout(params: dict[str, Any], options: dict[str, Any]) -> None:
    """Add DEFAULT_CONNECT_TIMEOUT to `options` unless libpq has a connect_timeout already."""
    if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
        options["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT


def describe_target(conninfo: str, kwargs: dict[str, Any]) -> str:
    """Host, port, database and user of a connection string, never its password."""
    try:
        params = libpq_conninfo.conninfo_to_dict(conninfo, **kwargs)
    except psycopg.ProgrammingError:
        return "an unparsable connection string"
    shown = [
        f"{key}={params[key]}" for key in ("host", "port", "dbname", "user") if params.get(key)
    ]
    return " ".join(shown) or "libpq's defaults"


def connection_options(kwargs: Any, connect_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs=` and the other keywords as one dict of connection options, checked.

    Procrastinate forces autocommit on the connections it listens on and commits each of
    its queries; dawdle's connections are all autocommit, so only autocommit=True fits.
    """
    refused = sorted(connect_kwargs.keys() & REFUSED_POOL_ARGUMENTS.keys())
    if refused:
        key = refused[0]
        raise ConfigurationError(
            f"PsycopgConnector: {key}={connect_kwargs[key]!r} is a psycopg pool argument "
            f"dawdle does not support; {REFUSED_POOL_ARGUMENTS[key]}"
        )
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ConfigurationError(
            f"PsycopgConnector: kwargs={kwargs!r} is not a dict of connection options"
        )
    both = sorted(kwargs.keys() & connect_kwargs.keys())
    if both:
        raise ConfigurationError(
            f"PsycopgConnector: {', '.join(both)} given both as keywords and in kwargs=: "
            "give each once"
        )
    options = {**kwargs, **connect_kwargs}
    autocommit = options.pop("autocommit", True)
    if not autocommit:
        raise ConfigurationError(
            f"PsycopgConnector: autocommit={autocommit!r}: dawdle's connections are "
            "autocommit (each of Procrastinate's queries is one statement); for a "
            "transaction of your own use `async with conn.transaction():`"
        )
    return options
