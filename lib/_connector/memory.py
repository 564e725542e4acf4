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
import psycopg
from procrastinate import connector as procrastinate_connector
from procrastinate import exceptions, jobs, schema, testing, types, utils

from dawdle._breaker import Breaker, BreakerRow, Calls, free_probes, record_calls, take_probes
from dawdle._budget_fleet import BudgetRow
from dawdle._connector._memory_budgets import MemoryBudgets
from dawdle._connector._params import DEFAULT_MAX_PAYLOAD_BYTES, JobLimits
from dawdle._dawdle_schema import DAWDLE_SCHEMA, DAWDLE_TABLES
from dawdle._queues import LIST_QUEUES, PAUSE_QUEUE, RESUME_QUEUE
from dawdle._schema import CHECK_SCHEMA_QUERY, expected_functions
from dawdle._sql import (
    ADD_BREAKER,
    ADD_RETRY_BUDGETS,
    CLAIM_JOBS_TIMED,
    CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    CLAIM_JOBS_TIMED_WITH_BREAKERS,
    FETCH_JOBS,
    FETCH_JOBS_IGNORING_PAUSES,
    FETCH_JOBS_WITH_BREAKERS,
    HEARTBEAT,
    PRUNE_JOBS,
    PUBLISH_TASKS,
    RECLAIM_JOBS,
    RECORD_OUTCOMES,
    RECORD_OUTCOMES_BUDGETED,
    RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS,
    RECORD_OUTCOMES_WITH_BREAKERS,
    RECOVER_STALLED_JOBS,
)

# The arguments of the outcome statement that every version of it takes.
_OUTCOME_KEYS: Final = frozenset(
    {"ids", "statuses", "retry_at", "priorities", "queues", "locks", "spent", "worker_id"}
)

# The in-memory database has no roles: what its pauses give as `paused_by`.
PAUSED_BY: Final = "in-memory"
# The key that marks the events a recovery from a stalled worker wrote (a run cut short),
# which PostgreSQL tells apart by the 'scheduled' event every other put-back writes.
RECOVERY_MARK: Final = "dawdle_recovered"


class InMemoryConnector(testing.InMemoryConnector):
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
        self.reverse_queries[PUBLISH_TASKS] = "publish_tasks"
        self.reverse_queries[FETCH_JOBS] = "fetch_jobs"
        self.reverse_queries[FETCH_JOBS_IGNORING_PAUSES] = "fetch_jobs_ignoring_pauses"
        self.reverse_queries[CLAIM_JOBS_TIMED] = "claim_jobs_timed"
        self.reverse_queries[CLAIM_JOBS_TIMED_IGNORING_PAUSES] = "claim_jobs_timed_ignoring_pauses"
        self.reverse_queries[PAUSE_QUEUE] = "pause_queue"
        self.reverse_queries[RESUME_QUEUE] = "resume_queue"
        self.reverse_queries[LIST_QUEUES] = "list_queue_states"
        self.reverse_queries[RECORD_OUTCOMES] = "record_outcomes"
        self.reverse_queries[RECORD_OUTCOMES_BUDGETED] = "record_outcomes_budgeted"
        self.reverse_queries[ADD_RETRY_BUDGETS] = "add_retry_budgets"
        self.reverse_queries[RECORD_OUTCOMES_WITH_BREAKERS] = "record_outcomes_with_breakers"
        self.reverse_queries[RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS] = (
            "record_outcomes_budgeted_with_breakers"
        )
        self.reverse_queries[ADD_BREAKER] = "add_breaker"
        self.reverse_queries[FETCH_JOBS_WITH_BREAKERS] = "fetch_jobs_with_breakers"
        self.reverse_queries[CLAIM_JOBS_TIMED_WITH_BREAKERS] = "claim_jobs_timed_with_breakers"
        self.reverse_queries[RECOVER_STALLED_JOBS] = "recover_stalled_jobs"
        self.reverse_queries[HEARTBEAT] = "heartbeat"
        self.reverse_queries[RECLAIM_JOBS] = "reclaim_jobs"
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

    async def publish_tasks_run(self, *, worker_id: int, task_names: list[str]) -> None:
        """Record the worker's task names, as its SQL does (refused for an unknown worker)."""
        if worker_id not in self.workers:
            raise exceptions.ConnectorException(
                f"worker {worker_id} is not registered"
            ) from psycopg.errors.ForeignKeyViolation(
                'insert or update on table "dawdle_worker_tasks" violates foreign key constraint'
            )
        self.worker_tasks[worker_id] = list(task_names)

    def published_tasks(self) -> dict[int, list[str]]:
        """The task names each registered worker published, by worker id.

        A row goes with its worker, as the foreign key's cascade does in PostgreSQL.
        """
        return {
            worker_id: names
            for worker_id, names in self.worker_tasks.items()
            if worker_id in self.workers
        }

    async def fetch_jobs_all(
        self, *, queues: list[str] | None, task_names: list[str] | None, limit: int, worker_id: int
    ) -> list[dict[str, Any]]:
        """The worker's batched claim, with the same order, filters and lock rules as its SQL.

        A ready job of a task outside `task_names`, or of a paused queue, is not taken, but
        still comes first in its lock's order, as in the SQL.
        """
        return self._claim(
            queues=queues,
            task_names=task_names,
            limit=limit,
            worker_id=worker_id,
            paused=set(self.queue_pauses),
        )

    async def fetch_jobs_ignoring_pauses_all(
        self, *, queues: list[str] | None, task_names: list[str] | None, limit: int, worker_id: int
    ) -> list[dict[str, Any]]:
        """The claim of a database without dawdle_queue_pauses: paused queues are claimed."""
        return self._claim(
            queues=queues, task_names=task_names, limit=limit, worker_id=worker_id, paused=set()
        )

    async def fetch_jobs_with_breakers_all(self, **claim: Any) -> list[dict[str, Any]]:
        """The claim with breakers: open ones' tasks skipped, probes taken, as its SQL does."""
        return self._claim(**claim, paused=set(self.queue_pauses), breakers=True)

    async def claim_jobs_timed_with_breakers_all(
        self, *, timed_tasks: list[str], **claim: Any
    ) -> list[dict[str, Any]]:
        """The same, with each timed task's `first_run_age`."""
        claimed = await self.fetch_jobs_with_breakers_all(**claim)
        return self._with_first_run_age(claimed, timed_tasks)

    def _claim(
        self,
        *,
        queues: list[str] | None,
        task_names: list[str] | None,
        limit: int,
        worker_id: int,
        paused: set[str],
        breakers: bool = False,
    ) -> list[dict[str, Any]]:
        now = utils.utcnow()
        ready = sorted(
            (
                job
                for job in self.jobs.values()
                if job["status"] == "todo"
                and (not job["scheduled_at"] or job["scheduled_at"] <= now)
            ),
            key=lambda job: (-job["priority"], job["id"]),
        )
        first_of_lock: dict[str, int] = {}
        for job in ready:
            if job["lock"] is not None:
                first_of_lock.setdefault(job["lock"], job["id"])
        held = set(self.current_locks)

        def claimable(job: dict[str, Any]) -> bool:
            lock = job["lock"]
            return not (
                (queues is not None and job["queue_name"] not in queues)
                or job["queue_name"] in paused
                or (task_names is not None and job["task_name"] not in task_names)
                or (lock is not None and (lock in held or first_of_lock[lock] != job["id"]))
            )

        probes = self._take_probes(ready, claimable, limit, task_names) if breakers else {}
        blocked = {
            name
            for row in (self.breakers.values() if breakers else ())
            if row.state != "closed"
            for name in row.names
        }
        claimed = [job for job in ready if job["id"] in probes]
        for job in ready:
            if len(claimed) == limit:
                break
            if job["task_name"] in blocked or not claimable(job):
                continue
            claimed.append(job)
        if claimed and worker_id not in self.workers:
            # As the SQL's foreign key on worker_id: a pruned worker claims nothing until it
            # registers again (the worker does so on this very error).
            raise exceptions.ConnectorException(
                f"worker {worker_id} is not registered"
            ) from psycopg.errors.ForeignKeyViolation(
                'insert or update on table "procrastinate_jobs" violates foreign key constraint'
            )
        for job in claimed:
            job["status"] = "doing"
            job["worker_id"] = worker_id
            self.events[job["id"]].append({"type": "started", "at": now})
        if breakers:
            return [{**job, "probe_of": probes.get(job["id"])} for job in claimed]
        return claimed

    def _take_probes(
        self,
        ready: list[dict[str, Any]],
        claimable: Callable[[dict[str, Any]], bool],
        limit: int,
        task_names: list[str] | None,
    ) -> dict[int, str]:
        """Probe jobs of breakers that may probe, by job id: the breaker's state before."""
        now = utils.utcnow()
        probes: dict[int, str] = {}
        for task in sorted(self.breakers):
            row = self.breakers[task]
            free = free_probes(row, now)
            if free <= 0 or (task_names is not None and not set(row.names) & set(task_names)):
                continue
            taken = [
                job["id"] for job in ready if job["task_name"] in row.names and claimable(job)
            ][: min(free, limit - len(probes))]
            if taken:
                probes |= dict.fromkeys(taken, row.state)
                take_probes(row, len(taken), now)
        return probes

    async def claim_jobs_timed_all(
        self, *, timed_tasks: list[str], **claim: Any
    ) -> list[dict[str, Any]]:
        """The claim with each timed task's `first_run_age`, as its SQL reads the events."""
        return self._with_first_run_age(await self.fetch_jobs_all(**claim), timed_tasks)

    async def claim_jobs_timed_ignoring_pauses_all(
        self, *, timed_tasks: list[str], **claim: Any
    ) -> list[dict[str, Any]]:
        """The same, on a database without dawdle_queue_pauses."""
        claimed = await self.fetch_jobs_ignoring_pauses_all(**claim)
        return self._with_first_run_age(claimed, timed_tasks)

    def _with_first_run_age(
        self, claimed: list[dict[str, Any]], timed_tasks: list[str]
    ) -> list[dict[str, Any]]:
        """Claimed rows with `first_run_age` for the jobs of `timed_tasks`.

        The claim appended each job's own 'started' event last; the SQL's snapshot does not
        see it, so it is left out here.
        """
        now = utils.utcnow()
        rows = []
        for job in claimed:
            first_run_age = None
            if job["task_name"] in timed_tasks:
                earlier = self.events[job["id"]][:-1]
                retried = [i for i, event in enumerate(earlier) if event["type"] == "retried"]
                since = retried[-1] + 1 if retried else 0
                starts = [event["at"] for event in earlier[since:] if event["type"] == "started"]
                if starts:
                    first_run_age = (now - min(starts)).total_seconds()
            rows.append({**job, "first_run_age": first_run_age})
        return rows

    async def add_retry_budgets_run(self, *, task_names: list[str]) -> None:
        """Add the budget rows of these tasks; a row already there is kept."""
        for name in task_names:
            self.budgets.rows.setdefault(name, BudgetRow(counted_at=utils.utcnow()))

    async def add_breaker_run(
        self, *, task_name: str, names: list[str], max_probes: int, probe_lease: float
    ) -> None:
        """Add a task's breaker row, or refresh its names and probe settings."""
        row = self.breakers.setdefault(task_name, BreakerRow(counted_at=utils.utcnow()))
        row.names, row.max_probes, row.probe_lease = tuple(names), max_probes, probe_lease

    async def record_outcomes_budgeted_one(self, **arguments: Any) -> dict[str, Any]:
        """The batched outcomes with the fleet retry budget, as its SQL records them."""
        return self._record_fleet(arguments)

    async def record_outcomes_with_breakers_one(self, **arguments: Any) -> dict[str, Any]:
        """The batched outcomes with breakers, as their SQL records them."""
        return self._record_fleet(arguments)

    async def record_outcomes_budgeted_with_breakers_one(self, **arguments: Any) -> dict[str, Any]:
        """The batched outcomes with the fleet retry budget and breakers."""
        return self._record_fleet(arguments)

    def _owned(self, job_id: int, worker_id: int) -> dict[str, Any] | None:
        """The job, if it is still 'doing' for this worker (what the SQL updates)."""
        job = self.jobs.get(job_id)
        if job is None or job["status"] != "doing" or job["worker_id"] != worker_id:
            return None
        return job

    def _record_fleet(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Budgets and breakers as the outcome statement moves them, then the outcomes."""
        outcomes = {key: value for key, value in arguments.items() if key in _OUTCOME_KEYS}
        now = utils.utcnow()
        result: dict[str, Any] = {}
        scheduled: dict[int, datetime.datetime] = {}
        if "budget_names" in arguments:
            planned, released = self.budgets.plan(
                arguments,
                owned=lambda job_id: self._owned(job_id, arguments["worker_id"]),
                jobs=self.jobs,
                now=now,
            )
            scheduled = {job_id: at for job_id, (_, _, at) in planned.items()}
            pushed = sorted((job_id, *one) for job_id, one in planned.items() if one[2] > one[1])
            result |= {
                "pushed_ids": [one[0] for one in pushed],
                "pushed_tasks": [one[1] for one in pushed],
                "pushed_from": [one[2] for one in pushed],
                "pushed_to": [one[3] for one in pushed],
                "released": released,
            }
        if "breaker_names" in arguments:
            moved = self._move_breakers(arguments, now)
            result |= {
                "moved_tasks": [task for task, _, _ in moved],
                "moved_states": [state for _, state, _ in moved],
                "moved_open_until": [until for _, _, until in moved],
            }
        return {"recorded": self._record_outcomes(**outcomes, scheduled=scheduled), **result}

    def _move_breakers(
        self, arguments: dict[str, Any], now: datetime.datetime
    ) -> list[tuple[str, str, datetime.datetime]]:
        """Count the batch's calls on their tasks' breakers; the breakers that changed state."""
        settings = {
            name: (task, Breaker(ratio, window, min_calls, open_for, max_open_for, probes))
            for name, task, ratio, window, min_calls, open_for, max_open_for, probes in zip(
                arguments["breaker_names"],
                arguments["breaker_tasks"],
                arguments["breaker_ratios"],
                arguments["breaker_windows"],
                arguments["breaker_min_calls"],
                arguments["breaker_open_for"],
                arguments["breaker_max_open_for"],
                arguments["breaker_probes"],
                strict=True,
            )
        }
        kinds: dict[str, tuple[Breaker, list[str]]] = {}
        for job_id, kind in zip(arguments["ids"], arguments["calls"], strict=True):
            job = self._owned(job_id, arguments["worker_id"])
            if job is None or kind is None:
                continue
            task, breaker = settings.get(job["task_name"], (None, None))
            if task is None or breaker is None or task not in self.breakers:
                continue
            kinds.setdefault(task, (breaker, []))[1].append(kind)
        moved: list[tuple[str, str, datetime.datetime]] = []
        for task in sorted(kinds):
            breaker, seen = kinds[task]
            row = self.breakers[task]
            before = row.state
            calls = Calls(
                calls=seen.count("success") + seen.count("failure"),
                failures=seen.count("failure"),
                probe_successes=seen.count("probe_success"),
                probe_failures=seen.count("probe_failure"),
                released=seen.count("probe_released"),
            )
            if record_calls(breaker, row, calls, now=now) != before:
                assert row.open_until is not None  # noqa: S101 (set when it first opened)
                moved.append((task, row.state, row.open_until))
        return moved

    async def record_outcomes_one(self, **outcomes: Any) -> dict[str, int]:
        """The worker's batched outcomes, as its SQL records them."""
        return {"recorded": self._record_outcomes(**outcomes, scheduled={})}

    def _record_outcomes(
        self,
        *,
        ids: list[int],
        statuses: list[str],
        retry_at: list[datetime.datetime | None],
        priorities: list[int | None],
        queues: list[str | None],
        locks: list[str | None],
        spent: list[bool],
        worker_id: int,
        scheduled: dict[int, datetime.datetime],
    ) -> int:
        """Record the outcomes; a retry in `scheduled` runs at that time instead."""
        recorded = 0
        for job_id, status, when, priority, queue, lock, counted in zip(
            ids, statuses, retry_at, priorities, queues, locks, spent, strict=True
        ):
            job = self.jobs.get(job_id)
            if job is None or job["status"] != "doing" or job["worker_id"] != worker_id:
                continue
            recorded += 1
            if status == "delete":
                self.jobs.pop(job_id)
                continue
            new_status = status
            if status == "todo" and not job["abort_requested"]:
                job["scheduled_at"] = scheduled.get(job_id, when)
                for key, value in (("priority", priority), ("queue_name", queue), ("lock", lock)):
                    if value is not None:
                        job[key] = value
            elif status == "todo":
                new_status = "aborted"
            job["status"] = new_status
            job["abort_requested"] = False
            job["attempts"] += 1 if counted else 0
            self.events[job_id].append(
                {
                    "type": "deferred_for_retry" if new_status == "todo" else new_status,
                    "at": utils.utcnow(),
                }
            )
        return recorded

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

    async def recover_stalled_jobs_all(
        self,
        *,
        seconds: float,
        own_jobs: list[int],
        worker_id: int,
        max_recoveries: int | None,
    ) -> list[dict[str, Any]]:
        """Put back the jobs of workers whose heartbeat is older than `seconds`, as its SQL does.

        No attempt is spent; the change leaves its event, as Procrastinate's trigger writes.
        A job of a stalled worker whose last runs all ended so, more than `max_recoveries`
        of them, fails instead.
        """
        limit = utils.utcnow() - datetime.timedelta(seconds=seconds)
        recovered = []
        for job in self.jobs.values():
            heartbeat = self.workers.get(job["worker_id"])
            stalled = heartbeat is None or heartbeat < limit or job["worker_id"] == worker_id
            if job["status"] != "doing" or not stalled or job["id"] in own_jobs:
                continue
            runs = self._runs_cut_short(job["id"])
            poisoned = (
                job["worker_id"] != worker_id
                and max_recoveries is not None
                and runs > max_recoveries
            )
            if job["abort_requested"]:
                job["status"] = "aborted"
            elif poisoned:
                job["status"] = "failed"
            else:
                job["status"] = "todo"
                job["scheduled_at"] = None
            job["abort_requested"] = False
            job["worker_id"] = None
            event = "deferred_for_retry" if job["status"] == "todo" else job["status"]
            self.events[job["id"]].append(
                {"type": event, "at": utils.utcnow(), RECOVERY_MARK: True}
            )
            recovered.append(
                {
                    "id": job["id"],
                    "task_name": job["task_name"],
                    "status": job["status"],
                    "runs": runs,
                }
            )
        return recovered

    def _runs_cut_short(self, job_id: int) -> int:
        """The job's 'started' events since a run last went back to 'todo' otherwise.

        The SQL counts them since the last 'scheduled' or 'retried' event (every put-back
        but a recovery sets scheduled_at); this store writes no 'scheduled' event for an
        outcome, so a 'deferred_for_retry' without the recovery's mark plays its part.
        """
        runs = 0
        for event in reversed(self.events[job_id]):
            if event["type"] in {"scheduled", "retried"} or (
                event["type"] == "deferred_for_retry" and not event.get(RECOVERY_MARK)
            ):
                break
            runs += event["type"] == "started"
        return runs

    def reset(self) -> None:
        """Empty the in-memory database (worker ids start again from 1, as after TRUNCATE)."""
        super().reset()
        self._worker_ids = itertools.count(1)
        # dawdle_worker_tasks; read it through published_tasks(), which applies the cascade.
        self.worker_tasks: dict[int, list[str]] = {}
        # dawdle_queue_pauses: each paused queue's row, by queue name.
        self.queue_pauses: dict[str, dict[str, Any]] = {}
        # dawdle_retry_budgets and dawdle_budget_pushed.
        self.budgets = MemoryBudgets()
        # dawdle_breakers: each task's breaker row, by task name.
        self.breakers: dict[str, BreakerRow] = {}

    async def register_worker_one(self) -> dict[str, Any]:
        """Register a worker under an id never used before, as PostgreSQL's sequence does.

        Procrastinate's in-memory connector reuses the highest id + 1: a worker pruned and
        registered again got its old id back, so jobs claimed under that id looked like ours.
        """
        worker_id = next(self._worker_ids)
        self.workers[worker_id] = utils.utcnow()
        return {"worker_id": worker_id}

    async def heartbeat_all(self, *, worker_id: int) -> list[dict[str, Any]]:
        """The worker's heartbeat: no row when the worker was pruned."""
        if worker_id not in self.workers:
            return []
        self.workers[worker_id] = utils.utcnow()
        return [{"id": worker_id}]

    async def reclaim_jobs_all(self, *, worker_id: int, ids: list[int]) -> list[dict[str, Any]]:
        """Give back to a worker registered again the jobs that pruning left without one."""
        reclaimed = []
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is not None and job["status"] == "doing" and job["worker_id"] is None:
                job["worker_id"] = worker_id
                reclaimed.append({"id": job_id})
        return reclaimed

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
