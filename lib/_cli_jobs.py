"""`dawdle jobs` and `dawdle job ID`: the jobs, newest first, and one job's whole story.

One line per job for people, `--json` for scripts. `dawdle jobs` pages by id (`--before`,
printed on stderr when more may follow), so it stays quick on a table of millions.
`dawdle job` adds the events timeline and the errors dawdle stored for each failed run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import psycopg
from procrastinate import exceptions

from dawdle._cli_app import app_from_args
from dawdle._cli_errors import CommandError, redact, shown
from dawdle._cli_queue import printable
from dawdle._sql import GET_JOB, JOB_ERRORS, JOB_EVENTS, LIST_JOBS

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)

# Every status a job can have (Procrastinate's 'aborting' is unused since its 3.0).
STATUSES: Final = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 10_000
# PostgreSQL's bigint, the type of a job's id.
MAX_ID: Final = 2**63 - 1


def job_id(text: str) -> int:
    """A job id (an int from 1 to bigint's maximum) for argparse, or its error naming it."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"expected a job id (an integer >= 1), got {shown(text)}")
    return value


def name(what: str) -> Callable[[str], str]:
    """A parser of a queue or task name: non-blank, at most 128 characters (the column's)."""

    def parse(text: str) -> str:
        if not text.strip() or len(text) > 128:
            raise argparse.ArgumentTypeError(
                f"expected a {what} of 1 to 128 characters, got {shown(text)}"
            )
        return text

    return parse


def limit(text: str) -> int:
    """A number of rows, 1 to MAX_LIMIT, for argparse."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {MAX_LIMIT:,}, got {shown(text)}"
        )
    return value


def when(moment: datetime.datetime | None) -> str:
    """A timestamp to the second, in UTC, or '-'."""
    if moment is None:
        return "-"
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float | None) -> str:
    """'4.2s', '3m10s', '2h05m', '3d04h', or '-'."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{max(seconds, 0):.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with its timestamps in ISO 8601, for `--json`."""
    return {
        key: value.isoformat() if isinstance(value, datetime.datetime) else value
        for key, value in row.items()
    }


def add_jobs_parsers(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Register `dawdle jobs` and `dawdle job` on the `dawdle` command's subparsers."""
    jobs = commands.add_parser(
        "jobs",
        parents=[common],
        help="list jobs, newest first (one line each, or --json)",
        description="List jobs, newest first. With more to show, stderr says how to see the "
        "next page (--before ID).",
    )
    jobs.add_argument("--status", choices=STATUSES, help="only jobs in this status")
    jobs.add_argument("--queue", type=name("queue name"), help="only jobs of this queue")
    jobs.add_argument("--task", type=name("task name"), help="only jobs of this task")
    jobs.add_argument(
        "--limit",
        type=limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N jobs (default: {DEFAULT_LIMIT})",
    )
    jobs.add_argument("--before", type=job_id, metavar="ID", help="only jobs with a lower id")
    jobs.add_argument("--json", action="store_true", help="one JSON array of objects")
    jobs.set_defaults(run=cmd_jobs, parser=jobs)

    job = commands.add_parser(
        "job",
        parents=[common],
        help="show one job: arguments, status, attempts, events and stored errors",
        description="Show a job: its arguments, status, attempts, queue, task, lock, "
        "schedule, its events (Procrastinate's) and the errors dawdle stored of its runs.",
    )
    job.add_argument("id", type=job_id, metavar="ID", help="the job's id")
    job.add_argument("--tracebacks", action="store_true", help="print each error's traceback")
    job.add_argument("--json", action="store_true", help="one JSON object")
    job.set_defaults(run=cmd_job, parser=job)


def describe_jobs(rows: list[dict[str, Any]]) -> list[str]:
    """One line per job: id, status, queue, task, attempts, when it last changed; aligned."""
    queues = [printable(row["queue_name"]) for row in rows]
    tasks = [printable(row["task_name"]) for row in rows]
    ids = max((len(str(row["id"])) for row in rows), default=0)
    queue_width = max(map(len, queues), default=0)
    task_width = max(map(len, tasks), default=0)
    return [
        f"{row['id']:>{ids}}  {row['status']:<9}  {queue:<{queue_width}}  "
        f"{task:<{task_width}}  attempts {row['attempts']}  changed {when(row['updated_at'])}"
        for row, queue, task in zip(rows, queues, tasks, strict=True)
    ]


def cmd_jobs(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle jobs`."""
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            rows = await app.connector.execute_query_all_async(
                LIST_JOBS,
                status=args.status,
                queue=args.queue,
                task=args.task,
                before=args.before,
                limit=args.limit,
            )
        if args.json:
            print(json.dumps([jsonable(row) for row in rows]))
        else:
            for line in describe_jobs(rows):
                print(line)
            if not rows:
                print("no jobs")
        if len(rows) == args.limit:
            print(f"more may follow: --before {rows[-1]['id']}", file=sys.stderr)
        return 0

    return run


async def read_errors(app: Any, job: int) -> list[dict[str, Any]] | None:
    """The errors stored of the job's runs, passwords hidden; None without dawdle's table."""
    try:
        rows: list[dict[str, Any]] = await app.connector.execute_query_all_async(JOB_ERRORS, id=job)
    except exceptions.ConnectorException as exc:
        if isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
            return None
        raise
    # An exception's text may quote a connection string: its password is hidden here too.
    return [
        {**row, "message": redact(row["message"]), "traceback": redact(row["traceback"])}
        for row in rows
    ]


def cmd_job(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle job ID`."""
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            found = await app.connector.execute_query_all_async(GET_JOB, id=args.id)
            if not found:
                raise CommandError(f"no job {args.id}")
            row = found[0]
            events = await app.connector.execute_query_all_async(JOB_EVENTS, id=args.id)
            errors = await read_errors(app, args.id)
        if args.json:
            print(
                json.dumps(
                    {
                        **jsonable(row),
                        "events": [jsonable(event) for event in events],
                        "errors": None if errors is None else [jsonable(e) for e in errors],
                    }
                )
            )
            return 0
        for line in job_lines(row, events, errors, tracebacks=args.tracebacks):
            print(line)
        return 0

    return run


def job_lines(
    row: dict[str, Any],
    events: list[dict[str, Any]],
    errors: list[dict[str, Any]] | None,
    *,
    tracebacks: bool,
) -> list[str]:
    """`dawdle job`'s lines: the job, its events, its errors."""
    lines = [
        f"job {row['id']}: {printable(row['task_name'])} on queue "
        f"{printable(row['queue_name'])}, {row['status']}"
        + (" (abort requested)" if row["abort_requested"] else ""),
        f"  args: {printable(json.dumps(row['args']))}",
        f"  attempts {row['attempts']}, priority {row['priority']}, "
        f"lock {printable(row['lock'] or '-')}, "
        f"queueing lock {printable(row['queueing_lock'] or '-')}, "
        f"scheduled {when(row['scheduled_at'])}, worker {row['worker_id'] or '-'}",
        "  events:",
    ]
    lines += [f"    {when(event['at'])}  {event['type']}" for event in events]
    if not events:
        lines.append("    none")
    if errors is None:
        lines.append("  errors: not stored (dawdle schema --apply)")
        return lines
    lines.append("  errors:" if errors else "  errors: none")
    for error in errors:
        message = printable(error["message"].strip().splitlines()[0] if error["message"] else "")
        lines.append(
            f"    attempt {error['attempt']} at {when(error['failed_at'])}: "
            f"{printable(error['exception_type'])}: {message}"
        )
        if tracebacks:
            lines += [f"      {printable(line)}" for line in error["traceback"].splitlines()]
    return lines
