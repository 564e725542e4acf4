"""The fleet retry budget in the in-memory connector: what its SQL does to a batch's budgets."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dawdle._budget_fleet import (
    BudgetRow,
    FleetRetryBudget,
    HeldSlot,
    plan_retries,
    slots_to_release,
)

# A retry the budget placed: its task, due time and slot.
Placed = tuple[str, datetime.datetime, datetime.datetime]


@dataclass
class _TaskBatch:
    """The batch's runs of one budgeted task."""

    budget: FleetRetryBudget
    first_runs: int = 0
    retries_succeeded: int = 0
    retries: list[tuple[datetime.datetime, int]] = field(default_factory=list)


@dataclass
class MemoryBudgets:
    """`dawdle_retry_budgets` (`rows`, by task) and `dawdle_budget_pushed` (`held`, by job)."""

    rows: dict[str, BudgetRow] = field(default_factory=dict)
    held: dict[int, HeldSlot] = field(default_factory=dict)

    def plan(
        self,
        arguments: dict[str, Any],
        *,
        owned: Callable[[int], dict[str, Any] | None],
        jobs: dict[int, dict[str, Any]],
        now: datetime.datetime,
    ) -> tuple[dict[int, Placed], int]:
        """Each budgeted retry's placement, and how many pushed retries successes released.

        Updates the budget rows, moves released jobs up to their due time (or now), and
        keeps `held` as the statement keeps its table: rows of the batch's jobs replaced.
        """
        batches, batch = self._count(arguments, owned)
        placed: dict[int, Placed] = {}
        released = 0
        for task, runs in batches.items():
            chosen = slots_to_release(
                self.held,
                task_name=task,
                successes=runs.retries_succeeded,
                batch=batch,
                now=now,
            )
            if task in self.rows:
                due = {job_id: when for when, job_id in runs.retries}
                times = plan_retries(
                    runs.budget,
                    self.rows[task],
                    first_runs=runs.first_runs,
                    retries=runs.retries,
                    now=now,
                    released=len(chosen),
                )
                placed |= {job_id: (task, due[job_id], at) for job_id, at in times.items()}
            released += self._release(chosen, jobs, now)
            passed = [
                job_id
                for job_id, slot in self.held.items()
                if slot.task_name == task and slot.slot_at <= now and job_id not in batch
            ]
            for job_id in passed:
                del self.held[job_id]
        for job_id in batch:
            self.held.pop(job_id, None)
        for job_id, (task, due_at, slot_at) in placed.items():
            if slot_at > due_at:
                self.held[job_id] = HeldSlot(task, due_at, slot_at)
        return placed, released

    def _count(
        self, arguments: dict[str, Any], owned: Callable[[int], dict[str, Any] | None]
    ) -> tuple[dict[str, _TaskBatch], set[int]]:
        """The batch's runs by budgeted task, and the ids of those jobs."""
        settings = {
            name: (task, FleetRetryBudget(ratio, floor, window))
            for name, task, ratio, floor, window in zip(
                arguments["budget_names"],
                arguments["budget_tasks"],
                arguments["budget_ratios"],
                arguments["budget_floors"],
                arguments["budget_windows"],
                strict=True,
            )
        }
        successes = set(arguments["budget_successes"])
        batches: dict[str, _TaskBatch] = {}
        batch: set[int] = set()
        for job_id, status, when, spent in zip(
            arguments["ids"],
            arguments["statuses"],
            arguments["retry_at"],
            arguments["spent"],
            strict=True,
        ):
            job = owned(job_id)
            if job is None or job["task_name"] not in settings:
                continue
            task, budget = settings[job["task_name"]]
            runs = batches.setdefault(task, _TaskBatch(budget))
            batch.add(job_id)
            runs.first_runs += 1 if spent and job["attempts"] == 0 else 0
            runs.retries_succeeded += 1 if job_id in successes and job["attempts"] > 0 else 0
            if status == "todo" and spent and not job["abort_requested"]:
                runs.retries.append((when, job_id))
        return batches, batch

    def _release(
        self, chosen: list[int], jobs: dict[int, dict[str, Any]], now: datetime.datetime
    ) -> int:
        """Move the chosen pushed retries up to their due time (or now); how many moved."""
        moved = 0
        for job_id in chosen:
            slot = self.held.pop(job_id)
            job = jobs.get(job_id)
            if job is not None and job["status"] == "todo" and job["scheduled_at"] == slot.slot_at:
                job["scheduled_at"] = max(now, slot.due_at)
                moved += 1
        return moved
