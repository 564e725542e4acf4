"""Faults done to real worker processes: kills, freezes, stops, database outages, crowds.

SIGKILL, SIGSTOP and SIGTERM to workers, a restarted database, terminated backends, a
dropped connection, and four workers at once. Workers are `dawdle worker` subprocesses on
`fault_app`, whose tasks write one row per run in `fault_runs` (or per job in `fault_once`)
with the server's clock. The test process starts and signals them and reads the database;
where no event can reach it from another process, it polls the database in a bounded loop
(`wait_for`). Database restarts use a private embedded server, the rest the module's
database.
"""

from __future__ import annotations

import collections
import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import anyio.to_thread
import psycopg
import pytest
from procrastinate import jobs
from procrastinate import schema as procrastinate_schema
from psycopg import conninfo

from dawdle import App
from tests.durability import fault_app
from tests.durability.fault_app import WorkerProcesses
from tests.durability.private_server import PrivateServer, pg_ctl, private_server
from tests.durability.proxy import Proxy, pass_on_eof

pytestmark = pytest.mark.anyio

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events, fault_runs, fault_once RESTART IDENTITY CASCADE"
)
POLL_INTERVAL = 0.05
# In the text of dawdle's claim (FETCH_JOBS) as psycopg sends it the first time.
CLAIM_MARKER: Final = b"SET status = 'doing', worker_id"
READY_FOR_QUERY: Final = b"Z\x00\x00\x00\x05"
# A worker whose jobs another worker should recover quickly after it dies or freezes.
FAST_HEARTBEAT: dict[str, float] = {"update_heartbeat_interval": 0.25}
RESCUER: dict[str, float] = {"stalled_worker_timeout": 2.0, "update_heartbeat_interval": 0.5}


# -- fixtures and helpers ----------------------------------------------------------------------


def add_side_tables(dsn: str) -> str:
    """Create fault_app's side-effect tables in the database at `dsn` (schema already there)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(fault_app.SETUP_SQL)
    return dsn


@pytest.fixture(scope="module")
def fault_dsn(schema_dsn: str) -> str:
    """The module's database on the shared server, ready for fault_app."""
    return add_side_tables(schema_dsn)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateServer]:
    """A private PostgreSQL server that tests may restart (never the shared one)."""
    with private_server("dawdle-pf-") as server:
        yield server


@pytest.fixture(scope="module")
def server_dsn(server: PrivateServer) -> str:
    """A database of the private server, ready for fault_app."""
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE process_faults")
    dsn = conninfo.make_conninfo(server.get_uri(), dbname="process_faults")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(procrastinate_schema.SchemaManager.get_schema())
    return add_side_tables(dsn)


@asynccontextmanager
async def open_app(dsn: str) -> AsyncIterator[App]:
    """fault_app's App on `dsn`, its tables emptied."""
    app = fault_app.make_app(dsn)
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


@pytest.fixture
async def app(fault_dsn: str) -> AsyncIterator[App]:
    """fault_app's App on the module's database, emptied for this test."""
    async with open_app(fault_dsn) as app:
        yield app


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[WorkerProcesses]:
    """The worker subprocesses of one test; any left running at the end are killed."""
    async with WorkerProcesses(tmp_path) as processes:
        yield processes
    print(processes.tails(40))  # shown by pytest when the test failed


async def poll(
    check: Callable[[], Awaitable[bool]],
    *,
    within: float,
    workers: WorkerProcesses,
    alive: tuple[anyio.abc.Process, ...] = (),
) -> bool:
    """Poll `check` until true (True), or `within` s (False); fail if an `alive` worker exits."""
    with anyio.move_on_after(within):
        while not await check():
            for process in alive:
                if process.returncode is not None:
                    raise AssertionError(
                        f"worker {process.pid} exited ({process.returncode}){workers.tails()}"
                    )
            await anyio.sleep(POLL_INTERVAL)
        return True
    return False


async def wait_for(
    check: Callable[[], Awaitable[bool]],
    *,
    within: float,
    what: str,
    workers: WorkerProcesses,
    alive: tuple[anyio.abc.Process, ...] = (),
) -> None:
    """Poll `check` until true; fail after `within` s, or at once if an `alive` worker exited."""
    if not await poll(check, within=within, workers=workers, alive=alive):
        raise AssertionError(f"not within {within} s: {what}{workers.tails()}")


async def fetch(app: App, query: str, **params: Any) -> list[dict[str, Any]]:
    return await app.connector.execute_query_all_async(query, **params)  # type: ignore[arg-type]


async def statuses(app: App) -> dict[int, tuple[str, int]]:
    """Each job's (status, attempts), by id."""
    rows = await fetch(app, "SELECT id, status, attempts FROM procrastinate_jobs")
    return {row["id"]: (row["status"], row["attempts"]) for row in rows}


async def count_status(app: App, status: str) -> int:
    rows = await fetch(
        app, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = %(s)s", s=status
    )
    return int(rows[0]["n"])


async def all_done(app: App, total: int) -> bool:
    return await count_status(app, "succeeded") == total


async def runs(app: App) -> dict[int, list[tuple[int, bool]]]:
    """Each job's runs as (attempt, finished), by job id, in attempt order."""
    rows = await fetch(
        app,
        "SELECT job_id, attempt, ended_at IS NOT NULL AS finished FROM fault_runs "
        "ORDER BY job_id, attempt",
    )
    by_job: dict[int, list[tuple[int, bool]]] = collections.defaultdict(list)
    for row in rows:
        by_job[row["job_id"]].append((row["attempt"], row["finished"]))
    return dict(by_job)


async def started(app: App, job_ids: list[int], attempt: int = 0) -> set[int]:
    """Which of `job_ids` have a run of `attempt` recorded (the task's code is running)."""
    rows = await fetch(
        app,
        "SELECT job_id FROM fault_runs WHERE job_id = ANY(%(ids)s) AND attempt = %(attempt)s",
        ids=job_ids,
        attempt=attempt,
    )
    return {row["job_id"] for row in rows}


async def defer(app: App, count: int, task: str = "fault.run", **options: Any) -> list[int]:
    """`count` jobs of `task` with the same arguments and options; their ids in order."""
    kwargs = options.pop("kwargs", {})
    return await app.configure_task(task, **options).batch_defer_async(
        *[dict(kwargs) for _ in range(count)]
    )


# -- a killed worker -----------------------------------------------------------------------------


async def test_sigkill_loses_no_job_and_reruns_only_the_running_ones(
    app: App, fault_dsn: str, workers: WorkerProcesses, anyio_backend: str
) -> None:
    """SIGKILL with 4 jobs running: a worker with a 2 s stalled timeout reruns exactly those 4."""
    quick = await defer(app, 6, priority=1)  # taken first
    blocked = await defer(app, 8, kwargs={"block": True})
    victim = await workers.start(
        fault_dsn, anyio_backend, "--concurrency", "4", block=True, **FAST_HEARTBEAT
    )

    async def four_blocked_running() -> bool:
        return (
            await count_status(app, "succeeded") == len(quick)
            and len(await started(app, blocked)) == 4
        )

    await wait_for(
        four_blocked_running,
        within=20,
        what="6 quick jobs done, 4 blocked ones running",
        workers=workers,
        alive=(victim,),
    )
    running = await started(app, blocked)
    assert await workers.stop(victim, sig=signal.SIGKILL) == -signal.SIGKILL
    before = await statuses(app)
    assert {before[job_id][0] for job_id in running} == {"doing"}
    # The others are waiting, or claimed ahead by the victim (doing, never started there).
    assert {before[job_id] for job_id in set(blocked) - running} <= {("todo", 0), ("doing", 0)}

    rescuer = await workers.start(fault_dsn, anyio_backend, "--concurrency", "4", **RESCUER)

    async def all_succeeded() -> bool:
        return await count_status(app, "succeeded") == len(quick) + len(blocked)

    await wait_for(
        all_succeeded, within=30, what="every job succeeded", workers=workers, alive=(rescuer,)
    )
    assert await workers.stop(rescuer) == 0

    after = await statuses(app)
    ran = await runs(app)
    assert {status for status, _ in after.values()} == {"succeeded"}
    for job_id in quick + blocked:
        if job_id in running:  # killed mid-run, recovered (no attempt spent), run again
            assert after[job_id] == ("succeeded", 1)
            assert ran[job_id] == [(0, False), (1, True)]
        else:  # ran once, to the end (a job claimed ahead ran only on the rescuer)
            [(_, finished)] = ran[job_id]
            assert finished


async def test_a_job_that_kills_its_worker_each_run_fails_after_max_recoveries(
    app: App, fault_dsn: str, workers: WorkerProcesses, anyio_backend: str
) -> None:
    """A job that SIGKILLs its worker: three workers die, the fourth fails it (max 2, CLI)."""
    (job_id,) = await defer(app, 1, task="fault.poison")
    quick = {**RESCUER, "stalled_worker_timeout": 1.0}
    for _ in range(3):  # the first run, then after each of two recoveries
        victim = await workers.start(fault_dsn, anyio_backend, "--max-recoveries=2", **quick)
        assert await workers.wait(victim, within=20) == -signal.SIGKILL
    assert await statuses(app) == {job_id: ("doing", 0)}
    last = await workers.start(fault_dsn, anyio_backend, "--max-recoveries=2", **quick)

    async def failed() -> bool:
        return await statuses(app) == {job_id: ("failed", 0)}

    await wait_for(failed, within=20, what="the job failed", workers=workers, alive=(last,))
    assert await workers.stop(last) == 0
    assert f"fault.poison[{job_id}] failed: its worker died or stalled in its last 3 runs" in (
        workers.tails(100)
    )
    events = await fetch(
        app,
        "SELECT type::text FROM procrastinate_events WHERE job_id = %(id)s ORDER BY id",
        id=job_id,
    )
    assert [row["type"] for row in events].count("started") == 3


async def test_frozen_workers_late_outcome_leaves_the_rerun_alone(
    app: App, fault_dsn: str, workers: WorkerProcesses, anyio_backend: str
) -> None:
    """A worker frozen past the stalled timeout wakes: its late outcome leaves the rerun be."""
    [job_id] = await defer(app, 1, "fault.slow_first", kwargs={"first": 1.0, "later": 4.0})
    frozen = await workers.start(fault_dsn, anyio_backend, **FAST_HEARTBEAT)

    async def run_started(attempt: int) -> bool:
        return bool(await started(app, [job_id], attempt))

    await wait_for(
        lambda: run_started(0), within=15, what="first run", workers=workers, alive=(frozen,)
    )
    frozen.send_signal(signal.SIGSTOP)
    try:
        rescuer = await workers.start(fault_dsn, anyio_backend, **RESCUER)
        await wait_for(
            lambda: run_started(1), within=15, what="the rerun", workers=workers, alive=(rescuer,)
        )
    finally:
        frozen.send_signal(signal.SIGCONT)

    # The frozen worker wakes with its 1 s sleep long over: it finishes its run and writes
    # its outcome while the rescuer's 4 s run goes on. Watch the job until that run ends.
    seen: set[str] = set()

    async def rerun_finished() -> bool:
        [row] = await fetch(
            app,
            "SELECT job.status, run.ended_at IS NOT NULL AS finished "
            "FROM procrastinate_jobs AS job JOIN fault_runs AS run ON run.job_id = job.id "
            "WHERE job.id = %(id)s AND run.attempt = 1",
            id=job_id,
        )
        if not row["finished"]:
            seen.add(row["status"])
        return bool(row["finished"])

    await wait_for(
        rerun_finished, within=15, what="the rerun's end", workers=workers, alive=(rescuer,)
    )
    await wait_for(
        lambda: all_done(app, 1),
        within=10,
        what="the job succeeded",
        workers=workers,
    )
    assert await workers.stop(rescuer) == 0
    assert await workers.stop(frozen) == 0
    assert seen == {"doing"}, f"job {job_id} was {seen} while the rescuer still ran it"
    # The frozen worker's run, recovered by the rescuer, spent no attempt.
    assert (await statuses(app))[job_id] == ("succeeded", 1)
    # The frozen worker wakes with its run's 1 s sleep long over: that run either ends or is
    # cut by fencing (its heartbeat finds its row pruned), whichever comes first. Both are
    # right; what matters is that its outcome leaves the rescuer's run alone.
    [(first, _), rerun] = (await runs(app))[job_id]
    assert (first, rerun) == (0, (1, True))


# -- a database that goes away -------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["restart", "terminate"])
async def test_worker_rides_out_a_database_fault(
    server: PrivateServer,
    server_dsn: str,
    workers: WorkerProcesses,
    anyio_backend: str,
    fault: str,
) -> None:
    """Server restarted (or every backend terminated) mid-queue: the worker finishes alone."""
    async with open_app(server_dsn) as app:
        ids = await defer(app, 300, kwargs={"hold": 0.02})
        worker = await workers.start(server_dsn, anyio_backend, "--concurrency", "4")

        async def under_way() -> bool:
            return await count_status(app, "succeeded") >= 40

        await wait_for(under_way, within=20, what="40 jobs done", workers=workers, alive=(worker,))
        if fault == "restart":
            await anyio.to_thread.run_sync(pg_ctl, server, "restart", "-m", "fast")
        else:
            await app.connector.execute_query_async(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        await wait_for(
            lambda: all_done(app, len(ids)),
            within=60,
            what="every job succeeded after the fault",
            workers=workers,
            alive=(worker,),
        )
        assert await workers.stop(worker) == 0
        after = await statuses(app)
        assert collections.Counter(status for status, _ in after.values()) == {
            "succeeded": len(ids)
        }
        ran = await runs(app)
        assert set(ran) == set(ids)
        # A job whose own query met the outage failed that run and was retried (fault.run
        # retries database errors); its last run finished.
        for job_id in ids:
            assert ran[job_id][-1] == (after[job_id][1] - 1, True)


# -- a reply lost on the way back ----------------------------------------------------------------


class LosingProxy(Proxy):
    """A TCP proxy to PostgreSQL that, once, lets a claim commit and then drops its reply.

    The first client message holding dawdle's claim query goes through; everything the
    server answers on that connection is swallowed, and once its ReadyForQuery shows that
    the statement committed, both sides are closed: the worker sees "server closed the
    connection unexpectedly" for a claim that did happen. Every other byte is relayed.
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.dropped = anyio.Event()
        self._armed = False

    async def forward(
        self, client: anyio.abc.SocketStream, upstream: anyio.abc.SocketStream
    ) -> None:
        """Relay one connection; the first that carries a claim loses the claim's answer."""
        losing = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def to_server() -> None:
                tail = b""
                async for chunk in client:
                    seen, tail = tail + chunk, chunk[-len(CLAIM_MARKER) :]
                    if not self._armed and CLAIM_MARKER in seen:
                        self._armed = True
                        losing.set()
                    await upstream.send(chunk)
                await pass_on_eof(upstream)  # the server then closes: to_client ends

            async def to_client() -> None:
                swallowed = b""
                async for chunk in upstream:
                    if not losing.is_set():
                        await client.send(chunk)
                        continue
                    swallowed += chunk
                    if READY_FOR_QUERY in swallowed:  # committed: now lose the answer
                        self.dropped.set()
                        tg.cancel_scope.cancel()  # no read of upstream is pending now
                        return
                await pass_on_eof(client)  # the worker then closes: to_server ends

            tg.start_soon(to_server)
            tg.start_soon(to_client)


async def test_claim_whose_reply_is_lost_does_not_leave_jobs_doing(
    app: App, fault_dsn: str, workers: WorkerProcesses, anyio_backend: str
) -> None:
    """The connection drops after a claim commits, before its rows arrive: the jobs still run."""
    ids = await defer(app, 3)
    proxy = LosingProxy(fault_dsn)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.serve)
        worker = await workers.start(
            proxy.client_dsn(port), anyio_backend, "--concurrency=4", **RESCUER
        )
        with anyio.fail_after(20):
            await proxy.dropped.wait()
        lost = await fetch(
            app, "SELECT id FROM procrastinate_jobs WHERE status = 'doing' ORDER BY id"
        )
        assert [row["id"] for row in lost] == ids  # claimed, but the worker never heard
        try:
            ran = await poll(
                lambda: all_done(app, len(ids)), within=10, workers=workers, alive=(worker,)
            )
        finally:
            exit_code = await workers.stop(worker)
            with anyio.fail_after(10):
                await proxy.closed()  # the worker's connections end before the proxy does
            tg.cancel_scope.cancel()
    assert ran, "the jobs of the lost claim stay doing, owned by a live worker, never run"
    assert exit_code == 0
    assert (await runs(app)).keys() == set(ids)


# -- many workers ------------------------------------------------------------------------------


async def test_four_workers_run_20000_jobs_exactly_once(
    app: App, fault_dsn: str, workers: WorkerProcesses, anyio_backend: str
) -> None:
    """2 asyncio + 2 trio workers, 20,000 jobs: each once, locks never overlap, order kept.

    Every job succeeds once (fault_once is keyed by job id, so a second run would fail the
    job). Jobs of one lock never overlap in time, across processes, and run in (priority
    desc, id) order, which the fetch query guarantees fleet-wide. Strict priority order
    holds only where a single worker with concurrency 1 serves a queue: with more slots or
    workers, two jobs taken together may start in either order. So each backend has one
    concurrency-1 worker that alone serves its queue "prio_<backend>" (1,000 jobs of random
    priorities) besides the shared queue; the other two workers (concurrency 10) serve
    only "shared" (18,000 jobs, 1,000 of them on 20 locks).
    """
    rng = random.Random(20_000)
    queues_and_locks = [
        *[("prio_asyncio", None)] * 1_000,
        *[("prio_trio", None)] * 1_000,
        *[("shared", f"lock-{n % 20}") for n in range(1_000)],
        *[("shared", None)] * 17_000,
    ]
    planned = [
        jobs.Job(
            id=None,
            queue=queue,
            lock=lock,
            queueing_lock=None,
            task_name="fault.once",
            priority=rng.randrange(10),
        )
        for queue, lock in queues_and_locks
    ]
    rng.shuffle(planned)  # ids interleave queues, locks and priorities
    ids: list[int] = []
    for start in range(0, len(planned), 2_000):
        deferred = await app.job_manager.batch_defer_jobs_async(planned[start : start + 2_000])
        ids += [job.id for job in deferred if job.id is not None]
    assert len(ids) == 20_000
    # What autovacuum does within a minute of a bulk load. Until then the planner, with no
    # statistics, reads and sorts every todo row on each fetch (23 ms instead of 1.6 ms).
    await app.connector.execute_query_async("ANALYZE procrastinate_jobs")

    started_workers = {}
    for backend in ("asyncio", "trio"):
        started_workers[f"{backend}-solo"] = await workers.start(
            fault_dsn,
            backend,
            "--one-shot",
            "--concurrency=1",
            f"--queues=shared,prio_{backend}",
            f"--name={backend}-solo",
        )
        started_workers[f"{backend}-wide"] = await workers.start(
            fault_dsn,
            backend,
            "--one-shot",
            "--concurrency=10",
            "--queues=shared",
            f"--name={backend}-wide",
        )
    with anyio.fail_after(150):
        for process in started_workers.values():
            assert await workers.wait(process, within=150) == 0

    after = await statuses(app)
    assert collections.Counter(after.values()) == {("succeeded", 1): len(ids)}
    rows = await fetch(
        app, "SELECT job_id, queue_name, lock, priority, pid FROM fault_once ORDER BY job_id"
    )
    assert [row["job_id"] for row in rows] == sorted(ids)
    by_pid = collections.Counter(row["pid"] for row in rows)
    pids = {name: process.pid for name, process in started_workers.items()}
    assert all(by_pid[pid] > 0 for pid in pids.values()), (by_pid, pids)

    overlaps = await fetch(
        app,
        "SELECT a.job_id AS a, b.job_id AS b FROM fault_once AS a JOIN fault_once AS b "
        "ON a.lock = b.lock AND a.job_id < b.job_id "
        "AND a.started_at < b.ended_at AND b.started_at < a.ended_at",
    )
    assert overlaps == []
    lock_order = await fetch(
        app,
        "SELECT lock, array_agg(ARRAY[-priority, job_id] ORDER BY started_at) AS ran "
        "FROM fault_once WHERE lock IS NOT NULL GROUP BY lock",
    )
    assert len(lock_order) == 20
    for row in lock_order:
        assert row["ran"] == sorted(row["ran"]), f"{row['lock']} ran out of order"

    for backend in ("asyncio", "trio"):
        ran = await fetch(
            app,
            "SELECT job_id, priority, pid FROM fault_once WHERE queue_name = %(queue)s "
            "ORDER BY started_at",
            queue=f"prio_{backend}",
        )
        assert len(ran) == 1_000
        assert {row["pid"] for row in ran} == {pids[f"{backend}-solo"]}
        order = [(-row["priority"], row["job_id"]) for row in ran]
        assert order == sorted(order), f"prio_{backend} ran out of priority order"
    print(
        "jobs per worker:",
        {name: by_pid[pid] for name, pid in pids.items()},
    )


# -- a graceful stop -----------------------------------------------------------------------------


async def test_sigterm_under_load_exits_0_and_puts_interrupted_jobs_back(
    app: App, fault_dsn: str, workers: WorkerProcesses, anyio_backend: str
) -> None:
    """SIGTERM with 4 hung jobs among 400 quick ones: exit 0, none doing, hung ones rerun."""
    blocked = await defer(app, 4, priority=1, kwargs={"block": True})
    quick = await defer(app, 400, kwargs={"hold": 0.01})
    worker = await workers.start(
        fault_dsn,
        anyio_backend,
        "--concurrency=8",
        "--shutdown-graceful-timeout=1",
        block=True,
    )

    async def loaded() -> bool:
        return len(await started(app, blocked)) == 4 and await count_status(app, "succeeded") >= 50

    await wait_for(
        loaded, within=20, what="4 hung jobs, 50 quick done", workers=workers, alive=(worker,)
    )
    assert await workers.stop(worker, within=15) == 0

    stopped = await statuses(app)
    assert "doing" not in {status for status, _ in stopped.values()}
    assert {stopped[job_id] for job_id in blocked} == {("todo", 0)}  # put back: no attempt spent
    assert {stopped[job_id] for job_id in quick} <= {("succeeded", 1), ("todo", 0)}
    ran_before = await runs(app)
    # Quick jobs in progress at the signal finished within the graceful timeout.
    assert all(ran_before[job_id] == [(0, True)] for job_id in quick if job_id in ran_before)

    finisher = await workers.start(fault_dsn, anyio_backend, "--one-shot", "--concurrency=8")
    assert await workers.wait(finisher, within=60) == 0
    after = await statuses(app)
    ran = await runs(app)
    for job_id in blocked:
        assert after[job_id] == ("succeeded", 1)
        assert ran[job_id] == [(0, False), (1, True)]
    for job_id in quick:
        assert after[job_id] == ("succeeded", 1)
        assert ran[job_id] == [(0, True)]
