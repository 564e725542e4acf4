"""The `dawdle` command: run a worker, manage the schema, defer a job, check health.

Exit codes: 0 success, 1 a failure at run time (database unreachable, schema missing or
outdated, unhealthy), 2 a usage error (bad option, unloadable --app, unknown task, bad JSON),
130 interrupted before the worker could take over SIGINT.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Any, Final, NoReturn

import anyio
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import tasks

from dawdle._app import App
from dawdle._errors import ConfigurationError, DawdleError

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

# A worker whose heartbeat is older than this is not counted as alive by `healthcheck`.
HEARTBEAT_FRESH_SECONDS: Final = 30

JOB_COUNTS_QUERY: Final = """
SELECT status::text AS status, count(*) AS count
  FROM procrastinate_jobs
 GROUP BY status
 ORDER BY status
"""

LIVE_WORKERS_QUERY: Final = """
SELECT count(*) AS count
  FROM procrastinate_workers
 WHERE last_heartbeat > now() - make_interval(secs => %(seconds)s)
"""

logger = logging.getLogger("dawdle.cli")


class UsageError(ConfigurationError):
    """The command line asks for something impossible; reported like argparse (exit 2)."""


class CommandError(DawdleError):
    """The command ran and the answer is no (e.g. schema missing); exit 1 with the message."""


# -- argument parsing --------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    """An int >= 1 for argparse, or its error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0 for argparse, or its error naming the value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds (a number >= 0), got {text!r}"
        ) from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}")
    return value


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
    worker.set_defaults(run=_cmd_worker, parser=worker)

    schema = commands.add_parser(
        "schema",
        parents=[common],
        help="apply or check Procrastinate's schema",
        description="Apply Procrastinate's schema (idempotent) or check that it is current.",
    )
    action = schema.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--apply", action="store_true", help="create the schema unless it is already there"
    )
    action.add_argument(
        "--check", action="store_true", help="report the schema; exit 1 unless it is current"
    )
    schema.set_defaults(run=_cmd_schema, parser=schema)

    defer = commands.add_parser(
        "defer",
        parents=[common],
        help="defer a job of a registered task and print its id",
        description="Defer a job of a task registered on --app and print the job's id.",
    )
    defer.add_argument("task_name", metavar="TASK_NAME", help="the task's registered name")
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
    defer.set_defaults(run=_cmd_defer, parser=defer)

    healthcheck = commands.add_parser(
        "healthcheck",
        parents=[common],
        help="check the database and schema; show jobs per status and live workers",
        description="Exit 0 if the database answers and the schema is current, else 1.",
    )
    healthcheck.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="give up after S seconds (default: 10)",
    )
    healthcheck.set_defaults(run=_cmd_healthcheck, parser=healthcheck)
    return parser


# -- loading the app -----------------------------------------------------------------------


def load_app(path: str) -> App:
    """The dawdle App at `path`: 'package.module:attribute' or 'package.module.attribute'.

    The current directory is importable, as with `python -m`.
    """
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module_name, _, attribute = path.rpartition(".")
    names = [*module_name.split("."), *attribute.split(".")]
    if not module_name or not attribute or not all(name.isidentifier() for name in names):
        raise UsageError(
            f"--app {path!r}: expected MODULE:ATTRIBUTE, for example 'myproject.tasks:app'"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise UsageError(f"--app {path!r}: no module named {missing!r}") from exc
        raise UsageError(f"--app {path!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(
            f"--app {path!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    where = module_name
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise UsageError(f"--app {path!r}: {where!r} has no attribute {name!r}") from None
        where = f"{where}.{name}"
    if not isinstance(target, App):
        kind = f"{type(target).__module__}.{type(target).__qualname__}"
        raise UsageError(f"--app {path!r} is a {kind}, not a dawdle.App")
    return target


def _app(args: argparse.Namespace, *, required: bool) -> App:
    """The app named by --app/DAWDLE_APP, or dawdle.App() on the default database."""
    if args.app:
        return load_app(args.app)
    if required:
        raise UsageError(f"`dawdle {args.command}` needs --app MODULE:ATTR (or $DAWDLE_APP)")
    return App()


def find_task(app: App, name: str) -> tasks.Task[Any, Any, Any]:
    """The task registered on `app` as `name`, or a UsageError listing the known ones."""
    # Tasks in the app's import_paths register when imported (Procrastinate leaves this untyped).
    app.perform_import_paths()  # type: ignore[no-untyped-call]
    task = app.tasks.get(name)
    if task is None:
        # Procrastinate's builtin task is left out: every App() renames that shared task
        # object once more ("builtin:builtin:..."), which would only confuse the list.
        own = (
            task_name
            for task_name, task in app.tasks.items()
            if getattr(task.func, "__module__", None) != "procrastinate.builtin_tasks"
        )
        known = ", ".join(sorted(set(own))) or "none"
        raise UsageError(f"no task named {name!r} on this app; known tasks: {known}")
    return task


# -- the commands ----------------------------------------------------------------------------


async def _require_current_schema(app: App) -> None:
    """Raise CommandError unless the schema is present and current."""
    status = await app.schema_manager.check_schema_async()
    if not status.present:
        raise CommandError("the database has no Procrastinate schema: run `dawdle schema --apply`")
    if status.missing:
        raise CommandError(
            f"the schema (version {status.version}) lacks {', '.join(status.missing)}: "
            "apply Procrastinate's migrations"
        )


def _cmd_worker(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle worker`: the coroutine function that runs the worker."""
    app = _app(args, required=True)
    given = {
        "queues": args.queues,
        "concurrency": args.concurrency,
        "name": args.name,
        "wait": args.wait,
        "delete_jobs": args.delete_jobs,
        "shutdown_graceful_timeout": args.shutdown_graceful_timeout,
    }
    # Only what was given: the rest comes from the app's worker_defaults.
    options = {key: value for key, value in given.items() if value is not None}

    async def run() -> int:
        """Open the app, check the schema, work until stopped."""
        async with app.open_async():
            await _require_current_schema(app)
            await app.run_worker_async(**options, install_signal_handlers=True)
        return 0

    return run


def _cmd_schema(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle schema --apply | --check`."""
    app = _app(args, required=False)

    async def run() -> int:
        """Apply or check the schema; 0 if it is current at the end."""
        async with app.open_async():
            before = await app.schema_manager.check_schema_async()
            if args.apply:
                await app.schema_manager.apply_schema_async()  # refuses an outdated schema
                after = await app.schema_manager.check_schema_async()
                state = "already current" if before.present else "applied"
                print(f"schema {state} (version {after.version})")
                return 0
        print(f"present: {'yes' if before.present else 'no'}")
        print(f"version: {before.version or '-'}")
        missing = ", ".join(before.missing) if before.present else "all of it"
        print(f"missing: {missing or 'none'}")
        return 0 if before.current else EXIT_FAILURE

    return run


def _cmd_defer(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle defer TASK_NAME`: the job's id on stdout."""
    app = _app(args, required=True)
    task = find_task(app, args.task_name)
    given = {
        "queue": args.queue,
        "lock": args.lock,
        "queueing_lock": args.queueing_lock,
        "priority": args.priority,
        "schedule_in": None if args.schedule_in is None else {"seconds": args.schedule_in},
    }
    options: Any = {key: value for key, value in given.items() if value is not None}

    async def run() -> int:
        """Defer the job and print its id."""
        async with app.open_async():
            job_id = await task.configure(**options).defer_async(**args.task_kwargs)
        print(job_id)
        return 0

    return run


def _cmd_healthcheck(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle healthcheck`: a report on stdout, a one-line reason on stderr if unhealthy."""
    app = _app(args, required=False)

    async def check() -> int:
        """Report on the database; raise if it cannot be reached or lacks the schema."""
        async with app.open_async():
            print("database: reachable")
            status = await app.schema_manager.check_schema_async()
            if not status.current:
                print(f"schema: {'outdated' if status.present else 'missing'}")
                await _require_current_schema(app)  # raises with the reason
            print(f"schema: current (version {status.version})")
            rows = await app.connector.execute_query_all_async(JOB_COUNTS_QUERY)
            counts = ", ".join(f"{row['status']} {row['count']}" for row in rows)
            print(f"jobs: {counts or 'none'}")
            row = await app.connector.execute_query_one_async(
                LIVE_WORKERS_QUERY, seconds=HEARTBEAT_FRESH_SECONDS
            )
            print(
                f"workers: {row['count']} with a heartbeat in the last {HEARTBEAT_FRESH_SECONDS} s"
            )
        print("healthy")
        return 0

    async def run() -> int:
        """`check()` within the timeout; any failure is one line and exit 1."""
        try:
            with anyio.fail_after(args.timeout):
                return await check()
        except TimeoutError:
            reason = f"no answer within {args.timeout:g} s"
        except (DawdleError, procrastinate_exceptions.ProcrastinateException) as exc:
            if args.verbose:
                traceback.print_exception(exc)
            reason = _one_line(exc)
        print(f"unhealthy: {reason}", file=sys.stderr)
        return EXIT_FAILURE

    return run


# -- errors and the entry point ----------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or `exc` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _one_line(exc: BaseException) -> str:
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


def _fail(parser: argparse.ArgumentParser, exc: UsageError, *, verbose: bool) -> NoReturn:
    """Report a usage error the way argparse does (usage line, message, exit 2)."""
    if verbose:
        traceback.print_exception(exc)
    parser.error(_one_line(exc))


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
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return EXIT_INTERRUPTED
        if not all(isinstance(leaf, expected) for leaf in leaves):
            raise
        if args.verbose:
            traceback.print_exception(exc)
        for leaf in leaves:
            print(f"dawdle {args.command}: error: {_one_line(leaf)}", file=sys.stderr)
        return EXIT_FAILURE
    return code
