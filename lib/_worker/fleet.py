"""The worker's fleet bookkeeping: its tasks' retry budgets and breakers, and their tables.

`JobStore` asks `Fleet` what an outcome write carries for them and which statement sends
it. Without their tables (dawdle_retry_budgets and dawdle_breakers of schema 3,
dawdle_budget_pushed of schema 4) both are off, one warning each, and the tables are tried
again every TABLE_RECHECK seconds (`table_watch`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, LiteralString

import anyio
import psycopg
from procrastinate import exceptions

from dawdle._breaker import Breaker
from dawdle._budget_fleet import FleetRetryBudget
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
from dawdle._worker.outcomes import Outcome, Verdict
from dawdle._worker.table_watch import TableWatch

if TYPE_CHECKING:
    import procrastinate

logger = logging.getLogger("dawdle.worker")

# The outcome statement, by (with the fleet retry budget, with breakers, with errors).
_OUTCOME_WRITES: Final[dict[tuple[bool, bool, bool], LiteralString]] = {
    (False, False, False): RECORD_OUTCOMES,
    (True, False, False): RECORD_OUTCOMES_BUDGETED,
    (False, True, False): RECORD_OUTCOMES_WITH_BREAKERS,
    (True, True, False): RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS,
    (False, False, True): RECORD_OUTCOMES_WITH_ERRORS,
    (True, False, True): RECORD_OUTCOMES_BUDGETED_WITH_ERRORS,
    (False, True, True): RECORD_OUTCOMES_WITH_BREAKERS_AND_ERRORS,
    (True, True, True): RECORD_OUTCOMES_BUDGETED_WITH_BREAKERS_AND_ERRORS,
}
# What a verdict tells a breaker: a call that succeeded or failed (None: no call, as a
# snooze, a put-back or an abort say nothing of the dependency).
_CALLS: Final[dict[Outcome, str]] = {
    Outcome.SUCCEEDED: "success",
    Outcome.FAILED: "failure",
    Outcome.RETRY: "failure",
}


def call_kind(verdict: Verdict, *, probe: bool) -> str | None:
    """How the outcome statement counts `verdict` for its task's breaker (see `_sql`)."""
    kind = _CALLS.get(verdict.outcome)
    if not probe:
        return kind
    return "probe_released" if kind is None else f"probe_{kind}"


def outcome_write(*, budget: bool, breaker: bool, errors: bool) -> LiteralString:
    """The outcome statement that also moves budgets, breakers and stores errors, as asked."""
    return _OUTCOME_WRITES[budget, breaker, errors]


class Fleet:
    """The budgets and breakers of one app's tasks, by every name and alias, on its connector."""

    def __init__(self, app: procrastinate.App, *, timeout: float) -> None:
        self._connector = app.connector
        # The longest the adding of the rows may take (shielded, as an outcome write).
        self._timeout = timeout
        # Every name and alias of a task with a fleet retry budget: its task and budget.
        self.budgets: dict[str, tuple[str, FleetRetryBudget]] = {
            name: (task.name, budget)
            for name, task in app.tasks.items()
            if (budget := getattr(task, "dawdle_retry_budget", None)) is not None
        }
        # Every name and alias of a task with a breaker: its task and breaker.
        self.breakers: dict[str, tuple[str, Breaker]] = {
            name: (task.name, breaker)
            for name, task in app.tasks.items()
            if (breaker := getattr(task, "dawdle_breaker", None)) is not None
        }
        # Their settings by every name and alias, as the outcome statement's arrays: fixed
        # for the worker's life, so built once rather than for every batch.
        self._budget_settings = _budget_settings(self.budgets)
        self._breaker_settings = _breaker_settings(self.breakers)
        # Whether the rows of this worker's budgets and breakers were added, and whether
        # their tables are believed there.
        self._rows_added = False
        self._tables = TableWatch()
        # Claimed jobs that probe a half-open breaker, until their verdict is written.
        self.probes: set[int] = set()

    def budget_arguments(self, verdicts: Sequence[Verdict]) -> dict[str, Any]:
        """The runs that succeeded, and the budgeted tasks' settings by every name and alias."""
        successes = [one.job_id for one in verdicts if one.outcome is Outcome.SUCCEEDED]
        return {"budget_successes": successes, **self._budget_settings}

    def breaker_arguments(self, verdicts: Sequence[Verdict]) -> dict[str, Any]:
        """What each verdict tells a breaker, and the breakers' settings by name and alias."""
        calls = [call_kind(one, probe=one.job_id in self.probes) for one in verdicts]
        return {"calls": calls, **self._breaker_settings}

    async def ready(self) -> bool:
        """Whether budgets and breakers can be used now (their rows added once per worker)."""
        if not (self.budgets or self.breakers):
            return False
        if not self._tables.ready():
            return False
        if not self._rows_added:
            try:
                with anyio.fail_after(self._timeout, shield=True):
                    await self._add_rows()
            except exceptions.ConnectorException as exc:
                if not isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                    raise
                self.missing()
                return False
            self._rows_added = True
        self._tables.found()
        return True

    async def _add_rows(self) -> None:
        """Add the budget and breaker rows of this worker's tasks (breakers' settings too)."""
        if self.budgets:
            tasks = sorted({task for task, _ in self.budgets.values()})
            await self._connector.execute_query_async(ADD_RETRY_BUDGETS, task_names=tasks)
        breakers = dict(self.breakers.values())
        for task, breaker in sorted(breakers.items(), key=lambda item: item[0]):
            names = sorted(name for name, (owner, _) in self.breakers.items() if owner == task)
            await self._connector.execute_query_async(
                ADD_BREAKER,
                task_name=task,
                names=names,
                max_probes=breaker.half_open_probes,
                probe_lease=breaker.max_open_for,
            )

    def missing(self) -> None:
        """Go without budgets and breakers for TABLE_RECHECK seconds; warn the first time."""
        if self._tables.missing():
            for used, feature, action in (
                (self.budgets, "fleet retry budgets", "retry_budgets_off"),
                (self.breakers, "circuit breakers", "breakers_off"),
            ):
                if used:
                    logger.warning(
                        "%s are off: the database lacks dawdle's tables for them "
                        "(dawdle_retry_budgets, dawdle_breakers, dawdle_budget_pushed); "
                        "run `dawdle schema --apply`",
                        feature,
                        extra={"action": action},
                    )
        self._rows_added = False


def _budget_settings(budgets: dict[str, tuple[str, FleetRetryBudget]]) -> dict[str, list[Any]]:
    """The budgets' `budget_*` arrays of the outcome statement, in name order."""
    names = sorted(budgets)
    settings = [budgets[name] for name in names]
    return {
        "budget_names": names,
        "budget_tasks": [task for task, _ in settings],
        "budget_ratios": [budget.ratio for _, budget in settings],
        "budget_floors": [budget.min_per_second for _, budget in settings],
        "budget_windows": [budget.window for _, budget in settings],
    }


def _breaker_settings(breakers: dict[str, tuple[str, Breaker]]) -> dict[str, list[Any]]:
    """The breakers' `breaker_*` arrays of the outcome statement, in name order."""
    names = sorted(breakers)
    settings = [breakers[name] for name in names]
    return {
        "breaker_names": names,
        "breaker_tasks": [task for task, _ in settings],
        "breaker_ratios": [breaker.failure_ratio for _, breaker in settings],
        "breaker_windows": [breaker.window for _, breaker in settings],
        "breaker_min_calls": [breaker.min_calls for _, breaker in settings],
        "breaker_open_for": [breaker.open_for for _, breaker in settings],
        "breaker_max_open_for": [breaker.max_open_for for _, breaker in settings],
        "breaker_probes": [breaker.half_open_probes for _, breaker in settings],
    }
