"""The worker's behaviour suite runs each scenario on connector x runtime.

`app` is parametrised like anyio's backends: `memory` (dawdle's InMemoryConnector, what
users test with) and `postgres` (PsycopgConnector on the module's database, emptied for the
test). `anyio_backend` (asyncio, trio; real clocks) comes from tests/durability/conftest.py.
A scenario that needs a real server takes `@postgres_only(reason)` from `helpers`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from dawdle import App, InMemoryConnector, PsycopgConnector
from tests.durability.worker.helpers import dawdle_table_dropped

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events RESTART IDENTITY CASCADE"
)


@pytest.fixture(params=["memory", "postgres"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[App]:
    """A dawdle App, open, with no jobs and no workers: in memory, or on PostgreSQL."""
    if request.param == "memory":
        app = App(connector=InMemoryConnector())
        async with app.open_async():
            yield app
        return
    schema_dsn: str = request.getfixturevalue("schema_dsn")
    app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


@pytest.fixture
async def admin(schema_dsn: str) -> AsyncIterator[App]:
    """A second App on its own small pool, for faults done to the worker's connections."""
    admin = App(connector=PsycopgConnector(conninfo=schema_dsn, max_size=2))
    async with admin.open_async():
        yield admin


@pytest.fixture
def without_pauses_table(app: App, schema_dsn: str) -> Iterator[None]:
    """The database as dawdle schema 1 left it: no dawdle_queue_pauses, for one test."""
    with dawdle_table_dropped(schema_dsn, "dawdle_queue_pauses"):
        yield
