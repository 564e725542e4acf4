"""Procrastinate's PsycopgConnector arguments, as dawdle's connector takes them.

Procrastinate passes its keywords on to psycopg's pool; dawdle's own pool honours the ones
that make sense for it and refuses the others by name, so none reaches libpq as an option.
"""

from __future__ import annotations

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
    "timeout": "waiting for a connection lasts as long as the caller lets it (anyio.fail_after) "
    "and reconnecting at most reconnect_timeout: use those",
    "max_waiting": "waiters are served first come, first served without a limit; bound the "
    "wait with anyio.fail_after instead",
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
