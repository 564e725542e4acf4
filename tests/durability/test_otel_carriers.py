"""OpenTelemetryHooks on PostgreSQL: the defer statements store the carriers, claims read them.

The run side is driven with the hooks' events (as the worker emits them) after a real
claim by the worker's store, whose trace contexts the events carry;
tests/durability/worker/test_otel.py has the whole path through a worker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
import psycopg
import pytest
from opentelemetry.trace import SpanContext, StatusCode
from procrastinate import exceptions

from dawdle import App, Outcome, PsycopgConnector
from dawdle._hooks import JobFinished, JobStarted
from dawdle._worker.store import JobStore
from tests.durability.worker.conftest import TRUNCATE
from tests.durability.worker.helpers import dawdle_table_dropped
from tests.otel_support import Telemetry, telemetry

pytestmark = pytest.mark.anyio


@pytest.fixture
def otel() -> Telemetry:
    return telemetry()


@pytest.fixture
async def app(schema_dsn: str, otel: Telemetry) -> AsyncIterator[App]:
    app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    # Until App(hooks=...) lands, the defer path reads the app's `hooks` attribute.
    app.hooks = [otel.hooks]  # type: ignore[attr-defined]
    app.task(name="work", queue="mail")(lambda n: None)
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


@pytest.fixture
def missing_table_warnings(caplog: pytest.LogCaptureFixture) -> Callable[[], int]:
    """How many times dawdle.otel has warned so far that `dawdle_job_traces` is missing."""
    caplog.set_level(logging.WARNING, "dawdle.otel")
    return lambda: sum(getattr(r, "action", "") == "job_traces_missing" for r in caplog.records)


def ids(context: SpanContext) -> tuple[int, int]:
    return (context.trace_id, context.span_id)


def stored(schema_dsn: str) -> dict[int, tuple[int, int]]:
    """Each job's stored carrier, as (trace id, span id)."""
    with psycopg.connect(schema_dsn) as conn:
        rows = conn.execute("SELECT job_id, traceparent FROM dawdle_job_traces").fetchall()
    return {job_id: (int(tp[3:35], 16), int(tp[36:52], 16)) for job_id, tp in rows}


async def claim_and_run(app: App, otel: Telemetry, outcome: Outcome = Outcome.SUCCEEDED) -> None:
    store = JobStore(app)
    worker_id = await store.register()
    claimed = await store.claim(
        queues=None, task_names=["work"], limit=10, worker_id=worker_id, trace_contexts=True
    )
    for one in claimed:
        job = one.job
        otel.hooks.job_started(
            JobStarted(job, attempt=1, queue_time=0.0, trace_context=one.trace_context)
        )
        error = ValueError("no") if outcome is Outcome.FAILED else None
        otel.hooks.job_finished(JobFinished(job, outcome, 0.1, 1, error))


def sent_by_job(otel: Telemetry) -> dict[int, tuple[int, int]]:
    return {
        int(span.attributes["messaging.message.id"]): ids(span.get_span_context())  # type: ignore[index]
        for span in otel.finished("send")
        if "messaging.message.id" in (span.attributes or {})
    }


def links_by_job(otel: Telemetry) -> dict[int, list[tuple[int, int]]]:
    return {
        int(span.attributes["messaging.message.id"]): [ids(link.context) for link in span.links]  # type: ignore[index]
        for span in otel.finished("process")
    }


async def test_defer_and_batch_defer_store_each_jobs_span_context(
    app: App, otel: Telemetry, schema_dsn: str
) -> None:
    """The insert writes each job's carrier: its own defer span's context."""
    await app.tasks["work"].defer_async(n=0)
    await app.tasks["work"].batch_defer_async({"n": 1}, {"n": 2})
    sent = sent_by_job(otel)
    assert len(sent) == 3
    assert stored(schema_dsn) == sent


async def test_a_claimed_jobs_run_span_links_to_its_defer_span(app: App, otel: Telemetry) -> None:
    """The claim's read of the carriers gives each run span a link to its defer's span."""
    await app.tasks["work"].batch_defer_async({"n": 1}, {"n": 2})
    await claim_and_run(app, otel, Outcome.FAILED)
    sent = sent_by_job(otel)
    assert links_by_job(otel) == {job_id: [context] for job_id, context in sent.items()}
    assert {span.status.status_code for span in otel.finished("process")} == {StatusCode.ERROR}


async def test_a_sync_defer_stores_its_carrier(app: App, otel: Telemetry, schema_dsn: str) -> None:
    """`defer()` (Procrastinate's sync connector) writes the carrier the same way."""
    job_id = await anyio.to_thread.run_sync(lambda: app.tasks["work"].defer(n=1))
    assert stored(schema_dsn) == sent_by_job(otel)
    assert list(stored(schema_dsn)) == [job_id]


async def test_a_periodic_defer_stores_its_carrier_once_per_tick(
    app: App, otel: Telemetry, schema_dsn: str
) -> None:
    """The periodic deferrer's statement writes the carrier; a tick taken defers nothing."""
    task = app.tasks["work"]
    job = task.configure(task_kwargs={"n": 1, "timestamp": 100}).job
    first = await app.job_manager.defer_periodic_job(job, periodic_id="p", defer_timestamp=100)
    again = await app.job_manager.defer_periodic_job(job, periodic_id="p", defer_timestamp=100)
    assert first is not None
    assert again is None
    assert stored(schema_dsn) == sent_by_job(otel)
    untaken = [s for s in otel.finished("send") if s.attributes.get("dawdle.job.deferred") is False]  # type: ignore[union-attr]
    assert len(untaken) == 1


async def test_a_failed_defer_ends_its_span_in_error(app: App, otel: Telemetry) -> None:
    """A defer refused by the database: its span ends in error, no job, no carrier."""
    app.task(name="locked", queueing_lock="one")(lambda: None)
    await app.tasks["locked"].defer_async()
    with pytest.raises(exceptions.AlreadyEnqueued):
        await app.tasks["locked"].defer_async()
    statuses = [span.status.status_code for span in otel.finished("send")]
    assert statuses == [StatusCode.UNSET, StatusCode.ERROR]


async def test_without_the_table_jobs_are_deferred_and_run_unlinked(
    app: App,
    otel: Telemetry,
    schema_dsn: str,
    missing_table_warnings: Callable[[], int],
) -> None:
    """Before `dawdle schema --apply`: one warning, spans without links, jobs as usual."""
    with dawdle_table_dropped(schema_dsn, "dawdle_job_traces"):
        await app.tasks["work"].defer_async(n=1)
        await app.tasks["work"].defer_async(n=2)
        await claim_and_run(app, otel)
    assert links_by_job(otel) == {job_id: [] for job_id in sent_by_job(otel)}
    assert len(links_by_job(otel)) == 2
    assert missing_table_warnings() == 1


async def test_a_table_dropped_after_it_was_seen_costs_no_defer(
    app: App,
    otel: Telemetry,
    schema_dsn: str,
    missing_table_warnings: Callable[[], int],
) -> None:
    """The traced insert fails on the missing table: sent again untraced, one warning."""
    await app.tasks["work"].defer_async(n=0)
    with dawdle_table_dropped(schema_dsn, "dawdle_job_traces"):
        await app.tasks["work"].defer_async(n=1)
        job = app.tasks["work"].configure(task_kwargs={"timestamp": 5}).job
        periodic = await app.job_manager.defer_periodic_job(job, "p", defer_timestamp=5)
        assert periodic is not None
        await app.tasks["work"].batch_defer_async({"n": 2}, {"n": 3})
    assert len(sent_by_job(otel)) == 5
    assert missing_table_warnings() == 1


async def test_a_claim_that_meets_no_table_warns_once_and_its_jobs_run(
    app: App,
    otel: Telemetry,
    schema_dsn: str,
    missing_table_warnings: Callable[[], int],
) -> None:
    """A worker's app that never deferred finds the table missing at its claim's read."""
    await app.tasks["work"].batch_defer_async({"n": 1}, {"n": 2})
    worker_app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    async with worker_app.open_async():
        store = JobStore(worker_app)
        worker_id = await store.register()
        with dawdle_table_dropped(schema_dsn, "dawdle_job_traces"):
            claimed = [
                await store.claim(
                    queues=None, task_names=None, limit=1, worker_id=worker_id, trace_contexts=True
                )
                for _ in range(2)
            ]
    assert [[one.trace_context for one in claim] for claim in claimed] == [[None], [None]]
    assert missing_table_warnings() == 1
