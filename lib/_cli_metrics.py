"""`dawdle worker --metrics-port N [--metrics-host H]`: serve Prometheus metrics while working.

Parsing the options, and the context that serves the metrics around the worker. The
`prometheus` extra is imported only when asked for, so the CLI runs without it.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

from dawdle._cli_errors import UsageError, shown

# The default --metrics-host: this machine only. Metrics name tasks and queues.
DEFAULT_METRICS_HOST: Final = "127.0.0.1"

HIGHEST_PORT: Final = 65535


def metrics_port(text: str) -> int:
    """A TCP port (1 to 65535) for argparse, or its error naming the value."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= HIGHEST_PORT:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {shown(text)}")
    return value


def metrics_host(text: str) -> str:
    """A host to listen on for argparse; a blank one (an unset variable?) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a host name or address, got {shown(text)}")
    return text


def add_metrics_options(worker: argparse.ArgumentParser) -> None:
    """Add --metrics-port and --metrics-host to the `worker` parser."""
    worker.add_argument(
        "--metrics-port",
        type=metrics_port,
        metavar="N",
        help="serve Prometheus metrics on http://HOST:N/metrics while the worker runs "
        "(needs: pip install 'dawdle[prometheus]')",
    )
    worker.add_argument(
        "--metrics-host",
        type=metrics_host,
        metavar="HOST",
        help=f"the address to serve metrics on (default: {DEFAULT_METRICS_HOST}, this machine "
        "only; 0.0.0.0 for every interface)",
    )


def metrics_serving(
    args: argparse.Namespace, connector: Any
) -> AbstractAsyncContextManager[dict[str, Any]] | None:
    """The context that serves metrics (None without --metrics-port), giving the worker's hooks.

    It yields the worker options that count its jobs: `hooks`. Raises UsageError if
    --metrics-host comes without --metrics-port, or if the extra is not installed.
    """
    if args.metrics_port is None:
        if args.metrics_host is not None:
            raise UsageError(f"--metrics-host {shown(args.metrics_host)} needs --metrics-port")
        return None
    try:
        from dawdle import PrometheusMetrics, serve_metrics  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            "--metrics-port needs prometheus_client: pip install 'dawdle[prometheus]'"
        ) from None
    host = DEFAULT_METRICS_HOST if args.metrics_host is None else args.metrics_host
    port: int = args.metrics_port

    @asynccontextmanager
    async def serving() -> AsyncIterator[dict[str, Any]]:
        metrics = PrometheusMetrics()
        async with serve_metrics(connector, metrics, port=port, host=host):
            yield {"hooks": [metrics]}

    return serving()
