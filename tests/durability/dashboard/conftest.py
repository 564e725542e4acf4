"""The dashboard's ASGI app in process, on an opened App over the module's database.

`client(read_only=..., token=...)` gives an httpx client driving the app through its ASGI
transport on the test's runtime; `db` is a connection to the emptied database, and
`make_job` walks a job to a status with plain UPDATEs, so Procrastinate's triggers write
the events a real run leaves.
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

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events, dawdle_queue_pauses RESTART IDENTITY CASCADE"
)
PATHS = {
    "todo": [],
    "doing": ["doing"],
    "succeeded": ["doing", "succeeded"],
    "failed": ["doing", "failed"],
    "aborted": ["doing", "aborted"],
    "cancelled": ["cancelled"],
}
BASE_URL = "http://testserver"


@pytest.fixture
def db(schema_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        conn.execute(TRUNCATE)
        yield conn


def make_job(
    conn: psycopg.Connection,
    status: str,
    *,
    task: str = "send",
    queue: str = "mail",
    args: str = '{"n": 1}',
    worker_id: int | None = None,
) -> int:
    """A job inserted as 'todo' then moved to `status`; its id."""
    row = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES (%s, %s, %s) "
        "RETURNING id",
        (queue, task, args),
    ).fetchone()
    assert row is not None
    for step in PATHS[status]:
        conn.execute(
            "UPDATE procrastinate_jobs SET status = %s, worker_id = %s WHERE id = %s",
            (step, worker_id if step == "doing" else None, row[0]),
        )
    return int(row[0])


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
