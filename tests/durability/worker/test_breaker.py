"""Circuit breakers: a task's failures open its breaker, and the fleet stops claiming its jobs.

On connector x runtime, except where a real server is the point (concurrent claims, a
database without the table).
"""

from __future__ import annotations

import datetime
from typing import Any

import anyio
import pytest
from procrastinate import utils

from dawdle import App, Breaker, InMemoryConnector
from dawdle._breaker import BreakerRow
from dawdle._sql import ADD_BREAKER, FETCH_JOBS_UNLESS_PROBES, FETCH_JOBS_WITH_BREAKERS
from tests.durability.worker.helpers import (
    actions,
    dawdle_table_dropped,
    job_rows,
    make_worker,
    postgres_only,
    run_until,
    work,
)

pytestmark = pytest.mark.anyio


async def clear_breakers(app: App) -> None:
    """Start from no breaker rows (the module's database outlives a test)."""
    if isinstance(app.connector, InMemoryConnector):
        app.connector.breakers.clear()
    else:
        await app.connector.execute_query_async("DELETE FROM dawdle_breakers")


async def statuses(app: App) -> dict[str, int]:
    """How many jobs have each status."""
    counts: dict[str, int] = {}
    for row in await job_rows(app):
        assert row.status is not None
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


async def test_failures_open_the_breaker_and_the_other_jobs_wait(app: App) -> None:
    """After min_calls failures, the rest stay 'todo': not claimed, not failed; logged once."""
    await clear_breakers(app)

    @app.task(name="flaky", breaker=Breaker(min_calls=3, open_for=60))
    async def flaky() -> None:
        raise RuntimeError("dependency down")

    for _ in range(20):
        await flaky.defer_async()
    with actions() as log:
        await work(app, concurrency=1)
    counts = await statuses(app)
    assert 3 <= counts["failed"] < 20
    assert counts["todo"] == 20 - counts["failed"]
    opened = log.of("breaker_open")
    assert len(opened) == 1
    assert "breaker of task flaky open until" in opened[0].getMessage()


async def test_a_half_open_probe_that_succeeds_closes_it_and_the_rest_run(app: App) -> None:
    """Four failures open it for 0.3 s; one probe (half-open) succeeds, closes it; all run.

    Four failures for min_calls 3: calls count with decay, so two calls a moment apart
    weigh a little under 2.
    """
    await clear_breakers(app)
    calls: list[int] = []
    everything = anyio.Event()

    @app.task(name="recovering", breaker=Breaker(failure_ratio=0.3, min_calls=3, open_for=0.3))
    async def recovering(index: int) -> None:
        calls.append(index)
        if len(calls) <= 4:
            raise RuntimeError("dependency down")
        if len(calls) == 10:
            everything.set()

    for index in range(10):
        await recovering.defer_async(index=index)
    worker = make_worker(app, concurrency=1, fetch_job_polling_interval=0.05)
    with actions() as log:
        await run_until(worker, everything, within=20)
    actions_seen = [
        record.action  # type: ignore[attr-defined]
        for record in log.records
        if getattr(record, "action", "").startswith("breaker_")
    ]
    assert actions_seen == ["breaker_open", "breaker_half_open", "breaker_closed"]
    half_open = log.of("breaker_half_open")[0]
    assert half_open.task_name == "recovering"  # type: ignore[attr-defined]


async def test_a_task_without_a_breaker_runs_all_its_failing_jobs(app: App) -> None:
    """The same failures without breaker=: every job runs and fails."""
    await clear_breakers(app)

    @app.task(name="plain_flaky")
    async def plain_flaky() -> None:
        raise RuntimeError("dependency down")

    for _ in range(8):
        await plain_flaky.defer_async()
    await work(app, concurrency=1)
    assert await statuses(app) == {"failed": 8}


async def test_an_open_breaker_holds_its_tasks_jobs_and_not_others(app: App) -> None:
    """A breaker opened by another worker: its task's jobs wait, other tasks' jobs run."""
    await clear_breakers(app)
    ran: list[str] = []

    @app.task(name="held", aliases=["held_alias"], breaker=Breaker())
    async def held() -> None:
        ran.append("held")

    @app.task(name="free")
    async def free() -> None:
        ran.append("free")

    await held.defer_async()
    await app.configure_task("held_alias").defer_async()
    await free.defer_async()
    await open_breaker(app, "held", ["held", "held_alias"], seconds=3600)
    await work(app)
    assert ran == ["free"]
    assert await statuses(app) == {"todo": 2, "succeeded": 1}


async def open_breaker(app: App, task: str, names: list[str], *, seconds: float) -> None:
    """Open `task`'s breaker for `seconds`, as a trip by another worker would."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        connector.breakers[task] = BreakerRow(
            state="open",
            names=tuple(names),
            open_until=utils.utcnow() + datetime.timedelta(seconds=seconds),
            trips=1,
        )
        return
    await connector.execute_query_async(
        ADD_BREAKER, task_name=task, names=names, max_probes=1, probe_lease=600.0
    )
    await connector.execute_query_async(
        "UPDATE dawdle_breakers SET state = 'open', trips = 1, "
        "open_until = now() + make_interval(secs => %(seconds)s) WHERE task_name = %(task)s",
        seconds=seconds,
        task=task,
    )


async def test_the_claim_without_probes_takes_nothing_once_a_breaker_may_probe(app: App) -> None:
    """Open breaker: the other task's jobs, probes_due false; due to probe: nothing, true."""
    await clear_breakers(app)

    @app.task(name="held")
    async def held() -> None:
        pass

    @app.task(name="free")
    async def free() -> None:
        pass

    await held.defer_async()
    free_ids = [await free.defer_async() for _ in range(2)]
    await open_breaker(app, "held", ["held"], seconds=3600)
    worker_id = await app.job_manager.register_worker()
    claim = {"queues": None, "task_names": ["held", "free"], "worker_id": worker_id}

    rows = await app.connector.execute_query_all_async(FETCH_JOBS_UNLESS_PROBES, **claim, limit=1)
    assert [(row["id"], row["probes_due"]) for row in rows] == [(free_ids[0], False)]
    await open_breaker(app, "held", ["held"], seconds=-1)  # its open time is over
    rows = await app.connector.execute_query_all_async(FETCH_JOBS_UNLESS_PROBES, **claim, limit=5)
    assert [(row["id"], row["probes_due"]) for row in rows] == [(None, True)]
    assert await statuses(app) == {"todo": 2, "doing": 1}
    rows = await app.connector.execute_query_all_async(FETCH_JOBS_WITH_BREAKERS, **claim, limit=5)
    assert sorted(row["task_name"] for row in rows) == ["free", "held"]
    rows = await app.connector.execute_query_all_async(FETCH_JOBS_UNLESS_PROBES, **claim, limit=5)
    assert [(row["id"], row["probes_due"]) for row in rows] == [(None, False)]


@postgres_only("concurrent claims on one breaker row are the point: PostgreSQL's row locks")
async def test_concurrent_claims_take_at_most_half_open_probes(app: App, admin: App) -> None:
    """Four claims at once on a breaker due to probe, probes 2: two jobs claimed in all."""
    await clear_breakers(app)
    await app.connector.execute_query_async(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT 'default', 'probed', '{}' FROM generate_series(1, 20)"
    )
    await app.connector.execute_query_async(
        ADD_BREAKER, task_name="probed", names=["probed"], max_probes=2, probe_lease=600.0
    )
    await app.connector.execute_query_async(
        "UPDATE dawdle_breakers SET state = 'open', open_until = now() - interval '1 second'"
    )
    claimed: list[dict[str, Any]] = []

    async def claim(on: App) -> None:
        worker_id = await on.job_manager.register_worker()
        claimed.extend(
            await on.connector.execute_query_all_async(
                FETCH_JOBS_WITH_BREAKERS,
                queues=None,
                task_names=None,
                limit=10,
                worker_id=worker_id,
            )
        )

    async with anyio.create_task_group() as group:
        for index in range(4):
            group.start_soon(claim, app if index % 2 else admin)
    assert len(claimed) == 2
    assert {row["probe_of"] for row in claimed} == {"open"}
    row = await app.connector.execute_query_one_async(
        "SELECT state, probes FROM dawdle_breakers WHERE task_name = 'probed'"
    )
    assert (row["state"], row["probes"]) == ("half_open", 2)


@postgres_only("the table is dropped: the in-memory database always has dawdle's tables")
async def test_without_the_table_breakers_are_off_with_one_warning(
    app: App, schema_dsn: str
) -> None:
    """No dawdle_breakers: every job runs as without breakers, one breakers_off line."""
    with dawdle_table_dropped(schema_dsn, "dawdle_breakers"):

        @app.task(name="no_table", breaker=Breaker(min_calls=1))
        async def no_table() -> None:
            raise RuntimeError("dependency down")

        for _ in range(5):
            await no_table.defer_async()
        with actions() as log:
            await work(app, concurrency=1)
        assert await statuses(app) == {"failed": 5}
        assert len(log.of("breakers_off")) == 1
