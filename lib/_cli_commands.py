"""What each `dawdle` subcommand does, once its arguments are parsed.

Each `cmd_*` function checks what it can without the database (a UsageError, exit 2) and
returns the coroutine function that `main` runs on the chosen backend.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio

from dawdle._cli_app import app_from_args, find_task
from dawdle._cli_errors import (
    EXIT_FAILURE,
    CommandError,
    UsageError,
    describe,
    is_bad_input,
    print_traceback,
)
from dawdle._cli_metrics import metrics_serving
from dawdle._dawdle_schema import WORKER_TASKS_TABLE
from dawdle._errors import leaves
from dawdle._schema import SchemaStatus, refuse_outdated
from dawdle._worker.state import abandoned_threads

if TYPE_CHECKING:
    import procrastinate

# `dawdle worker --max-recoveries none`: no limit (max_recoveries=None).
NO_LIMIT: Final = "none"

# A worker whose heartbeat is older than this is not counted as alive by `healthcheck`.
HEARTBEAT_FRESH_SECONDS: Final = 30

JOB_COUNTS_QUERY: Final = """
SELECT status::text AS status, count(*) AS count
  FROM procrastinate_jobs
 GROUP BY status
 ORDER BY status
"""

# The default of `defer --unknown`: dawdle's name (as DAWDLE_APP), then Procrastinate's.
DEFER_UNKNOWN_VARIABLES: Final = ("DAWDLE_DEFER_UNKNOWN", "PROCRASTINATE_DEFER_UNKNOWN")

LIVE_WORKERS_QUERY: Final = """
SELECT count(*) AS count
  FROM procrastinate_workers
 WHERE last_heartbeat > now() - make_interval(secs => %(seconds)s)
"""

# Ready jobs whose task no live worker published, by task name: how many, and how long ago
# the oldest was deferred (its 'deferred' event; NULL when events were deleted or disabled).
UNKNOWN_TASKS_QUERY: Final = """
WITH known AS (
    SELECT DISTINCT unnest(published.task_names) AS task_name
      FROM dawdle_worker_tasks AS published
      JOIN procrastinate_workers AS worker ON worker.id = published.worker_id
     WHERE worker.last_heartbeat > now() - make_interval(secs => %(seconds)s)
)
SELECT job.task_name,
       count(*) AS jobs,
       extract(epoch FROM now() - min(deferred.at))::float AS oldest_seconds
  FROM procrastinate_jobs AS job
  LEFT JOIN LATERAL (
       SELECT min(event.at) AS at
         FROM procrastinate_events AS event
        WHERE event.job_id = job.id AND event.type = 'deferred'
  ) AS deferred ON true
 WHERE job.status = 'todo'
   AND (job.scheduled_at IS NULL OR job.scheduled_at <= now())
   AND NOT EXISTS (SELECT 1 FROM known WHERE known.task_name = job.task_name)
 GROUP BY job.task_name
 ORDER BY job.task_name
"""

# Live workers without published tasks: Procrastinate's, or dawdle's that could not publish.
UNPUBLISHED_WORKERS_QUERY: Final = """
SELECT count(*) AS count
  FROM procrastinate_workers AS worker
 WHERE worker.last_heartbeat > now() - make_interval(secs => %(seconds)s)
   AND NOT EXISTS (SELECT 1 FROM dawdle_worker_tasks AS published
                    WHERE published.worker_id = worker.id)
"""


def describe_age(seconds: float | None) -> str:
    """A job's age for people: '45 s', '12 min', '3 h 5 min', '2 d 4 h'; None is unknown."""
    if seconds is None:
        return "age unknown (no deferred event)"
    whole = max(0, int(seconds))
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if days:
        text = f"{days} d {hours % 24} h"
    elif hours:
        text = f"{hours} h {minutes % 60} min"
    elif minutes:
        text = f"{minutes} min"
    else:
        text = f"{whole} s"
    return f"oldest deferred {text} ago"


def plural(count: int, noun: str) -> str:
    """'1 job', '2 jobs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def require_current(status: SchemaStatus) -> None:
    """Raise CommandError if the schema is absent, SchemaOutdated if it is outdated."""
    if not status.present:
        raise CommandError("the database has no Procrastinate schema: run `dawdle schema --apply`")
    refuse_outdated(status)


async def report_unknown_tasks(
    app: procrastinate.App, status: SchemaStatus, *, strict: bool
) -> None:
    """Report ready jobs no live worker knows: warn on stderr, or raise if strict and certain.

    Certain means every live worker published its tasks; without dawdle's table the check
    cannot run, which `strict` refuses too.
    """
    if WORKER_TASKS_TABLE in status.dawdle_missing:
        missing = f"the database has no {WORKER_TASKS_TABLE} table: run `dawdle schema --apply`"
        print(f"unknown tasks: not checked: {missing}")
        if strict:
            raise CommandError(f"unknown tasks not checked: {missing}")
        return
    rows = await app.connector.execute_query_all_async(
        UNKNOWN_TASKS_QUERY, seconds=HEARTBEAT_FRESH_SECONDS
    )
    if not rows:
        print("unknown tasks: none (every ready job's task is known to a live worker)")
        return
    row = await app.connector.execute_query_one_async(
        UNPUBLISHED_WORKERS_QUERY, seconds=HEARTBEAT_FRESH_SECONDS
    )
    unpublished = int(row["count"])
    jobs = sum(int(row["jobs"]) for row in rows)
    print(f"unknown tasks: {plural(jobs, 'ready job')} of tasks no live worker published")
    for row in rows:
        age = describe_age(row["oldest_seconds"])
        print(f"  {row['task_name']}: {plural(int(row['jobs']), 'job')}, {age}")
    names = ", ".join(row["task_name"] for row in rows)
    if unpublished:
        # They may run these jobs: a warning, never a certainty, so `strict` lets it pass.
        if unpublished == 1:
            silent, may = "1 live worker did not publish its tasks (a Procrastinate worker?)", "it"
        else:
            silent = (
                f"{unpublished} live workers did not publish their tasks (Procrastinate workers?)"
            )
            may = "they"
        print(f"  {silent}: {may} may know them")
        warning = f"{plural(jobs, 'ready job')} of tasks no live worker published: {names}; "
        warning += silent
    else:
        warning = f"{plural(jobs, 'ready job')} of tasks no live worker knows: {names}"
        if strict:
            raise CommandError(warning)
    print(f"warning: {warning}", file=sys.stderr)


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
    if args.max_recoveries is not None:
        options["max_recoveries"] = None if args.max_recoveries == NO_LIMIT else args.max_recoveries

    serving = metrics_serving(args, app.connector)

    async def run() -> int:
        """Open the app, check the schema, work until stopped (serving metrics if asked)."""
        async with app.open_async():
            require_current(await app.schema_manager.check_schema_async())
            if serving is None:
                await app.run_worker_async(**options, install_signal_handlers=True)
            else:
                async with serving as metrics_options:
                    await app.run_worker_async(
                        **options, **metrics_options, install_signal_handlers=True
                    )
        return exit_despite_abandoned_threads()

    return run


def exit_despite_abandoned_threads() -> int:
    """0, or EXIT_FAILURE if sync jobs still run in threads the worker abandoned at shutdown.

    Python's exit waits for every thread that is not a daemon thread. trio's worker threads
    are daemon threads, but anyio's on asyncio are not (a thread inherits the flag of the
    thread that starts it: the main one): after an abandoned sync job that never returns,
    the process would never exit. The worker has written every outcome, logged each
    abandoned job and left its row to expire; so flush the logs and leave at once. atexit
    handlers do not run then: there is no public way to let Python exit without that thread.
    """
    threads = abandoned_threads()
    if not threads:
        return 0
    if any(not thread.daemon for thread in threads):
        logging.getLogger("dawdle.worker").error(
            "exiting now: %d abandoned sync jobs still run in threads the process cannot wait for",
            len(threads),
            extra={"action": "exit_abandoning_threads"},
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILURE)
    return EXIT_FAILURE


def cmd_schema(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle schema --apply | --check`."""
    app = app_from_args(args, required=False)

    async def run() -> int:
        """Apply or check the schema and dawdle's tables; 0 if all is there at the end."""
        async with app.open_async():
            if args.apply:
                # Refuses an outdated schema; concurrent applies take turns, and each says
                # only what it created itself.
                applied = await app.schema_manager.apply_async()
                after = await app.schema_manager.check_schema_async()
                state = "applied" if applied.procrastinate else "already current"
                tables = ", ".join(applied.dawdle_tables)
                created = f"created {tables}" if tables else "already there"
                print(f"schema {state} (version {after.version}); dawdle tables: {created}")
                return 0
            before = await app.schema_manager.check_schema_async()
        print(f"present: {'yes' if before.present else 'no'}")
        print(f"version: {before.version or '-'}")
        missing = ", ".join(before.missing) if before.present else "all of it"
        print(f"missing: {missing or 'none'}")
        print(f"dawdle tables missing: {', '.join(before.dawdle_missing) or 'none'}")
        return 0 if before.complete else EXIT_FAILURE

    return run


def env_bool(variable: str, value: str) -> bool:
    """A yes/no environment variable read as Procrastinate reads it: by its first letter."""
    first = value.lower()[0]
    if first in "1yt":
        return True
    if first in "0nf":
        return False
    raise UsageError(f"${variable}={value!r}: expected 1/y/t (yes) or 0/n/f (no)")


def allow_unknown(*, flag: bool | None) -> bool:
    """--unknown/--no-unknown if given, else the first non-empty DEFER_UNKNOWN variable."""
    if flag is not None:
        return flag
    for variable in DEFER_UNKNOWN_VARIABLES:
        value = os.environ.get(variable, "")
        if value:  # empty means unset, as in Procrastinate
            return env_bool(variable, value)
    return False


def cmd_defer(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle defer TASK_NAME`: the job's id on stdout."""
    unknown = allow_unknown(flag=args.unknown)
    # A producer deferring by name needs no app of its own: the default database will do.
    app = app_from_args(args, required=not unknown)
    given = {
        "queue": args.queue,
        "lock": args.lock,
        "queueing_lock": args.queueing_lock,
        "priority": args.priority,
        "schedule_in": None if args.schedule_in is None else {"seconds": args.schedule_in},
    }
    options: Any = {key: value for key, value in given.items() if value is not None}
    if unknown:
        # Procrastinate's own path: the registered task if there is one, else the bare name.
        deferrer = app.configure_task(args.task_name, allow_unknown=True, **options)
    else:
        deferrer = find_task(app, args.task_name).configure(**options)

    async def run() -> int:
        """Defer the job and print its id."""
        async with app.open_async():
            job_id = await deferrer.defer_async(**args.task_kwargs)
        print(job_id)
        return 0

    return run


def cmd_healthcheck(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """`dawdle healthcheck`: a report on stdout, a one-line reason on stderr if unhealthy.

    Ready jobs of tasks that no live worker knows are a warning on stderr, and healthy: an
    orchestrator would restart workers that work, and no restart teaches them a task. With
    `--strict` they are unhealthy, when certain (every live worker published its tasks),
    and so is a database where they cannot be checked (no dawdle_worker_tasks).
    """
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
            await report_unknown_tasks(app, status, strict=args.strict)
        print("healthy")
        return 0

    async def run() -> int:
        """`check()` within the timeout; a failure is one line, exit 1 (bad input: 2)."""
        try:
            with anyio.fail_after(args.timeout):
                return await check()
        except TimeoutError:
            reason = f"no answer within {args.timeout:g} s"
        except Exception as exc:  # any failure is one line; -v for the traceback
            failures = leaves(exc)
            if all(is_bad_input(failure) for failure in failures):
                raise  # exit 2 as for every command: the configuration, not the database
            if args.verbose:
                print_traceback(exc)
            verbose = bool(args.verbose)
            reason = "; ".join(describe(failure, verbose=verbose) for failure in failures)
        print(f"unhealthy: {reason}", file=sys.stderr)
        return EXIT_FAILURE

    return run
