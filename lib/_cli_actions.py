"""`dawdle retry`, `dawdle cancel` and `dawdle prune`: the commands that change jobs.

Each prints one line saying what it did. A job that cannot be changed as asked (no such
job, or not in a status that allows it) is exit 1 with the reason; a bad value is exit 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from dawdle._cli_app import app_from_args
from dawdle._cli_errors import CommandError, UsageError, shown
from dawdle._cli_jobs import job_id, name
from dawdle._errors import ConfigurationError
from dawdle._retention import (
    FINISHED_STATUSES,
    check_statuses,
    format_duration,
    parse_duration,
    prune,
)
from dawdle._sql import GET_JOB, RETRY_JOBS

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)

RETRYABLE: Final = ("failed", "cancelled", "aborted")
# Jobs retried per statement by `retry --failed`.
RETRY_BATCH: Final = 500


def _duration(text: str) -> float:
    """Seconds from '7d', '12h', '30m', '45s', '2w', for argparse."""
    try:
        return parse_duration(text, where="--older-than")
    except ConfigurationError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like '7d', '12h', '30m', '45s' or '2w', got {shown(text)}"
        ) from None


def _statuses(text: str) -> tuple[str, ...]:
    """Finished statuses separated by commas, for argparse."""
    try:
        return check_statuses([part.strip() for part in text.split(",")], where="--status")
    except ConfigurationError:
        raise argparse.ArgumentTypeError(
            f"expected finished statuses separated by commas (some of "
            f"{','.join(FINISHED_STATUSES)}), got {shown(text)}"
        ) from None


def add_action_parsers(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Register `dawdle retry`, `cancel` and `prune` on the `dawdle` command's subparsers."""
    retry = commands.add_parser(
        "retry",
        parents=[common],
        help="put a failed, cancelled or aborted job (or every failed one) back, due now",
        description="Put a failed, cancelled or aborted job back in its queue, due now; with "
        "--failed, every failed job (of --task, of --queue). A failed job goes through "
        "Procrastinate's procrastinate_retry_job_v2 (its attempts + 1, as Procrastinate "
        "counts a manual retry).",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=job_id, metavar="ID", help="the job's id")
    which.add_argument("--failed", action="store_true", help="every failed job")
    retry.add_argument("--task", type=name("task name"), help="with --failed: of this task")
    retry.add_argument("--queue", type=name("queue name"), help="with --failed: of this queue")
    retry.set_defaults(run=cmd_retry, parser=retry)

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a waiting job; with --abort, also ask a running one's worker to stop it",
        description="Cancel a job waiting in its queue (it becomes 'cancelled'). With --abort, "
        "a running job's worker is asked to stop it (it becomes 'aborted' when it does).",
    )
    cancel.add_argument("id", type=job_id, metavar="ID", help="the job's id")
    cancel.add_argument("--abort", action="store_true", help="also abort the job if running")
    cancel.set_defaults(run=cmd_cancel, parser=cancel)

    prune_parser = commands.add_parser(
        "prune",
        parents=[common],
        help="delete finished jobs older than a duration (with their events and errors)",
        description="Delete jobs that finished (their last event) more than --older-than "
        "ago, with their events and stored errors, in small batches that never hold up "
        "the workers.",
    )
    prune_parser.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="e.g. 7d, 12h, 30m, 45s, 2w",
    )
    prune_parser.add_argument(
        "--status",
        type=_statuses,
        default=FINISHED_STATUSES,
        metavar="A,B",
        help=f"only these statuses (default: {','.join(FINISHED_STATUSES)})",
    )
    prune_parser.set_defaults(run=cmd_prune, parser=prune_parser)


async def _retry_batches(app: Any, **filters: Any) -> int:
    """Run RETRY_JOBS batch after batch until no job is left to pick; the count retried."""
    retried, after = 0, 0
    while True:
        row = await app.connector.execute_query_one_async(
            RETRY_JOBS, after=after, batch=RETRY_BATCH, **filters
        )
        if row["last_id"] is None:
            return retried
        retried += int(row["retried"])
        after = int(row["last_id"])


async def _why_not_retried(app: Any, job: int) -> str:
    """Why RETRY_JOBS left job `job` alone."""
    rows = await app.connector.execute_query_all_async(GET_JOB, id=job)
    if not rows:
        return f"no job {job}"
    row = rows[0]
    if row["status"] not in RETRYABLE:
        return f"job {job} is {row['status']}: only failed, cancelled or aborted jobs are retried"
    if row["queueing_lock"] is not None:
        return (
            f"job {job} was not retried: a waiting job holds its queueing lock "
            f"{row['queueing_lock']!r}"
        )
    return f"job {job} was not retried: another client is changing it; try again"


def cmd_retry(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle retry`."""
    if args.id is not None and (args.task or args.queue):
        raise UsageError("--task and --queue go with --failed, not with a job id")
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            if args.id is None:
                count = await _retry_batches(
                    app, statuses=["failed"], id=None, task=args.task, queue=args.queue
                )
                print(f"retried {count:,} failed job{'' if count == 1 else 's'}")
                return 0
            count = await _retry_batches(
                app, statuses=list(RETRYABLE), id=args.id, task=None, queue=None
            )
            if not count:
                raise CommandError(await _why_not_retried(app, args.id))
        print(f"retried job {args.id}: due now")
        return 0

    return run


def cmd_cancel(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle cancel`."""
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            done = await app.job_manager.cancel_job_by_id_async(args.id, abort=args.abort)
            rows = await app.connector.execute_query_all_async(GET_JOB, id=args.id)
        if not rows:
            raise CommandError(f"no job {args.id}")
        status = rows[0]["status"]
        if not done:
            if status == "doing":
                raise CommandError(f"job {args.id} is running: --abort asks its worker to stop it")
            raise CommandError(
                f"job {args.id} is {status}: only a waiting job (or, with --abort, a running "
                "one) can be cancelled"
            )
        if status == "doing":
            print(f"abort requested for job {args.id}: its worker stops it")
        else:
            print(f"cancelled job {args.id}")
        return 0

    return run


def cmd_prune(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle prune`."""
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            done = await prune(app.connector, statuses=args.status, older_than=args.older_than)
        count = 0 if done is None else done.deleted  # None only for an exclusive prune
        print(
            f"pruned {count:,} job{'' if count == 1 else 's'} ({', '.join(args.status)}) "
            f"finished more than {format_duration(args.older_than)} ago"
        )
        return 0

    return run
