"""A server of this module's own is restarted and stopped under an open connector.

Always an embedded server, even when DAWDLE_TEST_DSN names one: restarting a shared
server would disturb everything else that uses it.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from dawdle import App, PsycopgConnector
from dawdle._embedded import EmbeddedServer
from tests.durability.private_server import PrivateServer, pg_ctl, private_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    """A private PostgreSQL server that the tests may restart."""
    with private_server("dawdle-faults-") as server:
        yield server


@pytest.fixture
async def app(server: PrivateServer) -> AsyncIterator[App]:
    """An App whose connector may reconnect for up to 30 s."""
    app = App(connector=PsycopgConnector(conninfo=server.get_uri(), reconnect_timeout=30.0))
    async with app.open_async():
        yield app


async def count_backends(app: App) -> int:
    row = await app.connector.execute_query_one_async(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    return int(row["n"])


async def test_queries_succeed_after_a_server_restart(app: App, server: PrivateServer) -> None:
    """The pool notices that its connections died with the old server and makes new ones."""
    assert await count_backends(app) >= 1
    await anyio.to_thread.run_sync(pg_ctl, server, "restart")
    for _ in range(3):
        assert await count_backends(app) >= 1


async def test_a_query_waits_out_a_short_outage(app: App, server: PrivateServer) -> None:
    """While the server is down, a query keeps reconnecting with backoff and then succeeds."""
    await anyio.to_thread.run_sync(pg_ctl, server, "stop")
    result: list[int] = []
    trying = anyio.Event()

    async def query() -> None:
        trying.set()
        row = await app.connector.execute_query_one_async("SELECT 42 AS answer")
        result.append(row["answer"])

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(query)
            await trying.wait()
            await anyio.wait_all_tasks_blocked()
            assert result == []  # still waiting for the server
            # restart, not start: it reuses the options the server was started with.
            await anyio.to_thread.run_sync(pg_ctl, server, "restart")
    finally:
        server.ensure_postgres_running()
    assert result == [42]


async def test_listener_relistens_after_a_restart(app: App, server: PrivateServer) -> None:
    """The LISTEN connection comes back after a restart and says so through on_listening."""
    listens = [anyio.Event(), anyio.Event()]
    received = anyio.Event()

    async def on_listening() -> None:
        next(event for event in listens if not event.is_set()).set()

    async def on_notification(*, channel: str, payload: str) -> None:
        if payload == "after-restart":
            received.set()

    connector = app.connector
    assert isinstance(connector, PsycopgConnector)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                connector.listen_notify, on_notification, ["faults"], on_listening=on_listening
            )
        )
        await listens[0].wait()
        await anyio.to_thread.run_sync(pg_ctl, server, "restart")
        await listens[1].wait()
        await app.connector.execute_query_async("NOTIFY faults, 'after-restart'")
        await received.wait()
        tg.cancel_scope.cancel()


@pytest.fixture
def data_home() -> Iterator[Path]:
    """A new directory for XDG_DATA_HOME, deleted at the end.

    Not tmp_path: as root the server runs as a system user, which must be able to search
    every directory above its data, and pytest's are 0700.
    """
    base = Path(tempfile.mkdtemp(prefix="dawdle-xdg-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


async def test_app_without_connector_starts_an_embedded_server(
    monkeypatch: pytest.MonkeyPatch, data_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """dawdle.App() with nothing configured starts PostgreSQL in a per-user directory."""
    for name in ("DAWDLE_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE", "PGPORT", "PGUSER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    data_dir = data_home / "dawdle" / "pgdata"
    app = App()
    try:
        with caplog.at_level(logging.INFO, logger="dawdle.connector"):
            async with app.open_async():
                row = await app.connector.execute_query_one_async("SELECT 1 AS one")
        assert row == {"one": 1}
        assert (data_dir / "PG_VERSION").exists()
        assert f"embedded PostgreSQL server in {data_dir}" in caplog.text
    finally:
        # The server keeps running for the next process, as it should: stop it here.
        await anyio.to_thread.run_sync(EmbeddedServer(data_dir).stop)
