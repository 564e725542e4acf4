"""An in-memory connector for fast unit tests, on asyncio and Trio."""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import anyio.from_thread
import anyio.lowlevel
from procrastinate import connector as procrastinate_connector
from procrastinate import jobs, schema, testing, types, utils

from dawdle._connector._memory_budgets import MemoryBudgets
from dawdle._connector._memory_claims import ClaimsInMemory
from dawdle._connector._memory_errors import JobErrors
from dawdle._connector._memory_outcomes import OutcomesInMemory
from dawdle._connector._memory_traces import TracesInMemory
from dawdle._connector._memory_workers import WorkersInMemory
from dawdle._connector._params import DEFAULT_MAX_PAYLOAD_BYTES, JobLimits
from dawdle._dawdle_schema import DAWDLE_SCHEMA, DAWDLE_TABLES
from dawdle._queues import LIST_QUEUES, PAUSE_QUEUE, RESUME_QUEUE
from dawdle._schema import CHECK_SCHEMA_QUERY, expected_functions
from dawdle._sql import PRUNE_JOBS

# The in-memory database has no roles: what its pauses give as `paused_by`.
PAUSED_BY: Final = "in-memory"


class InMemoryConnector(
    ClaimsInMemory,
    OutcomesInMemory,
    WorkersInMemory,
    TracesInMemory,
    testing.InMemoryConnector,
):
    """Procrastinate's in-memory connector with its asyncio ties cut.

    Same query semantics and inspection API (`connector.jobs`, `reset()`); notifications
    reach the event loop that opened it, whichever runtime that is and whichever thread
    defers. It refuses what PsycopgConnector refuses at defer: an argument over
    `max_payload_bytes` of JSON, names too long for their columns. Never a substitute for a
    real database in durability tests.
    """

    def __init__(self, *, max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self._limits = JobLimits("InMemoryConnector", max_payload_bytes)
        super().__init__()
        # SchemaManager escapes % before sending the schema; without this key the lookup of
        # the escaped text fails with a KeyError in Procrastinate's own in-memory connector.
        escaped = schema.SchemaManager.get_schema().replace("%", "%%")
        self.reverse_queries[escaped] = "apply_schema"
        self.reverse_queries[CHECK_SCHEMA_QUERY] = "check_schema"
        self.reverse_queries[DAWDLE_SCHEMA] = "apply_dawdle_schema"
        self.reverse_queries[PAUSE_QUEUE] = "pause_queue"
        self.reverse_queries[RESUME_QUEUE] = "resume_queue"
        self.reverse_queries[LIST_QUEUES] = "list_queue_states"
        self._register_claim_queries(self.reverse_queries)
        self._register_outcome_queries(self.reverse_queries)
        self._register_worker_queries(self.reverse_queries)
        self._register_trace_queries(self.reverse_queries)
        self.reverse_queries[PRUNE_JOBS] = "prune_jobs"
        self._token: anyio.lowlevel.EventLoopToken | None = None

    async def open_async(self, pool: procrastinate_connector.Pool | None = None) -> None:
        """Remember the running event loop so that other threads can notify it."""
        self._token = anyio.lowlevel.current_token()
        self._loop_thread_id = threading.get_ident()
        self.states.append("open_async")

    async def listen_notify(
        self,
        on_notification: procrastinate_connector.Notify,
        channels: Iterable[str],
        *,
        on_listening: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Deliver notifications on `channels` from now on; `on_listening` is awaited once.

        The same signature as dawdle's PsycopgConnector, so code (and tests) that wait for
        the LISTEN to be in place work on both.
        """
        await super().listen_notify(on_notification, channels)
        if on_listening is not None:
            await on_listening()

    async def notify(self, channel: str, payload: str) -> None:
        """What `SELECT pg_notify(channel, payload)` does: any payload, to whoever listens.

        For tests of what a listener does with notifications nobody's trigger sent.
        """
        if self.on_notification and channel in self.notify_channels:
            await self._send(channel, payload)

    async def _notify(self, queue_name: str, notification: jobs.Notification) -> None:
        if not self.on_notification:
            return
        destinations = {"procrastinate_any_queue_v1", f"procrastinate_queue_v1#{queue_name}"}
        payload = json.dumps(notification)
        for channel in sorted(destinations.intersection(self.notify_channels)):
            await self._send(channel, payload)

    async def _send(self, channel: str, payload: str) -> None:
        if self._token is None or threading.get_ident() == self._loop_thread_id:
            await self._deliver(channel, payload)
        else:
            # Deferred from another thread (a sync task): hand over to the opening loop.
            anyio.from_thread.run(self._deliver, channel, payload, token=self._token)

    async def _deliver(self, channel: str, payload: str) -> None:
        assert self.on_notification is not None  # noqa: S101 (checked by _notify)
        await self.on_notification(channel=channel, payload=payload)

    async def defer_jobs_all(self, jobs: list[types.JobToDefer]) -> list[dict[str, Any]]:
        """Store a copy of each job's arguments, as PostgreSQL stores their JSON.

        Procrastinate's periodic deferrer updates one `task_kwargs` dict in place at every
        tick: kept by reference, every periodic job would show the latest timestamp. Every
        job of a batch is checked before any is stored, as the database's one statement does.
        """
        for job in jobs:
            self._limits.check_job(job)
            self._limits.encode_args(job.args, json.dumps)
        copied = [job._replace(args=copy.deepcopy(job.args)) for job in jobs]
        rows: list[dict[str, Any]] = await super().defer_jobs_all(copied)
        return rows

    async def check_schema_one(self) -> dict[str, Any]:
        """The in-memory database always has the current schema and dawdle's tables."""
        return {
            "present": True,
            "functions": sorted(expected_functions()),
            "tables": list(DAWDLE_TABLES),
        }

    async def apply_dawdle_schema_run(self) -> None:
        """Nothing to create: the in-memory database always has dawdle's tables."""

    async def pause_queue_all(self, *, queue: str, reason: str | None) -> list[dict[str, Any]]:
        """Pause `queue` unless it is paused; a row if it was not, as the SQL returns."""
        if queue in self.queue_pauses:
            return []
        self.queue_pauses[queue] = {
            "queue_name": queue,
            "paused_at": utils.utcnow(),
            "paused_by": PAUSED_BY,
            "reason": reason,
        }
        return [{"queue_name": queue}]

    async def resume_queue_one(self, *, queue: str) -> dict[str, int]:
        """Resume `queue` and send the `queue_resumed` hint to the listeners of its channels."""
        if self.queue_pauses.pop(queue, None) is None:
            return {"resumed": 0, "hints": 0}
        payload = json.dumps({"type": "queue_resumed", "queue": queue})
        channels = ("procrastinate_any_queue_v1", f"procrastinate_queue_v1#{queue}")
        for channel in channels:
            await self.notify(channel, payload)
        return {"resumed": 1, "hints": len(channels)}

    async def list_queue_states_all(self) -> list[dict[str, Any]]:
        """Every queue with jobs or a pause, by name, with its pause if any."""
        names = {job["queue_name"] for job in self.jobs.values()} | set(self.queue_pauses)
        empty = {"paused_at": None, "paused_by": None, "reason": None}
        return [
            {"queue_name": name, **empty, **self.queue_pauses.get(name, {})}
            for name in sorted(names)
        ]

    def reset(self) -> None:
        """Empty the in-memory database (worker ids start again from 1, as after TRUNCATE)."""
        super().reset()
        self._worker_ids = itertools.count(1)
        # dawdle_worker_tasks; read it through published_tasks(), which applies the cascade.
        self.worker_tasks = {}
        # dawdle_queue_pauses: each paused queue's row, by queue name.
        self.queue_pauses = {}
        # dawdle_retry_budgets and dawdle_budget_pushed.
        self.budgets = MemoryBudgets()
        # dawdle_breakers: each task's breaker row, by task name.
        self.breakers = {}
        # dawdle_job_errors; read it through stored_errors(), which applies the cascade.
        self.job_errors = JobErrors()
        self.job_traces = {}

    async def close_async(self) -> None:
        """Forget the event loop; the jobs stay inspectable."""
        self._token = None
        self.states.append("closed_async")

    async def prune_jobs_one(
        self, *, statuses: list[str], older_than: float, batch: int, **_: Any
    ) -> dict[str, Any]:
        """Delete up to `batch` jobs of `statuses` whose last event is `older_than` seconds old.

        One process, so no advisory lock: always held; each call starts over from the
        first job, since those before it were deleted.
        """
        cutoff = utils.utcnow() - datetime.timedelta(seconds=older_than)
        old = []
        for job_id, job in sorted(self.jobs.items()):
            ends = [e["at"] for e in self.events.get(job_id, ()) if e["type"] != "scheduled"]
            if job["status"] in statuses and ends and max(ends) < cutoff:
                old.append(job_id)
            if len(old) == batch:
                break
        for job_id in old:
            del self.jobs[job_id]
            self.events.pop(job_id, None)
        return {
            "held": True,
            "deleted": len(old),
            "scanned": len(old),
            "first_recent_id": None,
            "last_event_id": None,
        }
