"""What the worker suite shares: running workers, reading job state on either connector.

Job state is read through Procrastinate's `JobManager.list_jobs_async`, which both the
in-memory connector and PostgreSQL answer, so a test never branches on its connector. The
few things Procrastinate has no query for (worker rows, a dead worker's job, a row written
by another client) have one helper each with one small per-connector branch.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from procrastinate import connector as procrastinate_connector
from procrastinate import jobs, types, utils
from psycopg import sql

from dawdle import App, InMemoryConnector, PsycopgConnector, Worker
from dawdle._dawdle_schema import DAWDLE_SCHEMA


def postgres_only(reason: str) -> pytest.MarkDecorator:
    """Run a scenario on PostgreSQL alone; `reason` says why the in-memory connector cannot."""
    assert reason
    return pytest.mark.parametrize("app", ["postgres"], indirect=True)


def make_worker(app: App, **options: Any) -> Worker:
    """A Worker on `app` that leaves the process's signal handlers alone."""
    return Worker(app, **{"install_signal_handlers": False, **options})


async def work(app: App, *, within: float = 10.0, **options: Any) -> None:
    """run_worker_async(wait=False): work the queue until nothing is ready, then return."""
    with anyio.fail_after(within):
        await app.run_worker_async(wait=False, install_signal_handlers=False, **options)


@contextlib.asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    """Run `workers` in a task group while the block runs, then stop them and wait for them."""
    async with anyio.create_task_group() as tg:
        for worker in workers:
            tg.start_soon(worker.run)
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()


async def run_until(worker: Worker, done: anyio.Event, *, within: float = 5.0) -> float:
    """Run `worker` until `done` is set (within `within` s), stop it; the seconds it all took."""
    started = time.monotonic()
    async with running(worker):
        with anyio.fail_after(within):
            await done.wait()
    return time.monotonic() - started


# -- job state, on either connector -----------------------------------------------------------


async def job_rows(app: App) -> list[jobs.Job]:
    """Every job, in id order, as Procrastinate's Job (queue, priority, lock, status...)."""
    return list(await app.job_manager.list_jobs_async())


async def job_row(app: App, job_id: int) -> jobs.Job:
    """One job by id."""
    (job,) = await app.job_manager.list_jobs_async(id=job_id)
    return job


async def job_states(app: App) -> dict[int, tuple[str | None, int]]:
    """Each job's (status, attempts), by id."""
    return {job.id: (job.status, job.attempts) for job in await job_rows(app) if job.id}


async def worker_ids(app: App) -> list[int]:
    """The ids of the registered workers (Procrastinate has no query listing them)."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        return sorted(connector.workers)
    rows = await connector.execute_query_all_async("SELECT id FROM procrastinate_workers")
    return [row["id"] for row in rows]


async def insert_raw_job(app: App, task_name: str, args: str = "{}") -> int:
    """A job row as any client could write it (args as JSON text, not checked as an object).

    On PostgreSQL through Procrastinate's own SQL function; in memory through the
    connector's equivalent of it.
    """
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        (row,) = await connector.defer_jobs_all(
            [
                types.JobToDefer(
                    queue_name="default",
                    task_name=task_name,
                    priority=0,
                    lock=None,
                    queueing_lock=None,
                    args=json.loads(args),
                    scheduled_at=None,
                )
            ]
        )
        return int(row["id"])
    row = await connector.execute_query_one_async(
        "SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW('default', %(task_name)s, 0, NULL, "
        "NULL, %(args)s::jsonb, NULL)::procrastinate_job_to_defer_v1]))[1] AS id",
        task_name=task_name,
        args=args,
    )
    return int(row["id"])


async def strand_with_dead_worker(app: App, job_id: int) -> None:
    """Leave `job_id` doing, claimed by a worker whose last heartbeat was an hour ago.

    As a claim does, the change leaves a 'started' event (PostgreSQL's trigger writes it).
    """
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        dead = (await connector.register_worker_one())["worker_id"]
        connector.workers[dead] = utils.utcnow() - datetime.timedelta(hours=1)
        connector.jobs[job_id].update(status="doing", worker_id=dead)
        connector.events[job_id].append({"type": "started", "at": utils.utcnow()})
        return
    row = await connector.execute_query_one_async(
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - interval '1 hour') RETURNING id"
    )
    await connector.execute_query_async(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %(worker)s WHERE id = %(id)s",
        worker=row["id"],
        id=job_id,
    )


async def forge_notification(
    app: App, payload: str, channel: str = "procrastinate_any_queue_v1"
) -> None:
    """NOTIFY `payload` as any client can, no trigger involved (pg_notify; in memory, its twin)."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        await connector.notify(channel, payload)
        return
    await connector.execute_query_async(
        "SELECT pg_notify(%(channel)s, %(payload)s)", channel=channel, payload=payload
    )


@contextlib.contextmanager
def abort_checks(app: App) -> Iterator[anyio.Event]:
    """An event set each time the worker has asked the database which jobs to abort."""
    manager: Any = app.job_manager
    checked = anyio.Event()
    original: Callable[..., Awaitable[Iterable[int]]] = manager.list_jobs_to_abort_async

    async def list_jobs_to_abort_async(*args: Any, **kwargs: Any) -> Iterable[int]:
        try:
            return await original(*args, **kwargs)
        finally:
            checked.set()

    manager.list_jobs_to_abort_async = list_jobs_to_abort_async
    try:
        yield checked
    finally:
        del manager.list_jobs_to_abort_async


@contextlib.asynccontextmanager
async def same_database(app: App) -> AsyncIterator[App]:
    """Another App on `app`'s database: its own pool on PostgreSQL, the same store in memory."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        yield App(connector=connector)  # already open; opening it twice would close it twice
        return
    assert isinstance(connector, PsycopgConnector)
    other = App(connector=PsycopgConnector(conninfo=connector.conninfo))
    async with other.open_async():
        yield other


@contextlib.contextmanager
def listening(app: App) -> Iterator[anyio.Event]:
    """An event set once a worker on `app` has its LISTEN in place (from then, NOTIFYs count).

    Wraps the connector's `listen_notify` to hear its `on_listening` callback, which dawdle's
    connectors (PostgreSQL and in-memory) await once they listen.
    """
    connector: Any = app.connector
    listened = anyio.Event()
    original: Callable[..., Awaitable[None]] = connector.listen_notify

    async def listen_notify(
        on_notification: procrastinate_connector.Notify,
        channels: Iterable[str],
        *,
        on_listening: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        async def announce() -> None:
            if on_listening is not None:
                await on_listening()
            listened.set()

        await original(on_notification, channels, on_listening=announce)

    connector.listen_notify = listen_notify
    try:
        yield listened
    finally:
        del connector.listen_notify


@dataclass(frozen=True)
class Stopped:
    """What a worker process printed and returned after SIGTERM, and how long it took then."""

    output: bytes
    errors: str
    returncode: int
    seconds_after_signal: float


async def sigterm_once_started(
    command: list[str], *, within: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Stopped:
    """Run a worker process; when its job prints "started", send SIGTERM; wait for its end."""
    async with await anyio.open_process(command, env=env, cwd=cwd) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        with anyio.fail_after(within):
            output = b""
            async for chunk in process.stdout:
                output += chunk
                if b"started" in output:
                    process.send_signal(signal.SIGTERM)
                    break
            signalled = time.monotonic()
            errors = b"".join([chunk async for chunk in process.stderr])
            returncode = await process.wait()
    return Stopped(
        output, errors.decode(errors="replace"), returncode, time.monotonic() - signalled
    )


# -- what ran when ----------------------------------------------------------------------------


def overlaps(intervals: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Pairs of indices whose [start, end) intervals intersect."""
    return [
        (i, j)
        for i, (start_i, end_i) in enumerate(intervals)
        for j, (start_j, end_j) in enumerate(intervals)
        if i < j and start_i < end_j and start_j < end_i
    ]


class Concurrency:
    """Counts jobs in progress and remembers the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def __exit__(self, *exc_info: object) -> None:
        self.now -= 1


# -- events and log records -------------------------------------------------------------------


async def job_events(app: App, job_id: int) -> list[str]:
    """The job's `procrastinate_events` types, oldest first (in memory: the connector's list)."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        return [event["type"] for event in connector.events[job_id]]
    rows = await connector.execute_query_all_async(
        "SELECT type::text FROM procrastinate_events WHERE job_id = %(id)s ORDER BY id", id=job_id
    )
    return [row["type"] for row in rows]


async def backdate_first_run(app: App, job_id: int, seconds: float) -> None:
    """Record a 'started' event `seconds` ago for the job, as if its first run began then."""
    connector = app.connector
    at = utils.utcnow() - datetime.timedelta(seconds=seconds)
    if isinstance(connector, InMemoryConnector):
        connector.events[job_id].append({"type": "started", "at": at})
        return
    await connector.execute_query_async(
        "INSERT INTO procrastinate_events (job_id, type, at) VALUES (%(id)s, 'started', %(at)s)",
        id=job_id,
        at=at,
    )


@dataclass
class Actions:
    """The worker's log records, kept as they are emitted; `reached(action)` is an event."""

    records: list[logging.LogRecord]
    _events: dict[str, anyio.Event]

    def of(self, action: str) -> list[logging.LogRecord]:
        """The records with this `action`, in order."""
        return [record for record in self.records if getattr(record, "action", None) == action]

    def reached(self, action: str) -> anyio.Event:
        """An event set once a record with `action` is emitted (made before it is awaited)."""
        return self._events.setdefault(action, anyio.Event())


@contextlib.contextmanager
def actions() -> Iterator[Actions]:
    """Collect dawdle.worker's log records (INFO up) while the block runs.

    Job records are emitted on the event loop's thread, where the events are set.
    """
    seen = Actions([], {})
    logger = logging.getLogger("dawdle.worker")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.records.append(record)
            event = seen._events.get(getattr(record, "action", ""))
            if event is not None:
                event.set()

    handler = Collect(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def dawdle_table_dropped(schema_dsn: str, table: str) -> Iterator[None]:
    """The database without one of dawdle's tables (as before an upgrade), then with it again."""
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    try:
        yield
    finally:
        with psycopg.connect(schema_dsn, autocommit=True) as conn:
            conn.execute(DAWDLE_SCHEMA)
