"""The `dawdle` command: run a worker, manage the schema, defer a job, check health.

Exit codes: 0 success, 1 a failure at run time (database unreachable, schema missing or
outdated, unhealthy), 2 a usage error (bad option, unloadable --app, unknown task without
--unknown, bad JSON),
130 interrupted before the worker could take over SIGINT. This module parses the command
line and reports errors; `_cli_commands` runs the commands, `_cli_app` loads --app.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

import anyio
from procrastinate import exceptions as procrastinate_exceptions

from dawdle._cli_app import load_app
from dawdle._cli_commands import cmd_defer, cmd_healthcheck, cmd_schema, cmd_worker
from dawdle._cli_embedded import add_embedded_parser
from dawdle._cli_errors import EXIT_FAILURE, EXIT_INTERRUPTED, UsageError, one_line
from dawdle._errors import DawdleError, leaves
from dawdle._validate import integer, number

# load_app lives in _cli_app; tests and scripts know it as dawdle._cli.load_app.
__all__ = ["build_parser", "load_app", "main"]

# -- argument parsing --------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    """An int >= 1 for argparse, or its error naming the value."""
    try:
        return integer("a count", int(text), at_least=1)
    except ValueError:  # not an int (int()), or below 1 (integer()'s ConfigurationError)
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0 for argparse, or its error naming the value."""
    try:
        return number("seconds", float(text), at_least=0)
    except ValueError:  # not a number (float()), or negative, NaN, infinite (number())
        raise argparse.ArgumentTypeError(
            f"expected seconds (a number >= 0), got {text!r}"
        ) from None


def _queues(text: str) -> list[str]:
    """A comma-separated list of queue names, blanks dropped."""
    return [queue.strip() for queue in text.split(",") if queue.strip()]


def _json_object(text: str) -> dict[str, Any]:
    """A JSON object (the task's keyword arguments), or an argparse error naming the value."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object of keyword arguments like '{{\"a\": 1}}', got {text!r}"
        )
    return value


def _version() -> str:
    """The installed dawdle's version."""
    try:
        return metadata.version("dawdle")
    except metadata.PackageNotFoundError:  # pragma: no cover (running from a bare tree)
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The `dawdle` argument parser with its four subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        default=os.environ.get("DAWDLE_APP") or None,
        help="the dawdle.App to use, e.g. myproject.tasks:app (default: $DAWDLE_APP)",
    )
    common.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run on (default: asyncio)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-v: debug) and tracebacks with errors",
    )

    parser = argparse.ArgumentParser(
        prog="dawdle",
        description="A PostgreSQL task queue for asyncio and Trio, on Procrastinate's schema.",
        epilog="Without --app, schema and healthcheck use dawdle.App() on the default "
        "database: $DAWDLE_DSN, libpq's environment, or an embedded PostgreSQL server.",
    )
    parser.add_argument("--version", action="version", version=f"dawdle {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="run a worker until SIGINT/SIGTERM (or, with --one-shot, until the queue is empty)",
        description="Run a worker. SIGINT or SIGTERM stops it gracefully: no new jobs, running "
        "ones finish (or, past --shutdown-graceful-timeout, go back to the queue); a second "
        "signal cancels them.",
    )
    worker.add_argument(
        "--queues", type=_queues, metavar="A,B", help="listen to these queues only (default: all)"
    )
    worker.add_argument(
        "--concurrency", type=_positive_int, metavar="N", help="jobs run at once (default: 1)"
    )
    worker.add_argument("--name", help="the worker's name, in logs and job contexts")
    mode = worker.add_mutually_exclusive_group()
    mode.add_argument(
        "--wait",
        dest="wait",
        action="store_const",
        const=True,
        help="wait for new jobs when the queue is empty (the default)",
    )
    mode.add_argument(
        "--one-shot",
        dest="wait",
        action="store_const",
        const=False,
        help="stop once no job is ready and none is running",
    )
    worker.add_argument(
        "--delete-jobs",
        choices=("never", "successful", "always"),
        help="delete finished jobs (default: never)",
    )
    worker.add_argument(
        "--shutdown-graceful-timeout",
        type=_seconds,
        metavar="S",
        help="on stop, cancel jobs still running after S seconds and put them back "
        "(default: wait for them)",
    )
    worker.add_argument(
        "--unknown-tasks",
        choices=("leave", "fail"),
        help="jobs of tasks the app does not register: leave them for a worker that knows "
        "them (the default), or claim and fail them as Procrastinate's worker does",
    )
    worker.set_defaults(run=cmd_worker, parser=worker)

    schema = commands.add_parser(
        "schema",
        parents=[common],
        help="apply or check Procrastinate's schema and dawdle's tables",
        description="Apply Procrastinate's schema and dawdle's own tables (idempotent), or "
        "check that both are there and current.",
    )
    action = schema.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--apply",
        action="store_true",
        help="create Procrastinate's schema unless it is there, and dawdle's missing tables",
    )
    action.add_argument(
        "--check",
        action="store_true",
        help="report the schema; exit 1 unless it is current and dawdle's tables are there",
    )
    schema.set_defaults(run=cmd_schema, parser=schema)

    defer = commands.add_parser(
        "defer",
        parents=[common],
        help="defer a job of a registered task (or, with --unknown, of any name); print its id",
        description="Defer a job of a task registered on --app and print the job's id. With "
        "--unknown, a name the app does not register is deferred as it is (queue 'default' "
        "unless --queue), for producers that do not import the worker's code; --app is then "
        "optional.",
    )
    defer.add_argument("task_name", metavar="TASK_NAME", help="the task's registered name")
    defer.add_argument(
        "--unknown",
        action=argparse.BooleanOptionalAction,
        help="defer the job even if no task of that name is registered on the app "
        "(default: $DAWDLE_DEFER_UNKNOWN, else $PROCRASTINATE_DEFER_UNKNOWN, else no)",
    )
    defer.add_argument(
        "--json",
        dest="task_kwargs",
        type=_json_object,
        default={},
        metavar="OBJECT",
        help="the task's keyword arguments as a JSON object, e.g. '{\"a\": 1}'",
    )
    defer.add_argument("--queue", help="queue to use instead of the task's")
    defer.add_argument("--lock", help="no two jobs with this lock run at once")
    defer.add_argument(
        "--queueing-lock", help="refuse the job if one with this queueing lock is waiting"
    )
    defer.add_argument("--priority", type=int, help="higher runs first (default: the task's)")
    defer.add_argument(
        "--schedule-in", type=_seconds, metavar="S", help="run no earlier than S seconds from now"
    )
    defer.set_defaults(run=cmd_defer, parser=defer)

    healthcheck = commands.add_parser(
        "healthcheck",
        parents=[common],
        help="check the database and schema; show jobs, live workers and unknown tasks",
        description="Exit 0 if the database answers and the schema is current, else 1. "
        "Ready jobs of tasks that no live worker knows are a warning on stderr, not a "
        "failure, unless --strict.",
    )
    healthcheck.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="give up after S seconds (default: 10)",
    )
    healthcheck.add_argument(
        "--strict",
        action="store_true",
        help="also exit 1 if ready jobs wait for a task that no live worker knows (and no "
        "live worker left its tasks unpublished), or if that cannot be checked",
    )
    healthcheck.set_defaults(run=cmd_healthcheck, parser=healthcheck)

    add_embedded_parser(commands)
    return parser


# -- errors and the entry point ----------------------------------------------------------------


def _fail(parser: argparse.ArgumentParser, exc: UsageError, *, verbose: bool) -> NoReturn:
    """Report a usage error the way argparse does (usage line, message, exit 2)."""
    if verbose:
        traceback.print_exception(exc)
    parser.error(one_line(exc))


def _configure_logging(command: str, verbose: int) -> None:
    """Log to stderr: INFO for the worker, WARNING for the others, DEBUG with -v."""
    level = logging.INFO if command == "worker" else logging.WARNING
    if verbose:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if not verbose:
        # The embedded server's one line says where the data is: worth seeing every time;
        # pgserver's own lines about its process handles are not.
        logging.getLogger("dawdle.connector").setLevel(logging.INFO)
        logging.getLogger("pgserver").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `dawdle` command line; return its exit code."""
    # pgserver asks platformdirs for a runtime directory, which warns where there is no login
    # session (containers, CI) before falling back to /tmp: noise for the embedded server.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.command, args.verbose)
    try:
        run = args.run(args)
    except UsageError as exc:
        _fail(args.parser, exc, verbose=bool(args.verbose))
    expected = (DawdleError, procrastinate_exceptions.ProcrastinateException)
    try:
        code: int = anyio.run(functools.partial(run), backend=args.backend)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        failures = leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in failures):
            return EXIT_INTERRUPTED
        if not all(isinstance(leaf, expected) for leaf in failures):
            raise
        if args.verbose:
            traceback.print_exception(exc)
        for leaf in failures:
            print(f"dawdle {args.command}: error: {one_line(leaf)}", file=sys.stderr)
        return EXIT_FAILURE
    return code
