"""A TCP proxy to PostgreSQL that tests can partition: it stops forwarding, sockets stay open.

`Proxy(dsn)` listens on 127.0.0.1 and relays each connection to the server of `dsn` (a Unix
socket directory or a TCP host). `blackhole()` holds every byte in both directions, and new
connections too, as a network that stopped delivering packets would: nobody sees an error
or a closed socket. `heal()` delivers what was held, in order (TCP retransmits after a
partition), and forwards again.

A connection ends by end-of-file passed on, never by cancelling a pending read: on asyncio,
cancelling a read of a Unix socket stream (the embedded server's) just as it becomes
readable makes anyio's reader callback fail with InvalidStateError. So stop the clients
first and wait for `closed()` before the proxy's task group ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import anyio.abc
from anyio.abc import SocketAttribute
from psycopg import conninfo


class Proxy:
    """Relays connections to one PostgreSQL server until cancelled; can be blackholed."""

    def __init__(self, dsn: str) -> None:
        params = conninfo.conninfo_to_dict(dsn)
        self.dsn = dsn
        self.host = str(params.get("host") or "/tmp")  # noqa: S108 (libpq's default socket dir)
        self.port = int(params.get("port") or 5432)
        self._flowing = anyio.Event()
        self._flowing.set()
        self._relays = 0
        self._no_relays = anyio.Event()

    def blackhole(self) -> None:
        """Stop forwarding: bytes are held, connections stay open, nobody is told."""
        if self._flowing.is_set():
            self._flowing = anyio.Event()

    def heal(self) -> None:
        """Deliver what was held and forward again."""
        self._flowing.set()

    async def closed(self) -> None:
        """Wait until every relayed connection has ended."""
        while self._relays:
            self._no_relays = anyio.Event()
            await self._no_relays.wait()

    def client_dsn(self, port: int) -> str:
        """`dsn` with its host and port replaced by the proxy's."""
        return conninfo.make_conninfo(self.dsn, host="127.0.0.1", port=port, sslmode="disable")

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        """Listen on 127.0.0.1; report the port through `task_status`; relay until cancelled."""
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            task_status.started(listener.extra(SocketAttribute.local_port))  # noqa: S610 (not Django)
            await listener.serve(self._relay)

    async def _upstream(self) -> anyio.abc.SocketStream:
        if self.host.startswith("/"):
            return await anyio.connect_unix(f"{self.host}/.s.PGSQL.{self.port}")
        return await anyio.connect_tcp(self.host, self.port)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        self._relays += 1
        try:
            await self._flowing.wait()  # a new connection gets no further than the partition
            upstream = await self._upstream()
            async with client, upstream:
                await self.forward(client, upstream)
        finally:
            self._relays -= 1
            if not self._relays:
                self._no_relays.set()

    async def forward(
        self, client: anyio.abc.SocketStream, upstream: anyio.abc.SocketStream
    ) -> None:
        """Relay one connection both ways until it ends (subclasses alter what goes through)."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._pump, client, upstream)
            tg.start_soon(self._pump, upstream, client)

    async def _pump(self, source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async for chunk in source:
                await self._flowing.wait()
                await sink.send(chunk)
        await pass_on_eof(sink)  # the other side then closes: the other pump ends


async def pass_on_eof(stream: anyio.abc.SocketStream) -> None:
    """Shut down `stream`'s sending side, unless its peer has gone already."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await stream.send_eof()


@contextlib.asynccontextmanager
async def tcp_proxy(dsn: str) -> AsyncIterator[tuple[Proxy, str]]:
    """A `Proxy` to `dsn`'s server, serving while the block runs; yields it and its DSN.

    Leaving the block waits (10 s at most) for the clients' connections to end first.
    """
    proxy = Proxy(dsn)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.serve)
        try:
            yield proxy, proxy.client_dsn(port)
        finally:
            proxy.heal()
            with anyio.move_on_after(10, shield=True):
                await proxy.closed()
            tg.cancel_scope.cancel()
