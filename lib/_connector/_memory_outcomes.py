"""The worker's outcome writes in the in-memory connector, with budgets, breakers and errors."""

from __future__ import annotations

import datetime
from typing import Any, Final

from procrastinate import utils

from dawdle._breaker import Breaker, BreakerRow, Calls, record_calls
from dawdle._budget_fleet import BudgetRow
from dawdle._connector._memory_budgets import MemoryBudgets
from dawdle._connector._memory_errors import JobErrors
from dawdle._sql import (
    ADD_BREAKER,
    ADD_RETRY_BUDGETS,
    RECORD_OUTCOMES,
    RECORD_OUTCOMES_BUDGETED,
    RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS,
    RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS_AND_ERRORS,
    RECORD_OUTCOMES_BUDGETED_WITH_ERRORS,
    RECORD_OUTCOMES_WITH_BREAKERS,
    RECORD_OUTCOMES_WITH_BREAKERS_AND_ERRORS,
    RECORD_OUTCOMES_WITH_ERRORS,
)

# The arguments of the outcome statement that every version of it takes.
_OUTCOME_KEYS: Final = frozenset(
    {"ids", "statuses", "retry_at", "priorities", "queues", "locks", "spent", "worker_id"}
)


class OutcomesInMemory:
    """Handlers of the outcome statements (`_sql/outcomes.py`), mixed into `InMemoryConnector`."""

    jobs: dict[int, dict[str, Any]]
    events: dict[int, list[dict[str, Any]]]
    budgets: MemoryBudgets
    breakers: dict[str, BreakerRow]
    job_errors: JobErrors

    def _register_outcome_queries(self, reverse_queries: dict[str, str]) -> None:
        reverse_queries[RECORD_OUTCOMES] = "record_outcomes"
        reverse_queries[RECORD_OUTCOMES_BUDGETED] = "record_outcomes_budgeted"
        reverse_queries[ADD_RETRY_BUDGETS] = "add_retry_budgets"
        reverse_queries[RECORD_OUTCOMES_WITH_BREAKERS] = "record_outcomes_with_breakers"
        reverse_queries[RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS] = (
            "record_outcomes_budgeted_with_breakers"
        )
        for with_errors in (
            RECORD_OUTCOMES_WITH_ERRORS,
            RECORD_OUTCOMES_BUDGETED_WITH_ERRORS,
            RECORD_OUTCOMES_WITH_BREAKERS_AND_ERRORS,
            RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS_AND_ERRORS,
        ):  # one handler: the arguments say whether budgets and breakers come along
            reverse_queries[with_errors] = "record_outcomes_with_errors"
        reverse_queries[ADD_BREAKER] = "add_breaker"

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

    async def record_outcomes_with_errors_one(self, **arguments: Any) -> dict[str, Any]:
        """The batched outcomes (budgets and breakers too, if sent) and the errors they carry."""
        worker_id = arguments["worker_id"]
        rows = self.job_errors.planned(
            arguments,
            lambda job_id, status: status != "delete" and bool(self._owned(job_id, worker_id)),
        )
        result = self._record_fleet(arguments)
        self.job_errors.insert(rows)
        return result

    def stored_errors(self, job_id: int) -> list[dict[str, Any]]:
        """The job's rows of dawdle_job_errors by attempt (none once the job is deleted)."""
        return self.job_errors.of(job_id, self.jobs)

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
