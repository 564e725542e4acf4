"""`dawdle queues` and `dawdle workers`: the state of each queue and of each worker.

One line per queue or worker for people, `--json` for scripts. Jobs finished per minute
come from Procrastinate's events of the last `RATE_WINDOW` seconds (jobs deleted when done,
`delete_jobs`, leave no events and are not counted).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from dawdle._cli_app import app_from_args
from dawdle._cli_jobs import age, jsonable
from dawdle._cli_queue import printable
from dawdle._queue_stats import read_failed, read_queue_stats, shown_counts
from dawdle._sql import FINISHED_RECENTLY, LIST_WORKERS

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)

RATE_WINDOW: Final = 300.0


def add_fleet_parsers(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Register `dawdle queues` and `dawdle workers` on the `dawdle` command's subparsers."""
    queues = commands.add_parser(
        "queues",
        parents=[common],
        help="each queue: waiting, running and failed jobs, oldest ready age, jobs per minute",
        description="Each queue with waiting, running or failed jobs, or jobs finished in the "
        f"last {RATE_WINDOW / 60:g} minutes: the counts, how long its oldest ready job has "
        "waited, and the runs ended per minute over those minutes.",
    )
    queues.add_argument("--json", action="store_true", help="one JSON array of objects")
    queues.set_defaults(run=cmd_queues, parser=queues)
    workers = commands.add_parser(
        "workers",
        parents=[common],
        help="each registered worker: its heartbeat's age and its running jobs",
    )
    workers.add_argument("--json", action="store_true", help="one JSON array of objects")
    workers.set_defaults(run=cmd_workers, parser=workers)


async def queue_stats(app: Any) -> list[dict[str, Any]]:
    """Per queue: todo, doing, failed, oldest_ready_age (s) and finished_per_minute."""
    active = await read_queue_stats(app.connector)
    failed = await read_failed(app.connector)
    finished = await app.connector.execute_query_all_async(FINISHED_RECENTLY, window=RATE_WINDOW)
    rates = {row["queue_name"]: round(row["finished"] / (RATE_WINDOW / 60), 1) for row in finished}
    return [
        {
            "queue": queue,
            **shown_counts(active.get(queue), failed.get(queue, 0)),
            "finished_per_minute": rates.get(queue, 0.0),
        }
        for queue in sorted(active.keys() | failed.keys() | rates.keys())
    ]


def cmd_queues(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle queues`."""
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            stats = await queue_stats(app)
        if args.json:
            print(json.dumps(stats))
            return 0
        for queue in stats:
            print(
                f"{printable(queue['queue'])}  todo {queue['todo']}  doing {queue['doing']}  "
                f"failed {queue['failed']}  oldest ready {age(queue['oldest_ready_age'])}  "
                f"finished/min {queue['finished_per_minute']:g}"
            )
        if not stats:
            print("no queues: no waiting, running, failed or recently finished jobs")
        return 0

    return run


def cmd_workers(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle workers`."""
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            rows = await app.connector.execute_query_all_async(LIST_WORKERS)
        if args.json:
            print(json.dumps([jsonable(row) for row in rows]))
            return 0
        for row in rows:
            print(
                f"worker {row['id']}  heartbeat {age(row['heartbeat_age'])} ago  "
                f"running {row['running']}"
            )
        if not rows:
            print("no workers registered")
        return 0

    return run
