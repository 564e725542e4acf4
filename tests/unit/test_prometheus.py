"""Prometheus metrics: the hooks driven by events, the cached queue gauges, the CLI's options.

The hooks get events directly (no worker); the queue gauges read from a fake connector on
the virtual clock. Serving and scraping over TCP with PostgreSQL is in
tests/durability/test_prometheus.py.
"""

from __future__ import annotations

import datetime
import logging
import sys
import types
from typing import Any, cast

import anyio
import prometheus_client
import pytest
from anyio.abc import Listener, SocketStream
from procrastinate import jobs

import dawdle
from dawdle import App, InMemoryConnector, Outcome, PrometheusMetrics, QueueGauges
from dawdle._cli import build_parser, main
from dawdle._hooks import (
    JobDeferred,
    JobFinished,
    JobRetried,
    JobsClaimed,
    JobSnoozed,
    JobsPruned,
    JobStarted,
    LoopRestarted,
)
from dawdle._prometheus_server import ACCEPT_RETRY, _Handler, _serve_forever
from tests.without_extra import run_without

MAIL = {"queue": "mail", "task": "mail.send"}


def job(queue: str = "mail", task: str = "mail.send") -> jobs.Job:
    return jobs.Job(id=1, queue=queue, lock=None, queueing_lock=None, task_name=task)


def value(metrics: PrometheusMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value; 0 when the sample is absent (a label set never used)."""
    found = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if found is None else found


def test_a_run_moves_running_outcomes_duration_and_queue_time() -> None:
    """Started: one running, its wait observed; finished: none running, outcome and duration."""
    metrics = PrometheusMetrics()
    metrics.job_started(JobStarted(job(), attempt=1, queue_time=0.3))
    assert value(metrics, "dawdle_jobs_running", MAIL) == 1
    assert value(metrics, "dawdle_job_queue_time_seconds_sum", MAIL) == pytest.approx(0.3)
    assert value(metrics, "dawdle_job_queue_time_seconds_bucket", {**MAIL, "le": "0.25"}) == 0
    assert value(metrics, "dawdle_job_queue_time_seconds_bucket", {**MAIL, "le": "0.5"}) == 1

    metrics.job_finished(
        JobFinished(job(), Outcome.FAILED, duration=1.5, attempt=1, exception=ValueError())
    )
    assert value(metrics, "dawdle_jobs_running", MAIL) == 0
    assert value(metrics, "dawdle_jobs_finished_total", {**MAIL, "outcome": "failed"}) == 1
    assert value(metrics, "dawdle_jobs_finished_total", {**MAIL, "outcome": "succeeded"}) == 0
    assert value(metrics, "dawdle_job_duration_seconds_count", MAIL) == 1
    assert value(metrics, "dawdle_job_duration_seconds_sum", MAIL) == pytest.approx(1.5)


def test_an_unknown_queue_time_is_not_observed() -> None:
    """A start without a known wait counts as running but adds no queue-time sample."""
    metrics = PrometheusMetrics()
    metrics.job_started(JobStarted(job(), attempt=1, queue_time=None))
    assert value(metrics, "dawdle_jobs_running", MAIL) == 1
    assert value(metrics, "dawdle_job_queue_time_seconds_count", MAIL) == 0


def test_jobs_are_labelled_by_queue_and_task() -> None:
    """Two tasks' outcomes are counted apart."""
    metrics = PrometheusMetrics()
    for task in ("a", "a", "b"):
        metrics.job_finished(
            JobFinished(job("q", task), Outcome.SUCCEEDED, duration=0, attempt=1, exception=None)
        )
    ok = {"queue": "q", "outcome": "succeeded"}
    assert value(metrics, "dawdle_jobs_finished_total", {**ok, "task": "a"}) == 2
    assert value(metrics, "dawdle_jobs_finished_total", {**ok, "task": "b"}) == 1


def test_worker_events_are_counted() -> None:
    """Deferrals, retries, snoozes, claims (jobs and latency), loop restarts and prunes."""
    metrics = PrometheusMetrics()
    now = datetime.datetime.now(datetime.UTC)
    metrics.job_deferred(JobDeferred(job()))
    metrics.job_retried(JobRetried(job(), attempt=1, delay=2, retry_at=now, reason="retry 1"))
    metrics.job_retried(JobRetried(job(), attempt=2, delay=4, retry_at=now, reason=None))
    metrics.job_snoozed(JobSnoozed(job(), delay=1, until=now))
    metrics.jobs_claimed(JobsClaimed(count=3, latency=0.002))
    metrics.jobs_claimed(JobsClaimed(count=0, latency=0.004))
    metrics.loop_restarted(LoopRestarted("heartbeat", OSError()))
    metrics.jobs_pruned(JobsPruned(count=40, statuses=("succeeded",)))

    assert value(metrics, "dawdle_jobs_deferred_total", MAIL) == 1
    assert value(metrics, "dawdle_job_retries_total", MAIL) == 2
    assert value(metrics, "dawdle_job_snoozes_total", MAIL) == 1
    assert value(metrics, "dawdle_jobs_claimed_total") == 3
    assert value(metrics, "dawdle_claim_latency_seconds_count") == 2
    assert value(metrics, "dawdle_claim_latency_seconds_sum") == pytest.approx(0.006)
    assert value(metrics, "dawdle_loop_restarts_total", {"loop": "heartbeat"}) == 1
    assert value(metrics, "dawdle_jobs_pruned_total") == 40


def test_each_instance_has_its_own_registry() -> None:
    """Two workers' metrics never mix, and the global registry stays free of dawdle's."""
    first, second = PrometheusMetrics(), PrometheusMetrics()
    first.jobs_claimed(JobsClaimed(count=5, latency=0.001))
    assert value(first, "dawdle_jobs_claimed_total") == 5
    assert value(second, "dawdle_jobs_claimed_total") == 0
    assert prometheus_client.REGISTRY.get_sample_value("dawdle_jobs_claimed_total") is None


def test_a_given_registry_is_used() -> None:
    """PrometheusMetrics(registry=...) registers there, for an exporter the user already runs."""
    registry = prometheus_client.CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.jobs_pruned(JobsPruned(count=2, statuses=("failed",)))
    assert registry.get_sample_value("dawdle_jobs_pruned_total") == 2


# -- queue gauges -------------------------------------------------------------------------------


class FakeQueries:
    """Answers the queue statistics with `rows` (or raises `failure`), counting the readings."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.failure: Exception | None = None
        self.readings = 0
        self.delay = 0.0

    async def execute_query_all_async(self, query: str, **arguments: Any) -> list[dict[str, Any]]:
        self.readings += 1
        await anyio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        return self.rows


def row(queue: str, todo: int, ready: int, doing: int, age: float | None) -> dict[str, Any]:
    return {
        "queue": queue,
        "todo": todo,
        "ready": ready,
        "doing": doing,
        "oldest_ready_seconds": age,
    }


def gauges(collector: QueueGauges) -> dict[tuple[str, str], float]:
    """(metric, queue) -> value, as a scrape would see them."""
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector)
    return {
        (sample.name, sample.labels.get("queue", "")): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


@pytest.mark.anyio
async def test_queue_gauges_show_the_reading() -> None:
    """Each queue's todo, ready, doing and oldest ready age; an unknown age reads 0."""
    fake = FakeQueries([row("mail", 5, 3, 1, 12.5), row("reports", 2, 0, 0, None)])
    collector = QueueGauges(fake)
    await collector.refresh()
    seen = gauges(collector)
    assert seen[("dawdle_queue_jobs_todo", "mail")] == 5
    assert seen[("dawdle_queue_jobs_ready", "mail")] == 3
    assert seen[("dawdle_queue_jobs_doing", "mail")] == 1
    assert seen[("dawdle_queue_oldest_ready_seconds", "mail")] == 12.5
    assert seen[("dawdle_queue_oldest_ready_seconds", "reports")] == 0
    assert seen[("dawdle_queue_stats_failures_total", "")] == 0


@pytest.mark.anyio
async def test_queue_gauges_are_read_at_most_once_per_max_age() -> None:
    """Scrapes within max_age reuse the reading; concurrent ones wait for a single one."""
    fake = FakeQueries([row("mail", 1, 1, 0, 0.5)])
    fake.delay = 0.1
    collector = QueueGauges(fake, max_age=5)
    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(collector.refresh)
    assert fake.readings == 1
    await anyio.sleep(4)
    await collector.refresh()
    assert fake.readings == 1
    await anyio.sleep(1)
    fake.rows = [row("mail", 7, 7, 0, 0.5)]
    await collector.refresh()
    assert fake.readings == 2
    assert gauges(collector)[("dawdle_queue_jobs_todo", "mail")] == 7


@pytest.mark.anyio
async def test_a_slow_reading_spaces_out_the_next() -> None:
    """A reading that took 1 s is not repeated for 20 s, whatever max_age says."""
    fake = FakeQueries([])
    fake.delay = 1
    collector = QueueGauges(fake, max_age=5)
    await collector.refresh()
    await anyio.sleep(18.5)  # 19.5 s after the reading began
    await collector.refresh()
    assert fake.readings == 1
    await anyio.sleep(0.5)
    await collector.refresh()
    assert fake.readings == 2


@pytest.mark.anyio
async def test_an_emptied_queue_reads_zero() -> None:
    """A queue seen once keeps its gauges, at 0, when it no longer has unfinished jobs."""
    fake = FakeQueries([row("mail", 4, 4, 0, 3.0)])
    collector = QueueGauges(fake, max_age=0)
    await collector.refresh()
    fake.rows = []
    await collector.refresh()
    seen = gauges(collector)
    assert seen[("dawdle_queue_jobs_todo", "mail")] == 0
    assert seen[("dawdle_queue_oldest_ready_seconds", "mail")] == 0


@pytest.mark.anyio
async def test_a_failed_reading_leaves_the_gauges_out_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No stale depth is shown as current; the failure is counted and logged on one line."""
    fake = FakeQueries([row("mail", 4, 4, 0, 3.0)])
    collector = QueueGauges(fake, max_age=0)
    await collector.refresh()
    fake.failure = OSError("server closed the connection\nSELECT ...")
    with caplog.at_level(logging.WARNING, logger="dawdle.prometheus"):
        await collector.refresh()  # never raises: the scrape still gets the other metrics
    seen = gauges(collector)
    assert ("dawdle_queue_jobs_todo", "mail") not in seen
    assert seen[("dawdle_queue_stats_failures_total", "")] == 1
    assert [record.getMessage() for record in caplog.records] == [
        "queue gauges not read: server closed the connection"
    ]
    fake.failure = None
    await collector.refresh()
    assert gauges(collector)[("dawdle_queue_jobs_todo", "mail")] == 4


@pytest.mark.anyio
async def test_a_hung_reading_times_out() -> None:
    """A query that never answers is given up after the query timeout, and counted."""
    fake = FakeQueries([])
    fake.delay = 3600
    collector = QueueGauges(fake)
    with anyio.fail_after(60):
        await collector.refresh()
    assert collector.failures == 1


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http", "9100.5"])
def test_a_bad_metrics_port_is_named(capsys: pytest.CaptureFixture[str], port: str) -> None:
    """--metrics-port outside 1-65535, or not a number: exit 2, one line naming it."""
    with pytest.raises(SystemExit) as exc_info:
        main(["worker", "--app", "m:app", "--metrics-port", port])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--metrics-port" in err
    assert repr(port) in err


def test_a_blank_metrics_host_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--metrics-host '' (an unset variable) is not taken as every interface: exit 2."""
    with pytest.raises(SystemExit) as exc_info:
        main(["worker", "--app", "m:app", "--metrics-port", "9100", "--metrics-host", " "])
    assert exc_info.value.code == 2
    assert "--metrics-host: expected a host name or address, got ' '" in capsys.readouterr().err


def test_metrics_options_parse() -> None:
    """The port and host as given; both unset by default."""
    args = build_parser().parse_args(
        ["worker", "--metrics-port", "9100", "--metrics-host", "0.0.0.0"]  # noqa: S104
    )
    assert (args.metrics_port, args.metrics_host) == (9100, "0.0.0.0")  # noqa: S104
    args = build_parser().parse_args(["worker"])
    assert args.metrics_port is args.metrics_host is None


def test_metrics_host_needs_a_port(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--metrics-host alone is a usage error, not silently ignored."""
    monkeypatch.setitem(sys.modules, "prometheus_cli_app", _app_module())
    with pytest.raises(SystemExit) as exc_info:
        main(["worker", "--app", "prometheus_cli_app:app", "--metrics-host", "::1"])
    assert exc_info.value.code == 2
    assert "--metrics-host '::1' needs --metrics-port" in capsys.readouterr().err


def test_metrics_without_the_extra_name_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without prometheus_client, --metrics-port exits 2 naming `dawdle[prometheus]`."""
    monkeypatch.setitem(sys.modules, "prometheus_cli_app", _app_module())
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails, as if absent
    for name in [name for name in sys.modules if name.startswith("dawdle._prometheus")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("PrometheusMetrics", "QueueGauges", "QueueStats", "serve_metrics"):
        if name in vars(dawdle):  # imported by an earlier test (hasattr would import it)
            monkeypatch.delattr(dawdle, name)
    with pytest.raises(SystemExit) as exc_info:
        main(["worker", "--app", "prometheus_cli_app:app", "--metrics-port", "9100"])
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'dawdle[prometheus]'" in err


def test_dawdle_imports_without_prometheus_client() -> None:
    """`import dawdle` and the CLI never import prometheus_client; its names say why."""
    program = "try:\n    dawdle.PrometheusMetrics\nexcept ImportError as exc:\n    print(exc)\n"
    assert "pip install 'dawdle[prometheus]'" in run_without(
        "prometheus_client", program, named="prometheus"
    )


def _app_module() -> types.ModuleType:
    """A module holding an App on the in-memory connector, for --app."""
    module = types.ModuleType("prometheus_cli_app")
    module.app = App(connector=InMemoryConnector())  # type: ignore[attr-defined]
    return module


class FlakyListener:
    """A listener whose first `serve` fails as accept() does out of file descriptors."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.serving = anyio.Event()

    async def serve(self, handler: Any, task_group: Any = None) -> None:
        self.calls.append(anyio.current_time())
        if len(self.calls) == 1:
            raise OSError(24, "Too many open files")
        self.serving.set()
        await anyio.sleep_forever()


@pytest.mark.anyio
async def test_a_failed_accept_is_logged_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The endpoint's accept failing never ends the worker: logged, tried again after 1 s."""
    listener = FlakyListener()
    with caplog.at_level(logging.WARNING, logger="dawdle.prometheus"):
        async with anyio.create_task_group() as group:
            handler = _Handler(PrometheusMetrics(), QueueGauges(FakeQueries([])))
            group.start_soon(_serve_forever, cast("Listener[SocketStream]", listener), handler)
            with anyio.fail_after(60):
                await listener.serving.wait()
            group.cancel_scope.cancel()
    assert listener.calls[1] - listener.calls[0] == pytest.approx(ACCEPT_RETRY)
    (record,) = caplog.records
    assert "Too many open files" in record.getMessage()
