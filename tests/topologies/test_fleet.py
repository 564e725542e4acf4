"""Many hosts on one PostgreSQL: 8 worker processes (4 on asyncio, 4 on Trio) and a producer.

For $DAWDLE_FLEET_SECONDS (60 unless set) the producer keeps the queue deep and the
workers drain it, once with psycopg preparing statements (its default) and once without.
Printed, to size a fleet: jobs/s, the claim statement's p50 and p99 (as each worker timed
it), and the database server's CPU per 1,000 jobs (its processes' CPU
time, from /proc, over the same window), against the workers' own CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from dawdle._embedded._files import Postmaster
from tests.durability.private_server import PrivateServer

SECONDS = float(os.environ.get("DAWDLE_FLEET_SECONDS", "60"))
WORKERS = ("asyncio", "trio") * 4
TICKS = os.sysconf("SC_CLK_TCK")

pytestmark = pytest.mark.timeout(SECONDS + 120)


def server_cpu(postmaster_pid: int) -> float:
    """CPU seconds of the server: the postmaster, its reaped children, its live children."""
    fields = Path(f"/proc/{postmaster_pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")": state is field 3; utime, stime, cutime, cstime are fields 14 to 17.
    total = sum(int(value) for value in fields[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile: counted in the postmaster's cutime
            continue
        if int(stat[1]) == postmaster_pid:
            total += int(stat[11]) + int(stat[12])
    return total / TICKS


def database_counters(dsn: str) -> tuple[int, int]:
    """Transactions committed in the database, and WAL flushes to disk, so far."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
            " (SELECT wal_sync FROM pg_stat_wal)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def spawn(role: str, dsn: str, prepare: str) -> subprocess.Popen[str]:
    """One host of the fleet, as a process of its own."""
    return subprocess.Popen(  # noqa: S603 (our interpreter and module)
        [sys.executable, "-m", "tests.topologies.fleet", role, dsn, str(SECONDS), prepare],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


@pytest.mark.parametrize("prepare", ["5", "none"])
def test_eight_worker_processes_and_a_producer(
    server: PrivateServer, database: str, prepare: str
) -> None:
    """Every job worked once, nothing left doing; the fleet's figures printed."""
    postmaster = Postmaster.read(server.server.data_dir)
    assert postmaster is not None
    hosts = [spawn(role, database, prepare) for role in WORKERS]
    producer = spawn("produce", database, prepare)
    cpu_before, started = server_cpu(postmaster.pid), time.monotonic()
    commits_before, syncs_before = database_counters(database)
    results = [json.loads(host.communicate(timeout=SECONDS + 60)[0]) for host in hosts]
    cpu_after, elapsed = server_cpu(postmaster.pid), time.monotonic() - started
    producer.communicate(timeout=60)
    commits_after, syncs_after = database_counters(database)
    assert all(host.returncode == 0 for host in [*hosts, producer])
    worked = sum(result["worked"] for result in results)
    assert all(result["worked"] > 0 for result in results)
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), "
            "count(*) FILTER (WHERE status = 'doing'), "
            "count(*) FILTER (WHERE status = 'succeeded' AND attempts <> 1) "
            "FROM procrastinate_jobs"
        ).fetchone()
        # The rate while every host ran: from the first to the last job that succeeded.
        window = conn.execute(
            "SELECT extract(epoch FROM max(at) - min(at))::float FROM procrastinate_events "
            "WHERE type = 'succeeded'"
        ).fetchone()
    assert row == (worked, 0, 0)
    assert window is not None
    claims = sorted(seconds for result in results for seconds in result["claims"])
    p99 = claims[int(len(claims) * 0.99)]
    database_cpu = cpu_after - cpu_before
    workers_cpu = sum(result["cpu"] for result in results)
    print(
        f"\nfleet of 8 worker processes (4 asyncio, 4 trio; concurrency 10 each; "
        f"prepare_threshold={prepare}) and a producer, {elapsed:.0f} s on "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}):\n"
        f"  {worked / window[0]:,.0f} jobs/s ({worked:,} jobs in {window[0]:.1f} s)\n"
        f"  claim statement: p50 {statistics.median(claims) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms ({len(claims):,} claims)\n"
        f"  database CPU: {database_cpu * 1000 / worked * 1000:.0f} ms per 1,000 jobs "
        f"({database_cpu / elapsed:.2f} cores busy); workers' CPU: "
        f"{workers_cpu * 1000 / worked * 1000:.0f} ms per 1,000 jobs "
        f"({workers_cpu / elapsed:.2f} cores)\n"
        f"  per 1,000 jobs: {(commits_after - commits_before) * 1000 / worked:,.0f} "
        f"transactions, {(syncs_after - syncs_before) * 1000 / worked:,.0f} WAL flushes "
        f"({(syncs_after - syncs_before) / elapsed:,.0f} flushes/s)"
    )
