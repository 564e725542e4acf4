"""What each `dawdle` subcommand does, once its arguments are parsed.

Each `cmd_*` function checks what it can without the database (a UsageError, exit 2) and
returns the coroutine function that `main` runs on the chosen backend.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from procrastinate import exceptions as procrastinate_exceptions

from dawdle._cli_app import app_from_args, find_task
from dawdle._cli_errors import EXIT_FAILURE, CommandError, one_line
from dawdle._errors import DawdleError
from dawdle._schema import SchemaStatus, refuse_outdated

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


def require_current(status: SchemaStatus) -> None:
    """Raise CommandError if the schema is absent, SchemaOutdated if it is outdated."""
    if not status.present:
        raise CommandError("the database has no Procrastinate schema: run `dawdle schema --apply`")
    refuse_outdated(status)


def cmd_worker(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle worker`: the coroutine function that runs the worker."""
    app = app_from_args(args, required=True)
    given = {
        "queues": args.queues,
        "concurrency": args.concurrency,
        "name": args.name,
        "wait": args.wait,
        "delete_jobs": args.delete_jobs,
        "shutdown_graceful_timeout": args.shutdown_graceful_timeout,
        "unknown_tasks": args.unknown_tasks,
    }
    # Only what was given: the rest comes from the app's worker_defaults.
    options = {key: value for key, value in given.items() if value is not None}

    async def run() -> int:
        """Open the app, check the schema, work until stopped."""
        async with app.open_async():
            require_current(await app.schema_manager.check_schema_async())
            await app.run_worker_async(**options, install_signal_handlers=True)
        return 0

    return run


def cmd_schema(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle schema --apply | --check`."""
    app = app_from_args(args, required=False)

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


def cmd_defer(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle defer TASK_NAME`: the job's id on stdout."""
    app = app_from_args(args, required=True)
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


def cmd_healthcheck(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle healthcheck`: a report on stdout, a one-line reason on stderr if unhealthy."""
    app = app_from_args(args, required=False)

    async def check() -> int:
        """Report on the database; raise if it cannot be reached or lacks the schema."""
        async with app.open_async():
            print("database: reachable")
            status = await app.schema_manager.check_schema_async()
            if not status.current:
                print(f"schema: {'outdated' if status.present else 'missing'}")
                require_current(status)  # raises with the reason
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
            reason = one_line(exc)
        print(f"unhealthy: {reason}", file=sys.stderr)
        return EXIT_FAILURE

    return run
