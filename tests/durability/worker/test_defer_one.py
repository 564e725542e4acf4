"""A single defer: one job is inserted by a single-row INSERT, as the batch would insert it.

On PostgreSQL, dawdle's `PsycopgConnector` defers one job (`defer_async`, `defer`, a batch
of one) with `_sql.DEFER_JOB`, scalar parameters, instead of the set-based statement's
arrays. Its row, events, ids, queueing lock clash, job checks and trace carrier are the
batch's; in memory, the connector's own defer gives the same answers.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

import anyio.to_thread
import pytest
from procrastinate import exceptions, jobs

from dawdle import App, Hooks, TraceContext, UnsupportedValue
from dawdle._sql import defers
from tests.durability.worker.conftest import TRUNCATE
from tests.durability.worker.helpers import job_rows, postgres_only

pytestmark = pytest.mark.anyio

LATER = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def _job(n: int, **fields: Any) -> jobs.Job:
    return jobs.Job(
        id=None,
        queue=fields.get("queue", "default"),
        task_name="one.noop",
        task_kwargs=fields.get("task_kwargs", {"n": n}),
        lock=fields.get("lock"),
        queueing_lock=fields.get("queueing_lock"),
        priority=fields.get("priority", 0),
        scheduled_at=fields.get("scheduled_at"),
    )


# Every column a defer sets, in every form: defaults, options, nesting, unicode, far dates.
VARIANTS = [
    _job(0),
    _job(1, priority=-3, lock="L1"),
    _job(2, queueing_lock="Q1", queue="other"),
    _job(3, scheduled_at=LATER, priority=2_000_000_000),
    _job(4, task_kwargs={"nested": {"list": [1, 2.5, None, True]}, "text": "é ✓ \u2028"}),
    _job(5, task_kwargs={}),
]


def _spy(target: Any, method: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The queries sent through `target.method` from now on."""
    sent: list[str] = []
    original: Callable[..., Any] = getattr(target, method)

    def record(query: str, **arguments: Any) -> Any:
        sent.append(query)
        return original(query, **arguments)

    monkeypatch.setattr(target, method, record)
    return sent


async def _snapshot(app: App) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every job row and every event (but its time), in id order."""
    connector = app.connector
    rows = await connector.execute_query_all_async("SELECT * FROM procrastinate_jobs ORDER BY id")
    events = await connector.execute_query_all_async(
        "SELECT id, job_id, type::text FROM procrastinate_events ORDER BY id"
    )
    return rows, events


@postgres_only("the single-row statement is PsycopgConnector's")
async def test_a_single_defer_stores_what_the_batch_stores(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row for row, event for event, id for id: one at a time (async and sync) as in a batch."""
    batch = await app.job_manager.batch_defer_jobs_async(list(VARIANTS))
    by_batch = await _snapshot(app)
    await app.connector.execute_query_async(TRUNCATE)

    sent = _spy(app.connector, "execute_query_all_async", monkeypatch)
    one_by_one = [await app.job_manager.defer_job_async(job) for job in VARIANTS]
    assert sent == [defers.DEFER_JOB] * len(VARIANTS)
    assert await _snapshot(app) == by_batch
    assert one_by_one == batch
    await app.connector.execute_query_async(TRUNCATE)

    sync_sent = _spy(app.connector.get_sync_connector(), "execute_query_all", monkeypatch)
    sync = [await anyio.to_thread.run_sync(app.job_manager.defer_job, job) for job in VARIANTS]
    assert sync_sent == [defers.DEFER_JOB] * len(VARIANTS)
    assert await _snapshot(app) == by_batch
    assert sync == batch
    # The scheduled job's events are its `scheduled` and its `deferred`, as the triggers say.
    events = by_batch[1]
    assert [(e["job_id"], e["type"]) for e in events if e["job_id"] == batch[3].id] == [
        (batch[3].id, "scheduled"),
        (batch[3].id, "deferred"),
    ]


async def test_each_defer_returns_its_rows_id(app: App) -> None:
    """The id a defer returns is its own row's, async and sync, in the order deferred."""

    @app.task(name="one.noop")
    async def noop(n: int) -> None: ...

    ids = [await noop.defer_async(n=n) for n in range(5)]
    ids.append(await anyio.to_thread.run_sync(lambda: noop.defer(n=5)))
    ids.append(await noop.configure(priority=4).defer_async(n=6))
    assert ids == sorted(ids)
    stored = {job.id: job for job in await job_rows(app)}
    assert [stored[job_id].task_kwargs for job_id in ids] == [{"n": n} for n in range(7)]
    assert [stored[job_id].status for job_id in ids] == ["todo"] * 7
    assert stored[ids[-1]].priority == 4


async def test_a_queueing_lock_clash_raises_already_enqueued_and_inserts_nothing(
    app: App,
) -> None:
    """A waiting job's queueing lock: AlreadyEnqueued, async and sync, and no second job."""

    @app.task(name="one.noop")
    async def noop(n: int) -> None: ...

    first = await noop.configure(queueing_lock="q").defer_async(n=1)
    with pytest.raises(exceptions.AlreadyEnqueued, match="queueing lock q"):
        await noop.configure(queueing_lock="q").defer_async(n=2)
    with pytest.raises(exceptions.AlreadyEnqueued, match="queueing lock q"):
        await anyio.to_thread.run_sync(lambda: noop.configure(queueing_lock="q").defer(n=3))
    assert [(job.id, job.task_kwargs) for job in await job_rows(app)] == [(first, {"n": 1})]


async def test_the_job_checks_refuse_a_single_job_before_it_is_sent(app: App) -> None:
    """A lock too long for its index, a NUL in the arguments: a clear error and no job."""

    @app.task(name="one.noop")
    async def noop(n: Any) -> None: ...

    with pytest.raises(UnsupportedValue, match="lock 'xxx"):
        await noop.configure(lock="x" * 5000).defer_async(n=1)
    with pytest.raises(UnsupportedValue, match="NUL"):
        await anyio.to_thread.run_sync(lambda: noop.defer(n="a\x00b"))
    assert await job_rows(app) == []


@postgres_only("the caller's connection is a PostgreSQL transaction")
async def test_a_defer_on_the_callers_connection_follows_its_transaction(app: App) -> None:
    """Rolled back: no job and no event; committed: the job, as any defer stores it."""

    @app.task(name="one.noop")
    async def noop(n: int) -> None: ...

    connector: Any = app.connector

    class RollbackError(Exception):
        pass

    with pytest.raises(RollbackError):
        async with connector.connection() as conn, conn.transaction():
            await noop.configure(connection=conn).defer_async(n=1)
            raise RollbackError
    async with connector.connection() as conn, conn.transaction():
        job_id = await noop.configure(connection=conn).defer_async(n=2)
    assert [(job.id, job.task_kwargs) for job in await job_rows(app)] == [(job_id, {"n": 2})]
    _, events = await _snapshot(app)
    assert [(e["job_id"], e["type"]) for e in events] == [(job_id, "deferred")]


class _Tracer(Hooks):
    """A defer tracer whose carriers name their job's argument; it records what it is told."""

    def __init__(self) -> None:
        self.pending: list[_Pending] = []

    def begin_defers(self, jobs: Sequence[jobs.Job]) -> _Pending:
        pending = _Pending([job.task_kwargs["n"] for job in jobs])
        self.pending.append(pending)
        return pending


class _Pending:
    def __init__(self, numbers: list[int]) -> None:
        self.carriers = [TraceContext(f"00-{n + 1:032x}-{1:016x}-01", f"n={n}") for n in numbers]
        self.stored: list[jobs.Job | None] | None = None
        self.error: BaseException | None = None

    def inserted(self, jobs: Sequence[jobs.Job | None]) -> None:
        self.stored = list(jobs)

    def failed(self, exception: BaseException) -> None:
        self.error = exception


@postgres_only("dawdle_job_traces is written by the insert's statement")
async def test_a_traced_single_defer_writes_its_carrier_in_the_same_statement(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its carrier beside its job, async and sync; a clash fails its span and writes neither."""

    @app.task(name="one.noop")
    async def noop(n: int) -> None: ...

    tracer = _Tracer()
    app.hooks = [tracer]  # type: ignore[attr-defined]
    sent = _spy(app.connector, "execute_query_all_async", monkeypatch)
    first = await noop.configure(queueing_lock="q").defer_async(n=7)
    second = await anyio.to_thread.run_sync(lambda: noop.defer(n=8))
    assert defers.DEFER_JOB_TRACED in sent
    rows = await app.connector.execute_query_all_async(
        "SELECT job_id, traceparent, tracestate FROM dawdle_job_traces ORDER BY job_id"
    )
    assert rows == [
        {"job_id": first, "traceparent": f"00-{8:032x}-{1:016x}-01", "tracestate": "n=7"},
        {"job_id": second, "traceparent": f"00-{9:032x}-{1:016x}-01", "tracestate": "n=8"},
    ]
    assert [[job.id for job in p.stored or [] if job] for p in tracer.pending] == [
        [first],
        [second],
    ]
    with pytest.raises(exceptions.AlreadyEnqueued):
        await noop.configure(queueing_lock="q").defer_async(n=9)
    assert isinstance(tracer.pending[-1].error, exceptions.AlreadyEnqueued)
    count = await app.connector.execute_query_all_async("SELECT count(*) FROM dawdle_job_traces")
    assert count == [{"count": 2}]
    assert [job.id for job in await job_rows(app)] == [first, second]
