"""OpenTelemetryHooks on the in-memory connector: defer spans, their carriers, run spans, metrics.

The run side is driven with the hooks' events directly (as the worker emits them), after a
real claim by the worker's store, whose trace contexts the events carry.
"""

from __future__ import annotations

import datetime
import sys

import anyio.to_thread
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from procrastinate import jobs

import dawdle
from dawdle import App, InMemoryConnector, Outcome, TraceContext
from dawdle._hooks import Hooks, JobDeferred, JobFinished, JobRetried, JobsClaimed, JobStarted
from dawdle._worker.store import Claimed, JobStore
from tests.otel_support import Telemetry, telemetry
from tests.without_extra import run_without

pytestmark = pytest.mark.anyio


@pytest.fixture
def otel() -> Telemetry:
    return telemetry()


@pytest.fixture
async def app(in_memory_app: App, otel: Telemetry) -> App:
    # Until App(hooks=...) lands, the defer path reads the app's `hooks` attribute.
    in_memory_app.hooks = [otel.hooks]  # type: ignore[attr-defined]
    in_memory_app.task(name="work", queue="mail")(lambda n: None)
    return in_memory_app


async def claim(app: App, *, trace_contexts: bool = True) -> list[Claimed]:
    """A claim by the worker's store, reading trace contexts as for OpenTelemetryHooks."""
    store = JobStore(app)
    worker_id = await store.register()
    return await store.claim(
        queues=None,
        task_names=["work"],
        limit=10,
        worker_id=worker_id,
        trace_contexts=trace_contexts,
    )


def ids(context: SpanContext) -> tuple[int, int]:
    """A span context's identity (a link's is remote: it came from the database)."""
    return (context.trace_id, context.span_id)


def run(
    otel: Telemetry, claimed: Claimed, outcome: Outcome, error: Exception | None = None
) -> None:
    job, context = claimed.job, claimed.trace_context
    otel.hooks.job_started(JobStarted(job, attempt=1, queue_time=0.25, trace_context=context))
    otel.hooks.job_finished(JobFinished(job, outcome, duration=0.5, attempt=1, exception=error))


async def test_defer_span_is_a_producer_span_with_messaging_attributes(
    app: App, otel: Telemetry
) -> None:
    """One PRODUCER span 'send QUEUE' per defer, with the job's id as the message id."""
    job_id = await app.tasks["work"].defer_async(n=1)
    [span] = otel.finished("send")
    assert span.name == "send mail"
    assert span.kind is SpanKind.PRODUCER
    assert dict(span.attributes or {}) == {
        "messaging.system": "dawdle",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": str(job_id),
        "dawdle.task.name": "work",
    }
    assert otel.total("messaging.client.sent.messages", **{"dawdle.task.name": "work"}) == 1


async def test_the_defer_stores_the_span_context_with_the_job(
    app: App, otel: Telemetry, in_memory_connector: InMemoryConnector
) -> None:
    """The job's carrier is its defer span's W3C traceparent, written by the insert."""
    job_id = await app.tasks["work"].defer_async(n=1)
    [span] = otel.finished("send")
    traceparent, _ = in_memory_connector.job_traces[job_id]
    context = span.get_span_context()
    flags = int(context.trace_flags)
    assert traceparent == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


async def test_a_claimed_run_span_is_linked_to_its_defer_span(app: App, otel: Telemetry) -> None:
    """The claim reads the carrier; the CONSUMER span links to the defer's span context."""
    await app.tasks["work"].defer_async(n=1)
    [claimed] = await claim(app)
    job = claimed.job
    run(otel, claimed, Outcome.SUCCEEDED)
    [sent] = otel.finished("send")
    [processed] = otel.finished("process")
    assert processed.kind is SpanKind.CONSUMER
    assert processed.name == "process mail"
    assert [ids(link.context) for link in processed.links] == [ids(sent.get_span_context())]
    assert processed.context.trace_id != sent.get_span_context().trace_id
    assert processed.attributes is not None
    assert processed.attributes["messaging.message.id"] == str(job.id)
    assert processed.attributes["dawdle.job.attempt"] == 1
    assert processed.attributes["dawdle.job.outcome"] == "succeeded"
    assert processed.status.status_code is StatusCode.UNSET


async def test_batch_defer_gives_each_job_its_span_and_carrier(app: App, otel: Telemetry) -> None:
    """A batch: one span per job, each job's run linked to its own."""
    await app.tasks["work"].batch_defer_async({"n": 1}, {"n": 2}, {"n": 3})
    sent = {int(s.attributes["messaging.message.id"]): s for s in otel.finished("send")}  # type: ignore[index]
    assert len(sent) == 3
    assert all(s.attributes["messaging.batch.message_count"] == 3 for s in sent.values())  # type: ignore[index]
    for claimed in await claim(app):
        run(otel, claimed, Outcome.SUCCEEDED)
    for processed in otel.finished("process"):
        job_id = int(processed.attributes["messaging.message.id"])  # type: ignore[index]
        assert [ids(link.context) for link in processed.links] == [
            ids(sent[job_id].get_span_context())
        ]


async def test_a_failed_run_ends_its_span_in_error(app: App, otel: Telemetry) -> None:
    """A failure: ERROR status, the exception recorded, error.type on the span and metrics."""
    await app.tasks["work"].defer_async(n=1)
    [claimed] = await claim(app)
    run(otel, claimed, Outcome.FAILED, ValueError("bad n"))
    [processed] = otel.finished("process")
    assert processed.status.status_code is StatusCode.ERROR
    assert processed.status.description == "bad n"
    assert processed.attributes is not None
    assert processed.attributes["error.type"] == "ValueError"
    assert [event.name for event in processed.events] == ["exception"]
    assert otel.total("dawdle.jobs.finished", **{"dawdle.job.outcome": "failed"}) == 1
    assert otel.total("dawdle.jobs.finished", **{"dawdle.job.outcome": "succeeded"}) == 0


async def test_the_task_runs_inside_its_run_span(otel: Telemetry) -> None:
    """job_started makes the run span current until job_finished (so the task's spans nest)."""
    job = jobs.Job(id=7, queue="q", lock=None, queueing_lock=None, task_name="t", task_kwargs={})
    otel.hooks.job_started(JobStarted(job, attempt=2, queue_time=None))
    current = trace.get_current_span()
    otel.hooks.job_finished(JobFinished(job, Outcome.SUCCEEDED, 0.1, 2, None))
    [processed] = otel.finished("process")
    assert current.get_span_context() == processed.get_span_context()
    assert not trace.get_current_span().get_span_context().is_valid
    assert processed.links == ()  # no carrier: a run of a job deferred untraced


async def test_metrics_of_runs_claims_and_retries(otel: Telemetry) -> None:
    """Counters and histograms carry what the events said."""
    job = jobs.Job(id=8, queue="q", lock=None, queueing_lock=None, task_name="t", task_kwargs={})
    otel.hooks.job_started(JobStarted(job, attempt=1, queue_time=1.5))
    assert otel.total("dawdle.jobs.running") == 1
    otel.hooks.job_finished(JobFinished(job, Outcome.RETRY, 0.75, 1, OSError("down")))
    retry_at = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    otel.hooks.job_retried(JobRetried(job, attempt=1, delay=2.0, retry_at=retry_at, reason=None))
    otel.hooks.jobs_claimed(JobsClaimed(count=3, latency=0.02))
    assert otel.total("dawdle.jobs.running") == 0
    [duration] = otel.points("messaging.process.duration")
    assert (duration.count, duration.sum) == (1, 0.75)
    assert duration.attributes["error.type"] == "OSError"
    [queue_time] = otel.points("dawdle.job.queue_time")
    assert (queue_time.count, queue_time.sum) == (1, 1.5)
    [claims] = otel.points("dawdle.claim.duration")
    assert (claims.count, claims.sum) == (1, 0.02)
    assert otel.total("dawdle.jobs.retried", **{"dawdle.task.name": "t"}) == 1
    assert otel.total("dawdle.jobs.finished", **{"dawdle.job.outcome": "retry"}) == 1


async def test_job_deferred_alone_makes_a_span(otel: Telemetry) -> None:
    """A JobDeferred the defer path did not begin a span for still gets one."""
    job = jobs.Job(id=9, queue="q", lock=None, queueing_lock=None, task_name="t", task_kwargs={})
    otel.hooks.job_deferred(JobDeferred(job))
    [span] = otel.finished("send")
    assert span.attributes is not None
    assert span.attributes["messaging.message.id"] == "9"


async def test_a_raising_hook_is_removed_and_the_defer_goes_on(
    app: App, otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken hook is logged once and no longer called; the others still hear of defers."""

    class Broken(Hooks):
        calls = 0

        def job_deferred(self, event: JobDeferred) -> None:
            Broken.calls += 1
            raise RuntimeError("boom")

    app.hooks = [Broken(), otel.hooks]  # type: ignore[attr-defined]
    await app.tasks["work"].defer_async(n=1)
    await app.tasks["work"].defer_async(n=2)
    assert Broken.calls == 1
    assert len(otel.finished("send")) == 2
    assert [r.action for r in caplog.records if hasattr(r, "action")] == ["hook_removed"]


async def test_a_claim_reads_trace_contexts_only_when_asked_and_only_if_it_took_jobs(
    app: App, in_memory_connector: InMemoryConnector
) -> None:
    """Not asked: the claim alone, no context; asked: one read after a claim with jobs."""
    await app.tasks["work"].defer_async(n=1)
    await app.tasks["work"].defer_async(n=2)
    in_memory_connector.queries.clear()

    def sent() -> list[str]:
        names = [name for name, _ in in_memory_connector.queries]
        in_memory_connector.queries.clear()
        return names

    store = JobStore(app)
    worker_id = await store.register()
    sent()
    [untraced] = await store.claim(queues=None, task_names=["work"], limit=1, worker_id=worker_id)
    assert untraced.trace_context is None
    assert sent() == ["fetch_jobs"]
    [traced] = await claim(app)
    assert traced.trace_context is not None
    assert traced.trace_context.traceparent == in_memory_connector.job_traces[traced.job.id][0]
    assert sent() == ["register_worker", "fetch_jobs", "read_job_traces"]
    assert await claim(app) == []
    assert sent() == ["register_worker", "fetch_jobs"]


async def test_two_databases_in_one_process_keep_their_own_contexts(
    app: App, otel: Telemetry, in_memory_connector: InMemoryConnector
) -> None:
    """Job 1 of one database and job 1 of another: each claim gets its own job's context."""
    other = App(connector=InMemoryConnector(), hooks=[otel.hooks])
    other.task(name="work", queue="mail")(lambda n: None)
    async with other.open_async():
        first = await app.tasks["work"].defer_async(n=1)
        second = await other.tasks["work"].defer_async(n=1)
        assert first == second
        [here], [there] = await claim(app), await claim(other)
    assert here.trace_context is not None
    assert there.trace_context is not None
    assert here.trace_context != there.trace_context
    assert here.trace_context.traceparent == in_memory_connector.job_traces[first][0]


async def test_a_run_links_to_the_trace_context_its_event_carries(otel: Telemetry) -> None:
    """A `JobStarted` made by hand: a valid context is linked (tracestate kept), junk is not."""
    job = jobs.Job(id=5, queue="q", lock=None, queueing_lock=None, task_name="t", task_kwargs={})
    parent = TraceContext("00-" + "a" * 32 + "-" + "b" * 16 + "-01", "vendor=1")
    for context in (parent, TraceContext("not a traceparent")):
        otel.hooks.job_started(JobStarted(job, attempt=1, queue_time=None, trace_context=context))
        otel.hooks.job_finished(JobFinished(job, Outcome.SUCCEEDED, 0.1, 1, None))
    linked, unlinked = otel.finished("process")
    [link] = linked.links
    assert ids(link.context) == (int("a" * 32, 16), int("b" * 16, 16))
    assert link.context.trace_state.to_header() == "vendor=1"
    assert unlinked.links == ()


def test_without_opentelemetry_the_hooks_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import dawdle` works without it; making the hooks says what to install."""
    for name in list(sys.modules):
        if name.startswith("opentelemetry"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(dawdle.ConfigurationError, match=r"dawdle\[otel\]"):
        dawdle.OpenTelemetryHooks()


def test_import_dawdle_works_without_opentelemetry() -> None:
    """A fresh interpreter where opentelemetry cannot be imported still imports dawdle."""
    program = (
        "try:\n"
        "    dawdle.OpenTelemetryHooks()\n"
        "except dawdle.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    assert run_without("opentelemetry", program) == (
        'OpenTelemetryHooks needs OpenTelemetry: pip install "dawdle[otel]"\n'
    )


async def test_sync_defers_and_blueprint_tasks_carry_their_context_too(
    app: App, otel: Telemetry, in_memory_connector: InMemoryConnector
) -> None:
    """`defer()` from a thread and a blueprint's task go through the same job manager."""
    blueprint = dawdle.Blueprint()
    blueprint.task(name="printed", queue="paper")(lambda: None)
    app.add_tasks_from(blueprint, namespace="bp")
    first = await anyio.to_thread.run_sync(lambda: app.tasks["work"].defer(n=1))
    second = await app.tasks["bp:printed"].defer_async()
    sent = {s.attributes["messaging.message.id"]: s for s in otel.finished("send")}  # type: ignore[index]
    assert sorted(sent) == sorted([str(first), str(second)])
    assert sent[str(second)].name == "send paper"
    assert sorted(in_memory_connector.job_traces) == sorted([first, second])


async def test_a_tracer_that_raises_after_the_insert_costs_no_defer(
    app: App, in_memory_connector: InMemoryConnector, caplog: pytest.LogCaptureFixture
) -> None:
    """The job is stored and its id returned; the tracer is removed, logged once."""

    class Pending:
        def __init__(self) -> None:
            self.carriers = [TraceContext("00-" + "1" * 32 + "-" + "2" * 16 + "-01")]

        def inserted(self, jobs: object) -> None:
            raise RuntimeError("broken exporter")

        def failed(self, exception: BaseException) -> None:
            raise AssertionError("the insert did not fail")

    class Tracer(Hooks):
        def begin_defers(self, jobs: object) -> Pending:
            return Pending()

    app.hooks = [Tracer()]  # type: ignore[attr-defined]
    first = await app.tasks["work"].defer_async(n=1)
    second = await app.tasks["work"].defer_async(n=2)
    assert sorted(in_memory_connector.jobs) == [first, second]
    assert list(in_memory_connector.job_traces) == [first]
    assert [r.action for r in caplog.records if hasattr(r, "action")] == ["hook_removed"]
