"""`dawdle dashboard`: serve the web dashboard over the jobs database, on asyncio or Trio.

It listens on 127.0.0.1 unless told otherwise; on any other address it refuses to start
without a token (`--token` or `DAWDLE_DASHBOARD_TOKEN`), which every request must then
carry. Hypercorn serves it with the running backend's own server (`hypercorn.trio` or
`hypercorn.asyncio`); SIGINT or SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import anyio
import sniffio

from dawdle._cli_app import app_from_args
from dawdle._cli_errors import CommandError, UsageError
from dawdle._errors import leaves

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)

TOKEN_VARIABLE: Final = "DAWDLE_DASHBOARD_TOKEN"  # noqa: S105 (a variable's name)
LOOPBACK_NAMES: Final = frozenset({"localhost"})


def add_dashboard_parser(commands: argparse._SubParsersAction[Parser], common: Parser) -> None:
    """Register `dawdle dashboard` on the `dawdle` command's subparsers."""
    dashboard = commands.add_parser(
        "dashboard",
        parents=[common],
        help="serve the web dashboard (extra dawdle[dashboard])",
        description="Serve a web dashboard over the jobs database: queues, jobs, workers; "
        "retry, cancel, abort jobs, pause and resume queues. Listens on 127.0.0.1 unless "
        f"--host says otherwise, which then needs a token (--token or ${TOKEN_VARIABLE}).",
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"
    )
    dashboard.add_argument(
        "--port", type=_port, default=8000, help="the port to listen on (default: 8000)"
    )
    dashboard.add_argument(
        "--read-only",
        action="store_true",
        help="show, never change: no retry, cancel, abort, pause or resume",
    )
    dashboard.add_argument(
        "--token",
        default=None,
        help=f"the token every request must carry (default: ${TOKEN_VARIABLE}; the variable "
        "keeps it out of the process list)",
    )
    dashboard.set_defaults(run=cmd_dashboard, parser=dashboard)


def _port(text: str) -> int:
    """A TCP port (1 to 65535) for argparse, or its error naming the value."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r:.40}")
    return int(text)


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses: only this machine can connect."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


def _token(args: argparse.Namespace) -> str | None:
    """The token from --token or the environment; refused if blank; required off loopback."""
    token: str | None = args.token if args.token is not None else os.environ.get(TOKEN_VARIABLE)
    if token is not None and not token.strip():
        raise UsageError(f"the dashboard's token is blank (--token or ${TOKEN_VARIABLE})")
    if token is None and not is_loopback(args.host):
        raise UsageError(
            f"--host {args.host!r} is reachable from other machines: give a token with "
            f"${TOKEN_VARIABLE} (or --token), or listen on 127.0.0.1"
        )
    return token


def _check_address(host: str, port: int) -> None:
    """Raise CommandError unless this machine can listen on `host`:`port` (as hypercorn will).

    Checked before the server starts: hypercorn's own failure to bind leaves its socket
    unclosed, and says less.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, protocol, _, address in addresses:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CommandError(f"cannot listen on {host}:{port}: {reason}") from None


def _imports() -> tuple[Any, Any]:
    """The dashboard's app factory and hypercorn's Config, or a UsageError naming the extra."""
    try:
        from hypercorn.config import Config  # noqa: PLC0415 (the extra is optional)

        from dawdle._dashboard.app import dashboard  # noqa: PLC0415
    except ImportError as exc:
        raise UsageError(
            f"`dawdle dashboard` needs the dashboard extra ({exc.name or exc} is missing): "
            "pip install 'dawdle[dashboard]'"
        ) from None
    return dashboard, Config


def cmd_dashboard(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    """The coroutine function that serves the dashboard until SIGINT or SIGTERM."""
    token = _token(args)
    dashboard, config_class = _imports()
    app = app_from_args(args, required=False)
    _check_address(args.host.strip("[]"), args.port)
    config = config_class()
    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    config.bind = [f"{host}:{args.port}"]
    config.accesslog = None
    config.errorlog = None  # failures reach our logging; hypercorn's lines are noise here

    async def stopped() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    async def run() -> int:
        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve  # noqa: PLC0415 (the backend's own server)
        else:
            from hypercorn.asyncio import serve  # type: ignore[assignment]  # noqa: PLC0415
        async with app.open_async():
            asgi = dashboard(app, read_only=args.read_only, token=token)
            mode = " (read-only)" if args.read_only else ""
            print(
                f"dawdle dashboard: starting on http://{host}:{args.port}/{mode}",
                file=sys.stderr,
                flush=True,
            )
            try:
                await serve(asgi, config, shutdown_trigger=stopped)
            except Exception as exc:
                # The address is taken, or not one of this machine's (in a group on Trio).
                failures = leaves(exc)
                if not all(isinstance(leaf, OSError) for leaf in failures):
                    raise
                reason = "; ".join(
                    str(getattr(leaf, "strerror", None) or leaf) for leaf in failures
                )
                raise CommandError(f"cannot listen on {host}:{args.port}: {reason}") from None
        return 0

    return run
