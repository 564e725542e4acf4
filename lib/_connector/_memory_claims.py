"""The worker's claims in the in-memory connector: the order, filters and locks of their SQL."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from procrastinate import exceptions, utils

from dawdle._breaker import BreakerRow, free_probes, take_probes
from dawdle._sql import (
    CLAIM_JOBS_TIMED,
    CLAIM_JOBS_TIMED_IGNORING_PAUSES,
    CLAIM_JOBS_TIMED_UNLESS_PROBES,
    CLAIM_JOBS_TIMED_WITH_BREAKERS,
    FETCH_JOBS,
    FETCH_JOBS_IGNORING_PAUSES,
    FETCH_JOBS_UNLESS_PROBES,
    FETCH_JOBS_WITH_BREAKERS,
)


class ClaimsInMemory:
    """Handlers of the claim statements (`_sql/claims.py`), mixed into `InMemoryConnector`."""

    jobs: dict[int, dict[str, Any]]
    events: dict[int, list[dict[str, Any]]]
    workers: dict[int, Any]
    queue_pauses: dict[str, dict[str, Any]]
    breakers: dict[str, BreakerRow]
    current_locks: Iterable[str]

    def _register_claim_queries(self, reverse_queries: dict[str, str]) -> None:
        reverse_queries[FETCH_JOBS] = "fetch_jobs"
        reverse_queries[FETCH_JOBS_IGNORING_PAUSES] = "fetch_jobs_ignoring_pauses"
        reverse_queries[CLAIM_JOBS_TIMED] = "claim_jobs_timed"
        reverse_queries[CLAIM_JOBS_TIMED_IGNORING_PAUSES] = "claim_jobs_timed_ignoring_pauses"
        reverse_queries[FETCH_JOBS_WITH_BREAKERS] = "fetch_jobs_with_breakers"
        reverse_queries[CLAIM_JOBS_TIMED_WITH_BREAKERS] = "claim_jobs_timed_with_breakers"
        reverse_queries[FETCH_JOBS_UNLESS_PROBES] = "fetch_jobs_unless_probes"
        reverse_queries[CLAIM_JOBS_TIMED_UNLESS_PROBES] = "claim_jobs_timed_unless_probes"

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

    async def fetch_jobs_unless_probes_all(self, **claim: Any) -> list[dict[str, Any]]:
        """The claim with breakers while none may probe; one `probes_due` row if one may."""
        if self._probes_due(claim["task_names"]):
            return [{"id": None, "probes_due": True}]
        claimed = await self.fetch_jobs_with_breakers_all(**claim)
        return _unless_probes(claimed)

    async def claim_jobs_timed_unless_probes_all(
        self, *, timed_tasks: list[str], **claim: Any
    ) -> list[dict[str, Any]]:
        """The same, with each timed task's `first_run_age`."""
        if self._probes_due(claim["task_names"]):
            return [{"id": None, "probes_due": True}]
        claimed = await self.claim_jobs_timed_with_breakers_all(timed_tasks=timed_tasks, **claim)
        return _unless_probes(claimed)

    def _probes_due(self, task_names: list[str] | None) -> bool:
        """Whether a breaker of `task_names` (None: any) may probe now."""
        now = utils.utcnow()
        return any(
            free_probes(row, now) > 0
            and (task_names is None or bool(set(row.names) & set(task_names)))
            for row in self.breakers.values()
        )

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


def _unless_probes(claimed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the claim without probes: `probes_due` false, one NULL-id row if none."""
    rows = [{key: value for key, value in job.items() if key != "probe_of"} for job in claimed]
    return [{**row, "probes_due": False} for row in rows] or [{"id": None, "probes_due": False}]
