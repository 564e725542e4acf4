"""The `dawdle` command: run a worker, manage the schema, defer a job, check health, pause.

Exit codes: 0 success, 1 a failure at run time (database unreachable, schema missing or
outdated, unhealthy), 2 bad input (bad option, unloadable --app, unknown task without
--unknown, bad JSON, a connection string that does not parse), 130 interrupted before the
worker could take over SIGINT. Every error is one line on stderr (`-v` adds the traceback),
passwords hidden. This module parses the command line; `_cli_errors` reports errors,
`_cli_commands` runs the commands (`_cli_queue`, `_cli_jobs`, `_cli_actions`, `_cli_fleet` and
`_cli_embedded` add their own), `_cli_values` checks option values, `_cli_app` loads --app.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn

import anyio

from dawdle._cli_actions import add_action_parsers
from dawdle._cli_app import load_app
from dawdle._cli_commands import cmd_defer, cmd_healthcheck, cmd_schema, cmd_worker
from dawdle._cli_dashboard import add_dashboard_parser
from dawdle._cli_embedded import add_embedded_parser
from dawdle._cli_errors import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    RedactingFormatter,
    UsageError,
    first_line,
    one_line,
    print_traceback,
    redact,
    report_failure,
)
from dawdle._cli_fleet import add_fleet_parsers
from dawdle._cli_jobs import add_jobs_parsers
from dawdle._cli_metrics import add_metrics_options
from dawdle._cli_queue import add_queue_parser
from dawdle._cli_values import (
    MAX_JSON_DEPTH,
    MAX_SCHEDULE_IN,
    json_object,
    max_recoveries,
    non_empty,
    positive_int,
    priority,
    queues,
    seconds,
    seconds_parser,
)
from dawdle._errors import leaves

# load_app lives in _cli_app and MAX_JSON_DEPTH in _cli_values; tests and scripts know
# them as dawdle._cli.load_app and dawdle._cli.MAX_JSON_DEPTH.
__all__ = ["MAX_JSON_DEPTH", "build_parser", "load_app", "main"]

# -- argument parsing --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with each error on one line naming the value and where to find help."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: error: message (see 'prog --help')` on stderr and exit 2."""
        line = redact(first_line(message))
        self.exit(EXIT_USAGE, f"{self.prog}: error: {line} (see '{self.prog} --help')\n")


def _version() -> str:
    """The installed dawdle's version."""
    try:
        return metadata.version("dawdle")
    except metadata.PackageNotFoundError:  # pragma: no cover (running from a bare tree)
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The `dawdle` argument parser with its subcommands."""
    common = _Parser(add_help=False)
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

    parser = _Parser(
        prog="dawdle",
        description="A PostgreSQL task queue for asyncio and Trio, on Procrastinate's schema.",
        epilog="Without --app, schema and healthcheck use dawdle.App() on the default "
        "database: $DAWDLE_DSN, libpq's environment, or an embedded PostgreSQL server.",
    )
    parser.add_argument("--version", action="version", version=f"dawdle {_version()}")
    # Subparsers are _Parser too (argparse makes them of the parent's class).
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
        "--queues", type=queues, metavar="A,B", help="listen to these queues only (default: all)"
    )
    worker.add_argument(
        "--concurrency", type=positive_int, metavar="N", help="jobs run at once (default: 1)"
    )
    worker.add_argument(
        "--name", type=non_empty("name"), help="the worker's name, in logs and job contexts"
    )
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
        type=seconds,
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
    worker.add_argument(
        "--max-recoveries",
        type=max_recoveries,
        metavar="N",
        help="fail a job recovered from dead or stalled workers more than N times in a row, "
        "instead of putting it back (default: 5; 'none': no limit)",
    )
    add_metrics_options(worker)
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
    defer.add_argument(
        "task_name",
        type=non_empty("task name"),
        metavar="TASK_NAME",
        help="the task's registered name",
    )
    defer.add_argument(
        "--unknown",
        action=argparse.BooleanOptionalAction,
        help="defer the job even if no task of that name is registered on the app "
        "(default: $DAWDLE_DEFER_UNKNOWN, else $PROCRASTINATE_DEFER_UNKNOWN, else no)",
    )
    defer.add_argument(
        "--json",
        dest="task_kwargs",
        type=json_object,
        default={},
        metavar="OBJECT",
        help="the task's keyword arguments as a JSON object, e.g. '{\"a\": 1}'",
    )
    defer.add_argument(
        "--queue", type=non_empty("queue name"), help="queue to use instead of the task's"
    )
    defer.add_argument(
        "--lock", type=non_empty("lock"), help="no two jobs with this lock run at once"
    )
    defer.add_argument(
        "--queueing-lock",
        type=non_empty("queueing lock"),
        help="refuse the job if one with this queueing lock is waiting",
    )
    defer.add_argument("--priority", type=priority, help="higher runs first (default: the task's)")
    defer.add_argument(
        "--schedule-in",
        type=seconds_parser(above=None, at_most=MAX_SCHEDULE_IN),
        metavar="S",
        help="run no earlier than S seconds from now",
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
        type=seconds_parser(above=0, at_most=None),
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

    add_queue_parser(commands, common)
    add_jobs_parsers(commands, common)
    add_action_parsers(commands, common)
    add_fleet_parsers(commands, common)
    add_embedded_parser(commands)
    add_dashboard_parser(commands, common)
    return parser


# -- errors and the entry point ----------------------------------------------------------------


def _fail(parser: argparse.ArgumentParser, exc: UsageError, *, verbose: bool) -> NoReturn:
    """Report a usage error as the parser does (one line, exit 2); the line says the fix."""
    if verbose:
        print_traceback(exc)
    parser.exit(EXIT_USAGE, f"{parser.prog}: error: {one_line(exc)}\n")


def _configure_logging(command: str, verbose: int) -> None:
    """Log to stderr: INFO for the worker, WARNING for the others, DEBUG with -v."""
    level = logging.INFO if command == "worker" else logging.WARNING
    if verbose:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if not verbose:
        # The embedded server's one line says where the data is: worth seeing every time.
        logging.getLogger("dawdle.connector").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `dawdle` command line; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.command, args.verbose)
    try:
        run = args.run(args)
    except UsageError as exc:
        _fail(args.parser, exc, verbose=bool(args.verbose))
    except Exception as exc:  # noqa: BLE001 (any failure is one line; -v for the traceback)
        return report_failure(f"dawdle {args.command}", exc, verbose=bool(args.verbose))
    try:
        code: int = anyio.run(functools.partial(run), backend=args.backend)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BaseException as exc:
        failures = leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in failures):
            return EXIT_INTERRUPTED
        if not all(isinstance(leaf, Exception) for leaf in failures):
            raise  # SystemExit and the like: not failures to report
        return report_failure(f"dawdle {args.command}", exc, verbose=bool(args.verbose))
    return code
