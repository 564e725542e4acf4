"""The dashboard's ASGI app in process, on an opened App over the module's database.

`client(read_only=..., token=...)` gives an httpx client driving the app through its ASGI
transport on the test's runtime; `db` is a connection to the emptied database, where
`tests.durability.made_jobs.make_job` walks jobs to a status.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from dawdle import App, PsycopgConnector
from dawdle._dashboard.app import dashboard
from tests.durability.made_jobs import emptied

BASE_URL = "http://testserver"


@pytest.fixture
def db(schema_dsn: str) -> Iterator[psycopg.Connection]:
    with emptied(schema_dsn) as conn:
        yield conn


def status_of(conn: psycopg.Connection, job_id: int) -> tuple[str, bool]:
    row = conn.execute(
        "SELECT status::text, abort_requested FROM procrastinate_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


@pytest.fixture
async def app(schema_dsn: str, db: psycopg.Connection) -> AsyncIterator[App]:
    app = App(connector=PsycopgConnector(conninfo=schema_dsn, max_size=4))
    async with app.open_async():
        yield app


Client = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(app: App) -> Client:
    @contextlib.asynccontextmanager
    async def open_client(**options: Any) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=dashboard(app, **options))
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, follow_redirects=True
        ) as http:
            yield http

    return open_client
