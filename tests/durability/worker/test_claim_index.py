"""Claims of known tasks through dawdle's index (FETCH_JOBS_BY_TASK), and without it.

With dawdle's schema applied (the suite's databases have it) a worker that leaves unknown
tasks claims by task; the jobs it takes must be exactly those FETCH_JOBS takes: priority
then id across tasks, the lock rules (an unknown job still heads its lock), never two jobs
of one lock in a batch, never one job for two claimers. Without the index it falls back
to FETCH_JOBS, with one warning. On connector x runtime; the SQL-only cases on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest

from dawdle import App, PsycopgConnector
from dawdle._dawdle_schema import DAWDLE_SCHEMA
from dawdle._sql import FETCH_JOBS, FETCH_JOBS_BY_TASK
from dawdle._worker.store import JobStore
from tests.durability.worker.helpers import (
    insert_raw_job,
    job_states,
    postgres_only,
    same_database,
    work,
)

pytestmark = pytest.mark.anyio

KNOWN = ["a", "b"]


@pytest.fixture
async def store(app: App) -> tuple[JobStore, int]:
    """A JobStore on `app` that has learnt about the index, and a registered worker id."""

    @app.task(name="a")
    async def a() -> None: ...

    @app.task(name="b")
    async def b() -> None: ...

    store = JobStore(app)
    assert await store.learn_claim_index()  # the suite's databases have dawdle's schema
    return store, await store.register()


@pytest.fixture
def without_claim_index(schema_dsn: str) -> Iterator[None]:
    """The module's database without dawdle's claim index, for one test."""
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX dawdle_jobs_todo_task_idx")
    try:
        yield
    finally:
        with psycopg.connect(schema_dsn, autocommit=True) as conn:
            conn.execute(DAWDLE_SCHEMA)


def spy_queries(app: App, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts of the queries `app` sends through execute_query_all_async, as sent."""
    sent: list[str] = []
    original = app.connector.execute_query_all_async

    async def recorded(query: str, **arguments: Any) -> list[dict[str, Any]]:
        sent.append(query)
        return await original(query, **arguments)  # type: ignore[arg-type]

    monkeypatch.setattr(app.connector, "execute_query_all_async", recorded)
    return sent


async def claim(store: tuple[JobStore, int], limit: int) -> list[int]:
    job_store, worker_id = store
    claimed = await job_store.claim(queues=None, task_names=KNOWN, limit=limit, worker_id=worker_id)
    return [job.id for job in claimed if job.id is not None]


async def test_claim_keeps_priority_then_id_order_across_tasks(
    app: App, store: tuple[JobStore, int]
) -> None:
    """Jobs of two known tasks come out by priority, then id, as if from one list."""
    a, b = app.tasks["a"], app.tasks["b"]
    low_a = await a.defer_async()
    high_b = await b.configure(priority=5).defer_async()
    high_a = await a.configure(priority=5).defer_async()
    mid_b = await b.configure(priority=2).defer_async()
    await insert_raw_job(app, "unknown.task")
    low_b = await b.defer_async()
    assert await claim(store, 3) == [high_b, high_a, mid_b]
    assert await claim(store, 3) == [low_a, low_b]
    assert await claim(store, 3) == []


async def test_lock_rules_hold_across_tasks_and_unknown_heads(
    app: App, store: tuple[JobStore, int]
) -> None:
    """An unknown job heads its lock; a running one holds it; a batch takes one job per lock."""
    a, b = app.tasks["a"], app.tasks["b"]
    async with same_database(app) as other:

        @other.task(name="theirs")
        async def theirs() -> None: ...

        await theirs.configure(lock="U", priority=9).defer_async()
        behind_unknown = await a.configure(lock="U").defer_async()
        first_of_l = await b.configure(lock="L", priority=1).defer_async()
        second_of_l = await a.configure(lock="L", priority=1).defer_async()
        free = await b.defer_async()
        assert await claim(store, 10) == [first_of_l, free]
        # first_of_l is now running: its lock holds second_of_l back.
        assert await claim(store, 10) == []
    states = await job_states(app)
    assert states[behind_unknown] == ("todo", 0)
    assert states[second_of_l] == ("todo", 0)


@postgres_only("a claim held open in another transaction needs real row locks")
async def test_a_claim_in_flight_neither_shares_nor_starves_another(
    app: App, store: tuple[JobStore, int], schema_dsn: str
) -> None:
    """While one claim holds its rows uncommitted, another gets the next jobs, a full batch."""
    ids = [await app.tasks["a"].defer_async() for _ in range(6)]
    ids.append(await app.tasks["b"].defer_async())
    _, worker_id = store

    def hold_first_claim() -> tuple[psycopg.Connection[Any], list[int]]:
        conn = psycopg.connect(schema_dsn)  # not autocommit: the claim stays in flight
        rows = conn.execute(
            FETCH_JOBS_BY_TASK,
            {"queues": None, "task_names": KNOWN, "limit": 3, "worker_id": worker_id},
        ).fetchall()
        return conn, sorted(row[0] for row in rows)

    conn, held = await anyio.to_thread.run_sync(hold_first_claim)
    try:
        assert held == ids[:3]
        # A LIMIT applied before skipping locked rows would find a's first three and stop.
        assert await claim(store, 3) == ids[3:6]
    finally:
        await anyio.to_thread.run_sync(conn.commit)
        await anyio.to_thread.run_sync(conn.close)
    assert await claim(store, 3) == ids[6:]


async def test_concurrent_claimers_never_take_one_job_twice(
    app: App, store: tuple[JobStore, int]
) -> None:
    """Four claim loops on separate connections take every job exactly once."""
    for task in ("a", "b"):
        await app.tasks[task].batch_defer_async(*[{} for _ in range(100)])
    taken: list[int] = []

    async def claim_until_empty() -> None:
        while batch := await claim(store, 7):
            taken.extend(batch)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(claim_until_empty)
    assert len(taken) == 200
    assert len(set(taken)) == 200


async def test_worker_claims_by_task_with_the_index(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With dawdle's schema the worker claims by task; with unknown_tasks="fail", as before."""
    sent = spy_queries(app, monkeypatch)

    @app.task(name="known")
    async def known() -> None: ...

    job_id = await known.defer_async()
    await work(app)
    assert FETCH_JOBS_BY_TASK in sent
    assert FETCH_JOBS not in sent
    sent.clear()
    stranger = await insert_raw_job(app, "another_project.task")
    await work(app, unknown_tasks="fail")
    assert FETCH_JOBS in sent
    assert FETCH_JOBS_BY_TASK not in sent
    assert await job_states(app) == {job_id: ("succeeded", 1), stranger: ("failed", 1)}


@postgres_only("the in-memory database always has dawdle's index")
@pytest.mark.usefixtures("without_claim_index")
async def test_without_the_index_the_worker_falls_back_with_one_warning(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No index: FETCH_JOBS, the same jobs (an unknown lock head included), one warning."""
    assert isinstance(app.connector, PsycopgConnector)
    sent = spy_queries(app, monkeypatch)
    ran: list[str] = []

    @app.task(name="mine")
    async def mine(which: str) -> None:
        ran.append(which)

    async with same_database(app) as other:

        @other.task(name="theirs")
        async def theirs() -> None: ...

        await theirs.configure(lock="L", priority=1).defer_async()
        behind = await mine.configure(lock="L").defer_async(which="behind")
        await mine.configure(priority=2).defer_async(which="first")
        await mine.defer_async(which="second")
        with caplog.at_level(logging.WARNING, logger="dawdle.worker"):
            await work(app)
            assert ran == ["first", "second"]
            assert (await job_states(app))[behind] == ("todo", 0)
            assert FETCH_JOBS in sent
            assert FETCH_JOBS_BY_TASK not in sent
            # Claiming any task, the worker needs no index: it runs the head, then `behind`.
            await work(app, unknown_tasks="fail")
    assert ran == ["first", "second", "behind"]
    warnings = [
        record
        for record in caplog.records
        if getattr(record, "action", None) == "claims_without_index"
    ]
    assert len(warnings) == 1
    assert "dawdle schema --apply" in warnings[0].getMessage()
