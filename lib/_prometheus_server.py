"""`serve_metrics`: a tiny HTTP endpoint for Prometheus, in the worker's own event loop.

An anyio TCP listener answering `GET /metrics` with prometheus_client's text format: it runs
on asyncio and on Trio alike, stops with the task group that runs it (freeing its port), and
can await the database for the queue gauges, which a server thread could not do without a
portal back into the loop. One request per connection, then the connection is closed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
from anyio.abc import Listener, SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dawdle._errors import ConfigurationError
from dawdle._prometheus import PrometheusMetrics
from dawdle._prometheus_queues import DEFAULT_MAX_AGE, QueueGauges
from dawdle._queue_stats import Queries
from dawdle._validate import integer

logger = logging.getLogger("dawdle.prometheus")

DEFAULT_HOST: Final = "127.0.0.1"

# A request's head larger than this is refused: Prometheus sends a few hundred bytes.
MAX_HEAD_BYTES: Final = 8192

# A client that has not sent its request and read the answer by then is dropped.
REQUEST_TIMEOUT: Final = 10.0

HIGHEST_PORT: Final = 65535


class _BadRequestError(Exception):
    """The request could not be read (too long, cut short, not HTTP)."""


@asynccontextmanager
async def serve_metrics(
    connector: Queries,
    metrics: PrometheusMetrics,
    *,
    port: int,
    host: str = DEFAULT_HOST,
    queue_max_age: float = DEFAULT_MAX_AGE,
) -> AsyncIterator[int]:
    """Serve `metrics` and the queue gauges on http://host:port/metrics inside this block.

    Yields the port listened on (the one chosen by the system for `port=0`). The queue
    gauges are read through `connector` on a scrape, at most every `queue_max_age` seconds.
    Raises ConfigurationError if the address cannot be listened on (a port in use, a host
    that is not this machine's). Leaving the block stops the server and frees the port.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= HIGHEST_PORT:
        raise ConfigurationError(f"metrics port must be an int from 0 to 65535, got {port!r}")
    queues = QueueGauges(connector, max_age=queue_max_age)
    try:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        in_use = " (is another process, or another worker, using it?)"
        hint = in_use if "in use" in reason else ""
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {reason}{hint}") from None
    # anyio's typed extra attributes (ruff takes `.extra(` for Django's raw SQL).
    bound = integer("port", listener.extra(SocketAttribute.local_port), at_least=0)  # noqa: S610
    metrics.registry.register(queues)
    try:
        async with listener, anyio.create_task_group() as group:
            group.start_soon(_serve_forever, listener, _Handler(metrics, queues))
            logger.info(
                "serving metrics on http://%s:%d/metrics",
                host,
                bound,
                extra={"action": "metrics_serving", "port": bound},
            )
            yield bound
            group.cancel_scope.cancel()
    finally:
        metrics.registry.unregister(queues)


# After a failed accept (out of file descriptors...), wait this long before the next.
ACCEPT_RETRY: Final = 1.0


async def _serve_forever(listener: Listener[SocketStream], handler: _Handler) -> None:
    """Accept connections until cancelled; a failed accept is logged, never the worker's end."""
    while True:
        try:
            await listener.serve(handler.handle)
        except OSError as exc:
            logger.warning(
                "metrics endpoint could not accept a connection: %s",
                exc,
                extra={"action": "metrics_accept_failed"},
            )
            await anyio.sleep(ACCEPT_RETRY)


class _Handler:
    """Answers one HTTP request per connection."""

    def __init__(self, metrics: PrometheusMetrics, queues: QueueGauges) -> None:
        self._metrics = metrics
        self._queues = queues

    async def handle(self, stream: SocketStream) -> None:
        """Read the request, answer it, close; a client's failure never reaches the server."""
        async with stream:
            try:
                with anyio.move_on_after(REQUEST_TIMEOUT):
                    await stream.send(await self._answer(stream))
            except Exception as exc:  # noqa: BLE001 (a client that went away, or a bug: logged)
                logger.debug("metrics request failed: %r", exc, extra={"action": "metrics_error"})

    async def _answer(self, stream: SocketStream) -> bytes:
        """The whole response to the request on `stream`."""
        try:
            method, path = await _read_request(stream)
        except _BadRequestError as exc:
            return _response(400, "Bad Request", f"{exc}\n".encode())
        if path.split("?", 1)[0] != "/metrics":
            return _response(404, "Not Found", b"not found: metrics are at /metrics\n")
        if method not in {"GET", "HEAD"}:
            return _response(405, "Method Not Allowed", b"use GET\n", allow="GET, HEAD")
        await self._queues.refresh()
        body = generate_latest(self._metrics.registry)
        return _response(200, "OK", body, content_type=CONTENT_TYPE_LATEST, head=method == "HEAD")


async def _read_request(stream: SocketStream) -> tuple[str, str]:
    """The method and target of the request's first line; its headers are read and ignored."""
    reader = BufferedByteReceiveStream(stream)
    try:
        head = await reader.receive_until(b"\r\n\r\n", MAX_HEAD_BYTES)
    except anyio.DelimiterNotFound:
        raise _BadRequestError(f"request head longer than {MAX_HEAD_BYTES} bytes") from None
    except (anyio.IncompleteRead, anyio.EndOfStream):
        raise _BadRequestError("request cut short") from None
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise _BadRequestError("not an HTTP request")
    return parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")


def _response(
    status: int,
    reason: str,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
    allow: str | None = None,
) -> bytes:
    """An HTTP/1.1 response that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow is not None:
        lines.append(f"Allow: {allow}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (b"" if head else body)
