"""OpenTelemetryHooks through a worker: spans and metrics of real runs, on connector x runtime.

NEEDS the hooks helper's work (the worker emitting job_started/job_finished/job_retried to
the app's hooks): until it is merged, the worker emits nothing and these fail on the run
side. The defer side (job_deferred, carriers) is this branch's and is exercised here too.
"""

from __future__ import annotations

import anyio
import anyio.from_thread
import pytest
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from dawdle import App
from tests.durability.worker.helpers import make_worker, run_until
from tests.otel_support import Telemetry, telemetry

pytestmark = pytest.mark.anyio


def ids(context: SpanContext) -> tuple[int, int]:
    return (context.trace_id, context.span_id)


@pytest.fixture
def otel(app: App, monkeypatch: pytest.MonkeyPatch) -> Telemetry:
    found = telemetry(monkeypatch)
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
