"""A mixed fleet on one queue: Procrastinate's own worker, dawdle on asyncio, dawdle on Trio.

The task sets are chosen so that the assertions are about dawdle. Procrastinate's worker
fails any job of a task it does not know (its behaviour, not ours), so it knows every task
deferred to the queue it works ("fleet"). dawdle's asyncio worker knows only `fleet.shared`
and `fleet.asyncio_side`, its Trio worker only `fleet.shared` and `fleet.trio_side`, and
`fleet.procrastinate_only` is Procrastinate's alone: a dawdle worker that claimed a job it
does not know would fail it (or run it under the wrong worker). The dawdle workers also
work every queue, where a job no worker knows ("nobody.task", queue "default", which
Procrastinate's worker does not work) must stay todo. Some jobs of different tasks share
locks, so workers that know different tasks must still keep each lock's order.

Every run is recorded in `fleet_runs` by the worker that ran it, with the server's clock.
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import procrastinate
import pytest

from dawdle import App, PsycopgConnector
from tests.durability.worker.helpers import (
    insert_raw_job,
    job_states,
    make_worker,
    overlaps,
    postgres_only,
)

pytestmark = pytest.mark.anyio

TASKS: Final = ("fleet.shared", "fleet.asyncio_side", "fleet.trio_side", "fleet.procrastinate_only")
KNOWN_BY: Final = {
    "procrastinate": set(TASKS),
    "dawdle-asyncio": {"fleet.shared", "fleet.asyncio_side"},
    "dawdle-trio": {"fleet.shared", "fleet.trio_side"},
}
JOBS: Final = 96
HOLD: Final = 0.01
POLLING: Final = 0.1  # a job freed by its lock sends no NOTIFY: poll often

SETUP_SQL: Final = """
CREATE TABLE IF NOT EXISTS fleet_runs (
    job_id bigint NOT NULL,
    task_name text NOT NULL,
    worker text NOT NULL,
    lock text,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz
);
TRUNCATE fleet_runs;
"""


class Finished:
    """Counts ended runs across the test's event loop and the Trio thread; set at `expected`."""

    def __init__(self, expected: int) -> None:
        self.event = anyio.Event()
        self._expected = expected
        self._ended = 0
        self._lock = threading.Lock()
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    def note(self) -> None:
        """One more run ended (called from any of the fleet's threads)."""
        with self._lock:
            self._ended += 1
            done = self._ended == self._expected
        if not done:
            return
        if threading.get_ident() == self._thread:
            self.event.set()
        else:
            anyio.from_thread.run_sync(self.event.set, token=self._token)


def add_tasks(app: procrastinate.App, worker: str, finished: Finished) -> None:
    """Register the tasks `worker` knows, each recording its run in fleet_runs."""

    def recorder(name: str) -> Callable[..., Awaitable[None]]:
        async def run(context: procrastinate.JobContext, n: int) -> None:
            job = context.job
            connector: Any = context.app.connector
            await connector.execute_query_async(
                "INSERT INTO fleet_runs (job_id, task_name, worker, lock) "
                "VALUES (%(id)s, %(task)s, %(worker)s, %(lock)s)",
                id=job.id,
                task=name,
                worker=worker,
                lock=job.lock,
            )
            await anyio.sleep(HOLD)  # the behaviour: runs long enough to overlap
            await connector.execute_query_async(
                "UPDATE fleet_runs SET ended_at = clock_timestamp() WHERE job_id = %(id)s",
                id=job.id,
            )
            finished.note()

        return run

    for name in sorted(KNOWN_BY[worker]):
        app.task(name=name, queue="fleet", pass_context=True)(recorder(name))


def lock_of(n: int) -> str | None:
    """Every third job takes one of three locks, so each lock spans all four tasks."""
    return f"L{(n // 3) % 3}" if n % 3 == 0 else None


@postgres_only("Procrastinate's own worker and connector share the database")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mixed_fleet_leaves_each_job_to_a_worker_that_knows_it(
    app: App, schema_dsn: str
) -> None:
    """Nothing lost, none failed as unknown, each job run once, by a worker knowing its task."""
    await app.connector.execute_query_async(SETUP_SQL)
    finished = Finished(JOBS)
    upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=schema_dsn))
    add_tasks(upstream, "procrastinate", finished)
    add_tasks(app, "dawdle-asyncio", finished)
    trio_app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    add_tasks(trio_app, "dawdle-trio", finished)
    options = {"concurrency": 2, "fetch_job_polling_interval": POLLING}
    asyncio_worker = make_worker(app, **options)
    trio_worker = make_worker(trio_app, **options)

    async def run_trio_worker() -> None:
        async with trio_app.open_async():
            await trio_worker.run()

    async with upstream.open_async():
        for n in range(JOBS):
            task = upstream.tasks[TASKS[n % len(TASKS)]]
            await task.configure(lock=lock_of(n)).defer_async(n=n)
        nobody = await insert_raw_job(app, "nobody.task")
        upstream_scope = anyio.CancelScope()

        async def run_upstream_worker() -> None:
            with upstream_scope:
                await upstream.run_worker_async(
                    queues=["fleet"], install_signal_handlers=False, **options
                )

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_upstream_worker)
            tg.start_soon(asyncio_worker.run)
            tg.start_soon(
                anyio.to_thread.run_sync,
                functools.partial(anyio.run, run_trio_worker, backend="trio"),
            )
            with anyio.move_on_after(60):
                await finished.event.wait()
            # A run ends before its worker writes its outcome, and cancelling Procrastinate's
            # worker may drop a write under way (the job stays 'doing'): wait for the rows.
            with anyio.move_on_after(10):
                while await still_doing(app):  # noqa: ASYNC110 (a bounded poll of the rows)
                    await anyio.sleep(0.02)
            asyncio_worker.stop()
            trio_worker.stop()
            upstream_scope.cancel()  # Procrastinate's graceful stop

    runs = await app.connector.execute_query_all_async(
        "SELECT job_id, task_name, worker, lock, extract(epoch FROM started_at) AS start, "
        "extract(epoch FROM ended_at) AS end FROM fleet_runs ORDER BY started_at"
    )
    states = await job_states(app)
    assert states.pop(nobody) == ("todo", 0)
    assert set(states.values()) == {("succeeded", 1)}
    assert len(states) == JOBS
    assert collections.Counter(run["job_id"] for run in runs) == dict.fromkeys(states, 1)
    assert [run for run in runs if run["task_name"] not in KNOWN_BY[run["worker"]]] == []
    by_worker = collections.Counter(run["worker"] for run in runs)
    assert set(by_worker) == set(KNOWN_BY), by_worker
    for lock in {run["lock"] for run in runs} - {None}:
        held = [run for run in runs if run["lock"] == lock]
        assert [run["job_id"] for run in held] == sorted(run["job_id"] for run in held)
        assert overlaps(intervals(held)) == []


async def still_doing(app: App) -> int:
    """How many jobs are 'doing'."""
    row = await app.connector.execute_query_one_async(
        "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'doing'"
    )
    return int(row["n"])


def intervals(runs: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """The runs' [start, end) on the server's clock."""
    return [(float(run["start"]), float(run["end"])) for run in runs]
