"""Batch defers: the set-based statement keeps Procrastinate's semantics, on both connectors.

On PostgreSQL, dawdle's `PsycopgConnector` inserts a batch with one INSERT from an array
per column (`_sql.DEFER_JOBS`) instead of `procrastinate_defer_jobs_v1`; in memory, the
connector's own defer. Either way: ids in the order of the jobs, a queueing lock clash
refuses the whole batch (nothing inserted), the job checks apply; on PostgreSQL, the
triggers write each job's `deferred` event and NOTIFY a listening worker, the trace
contexts go in the same statement, and Procrastinate's worker runs the jobs.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Sequence
from typing import Any

import anyio
import procrastinate
import pytest
from procrastinate import exceptions, jobs

from dawdle import App, Hooks, TraceContext, UnsupportedValue
from tests.durability.worker.helpers import (
    job_rows,
    job_states,
    make_worker,
    postgres_only,
    run_until,
)

pytestmark = pytest.mark.anyio


def _job(app: App, n: int, **fields: Any) -> jobs.Job:
    return jobs.Job(
        id=None,
        queue="default",
        task_name="batch.noop",
        task_kwargs={"n": n},
        lock=fields.get("lock"),
        queueing_lock=fields.get("queueing_lock"),
        priority=fields.get("priority", 0),
        scheduled_at=fields.get("scheduled_at"),
    )


async def _count(app: App) -> int:
    return len(await job_rows(app))


async def test_ids_come_back_in_the_order_of_the_jobs(app: App) -> None:
    """Each returned id is the row holding that position's arguments and options."""

    @app.task(name="batch.noop")
    async def noop(n: int) -> None: ...

    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    batch = [
        _job(app, n, priority=n % 3, lock=f"L{n % 2}" if n % 5 else None, scheduled_at=later)
        if n % 7 == 0
        else _job(app, n, priority=n % 3)
        for n in range(300)
    ]
    deferred = await app.job_manager.batch_defer_jobs_async(batch)
    by_id = {job.id: job for job in await job_rows(app)}
    assert [by_id[job.id].task_kwargs for job in deferred] == [{"n": n} for n in range(300)]
    assert [by_id[job.id].priority for job in deferred] == [n % 3 for n in range(300)]
    assert [by_id[job.id].lock for job in deferred] == [job.lock for job in batch]
    assert [by_id[job.id].scheduled_at is not None for job in deferred] == [
        n % 7 == 0 for n in range(300)
    ]
    ids = await noop.batch_defer_async(*({"n": n} for n in range(300, 310)))
    stored = {job.id: job.task_kwargs for job in await job_rows(app)}
    assert [stored[i] for i in ids] == [{"n": n} for n in range(300, 310)]


async def test_a_queueing_lock_clash_inside_the_batch_inserts_nothing(app: App) -> None:
    """Two jobs of one batch with one queueing lock: AlreadyEnqueued, no job of the batch."""
    batch = [_job(app, 1), _job(app, 2, queueing_lock="a"), _job(app, 3, queueing_lock="a")]
    with pytest.raises(exceptions.AlreadyEnqueued):
        await app.job_manager.batch_defer_jobs_async(batch)
    assert await _count(app) == 0


async def test_a_clash_with_a_waiting_job_inserts_nothing(app: App) -> None:
    """A batch one of whose jobs has a waiting job's queueing lock: refused whole."""
    (first,) = await app.job_manager.batch_defer_jobs_async([_job(app, 0, queueing_lock="a")])
    batch = [_job(app, 1), _job(app, 2, queueing_lock="a"), _job(app, 3)]
    with pytest.raises(exceptions.AlreadyEnqueued):
        await app.job_manager.batch_defer_jobs_async(batch)
    assert await job_states(app) == {first.id: ("todo", 0)}


async def test_the_job_checks_refuse_the_batch_before_it_is_sent(app: App) -> None:
    """A lock too long for its index, in the middle of a batch: one clear error, no job."""
    batch = [_job(app, 1), _job(app, 2, lock="x" * 5000), _job(app, 3)]
    with pytest.raises(UnsupportedValue, match="lock 'xxx"):
        await app.job_manager.batch_defer_jobs_async(batch)
    assert await _count(app) == 0


@postgres_only("Procrastinate's triggers and LISTEN/NOTIFY are PostgreSQL's")
async def test_each_job_gets_its_event_and_its_notify(app: App) -> None:
    """Every job of a batch: its `deferred` event (and `scheduled`), its `job_inserted` NOTIFY."""
    ran: list[int] = []
    done = anyio.Event()
    listening = anyio.Event()
    heard: list[str] = []
    all_heard = anyio.Event()

    @app.task(name="batch.noop")
    async def noop(n: int) -> None:
        ran.append(n)
        if len(ran) == 50:
            done.set()

    async def on_notification(*, channel: str, payload: str) -> None:
        heard.append(payload)
        if len(heard) == 51:
            all_heard.set()

    async def on_listening() -> None:
        listening.set()

    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    async with anyio.create_task_group() as tg:
        connector: Any = app.connector
        tg.start_soon(
            functools.partial(
                connector.listen_notify,
                on_notification,
                ["procrastinate_any_queue_v1"],
                on_listening=on_listening,
            )
        )
        with anyio.fail_after(5):
            await listening.wait()
        (scheduled,) = await app.job_manager.batch_defer_jobs_async(
            [_job(app, -1, scheduled_at=later)]
        )
        ids = await noop.batch_defer_async(*({"n": n} for n in range(50)))
        with anyio.fail_after(5):
            await all_heard.wait()
        tg.cancel_scope.cancel()
    assert [json.loads(payload) for payload in heard] == [
        {"type": "job_inserted", "job_id": job_id} for job_id in [scheduled.id, *ids]
    ]
    rows = await app.connector.execute_query_all_async(
        "SELECT job_id, type::text FROM procrastinate_events ORDER BY id"
    )
    events = [(row["job_id"], row["type"]) for row in rows]
    # Trigger order (alphabetical) puts a job's `scheduled` event before its `deferred` one.
    assert events == [
        (scheduled.id, "scheduled"),
        (scheduled.id, "deferred"),
        *((job_id, "deferred") for job_id in ids),
    ]
    await run_until(make_worker(app, concurrency=10), done, within=10.0)
    assert sorted(ran) == list(range(50))


class _Tracer(Hooks):
    """A defer tracer whose carriers name their job's position in the batch."""

    def begin_defers(self, jobs: Sequence[jobs.Job]) -> _Pending:
        return _Pending([job.task_kwargs["n"] for job in jobs])


class _Pending:
    def __init__(self, numbers: list[int]) -> None:
        self.carriers = [TraceContext(f"00-{n + 1:032x}-{1:016x}-01", f"n={n}") for n in numbers]
        self.stored: list[jobs.Job | None] = []

    def inserted(self, jobs: Sequence[jobs.Job | None]) -> None:
        self.stored = list(jobs)

    def failed(self, exception: BaseException) -> None:
        raise AssertionError(exception)


@postgres_only("dawdle_job_traces is written by the insert's statement")
async def test_a_traced_batch_writes_each_jobs_carrier_in_the_same_statement(app: App) -> None:
    """Each job's row in dawdle_job_traces is the carrier of its position; a clash writes none."""

    @app.task(name="batch.noop")
    async def noop(n: int) -> None: ...

    app.hooks = [_Tracer()]  # type: ignore[attr-defined]
    ids = await noop.batch_defer_async(*({"n": n} for n in range(40)))
    rows = await app.connector.execute_query_all_async(
        "SELECT job_id, tracestate FROM dawdle_job_traces"
    )
    assert {row["job_id"]: row["tracestate"] for row in rows} == {
        job_id: f"n={n}" for n, job_id in enumerate(ids)
    }
    with pytest.raises(exceptions.AlreadyEnqueued):
        await noop.configure(queueing_lock="q").batch_defer_async({"n": 1}, {"n": 2})
    rows = await app.connector.execute_query_all_async("SELECT count(*) FROM dawdle_job_traces")
    assert rows == [{"count": 40}]
    assert await _count(app) == 40


@postgres_only("Procrastinate's own worker and PsycopgConnector share the database")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_batch_deferred_by_dawdle_runs_on_procrastinate_worker(
    app: App, schema_dsn: str
) -> None:
    """Asyncio only (Procrastinate's worker needs it): a mixed fleet runs dawdle's batches."""
    received: list[int] = []

    @app.task(name="batch.shared")
    async def shared(n: int) -> None: ...

    upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=schema_dsn))

    @upstream.task(name="batch.shared")
    async def upstream_shared(n: int) -> None:
        received.append(n)

    ids = await shared.batch_defer_async(*({"n": n} for n in range(30)))
    async with upstream.open_async():
        with anyio.fail_after(20):
            await upstream.run_worker_async(
                wait=False, install_signal_handlers=False, concurrency=1
            )
    assert received == list(range(30))
    assert await job_states(app) == dict.fromkeys(ids, ("succeeded", 1))
