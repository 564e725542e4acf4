"""The workers' rows in the in-memory connector: registration, heartbeats, recovery."""

from __future__ import annotations

import datetime
import itertools
from typing import Any, Final

import psycopg
from procrastinate import exceptions, utils

from dawdle._sql import HEARTBEAT, PUBLISH_TASKS, RECLAIM_JOBS, RECOVER_STALLED_JOBS

# The key that marks the events a recovery from a stalled worker wrote (a run cut short),
# which PostgreSQL tells apart by the 'scheduled' event every other put-back writes.
RECOVERY_MARK: Final = "dawdle_recovered"


class WorkersInMemory:
    """Handlers of the workers' statements (`_sql/workers.py`), mixed into `InMemoryConnector`."""

    jobs: dict[int, dict[str, Any]]
    events: dict[int, list[dict[str, Any]]]
    workers: dict[int, datetime.datetime]
    _worker_ids: itertools.count[int]
    worker_tasks: dict[int, list[str]]
    """dawdle_worker_tasks; read it through published_tasks(), which applies the cascade."""

    def _register_worker_queries(self, reverse_queries: dict[str, str]) -> None:
        reverse_queries[PUBLISH_TASKS] = "publish_tasks"
        reverse_queries[RECOVER_STALLED_JOBS] = "recover_stalled_jobs"
        reverse_queries[HEARTBEAT] = "heartbeat"
        reverse_queries[RECLAIM_JOBS] = "reclaim_jobs"

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
