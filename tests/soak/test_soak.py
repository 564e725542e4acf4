"""Soak: two workers (asyncio and Trio) work a continuous stream of flaky jobs for a long time.

Jobs are `fault.soak`: each run draws its fate (fail 20 %, time out 5 %, else succeed after
0-20 ms), is retried after 0.2 s up to 4 runs in all, and records itself in `fault_runs`.
The stream is throttled so that the backlog stays bounded. At the end the test checks
what must always hold (nothing lost, nothing left doing, each job's runs consistent with
its status and within its retry policy) and that the workers' memory stayed flat.
Run with `nox -s soak`; DAWDLE_SOAK_SECONDS sets the duration (default 600).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import psycopg
import pytest
from procrastinate import schema as procrastinate_schema

from dawdle import App
from tests.durability import fault_app
from tests.durability.fault_app import WorkerProcesses

SECONDS = float(os.environ.get("DAWDLE_SOAK_SECONDS", "600"))
WARM_UP = min(30.0, SECONDS / 10)  # RSS is measured from here: imports and caches are done
JOBS_PER_SECOND = 60
MAX_BACKLOG = 400  # no more deferring while this many jobs wait
ODDS = {"fail": 0.2, "time_out": 0.05}
RSS_GROWTH_LIMIT = 0.20

pytestmark = [
    pytest.mark.soak,
    pytest.mark.anyio,
    pytest.mark.timeout(SECONDS + 300),
]


@pytest.fixture
async def app(database_dsn: str) -> AsyncIterator[App]:
    """fault_app's App on a database of its own, with the schema and the side-effect tables."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(procrastinate_schema.SchemaManager.get_schema())
        conn.execute(fault_app.SETUP_SQL)
    app = fault_app.make_app(database_dsn)
    async with app.open_async():
        yield app


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[WorkerProcesses]:
    """The soak's worker subprocesses; killed at the end if still running."""
    async with WorkerProcesses(tmp_path) as processes:
        yield processes


def rss_kib(process: anyio.abc.Process) -> int:
    """VmRSS of a running process, in KiB, from /proc."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {process.pid}")


async def query(app: App, sql: str, **params: Any) -> list[dict[str, Any]]:
    return await app.connector.execute_query_all_async(sql, **params)  # type: ignore[arg-type]


async def backlog(app: App) -> int:
    [row] = await query(
        app, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    )
    return int(row["n"])


class Stream:
    """What the deferring side saw: job ids, RSS samples per backend, throttled ticks."""

    def __init__(self, backends: list[str]) -> None:
        self.deferred: list[int] = []
        self.rss: dict[str, list[tuple[float, int]]] = {backend: [] for backend in backends}
        self.throttled = 0

    def sample(self, elapsed: float, processes: dict[str, anyio.abc.Process]) -> None:
        for backend, process in processes.items():
            self.rss[backend].append((round(elapsed, 1), rss_kib(process)))


async def defer_for(
    app: App, processes: dict[str, anyio.abc.Process], workers: WorkerProcesses
) -> Stream:
    """Defer a throttled stream of soak jobs for SECONDS; sample the workers' RSS meanwhile."""
    rng = random.Random(600)
    stream = Stream(list(processes))
    deferrer = app.configure_task("fault.soak")
    started = time.monotonic()
    next_sample = WARM_UP
    while (elapsed := time.monotonic() - started) < SECONDS:
        for backend, process in processes.items():
            assert process.returncode is None, f"{backend} worker died{workers.tails()}"
        if elapsed >= next_sample:
            stream.sample(elapsed, processes)
            next_sample += max(5.0, SECONDS / 20)
        if await backlog(app) > MAX_BACKLOG:
            stream.throttled += 1
        else:
            batch = [{**ODDS, "hold": rng.uniform(0, 0.02)} for _ in range(JOBS_PER_SECOND // 10)]
            stream.deferred += await deferrer.batch_defer_async(*batch)
        await anyio.sleep(0.1)  # the pace of the stream, not a wait for anything
    stream.sample(time.monotonic() - started, processes)
    return stream


async def drained(app: App, *, within: float) -> bool:
    """Poll until no job is todo or doing; False if some still are after `within` s."""
    with anyio.move_on_after(within):
        while True:
            if not await backlog(app):
                return True
            await anyio.sleep(0.2)
    return False


def check_job(job: dict[str, Any], job_runs: list[dict[str, Any]]) -> int:
    """Assert that a job's runs agree with its status and policy; count its ok runs timed out."""
    job_id = job["id"]
    assert [run["attempt"] for run in job_runs] == list(range(len(job_runs))), job_id
    assert len(job_runs) == job["attempts"] <= fault_app.SOAK_MAX_ATTEMPTS, job_id
    finished = [run["ended_at"] is not None for run in job_runs]
    # Only a job's last run may have finished, and a finished run means success, except for
    # one race: the run's last statement committed just as its timeout cancelled it (its
    # effect is done, yet it counts as timed out and is retried). Such a run lasted about as
    # long as the timeout.
    for run, done in zip(job_runs[:-1], finished[:-1], strict=True):
        if done:
            lasted = (run["ended_at"] - run["started_at"]).total_seconds()
            assert lasted >= fault_app.SOAK_TIMEOUT / 2, (job_id, lasted)
    if job["status"] == "succeeded":
        assert finished[-1], job_id
    else:
        assert job["status"] == "failed", job_id
        assert not finished[-1], job_id
        assert len(job_runs) == fault_app.SOAK_MAX_ATTEMPTS, job_id
    # A drawn failure or timeout never finishes; a drawn success may time out under load.
    assert all(run["ended_at"] is None for run in job_runs if run["plan"] != "ok"), job_id
    for before, after in itertools.pairwise(job_runs):
        gap = (after["started_at"] - before["started_at"]).total_seconds()
        assert gap >= fault_app.SOAK_RETRY_DELAY * 0.9, (job_id, gap)
    return sum(1 for run in job_runs if run["plan"] == "ok" and run["ended_at"] is None)


async def test_soak_loses_nothing_and_memory_stays_flat(
    app: App, database_dsn: str, workers: WorkerProcesses
) -> None:
    """A long flaky stream on both runtimes: every job accounted for, policy kept, RSS flat."""
    processes = {
        backend: await workers.start(
            database_dsn,
            backend,
            "--concurrency=8",
            "--shutdown-graceful-timeout=5",
            update_heartbeat_interval=1.0,
            stalled_worker_timeout=15.0,
        )
        for backend in ("asyncio", "trio")
    }
    stream = await defer_for(app, processes, workers)
    assert await drained(app, within=120), f"jobs still todo or doing{workers.tails()}"
    for process in processes.values():
        assert await workers.stop(process) == 0

    jobs = {
        row["id"]: row
        for row in await query(app, "SELECT id, status, attempts FROM procrastinate_jobs")
    }
    assert sorted(jobs) == sorted(stream.deferred), "a deferred job is missing (or one appeared)"
    runs: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in await query(
        app,
        "SELECT job_id, attempt, pid, plan, started_at, ended_at FROM fault_runs "
        "ORDER BY job_id, attempt",
    ):
        runs[row["job_id"]].append(row)
    ok_runs_timed_out = sum(check_job(job, runs[job_id]) for job_id, job in jobs.items())

    backend_of = {process.pid: backend for backend, process in processes.items()}
    runs_by_backend = collections.Counter(
        backend_of[run["pid"]] for job_runs in runs.values() for run in job_runs
    )
    statuses = collections.Counter(job["status"] for job in jobs.values())
    summary = {
        "seconds": SECONDS,
        "jobs_deferred": len(stream.deferred),
        "succeeded": statuses["succeeded"],
        "failed_after_max_attempts": statuses["failed"],
        "retried_jobs": sum(1 for job in jobs.values() if job["attempts"] > 1),
        "runs": sum(runs_by_backend.values()),
        "runs_by_backend": dict(runs_by_backend),
        "planned_ok_runs_that_timed_out": ok_runs_timed_out,
        "lost": len(set(stream.deferred) - set(jobs)),
        "throttled_ticks": stream.throttled,
        "rss_kib": stream.rss,
    }
    print("\nsoak summary:")
    for key, value in summary.items():
        print(f"  {key}: {json.dumps(value)}")
    assert all(runs_by_backend[backend] > 0 for backend in processes)
    for backend, samples in stream.rss.items():
        first, last = samples[0][1], samples[-1][1]
        assert last <= first * (1 + RSS_GROWTH_LIMIT), (backend, samples)
