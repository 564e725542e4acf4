"""Retention: a worker deletes the old finished jobs of the statuses its app lists, no others.

On connector x runtime; the advisory lock that keeps it to one worker at a time is
PostgreSQL's alone. Each worker applies the retention when it starts, so a test waits for
that first round's `jobs_pruned` hook events, never for the interval.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import anyio
import psycopg
import pytest
from procrastinate import utils

from dawdle import App, InMemoryConnector, PsycopgConnector
from dawdle._hooks import Hooks, JobsPruned
from dawdle._retention import Retention, apply_retention, prune
from dawdle._sql import PRUNE_LOCK_KEY
from tests.durability.worker.helpers import (
    insert_raw_job,
    job_states,
    make_worker,
    postgres_only,
    running,
)

pytestmark = pytest.mark.anyio

DAY = 86400.0


async def finished_job(app: App, status: str, *, days_ago: float) -> int:
    """A job that reached `status` (through 'doing', unless cancelled) `days_ago` days ago."""
    job_id = await insert_raw_job(app, "old_task")
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        connector.jobs[job_id]["status"] = status
        connector.events[job_id].append({"type": status, "at": utils.utcnow()})
    else:
        for step in ["cancelled"] if status == "cancelled" else ["doing", status]:
            await connector.execute_query_async(
                "UPDATE procrastinate_jobs SET status = %(step)s WHERE id = %(id)s",
                step=step,
                id=job_id,
            )
    await date_events(app, job_id, days_ago=days_ago)
    return job_id


async def date_events(app: App, job_id: int, *, days_ago: float) -> None:
    """Every event of the job `days_ago` days ago."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        for event in connector.events[job_id]:
            event["at"] = utils.utcnow() - datetime.timedelta(days=days_ago)
        return
    await connector.execute_query_async(
        "UPDATE procrastinate_events SET at = now() - make_interval(secs => %(secs)s) "
        "WHERE job_id = %(id)s",
        secs=days_ago * DAY,
        id=job_id,
    )


class Recorder(Hooks):
    """Hooks that keep the `jobs_pruned` events; `seen` is set once every status was pruned."""

    def __init__(self, *statuses: str) -> None:
        self.events: list[JobsPruned] = []
        self.waiting = set(statuses)
        self.seen = anyio.Event()

    def jobs_pruned(self, event: JobsPruned) -> None:
        self.events.append(event)
        self.waiting -= set(event.statuses)
        if not self.waiting:
            self.seen.set()


async def test_a_worker_prunes_old_jobs_of_the_listed_statuses_only(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """Succeeded 1d, failed 30d: older jobs of those go; recent ones and others stay."""
    old_done = [await finished_job(app, "succeeded", days_ago=2) for _ in range(3)]
    recent_done = await finished_job(app, "succeeded", days_ago=0.5)
    young_failure = await finished_job(app, "failed", days_ago=2)
    old_failure = await finished_job(app, "failed", days_ago=40)
    old_cancelled = await finished_job(app, "cancelled", days_ago=100)
    app.retention = Retention.from_option({"succeeded": "1d", "failed": "30d"})
    recorder = Recorder("succeeded", "failed")
    app.hooks = [recorder]  # type: ignore[attr-defined]
    caplog.set_level("INFO", logger="dawdle.retention")
    async with running(make_worker(app)):
        with anyio.fail_after(10):
            await recorder.seen.wait()
    assert [(event.count, event.statuses) for event in recorder.events] == [
        (3, ("succeeded",)),
        (1, ("failed",)),
    ]
    left = await job_states(app)
    assert sorted(left) == [recent_done, young_failure, old_cancelled]
    assert not set(old_done) & set(left)
    assert old_failure not in left
    messages = [r.getMessage() for r in caplog.records if r.name == "dawdle.retention"]
    assert messages == [
        "pruned 4 finished jobs: 3 succeeded (older than 1d), 1 failed (older than 30d)"
    ]


async def test_a_prune_goes_batch_by_batch_to_the_end(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More old jobs than a batch holds: every one goes, and only old ones."""
    monkeypatch.setattr("dawdle._retention.PRUNE_BATCH", 4)
    old = [await finished_job(app, "aborted", days_ago=3) for _ in range(11)]
    kept = await finished_job(app, "aborted", days_ago=1)
    done = await prune(app.connector, statuses=["aborted"], older_than=2 * DAY, batch=4)
    assert done is not None
    assert done.deleted == len(old)
    assert sorted(await job_states(app)) == [kept]


async def test_each_round_starts_where_the_last_one_stopped(app: App) -> None:
    """A job too young in one round is pruned by a later one, which skips what was read."""
    kept = await finished_job(app, "cancelled", days_ago=10)  # a status not listed: for good
    await finished_job(app, "succeeded", days_ago=3)
    young = await finished_job(app, "succeeded", days_ago=1)
    retention = Retention.from_option({"succeeded": "2d"})
    assert retention is not None
    positions: dict[tuple[str, ...], int] = {}
    assert await apply_retention(app.connector, retention, positions=positions) == 1
    if isinstance(app.connector, PsycopgConnector):  # the in-memory one starts over each time
        first_event = await app.connector.execute_query_one_async(
            "SELECT min(id) AS id FROM procrastinate_events WHERE job_id = %(id)s", id=young
        )
        assert positions == {("succeeded",): first_event["id"] + 1}  # before its finish
    await date_events(app, young, days_ago=3)
    assert await apply_retention(app.connector, retention, positions=positions) == 1
    assert sorted(await job_states(app)) == [kept]


@pytest.fixture
def lock_holder(app: App) -> Iterator[psycopg.Connection]:
    """Another session holding the prune's advisory lock (a worker pruning elsewhere).

    A blocking connection: its statements take the lock or free it at once.
    """
    assert isinstance(app.connector, PsycopgConnector)
    with psycopg.connect(app.connector.conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (PRUNE_LOCK_KEY,))
        yield conn


@postgres_only("the advisory lock is PostgreSQL's")
async def test_one_worker_at_a_time_prunes(app: App, lock_holder: psycopg.Connection) -> None:
    """While another holds the lock a worker's round prunes nothing; `dawdle prune` still can."""
    retention = Retention.from_option({"succeeded": "1d"})
    assert retention is not None
    old = [await finished_job(app, "succeeded", days_ago=2) for _ in range(3)]
    assert (
        await prune(app.connector, statuses=["succeeded"], older_than=DAY, exclusive=True) is None
    )
    assert await apply_retention(app.connector, retention) == 0
    assert sorted(await job_states(app)) == old
    lock_holder.execute("SELECT pg_advisory_unlock(%s)", (PRUNE_LOCK_KEY,))
    async with anyio.create_task_group() as tg:  # two workers' rounds at once: no error
        results: list[int] = []

        async def round_() -> None:
            results.append(await apply_retention(app.connector, retention))

        tg.start_soon(round_)
        tg.start_soon(round_)
    assert sum(results) == len(old)
    assert await job_states(app) == {}
    lock_holder.execute("SELECT pg_advisory_lock(%s)", (PRUNE_LOCK_KEY,))
    await finished_job(app, "succeeded", days_ago=2)
    done = await prune(app.connector, statuses=["succeeded"], older_than=DAY)
    assert done is not None
    assert done.deleted == 1


class Broken(Hooks):
    """A hook that fails on every event."""

    def jobs_pruned(self, event: JobsPruned) -> None:
        raise RuntimeError("broken hook")


async def test_a_failing_hook_is_logged_and_the_round_goes_on(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    """The jobs are pruned and counted; the hook's failure is one error record."""
    await finished_job(app, "succeeded", days_ago=2)
    await finished_job(app, "failed", days_ago=40)
    retention = Retention.from_option({"succeeded": "1d", "failed": "30d"})
    assert retention is not None
    recorder = Recorder("succeeded", "failed")
    assert await apply_retention(app.connector, retention, [Broken(), recorder]) == 2
    assert recorder.seen.is_set()
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage().endswith("failed on jobs_pruned") for r in failures] == [True, True]
    assert await job_states(app) == {}
