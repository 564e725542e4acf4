"""`dawdle embedded status|stop|path`: the embedded PostgreSQL server that dawdle starts.

The server keeps running after the process that started it exits, for the next one; these
commands say where it lives, whether it runs, and stop it. `status` exits 3 when no server
runs (as `pg_ctl status` does), so that scripts can test it.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio
import anyio.to_thread

EXIT_NOT_RUNNING: Final = 3

# The `dawdle` command's own parser class, which the subcommand's parser takes on.
Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_embedded_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    """Register `dawdle embedded` and its actions on the `dawdle` command's subparsers."""
    embedded = commands.add_parser(
        "embedded",
        help="show, stop or locate the embedded PostgreSQL server",
        description="The embedded PostgreSQL server that dawdle starts when no database is "
        "configured keeps running for the next dawdle process. It listens on no TCP address; "
        "its Unix socket is its owner's alone.",
    )
    embedded.add_argument(
        "action",
        choices=("status", "stop", "path"),
        help="status: whether it runs, its pid, data and socket directories, version (exit 3 "
        "if it does not run); stop: stop it (fast shutdown: open sessions end); path: print "
        "its data directory (remove it once stopped to start afresh)",
    )
    embedded.add_argument(
        "-v", "--verbose", action="count", default=0, help="tracebacks with errors"
    )
    embedded.set_defaults(run=cmd_embedded, parser=embedded, backend="asyncio", app=None)


def cmd_embedded(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that runs `dawdle embedded ACTION`."""
    # Imported here: the embedded server's modules are Unix-only.
    from dawdle._connector.embedded import embedded_data_dir  # noqa: PLC0415
    from dawdle._embedded import EmbeddedServer  # noqa: PLC0415

    server = EmbeddedServer(embedded_data_dir())
    action: str = args.action

    async def run() -> int:
        if action == "path":
            print(server.data_dir)
            return 0
        if action == "stop":
            pid = await anyio.to_thread.run_sync(server.stop)
            if pid is None:
                print(f"no embedded server runs in {server.data_dir}")
            else:
                print(f"stopped the embedded server in {server.data_dir} (pid {pid})")
            return 0
        status = await anyio.to_thread.run_sync(server.status)
        bundled = status.bundled_version or "none (install dawdle[embedded])"
        print(f"running: {'yes, pid ' + str(status.pid) if status.running else 'no'}")
        print(f"data directory: {status.data_dir}")
        print(f"socket directory: {status.socket_dir or '-'}")
        print(f"version: {status.data_version or 'no cluster yet'} (bundled binaries: {bundled})")
        return 0 if status.running else EXIT_NOT_RUNNING

    return run
