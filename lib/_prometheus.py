"""Prometheus metrics of a worker's jobs, as a `Hooks` subclass (the `prometheus` extra).

Every metric lives in the instance's own `CollectorRegistry`, never in prometheus_client's
global one: two workers in one process, or two tests, each count their own jobs.
"""

from __future__ import annotations

from typing import Final

from procrastinate import jobs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dawdle._hooks import (
    Hooks,
    JobDeferred,
    JobFinished,
    JobRetried,
    JobsClaimed,
    JobSnoozed,
    JobsPruned,
    JobStarted,
    LoopRestarted,
)

# Runs and waits from a few milliseconds to an hour: jobs are not requests.
SECONDS_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
# A claim is one statement: from a fraction of a millisecond to a struggling server's seconds.
CLAIM_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip

JOB_LABELS: Final = ("queue", "task")


def _labels(job: jobs.Job) -> tuple[str, str]:
    """A job's label values: its queue and its task's name."""
    return job.queue, job.task_name


class PrometheusMetrics(Hooks):
    """Counts and times a worker's jobs as Prometheus metrics, in `registry`.

    Pass it to the worker as a hook (`Worker(app, hooks=[metrics])`) and serve its registry
    (`serve_metrics`, or any exporter of prometheus_client). The queue gauges (depth, oldest
    ready job) come from the database, not from events: `serve_metrics` adds them.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        """Where the metrics are registered: a new registry unless one is given."""
        into = self.registry
        self.deferred = Counter(
            "dawdle_jobs_deferred", "Jobs deferred by this process.", JOB_LABELS, registry=into
        )
        self.finished = Counter(
            "dawdle_jobs_finished",
            "Runs ended, by outcome (succeeded, failed, aborted, retry, put_back, snoozed).",
            (*JOB_LABELS, "outcome"),
            registry=into,
        )
        self.duration = Histogram(
            "dawdle_job_duration_seconds",
            "How long runs took, from the task's call to its end.",
            JOB_LABELS,
            buckets=SECONDS_BUCKETS,
            registry=into,
        )
        self.queue_time = Histogram(
            "dawdle_job_queue_time_seconds",
            "How long jobs waited from when they were due to the start of their run.",
            JOB_LABELS,
            buckets=SECONDS_BUCKETS,
            registry=into,
        )
        self.running = Gauge(
            "dawdle_jobs_running", "Jobs running in this worker now.", JOB_LABELS, registry=into
        )
        self.retries = Counter(
            "dawdle_job_retries", "Runs that ended in a retry.", JOB_LABELS, registry=into
        )
        self.snoozes = Counter(
            "dawdle_job_snoozes", "Runs that ended in a snooze.", JOB_LABELS, registry=into
        )
        self.claim_latency = Histogram(
            "dawdle_claim_latency_seconds",
            "Time from sending a claim statement to its answer.",
            buckets=CLAIM_BUCKETS,
            registry=into,
        )
        self.claimed = Counter("dawdle_jobs_claimed", "Jobs claimed by this worker.", registry=into)
        self.loop_restarts = Counter(
            "dawdle_loop_restarts",
            "Restarts of the worker's internal loops after a failure.",
            ("loop",),
            registry=into,
        )
        self.pruned = Counter("dawdle_jobs_pruned", "Finished jobs deleted.", registry=into)

    def job_deferred(self, event: JobDeferred) -> None:
        """Count the job."""
        self.deferred.labels(*_labels(event.job)).inc()

    def job_started(self, event: JobStarted) -> None:
        """One more running job; its wait, if known."""
        labels = _labels(event.job)
        self.running.labels(*labels).inc()
        if event.queue_time is not None:
            self.queue_time.labels(*labels).observe(max(0.0, event.queue_time))

    def job_finished(self, event: JobFinished) -> None:
        """One running job less; its outcome and duration."""
        labels = _labels(event.job)
        self.running.labels(*labels).dec()
        self.finished.labels(*labels, event.outcome.value).inc()
        self.duration.labels(*labels).observe(max(0.0, event.duration))

    def job_retried(self, event: JobRetried) -> None:
        """Count the retry."""
        self.retries.labels(*_labels(event.job)).inc()

    def job_snoozed(self, event: JobSnoozed) -> None:
        """Count the snooze."""
        self.snoozes.labels(*_labels(event.job)).inc()

    def loop_restarted(self, event: LoopRestarted) -> None:
        """Count the restart, by loop."""
        self.loop_restarts.labels(event.loop).inc()

    def jobs_claimed(self, event: JobsClaimed) -> None:
        """The claim's latency (empty claims too: they cost the same) and its jobs."""
        self.claim_latency.observe(max(0.0, event.latency))
        self.claimed.inc(event.count)

    def jobs_pruned(self, event: JobsPruned) -> None:
        """Count the deleted jobs."""
        self.pruned.inc(event.count)
