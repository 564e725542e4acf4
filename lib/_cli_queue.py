"""`dawdle queue pause|resume|list`: stop and restart claims of a queue's jobs, fleet-wide.

A paused queue's jobs wait as 'todo'; no dawdle worker claims them until the queue is
resumed, which wakes the listening workers at once. Pausing a paused queue, or resuming
one that is not paused, is not an error: it says so and exits 0, so scripts may repeat it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dawdle._cli_app import app_from_args
from dawdle._cli_errors import UsageError
from dawdle._errors import ConfigurationError
from dawdle._queues import QueueState, check_queue_name, check_reason

# The `dawdle` command's own parser class, which the subcommands' parsers take on.
Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_queue_parser(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Register `dawdle queue` and its actions on the `dawdle` command's subparsers.

    `common` holds the options every command takes (--app, --backend, -v).
    """
    queue = commands.add_parser(
        "queue",
        help="pause, resume or list queues (a paused queue's jobs wait for its resume)",
        description="Pause a queue: no dawdle worker claims its jobs, which wait (running "
        "ones finish); resume it: workers claim them at once. Procrastinate's own workers "
        "ignore pauses. Needs `dawdle schema --apply`.",
    )
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    pause = actions.add_parser("pause", parents=[common], help="stop claims of a queue's jobs")
    pause.add_argument("name", metavar="NAME", help="the queue's name")
    pause.add_argument("--reason", help="why, shown by `dawdle queue list`")
    pause.set_defaults(run=cmd_queue, parser=pause)
    resume = actions.add_parser("resume", parents=[common], help="claim a queue's jobs again")
    resume.add_argument("name", metavar="NAME", help="the queue's name")
    resume.set_defaults(run=cmd_queue, parser=resume)
    listing = actions.add_parser(
        "list", parents=[common], help="each queue with jobs or a pause, and whether paused"
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON array of objects, for scripts"
    )
    listing.set_defaults(run=cmd_queue, parser=listing)


def printable(text: str) -> str:
    """`text` with control characters escaped, so that a reason or a name stays on its line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def describe_state(state: QueueState) -> str:
    """One line: 'mail  paused since 2026-01-02 03:04:05+00:00 by ops: deploy' or 'mail  active'."""
    name = printable(state.name)
    if state.paused_at is None:
        return f"{name}  active"
    since = state.paused_at.isoformat(sep=" ", timespec="seconds")
    line = f"{name}  paused since {since} by {printable(state.paused_by or '-')}"
    return f"{line}: {printable(state.reason)}" if state.reason else line


def cmd_queue(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle queue ACTION`."""
    action: str = args.action
    try:
        name = None if action == "list" else check_queue_name(args.name)
        reason = check_reason(args.reason) if action == "pause" else None
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    app = app_from_args(args, required=False)

    async def run() -> int:
        async with app.open_async():
            if name is None:
                states = await app.list_queue_states_async()
            elif action == "pause":
                paused = await app.pause_queue_async(name, reason=reason)
            else:
                resumed = await app.resume_queue_async(name)
        if name is None:
            if args.json:
                print(json.dumps([state.to_dict() for state in states]))
            else:
                for state in states:
                    print(describe_state(state))
                if not states:
                    print("no queues: no jobs and no pauses")
        elif action == "pause":
            print(f"paused queue {name!r}" if paused else f"queue {name!r} was paused already")
        else:
            print(f"resumed queue {name!r}" if resumed else f"queue {name!r} was not paused")
        return 0

    return run
