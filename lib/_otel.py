"""OpenTelemetry's traces and metrics of jobs, as hooks (`pip install "dawdle[otel]"`).

Spans follow OpenTelemetry's messaging conventions: a PRODUCER span 'send QUEUE' per job
deferred, a CONSUMER span 'process QUEUE' per run, linked to its defer's span through the
trace context stored with the job (`_carriers`), which the worker reads at the claim for
these hooks (`wants_trace_context`) and hands over in `JobStarted.trace_context`. Only
opentelemetry-api is needed; the application configures the SDK (providers, exporters) as
for any instrumented library.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from procrastinate import jobs

from dawdle._errors import ConfigurationError
from dawdle._hooks import (
    Hooks,
    JobDeferred,
    JobFinished,
    JobRetried,
    JobsClaimed,
    JobStarted,
    LoopRestarted,
    TraceContext,
)
from dawdle._worker.outcomes import Outcome

if TYPE_CHECKING:
    from opentelemetry import context, metrics, trace

SYSTEM: Final = "dawdle"
_ERRORS: Final = frozenset({Outcome.FAILED, Outcome.RETRY})
# Seconds: the conventions' buckets for messaging durations, which jobs can exceed by far.
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def _job_attributes(job: jobs.Job, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": job.queue,
        "dawdle.task.name": job.task_name,
    }
    if job.id is not None:
        attributes["messaging.message.id"] = str(job.id)
    return attributes


class _PendingDefers:
    """The PRODUCER spans of jobs being inserted, and their trace contexts to store."""

    def __init__(self, hooks: OpenTelemetryHooks, spans: list[trace.Span]) -> None:
        self._hooks = hooks
        self._spans = spans
        self.carriers = [hooks.carrier_of(span) for span in spans]

    def inserted(self, jobs: Sequence[jobs.Job | None]) -> None:
        for span, job in zip(self._spans, jobs, strict=True):
            if job is None or job.id is None:
                span.set_attribute("dawdle.job.deferred", False)  # noqa: FBT003 (attribute value)
                span.end()
            else:
                span.set_attribute("messaging.message.id", str(job.id))
                self._hooks.deferring[job.id] = span

    def failed(self, exception: BaseException) -> None:
        for span in self._spans:
            self._hooks.end_in_error(span, exception)


class OpenTelemetryHooks(Hooks):
    """Spans and metrics for every defer and run, through OpenTelemetry's API.

    `tracer_provider` and `meter_provider` default to the global ones. Metrics: jobs
    deferred (`messaging.client.sent.messages`), runs by outcome (`dawdle.jobs.finished`),
    run duration (`messaging.process.duration`), queue time (`dawdle.job.queue_time`),
    running jobs (`dawdle.jobs.running`), claim latency (`dawdle.claim.duration`), retries
    (`dawdle.jobs.retried`), restarted loops (`dawdle.worker.loop_restarts`).
    """

    wants_trace_context = True

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        try:
            from opentelemetry import context, metrics, trace  # noqa: PLC0415 (optional)
            from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            raise ConfigurationError(
                'OpenTelemetryHooks needs OpenTelemetry: pip install "dawdle[otel]"'
            ) from exc
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()
        self._tracer = trace.get_tracer("dawdle", tracer_provider=tracer_provider)
        meter = metrics.get_meter("dawdle", meter_provider=meter_provider)
        self._sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="Jobs deferred."
        )
        self._finished = meter.create_counter(
            "dawdle.jobs.finished", unit="{job}", description="Runs of jobs, by outcome."
        )
        self._duration = _seconds(meter, "messaging.process.duration", "Duration of a job's run.")
        self._queue_time = _seconds(
            meter, "dawdle.job.queue_time", "Time from when a job was due to when its run began."
        )
        self._running = meter.create_up_down_counter(
            "dawdle.jobs.running", unit="{job}", description="Runs under way."
        )
        self._claims = _seconds(meter, "dawdle.claim.duration", "Latency of a claim statement.")
        self._retried = meter.create_counter(
            "dawdle.jobs.retried", unit="{job}", description="Runs that ended in a retry."
        )
        self._restarts = meter.create_counter(
            "dawdle.worker.loop_restarts", unit="{restart}", description="Failed loops restarted."
        )
        # Defer spans between their insert and their job_deferred event, by job id; run
        # spans and their context tokens between job_started and job_finished.
        self.deferring: dict[int, trace.Span] = {}
        self._runs: dict[int, tuple[trace.Span, contextvars.Token[context.Context]]] = {}
        self._lock = threading.Lock()

    def carrier_of(self, span: trace.Span) -> TraceContext:
        """The W3C trace context of `span`, to store with its job."""
        headers: dict[str, str] = {}
        self._propagator.inject(headers, context=self._trace.set_span_in_context(span))
        return TraceContext(headers["traceparent"], headers.get("tracestate"))

    def end_in_error(self, span: trace.Span, exception: BaseException) -> None:
        """End `span` with an error status naming `exception`."""
        span.record_exception(exception)
        span.set_attribute("error.type", type(exception).__qualname__)
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(exception)))
        span.end()

    def begin_defers(self, jobs: Sequence[jobs.Job]) -> _PendingDefers:
        """A PRODUCER span per job about to be inserted (`dawdle._defer.DeferTracer`)."""
        spans = []
        for job in jobs:
            attributes = _job_attributes(job, "send")
            if len(jobs) > 1:
                attributes["messaging.batch.message_count"] = len(jobs)
            spans.append(
                self._tracer.start_span(
                    f"send {job.queue}", kind=self._trace.SpanKind.PRODUCER, attributes=attributes
                )
            )
        return _PendingDefers(self, spans)

    def job_deferred(self, event: JobDeferred) -> None:
        """End the job's defer span (or make one, when the defer did not begin it)."""
        job = event.job
        span = self.deferring.pop(job.id, None) if job.id is not None else None
        if span is None:
            span = self._tracer.start_span(
                f"send {job.queue}",
                kind=self._trace.SpanKind.PRODUCER,
                attributes=_job_attributes(job, "send"),
            )
        span.end()
        self._sent.add(1, self._metric_attributes(job, "send"))

    def job_started(self, event: JobStarted) -> None:
        """Begin the run's CONSUMER span, linked to its defer's, as the task's current span."""
        job = event.job
        links = []
        carrier = event.trace_context
        if carrier is not None:
            headers = {"traceparent": carrier.traceparent}
            if carrier.tracestate:
                headers["tracestate"] = carrier.tracestate
            linked = self._trace.get_current_span(self._propagator.extract(headers))
            if linked.get_span_context().is_valid:
                links.append(self._trace.Link(linked.get_span_context()))
        attributes = _job_attributes(job, "process")
        attributes["dawdle.job.attempt"] = event.attempt
        span = self._tracer.start_span(
            f"process {job.queue}",
            kind=self._trace.SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        token = self._context.attach(self._trace.set_span_in_context(span))
        if job.id is not None:
            with self._lock:
                self._runs[job.id] = (span, token)
        self._running.add(1, self._metric_attributes(job, "process"))
        if event.queue_time is not None:
            self._queue_time.record(event.queue_time, self._metric_attributes(job, "process"))

    def job_finished(self, event: JobFinished) -> None:
        """End the run's span (an error status for a failure or retry) and count the run."""
        job = event.job
        with self._lock:
            run = self._runs.pop(job.id, None) if job.id is not None else None
        attributes = self._metric_attributes(job, "process")
        self._running.add(-1, attributes)
        if event.exception is not None and event.outcome in _ERRORS:
            attributes["error.type"] = type(event.exception).__qualname__
        self._duration.record(event.duration, attributes)
        self._finished.add(1, {**attributes, "dawdle.job.outcome": event.outcome.value})
        if run is None:
            return
        span, token = run
        span.set_attribute("dawdle.job.outcome", event.outcome.value)
        try:
            if event.exception is not None and event.outcome in _ERRORS:
                self.end_in_error(span, event.exception)
            else:
                span.end()
        finally:
            self._context.detach(token)

    def job_retried(self, event: JobRetried) -> None:
        """Count the retry."""
        self._retried.add(1, self._metric_attributes(event.job, "process"))

    def jobs_claimed(self, event: JobsClaimed) -> None:
        """Record the claim's latency."""
        self._claims.record(event.latency, {"messaging.system": SYSTEM})

    def loop_restarted(self, event: LoopRestarted) -> None:
        """Count the restart, by loop."""
        self._restarts.add(1, {"messaging.system": SYSTEM, "dawdle.loop": event.loop})

    @staticmethod
    def _metric_attributes(job: jobs.Job, operation: str) -> dict[str, Any]:
        return {
            "messaging.system": SYSTEM,
            "messaging.operation.name": operation,
            "messaging.destination.name": job.queue,
            "dawdle.task.name": job.task_name,
        }


def _seconds(meter: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    """A histogram of durations in seconds, on the buckets every dawdle duration shares."""
    return meter.create_histogram(
        name,
        unit="s",
        description=description,
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )
