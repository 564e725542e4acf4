"""The in-memory twin of `dawdle_job_traces`: the traced defers and the carriers' read."""

from __future__ import annotations

from typing import Any

from procrastinate import types

from dawdle._carriers import (
    DEFER_JOBS_TRACED,
    DEFER_PERIODIC_JOB_TRACED,
    HAS_JOB_TRACES,
    READ_JOB_TRACES,
)


class TracesInMemory:
    """Handlers of the trace carriers' statements, mixed into `InMemoryConnector`."""

    jobs: dict[int, dict[str, Any]]
    job_traces: dict[int, tuple[str, str | None]]
    """dawdle_job_traces: each traced job's (traceparent, tracestate), by job id."""

    def _register_trace_queries(self, reverse_queries: dict[str, str]) -> None:
        reverse_queries[DEFER_JOBS_TRACED] = "defer_jobs_traced"
        reverse_queries[DEFER_PERIODIC_JOB_TRACED] = "defer_periodic_job_traced"
        reverse_queries[HAS_JOB_TRACES] = "has_job_traces"
        reverse_queries[READ_JOB_TRACES] = "read_job_traces"

    async def defer_jobs_traced_all(
        self,
        jobs: list[types.JobToDefer],
        traceparents: list[str],
        tracestates: list[str | None],
    ) -> list[dict[str, Any]]:
        """The jobs inserted, each with its carrier, as one statement does."""
        # Procrastinate's own defer, which the connector this is mixed into has.
        connector: Any = self
        rows: list[dict[str, Any]] = await connector.defer_jobs_all(jobs)
        for row, traceparent, tracestate in zip(rows, traceparents, tracestates, strict=True):
            self.job_traces[row["id"]] = (traceparent, tracestate)
        return rows

    async def defer_periodic_job_traced_one(
        self, *, traceparent: str, tracestate: str | None, **arguments: Any
    ) -> dict[str, Any]:
        """The periodic job inserted with its carrier (nothing when its tick was taken)."""
        connector: Any = self
        row: dict[str, Any] = await connector.defer_periodic_job_one(**arguments)
        if row["id"] is not None:
            self.job_traces[row["id"]] = (traceparent, tracestate)
        return row

    async def has_job_traces_one(self) -> dict[str, Any]:
        """The in-memory database always has the table."""
        return {"present": True}

    async def read_job_traces_all(self, *, ids: list[int]) -> list[dict[str, Any]]:
        """The carriers of these jobs that have one (and still exist: the cascade)."""
        return [
            {"job_id": job_id, "traceparent": trace[0], "tracestate": trace[1]}
            for job_id in ids
            if job_id in self.jobs and (trace := self.job_traces.get(job_id)) is not None
        ]
