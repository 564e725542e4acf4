"""Forged notifications: a role with no rights on the queue can NOTIFY, and changes nothing.

Any role that can connect may `pg_notify` on Procrastinate's channels. Here one made for
the test, with no privilege on Procrastinate's tables, forges an abort of a running job and
floods the worker with malformed payloads: the job runs to success, the worker logs one
warning per kind of payload, and its listener keeps working (a later job is woken by its
NOTIFY, with polling set too long to find it in time). A callback that raises, or a
cancellation, ends the connector's listener without leaving psycopg's generator to the
garbage collector.
"""

from __future__ import annotations

import functools
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import psycopg
import pytest
from psycopg import conninfo, sql

from dawdle import App, PsycopgConnector
from dawdle._connector._connection import AnyioConnection
from tests.durability.worker.conftest import TRUNCATE
from tests.durability.worker.helpers import (
    abort_checks,
    job_states,
    listening,
    make_worker,
    running,
)

pytestmark = pytest.mark.anyio

CHANNEL = "procrastinate_any_queue_v1"
# Polling so slow that only a notification can wake the worker within the test's limits.
SLOW_POLLING = {"fetch_job_polling_interval": 60, "abort_job_polling_interval": 60}
MALFORMED = [
    "not json",
    "[]",
    '{"type": "abort_job_requested"}',
    '{"type": "abort_job_requested", "job_id": "1"}',
    '{"type": "drop_everything", "job_id": 1}',
    "[" * 7_000,  # nested deeper than the JSON parser goes (NOTIFY takes < 8,000 bytes)
]


@pytest.fixture
async def app(schema_dsn: str) -> AsyncIterator[App]:
    """A dawdle App on the module's database, emptied for the test."""
    app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


@pytest.fixture
async def forger(schema_dsn: str) -> AsyncIterator[AnyioConnection]:
    """A connection as a role made for the test: it may log in, and nothing more."""
    role = f"forger_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with psycopg.connect(schema_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    try:
        dsn = conninfo.make_conninfo(schema_dsn, user=role, password=password)
        async with await AnyioConnection.connect(dsn, autocommit=True) as conn:
            yield conn
    finally:
        with psycopg.connect(schema_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def forge(forger: AnyioConnection, payload: str) -> None:
    """pg_notify on Procrastinate's channel for all queues, as the unprivileged role."""
    await forger.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


async def test_forger_has_no_rights_on_the_queue(forger: AnyioConnection) -> None:
    """The role cannot read or change Procrastinate's jobs: only NOTIFY is open to it."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await forger.execute("SELECT id FROM procrastinate_jobs")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await forger.execute("UPDATE procrastinate_jobs SET abort_requested = true")
    await forge(forger, "{}")


async def test_forged_abort_leaves_the_job_running_to_success(
    app: App, forger: AnyioConnection
) -> None:
    """A forged abort_job_requested for a running job: checked, ignored; the job succeeds."""
    started = anyio.Event()
    release = anyio.Event()

    @app.task(name="victim")
    async def victim() -> None:
        started.set()
        await release.wait()

    job_id = await victim.defer_async()
    worker = make_worker(app, **SLOW_POLLING)
    with listening(app) as listened, abort_checks(app) as checked:
        async with running(worker):
            with anyio.fail_after(5):
                await started.wait()
                await listened.wait()
            await forge(forger, f'{{"type": "abort_job_requested", "job_id": {job_id}}}')
            with anyio.fail_after(5):
                await checked.wait()  # the worker asked the database, which said no
            release.set()
    assert await job_states(app) == {job_id: ("succeeded", 1)}


class CallbackError(Exception):
    """What a listener's callback raised (a forged payload made the old one raise)."""


async def listen_until(
    app: App, on_notification: Callable[..., Awaitable[None]], then: Callable[[], Awaitable[None]]
) -> None:
    """Run the connector's listen_notify; once LISTEN is in place, await `then()`."""
    listening = anyio.Event()

    async def on_listening() -> None:
        listening.set()

    connector = app.connector
    assert isinstance(connector, PsycopgConnector)
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            functools.partial(
                connector.listen_notify, on_notification, [CHANNEL], on_listening=on_listening
            )
        )
        await listening.wait()
        await then()


async def test_callback_that_raises_ends_the_listener_cleanly(
    app: App, forger: AnyioConnection
) -> None:
    """A callback's error ends listen_notify with it; the notifies generator closes in its task.

    Left to the garbage collector, psycopg's generator would release the connection's lock
    from another task ("not holding this lock"), which this suite's warnings-as-errors and
    the collection below would catch.
    """

    async def raise_it(*, channel: str, payload: str) -> None:
        raise CallbackError(payload)

    async def forge_one() -> None:
        await forge(forger, "boom")
        await anyio.sleep_forever()  # until the listener's error cancels the group

    with anyio.fail_after(5), pytest.RaisesGroup(pytest.RaisesExc(CallbackError, match="boom")):
        await listen_until(app, raise_it, forge_one)
    gc.collect()


async def test_cancelled_listener_ends_cleanly(app: App) -> None:
    """Cancelling listen_notify while it waits closes its generator and connection cleanly."""

    async def ignore(*, channel: str, payload: str) -> None: ...

    with anyio.fail_after(5), anyio.CancelScope() as scope:

        async def cancel() -> None:
            scope.cancel()
            await anyio.sleep_forever()

        await listen_until(app, ignore, cancel)
    assert scope.cancelled_caught
    gc.collect()


async def test_malformed_payloads_are_ignored_and_the_listener_keeps_working(
    app: App, forger: AnyioConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood of malformed payloads: one warning per kind, no restart, LISTEN still wakes."""
    caplog.set_level(logging.WARNING)
    ran = anyio.Event()

    @app.task(name="after_the_flood")
    async def after_the_flood() -> None:
        ran.set()

    worker = make_worker(app, **SLOW_POLLING)
    with listening(app) as listened:
        async with running(worker):
            with anyio.fail_after(5):
                await listened.wait()
            for _ in range(20):
                for payload in MALFORMED:
                    await forge(forger, payload)
            await after_the_flood.defer_async()
            with anyio.fail_after(5):
                await ran.wait()  # only its NOTIFY can wake the worker this soon
    problems = [
        record.problem  # type: ignore[attr-defined]
        for record in caplog.records
        if getattr(record, "action", None) == "malformed_notification"
    ]
    assert sorted(problems) == [
        "an unknown type",
        "no integer job_id",
        "not JSON",
        "not a JSON object",
    ]
    assert worker.stats.loop_restarts["listener"] == 0
    assert "restarting" not in caplog.text
    assert "holding this lock" not in caplog.text
    assert "you don't own" not in caplog.text
