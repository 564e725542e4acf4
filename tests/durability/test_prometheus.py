"""Prometheus: /metrics scraped over TCP while a worker runs, on asyncio and Trio, PostgreSQL.

The scrapes are plain HTTP/1.1 over anyio sockets. The queue gauges are checked against
the table itself. Tests marked `needs_worker_hooks` need `Worker(..., hooks=...)` (the
worker emitting events to its hooks); the others only need the database.
"""

from __future__ import annotations

import datetime
import socket
import sys
import time
import types
from collections.abc import AsyncIterator

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dawdle import (
    App,
    ConfigurationError,
    InMemoryConnector,
    PrometheusMetrics,
    PsycopgConnector,
    serve_metrics,
)
from dawdle._cli import main
from tests.durability.worker.helpers import make_worker

TRUNCATE = (
    "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
    "procrastinate_events RESTART IDENTITY CASCADE"
)

# What the gauges say, computed from the table without the gauges' query.
TABLE_COUNTS = """
SELECT queue_name AS queue,
       count(*) FILTER (WHERE status = 'todo') AS todo,
       count(*) FILTER (WHERE status = 'todo' AND coalesce(scheduled_at <= now(), true)) AS ready,
       count(*) FILTER (WHERE status = 'doing') AS doing
  FROM procrastinate_jobs
 GROUP BY queue_name
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def app(schema_dsn: str) -> AsyncIterator[App]:
    """An open App on the module's database, emptied."""
    app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    async with app.open_async():
        await app.connector.execute_query_async(TRUNCATE)
        yield app


async def http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send `request` to 127.0.0.1:port; the response's status and body."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request)
            response = b""
            while True:
                try:
                    response += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def scrape(port: int) -> Samples:
    """GET /metrics, parsed: (name, labels) -> value."""
    status, body = await http(port, b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 if absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def free_port() -> int:
    """A port nobody listens on now (the system's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.anyio
async def test_queue_gauges_match_the_table(app: App) -> None:
    """todo, ready and doing per queue as the table counts them; the oldest ready job's age."""
    before = time.monotonic()

    @app.task(name="mail.send", queue="mail")
    async def send() -> None:
        raise AssertionError("never run here")

    now = datetime.datetime.now(datetime.UTC)
    for _ in range(3):
        await send.defer_async()
    for _ in range(2):
        await send.configure(schedule_in={"hours": 1}).defer_async()
    await send.configure(
        queue="reports", schedule_at=now - datetime.timedelta(minutes=1)
    ).defer_async()
    await send.configure(queue="reports").defer_async()
    await app.connector.execute_query_async(
        "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = 7"
    )
    metrics = PrometheusMetrics()
    async with serve_metrics(app.connector, metrics, port=0) as port:
        samples = await scrape(port)
    waited = time.monotonic() - before

    rows = await app.connector.execute_query_all_async(TABLE_COUNTS)
    assert {row["queue"] for row in rows} == {"mail", "reports"}
    for row in rows:
        for field in ("todo", "ready", "doing"):
            gauge = sample(samples, f"dawdle_queue_jobs_{field}", queue=row["queue"])
            assert gauge == row[field], (row, field)
    mail_age = sample(samples, "dawdle_queue_oldest_ready_seconds", queue="mail")
    assert 0 < mail_age <= waited  # from the oldest unscheduled job's deferral
    reports_age = sample(samples, "dawdle_queue_oldest_ready_seconds", queue="reports")
    assert 60 <= reports_age <= 60 + waited  # from the scheduled job's time, a minute ago


@pytest.mark.anyio
async def test_a_job_put_back_is_ready_since_it_was_put_back(app: App) -> None:
    """A stalled run put back to 'todo' (scheduled_at NULL) dates from then, not its deferral."""

    @app.task(name="mail.send", queue="mail")
    async def send() -> None:
        raise AssertionError("never run here")

    await send.defer_async()
    await app.connector.execute_query_async(
        "UPDATE procrastinate_events SET at = now() - interval '1 hour' WHERE type = 'deferred'"
    )
    before = time.monotonic()
    for status in ("doing", "todo"):  # Procrastinate's trigger writes 'deferred_for_retry'
        await app.connector.execute_query_async(
            f"UPDATE procrastinate_jobs SET status = '{status}'"  # noqa: S608 (constants)
        )
    async with serve_metrics(app.connector, PrometheusMetrics(), port=0) as port:
        samples = await scrape(port)
    waited = time.monotonic() - before
    assert sample(samples, "dawdle_queue_jobs_ready", queue="mail") == 1
    assert 0 < sample(samples, "dawdle_queue_oldest_ready_seconds", queue="mail") <= waited


@pytest.mark.anyio
async def test_the_server_answers_only_get_metrics(app: App) -> None:
    """404 elsewhere, 405 for other methods, 400 for garbage; it serves on after each."""
    async with serve_metrics(app.connector, PrometheusMetrics(), port=0) as port:
        assert (await http(port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 404
        assert (await http(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
        assert (await http(port, b"hello\r\n\r\n"))[0] == 400
        endless_head = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"x" * 9000
        assert (await http(port, endless_head))[0] == 400
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /metr")  # and gone
        status, body = await http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"")
        assert "dawdle_queue_stats_failures_total" in str(await scrape(port))


@pytest.mark.anyio
async def test_a_port_in_use_is_named_and_the_port_is_freed(app: App) -> None:
    """A second server on the port fails naming host:port; leaving the block frees it."""
    metrics = PrometheusMetrics()
    async with serve_metrics(app.connector, metrics, port=0) as port:
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            async with serve_metrics(app.connector, PrometheusMetrics(), port=port):
                pass
    async with serve_metrics(app.connector, metrics, port=port) as again:
        assert again == port
        assert await scrape(port)


@pytest.mark.anyio
async def test_a_bad_port_is_refused(app: App) -> None:
    """Outside 0-65535: ConfigurationError naming the value."""
    with pytest.raises(ConfigurationError, match="got 70000"):
        async with serve_metrics(app.connector, PrometheusMetrics(), port=70000):
            pass


@pytest.mark.anyio
async def test_scrapes_while_jobs_run_see_the_counters_move(app: App) -> None:
    """needs_worker_hooks: two jobs held running, scraped; then all done, scraped again."""
    started = 0
    both_running = anyio.Event()
    release = anyio.Event()

    @app.task(name="hold", queue="work")
    async def hold(n: int) -> None:
        nonlocal started
        started += 1
        if started == 2:
            both_running.set()
        if n < 2:
            await release.wait()

    @app.task(name="fail", queue="work")
    async def fail() -> None:
        raise ValueError("boom")

    # Scheduled (now): a job's queue time is known from its scheduled_at.
    now = datetime.datetime.now(datetime.UTC)
    for n in range(5):
        await hold.configure(schedule_at=now).defer_async(n=n)
    await fail.defer_async()
    metrics = PrometheusMetrics()
    worker = make_worker(app, concurrency=2, wait=False, hooks=[metrics])
    async with (
        serve_metrics(app.connector, metrics, port=0) as port,
        anyio.create_task_group() as group,
    ):
        group.start_soon(worker.run)
        with anyio.fail_after(10):
            await both_running.wait()
        during = await scrape(port)
        release.set()
    # A new server: its queue gauges are read afresh, the worker's counters are the same.
    async with serve_metrics(app.connector, metrics, port=0) as port:
        after = await scrape(port)

    work = {"queue": "work", "task": "hold"}
    assert sample(during, "dawdle_jobs_running", **work) == 2
    assert sample(during, "dawdle_queue_jobs_doing", queue="work") == 2
    assert sample(during, "dawdle_queue_jobs_todo", queue="work") == 4
    assert sample(during, "dawdle_claim_latency_seconds_count") >= 1
    assert sample(after, "dawdle_jobs_running", **work) == 0
    assert sample(after, "dawdle_jobs_finished_total", **work, outcome="succeeded") == 5
    failed = {"queue": "work", "task": "fail", "outcome": "failed"}
    assert sample(after, "dawdle_jobs_finished_total", **failed) == 1
    assert sample(after, "dawdle_job_duration_seconds_count", **work) == 5
    assert sample(after, "dawdle_job_queue_time_seconds_count", **work) == 5
    assert sample(after, "dawdle_jobs_claimed_total") == 6
    assert sample(after, "dawdle_queue_jobs_todo", queue="work") == 0
    assert sample(after, "dawdle_queue_jobs_doing", queue="work") == 0


# -- the command line ---------------------------------------------------------------------------


def cli_app(monkeypatch: pytest.MonkeyPatch, app: App) -> str:
    """Register `app` in an importable module; its --app path."""
    module = types.ModuleType("prometheus_cli_durability_app")
    module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return f"{module.__name__}:app"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cli_port_in_use_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """`dawdle worker --metrics-port N` with N taken: exit 2, one line naming 127.0.0.1:N."""
    path = cli_app(monkeypatch, App(connector=InMemoryConnector()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["worker", "--app", path, "--backend", backend, "--metrics-port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cli_worker_serves_metrics_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, schema_dsn: str, backend: str
) -> None:
    """needs_worker_hooks: `dawdle worker --one-shot --metrics-port N`; a job scrapes it."""
    app = App(connector=PsycopgConnector(conninfo=schema_dsn))
    port = free_port()
    scraped: list[Samples] = []

    @app.task(name="look", queue="cli")
    async def look() -> None:
        scraped.append(await scrape(port))

    async def defer() -> None:
        async with app.open_async():
            await app.connector.execute_query_async(TRUNCATE)
            await look.defer_async()

    anyio.run(defer, backend=backend)
    argv = ["worker", "--app", cli_app(monkeypatch, app), "--backend", backend, "--one-shot"]
    assert main([*argv, "--metrics-port", str(port)]) == 0

    (seen,) = scraped
    assert sample(seen, "dawdle_jobs_running", queue="cli", task="look") == 1
    assert sample(seen, "dawdle_queue_jobs_doing", queue="cli") == 1
    with socket.socket() as again:  # the worker has stopped: nobody listens on the port
        # As any server does, so the scrapes' connections in TIME_WAIT do not count.
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()
