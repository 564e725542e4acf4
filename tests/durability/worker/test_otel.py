"""OpenTelemetryHooks through a worker: spans and metrics of real runs, on connector x runtime.

Also the price of trace contexts: a worker reads them only when one of its hooks wants them.
"""

from __future__ import annotations

import anyio
import anyio.from_thread
import pytest
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from dawdle import App, Hooks, JobStarted, TraceContext
from dawdle._carriers import READ_JOB_TRACES
from dawdle._sql import (
    CLAIM_JOBS_TIMED,
    CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    CLAIM_JOBS_TIMED_WITH_BREAKERS,
    FETCH_JOBS,
    FETCH_JOBS_IGNORING_PAUSES,
    FETCH_JOBS_WITH_BREAKERS,
)
from tests.durability.worker.helpers import make_worker, run_until, work
from tests.otel_support import Telemetry, telemetry

pytestmark = pytest.mark.anyio

CLAIMS = {
    FETCH_JOBS,
    FETCH_JOBS_IGNORING_PAUSES,
    FETCH_JOBS_WITH_BREAKERS,
    CLAIM_JOBS_TIMED,
    CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    CLAIM_JOBS_TIMED_WITH_BREAKERS,
}


class Started(Hooks):
    """Each run's trace context, by job id."""

    def __init__(self) -> None:
        self.contexts: dict[int | None, TraceContext | None] = {}

    def job_started(self, event: JobStarted) -> None:
        self.contexts[event.job.id] = event.trace_context


class Linked(Started):
    """The same, asking the worker for the contexts."""

    wants_trace_context = True


def ids(context: SpanContext) -> tuple[int, int]:
    return (context.trace_id, context.span_id)


@pytest.fixture
def otel(app: App) -> Telemetry:
    found = telemetry()
    app.hooks = [found.hooks]  # type: ignore[attr-defined]
    return found


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_runs_are_linked_to_their_defers_and_their_tasks_spans_nest(
    app: App, otel: Telemetry, kind: str
) -> None:
    """Each run's CONSUMER span links to its defer's; a span the task makes is its child."""
    done = anyio.Event()
    inner: list[SpanContext] = []
    tracer = otel.tracer_provider.get_tracer("test")

    def body() -> None:
        with tracer.start_as_current_span("inside") as span:
            inner.append(span.get_span_context())

    if kind == "async":

        @app.task(name="traced", queue="mail")
        async def traced() -> None:
            body()
            done.set()

    else:

        @app.task(name="traced", queue="mail")
        def traced() -> None:
            body()
            anyio.from_thread.run_sync(done.set)

    job_id = await traced.defer_async()
    await run_until(make_worker(app), done, within=10)
    [sent] = otel.finished("send")
    [processed] = otel.finished("process")
    assert processed.kind is SpanKind.CONSUMER
    assert processed.attributes is not None
    assert processed.attributes["messaging.message.id"] == str(job_id)
    assert [ids(link.context) for link in processed.links] == [ids(sent.get_span_context())]
    [inside] = otel.finished("inside")
    assert inner == [inside.get_span_context()]
    assert inside.parent is not None
    assert ids(inside.parent) == ids(processed.get_span_context())


async def test_a_failed_run_has_an_error_span_and_is_counted(app: App, otel: Telemetry) -> None:
    """A failing task: ERROR span with error.type; metrics by outcome, duration, running."""
    done = anyio.Event()

    @app.task(name="broken")
    async def broken() -> None:
        done.set()
        raise KeyError("gone")

    @app.task(name="fine")
    async def fine() -> None:
        pass

    await fine.defer_async()
    await broken.defer_async()
    worker = make_worker(app)
    await run_until(worker, done, within=10)
    statuses = {
        span.attributes["dawdle.task.name"]: span.status.status_code  # type: ignore[index]
        for span in otel.finished("process")
    }
    assert statuses == {"fine": StatusCode.UNSET, "broken": StatusCode.ERROR}
    assert otel.total("dawdle.jobs.finished", **{"dawdle.job.outcome": "failed"}) == 1
    assert otel.total("dawdle.jobs.finished", **{"dawdle.job.outcome": "succeeded"}) == 1
    assert otel.total("dawdle.jobs.running") == 0
    assert sum(point.count for point in otel.points("messaging.process.duration")) == 2
    assert sum(point.count for point in otel.points("dawdle.claim.duration")) >= 1


@pytest.mark.parametrize("wanted", [False, True], ids=["unwanted", "wanted"])
async def test_only_a_worker_whose_hooks_want_trace_contexts_reads_them(
    app: App, otel: Telemetry, monkeypatch: pytest.MonkeyPatch, wanted: bool
) -> None:
    """A worker without such a hook sends no read; with one, one read per non-empty claim.

    The jobs are deferred traced either way; the hook that wants them gets their contexts.
    """
    app.task(name="work", queue="mail")(lambda: None)
    await app.tasks["work"].batch_defer_async({}, {}, {})
    stored = {}
    for span in otel.finished("send"):
        context = span.get_span_context()
        job_id = int(span.attributes["messaging.message.id"])  # type: ignore[index]
        flags = int(context.trace_flags)
        stored[job_id] = f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"
    sent: list[tuple[str, int]] = []
    execute = app.connector.execute_query_all_async

    async def counted(query: str, **arguments: object) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = await execute(query, **arguments)  # type: ignore[arg-type]
        sent.append((query, len(rows)))
        return rows

    monkeypatch.setattr(app.connector, "execute_query_all_async", counted)
    app.hooks = []  # type: ignore[attr-defined]
    hook = Linked() if wanted else Started()
    await work(app, hooks=[hook], concurrency=1)
    reads = [query for query, _ in sent if query == READ_JOB_TRACES]
    claims = [query for query, count in sent if query in CLAIMS and count]
    if wanted:
        assert len(reads) == len(claims) == 3
        assert {job_id: c and c.traceparent for job_id, c in hook.contexts.items()} == stored
    else:
        assert reads == []
        assert len(claims) == 3
        assert hook.contexts == dict.fromkeys(stored)
