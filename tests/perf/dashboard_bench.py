"""`python -m tests.perf.dashboard_bench [--dsn DSN] [--jobs N] [--runs R]`: page times at 1M jobs.

On a fresh database: N (1,000,000) jobs over a week, five queues, eight tasks (and a rare
one of ten jobs), 3 % failed with a stored error each, the newest 3.4 % waiting or
running (100 running), the 6 % before them finished within the last hour; each job has its
'deferred' event and, once finished, its last one. Then each dashboard page is rendered
R (30) times through the ASGI app in process (the overview also as a dashboard's first
render, before its chart's past minutes are in memory), on asyncio and on Trio, first
without then with the failed jobs' index (`dawdle_jobs_failed`, which the README
suggests). Prints the machine, versions, each page's median, 95th percentile and maximum
in ms, and the plan the jobs list's query takes for each filter.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Final

import anyio
import httpx
import psycopg

import dawdle
from dawdle._dashboard import queries
from dawdle._dashboard.app import dashboard
from tests.perf.benchmark._database import fresh_database, server, server_version
from tests.perf.benchmark._report import machine, versions

# Shares of the jobs: waiting (3.4 %), finished in the last hour (6 %); running ones.
WAITING: Final = 0.034
RECENT: Final = 0.06
RUNNING: Final = 100
TARGET_MS: Final = 100.0

WORKERS = (
    "INSERT INTO procrastinate_workers (last_heartbeat) SELECT now() FROM generate_series(1, 4)"
)
# Inserted without Procrastinate's triggers (NOTIFY per job, events): EVENTS writes those.
JOBS = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts, worker_id)
SELECT (ARRAY['default', 'mail', 'reports', 'billing', 'images'])[1 + n %% 5],
       CASE WHEN n %% 100000 = 7 THEN 'app.tasks.rare'
            ELSE 'app.tasks.' || (ARRAY['send_mail', 'resize', 'bill', 'report', 'sync',
                                        'index', 'notify', 'export'])[1 + n %% 8] END,
       jsonb_build_object('user_id', n, 'note', 'payload ' || n),
       (CASE WHEN n > %(jobs)s - %(running)s THEN 'doing'
             WHEN n > %(jobs)s - %(waiting)s THEN 'todo'
             WHEN n %% 33 = 0 THEN 'failed'
             WHEN n %% 199 = 0 THEN 'cancelled'
             WHEN n %% 997 = 0 THEN 'aborted'
             ELSE 'succeeded' END)::procrastinate_job_status,
       CASE WHEN n %% 33 = 0 THEN 3 ELSE 1 END,
       CASE WHEN n > %(jobs)s - %(running)s
            THEN (SELECT min(id) FROM procrastinate_workers) + n %% 4 END
  FROM generate_series(1, %(jobs)s) AS n
"""
# The newest finished jobs ended within the hour, the others over the week before it.
EVENTS = """
WITH ended AS (
    SELECT id, status,
           CASE WHEN id > %(jobs)s - %(waiting)s - %(recent)s
                THEN now() - interval '1 hour'
                     * (%(jobs)s - %(waiting)s - id) / %(recent)s::float
                ELSE now() - interval '1 hour' - interval '7 days'
                     * (%(jobs)s - %(waiting)s - %(recent)s - id) / %(jobs)s::float
           END AS at
      FROM procrastinate_jobs
)
INSERT INTO procrastinate_events (job_id, type, at)
SELECT id, kind.type::procrastinate_job_event_type, at - kind.before
  FROM ended
 CROSS JOIN LATERAL (VALUES ('deferred', interval '2 s'), (status::text, interval '0'))
       AS kind(type, before)
 WHERE kind.type = 'deferred' OR status NOT IN ('todo', 'doing')
 ORDER BY id, kind.before DESC
"""
ERRORS = """
INSERT INTO dawdle_job_errors (job_id, attempt, exception_type, message, traceback)
SELECT id, 1, 'ConnectionError', 'the mail server hung up',
       'Traceback (most recent call last):' || repeat(E'\\n  File "app/tasks.py", line 1', 20)
  FROM procrastinate_jobs WHERE status = 'failed'
"""


def fill(dsn: str, jobs: int) -> None:
    """The jobs, their events and errors; VACUUM ANALYZE."""
    sizes = {
        "jobs": jobs,
        "waiting": int(jobs * WAITING),
        "running": RUNNING,
        "recent": int(jobs * RECENT),
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(WORKERS)
        conn.execute("ALTER TABLE procrastinate_jobs DISABLE TRIGGER USER")
        conn.execute(JOBS, sizes)
        conn.execute("ALTER TABLE procrastinate_jobs ENABLE TRIGGER USER")
        conn.execute(EVENTS, sizes)
        conn.execute(ERRORS)
        conn.execute("VACUUM ANALYZE")


def pages(dsn: str, jobs: int) -> dict[str, str]:
    """The pages measured: each kind of page, each filter, a deep page, a failed job."""
    middle = jobs // 2
    with psycopg.connect(dsn) as conn:
        failed = conn.execute(
            "SELECT max(id) FROM procrastinate_jobs WHERE id < %s AND status = 'failed'",
            (middle,),
        ).fetchone()
    assert failed is not None
    return {
        "overview": "/",
        "jobs": "/jobs",
        "jobs status=failed": "/jobs?status=failed",
        "jobs status=todo": "/jobs?status=todo",
        "jobs queue=mail": "/jobs?queue=mail",
        "jobs task=bill, queue=mail": "/jobs?task=app.tasks.bill&queue=mail",
        "jobs task=rare (10 jobs)": "/jobs?task=app.tasks.rare",
        f"jobs page at id {middle:,}": f"/jobs?before={middle}",
        "job (failed, with error)": f"/jobs/{failed[0]}",
        "workers": "/workers",
    }


async def measure(dsn: str, paths: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Each page rendered `runs` times (after 3 unmeasured); the times in ms."""
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, max_size=4))
    times: dict[str, list[float]] = {}
    async with app.open_async():
        transport = httpx.ASGITransport(app=dashboard(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            for name, path in paths.items():
                for _ in range(3):
                    warm = await http.get(path)
                    assert warm.status_code == 200, (path, warm.status_code, warm.text[-300:])
                samples = []
                for _ in range(runs):
                    start = time.perf_counter()
                    response = await http.get(path)
                    samples.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200
                times[name] = samples
        # A dashboard just started has no minute of the chart in memory: each render new.
        samples = []
        for _ in range(runs):
            transport = httpx.ASGITransport(app=dashboard(app))
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                start = time.perf_counter()
                response = await http.get("/")
                samples.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200
        times["overview, first render"] = samples
    return times


def plans(dsn: str) -> dict[str, str]:
    """The top of the plan the jobs list's query takes for each filter, on the first page."""
    filters = {
        "none": {},
        "status=failed": {"status": "failed"},
        "status=todo": {"status": "todo"},
        "queue=mail": {"queue": "mail"},
        "task=rare": {"task": "app.tasks.rare"},
    }
    found = {}
    with psycopg.connect(dsn) as conn:
        top = conn.execute("SELECT max(id) + 1 FROM procrastinate_jobs").fetchone()
        assert top is not None
        for name, given in filters.items():
            params: dict[str, Any] = {"status": None, "queue": None, "task": None, **given}
            params |= {"before": top[0], "low": top[0] - queries.SCAN_WINDOW, "limit": 50}
            rows = conn.execute(
                f"EXPLAIN (ANALYZE, COSTS OFF) {queries.LIST_JOBS_WINDOW}", params
            ).fetchall()
            lines = [row[0].strip() for row in rows]
            scans = [line for line in lines if "Scan" in line]
            total = next(line for line in lines if line.startswith("Execution Time"))
            found[name] = f"{scans[0] if scans else lines[0]}; {total}"
    return found


def report(label: str, times: dict[str, list[float]]) -> None:
    print(f"\n{label}")
    print(f"{'page':<30} {'median':>8} {'p95':>8} {'max':>8}  (ms)")
    for name, samples in times.items():
        ordered = sorted(samples)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        flag = "" if max(ordered) < TARGET_MS else "  over 100 ms"
        print(f"{name:<30} {statistics.median(ordered):8.1f} {p95:8.1f} {max(ordered):8.1f}{flag}")


def main() -> None:
    """Parse the options, fill the database, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m tests.perf.dashboard_bench")
    parser.add_argument("--dsn", help="the server (default: $DAWDLE_TEST_DSN, else embedded)")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the table")
    parser.add_argument("--runs", type=int, default=30, help="renders of each page")
    args = parser.parse_args()
    with server(args.dsn) as (server_dsn, _), fresh_database(server_dsn) as dsn:
        start = time.monotonic()
        fill(dsn, args.jobs)
        host = machine()
        print(f"{host['platform']}, {host['cores']} cores, Python {host['python']}")
        print(", ".join(f"{name} {version}" for name, version in versions().items()))
        print(f"server: {server_version(dsn)}")
        print(f"{args.jobs:,} jobs filled in {time.monotonic() - start:.0f} s")
        paths = pages(dsn, args.jobs)
        for backend in ("asyncio", "trio"):
            times = anyio.run(measure, dsn, {"overview": "/"}, args.runs, backend=backend)
            report(f"{backend}, without the failed jobs' index", times)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(queries.CREATE_FAILED_INDEX)
            conn.execute("VACUUM ANALYZE procrastinate_jobs")
        for backend in ("asyncio", "trio"):
            report(
                f"{backend}, with {queries.FAILED_INDEX}",
                anyio.run(measure, dsn, paths, args.runs, backend=backend),
            )
        print("\nthe jobs list's plan, first page, by filter:")
        for name, plan in plans(dsn).items():
            print(f"  {name:<15} {plan}")


if __name__ == "__main__":
    main()
