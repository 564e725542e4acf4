"""Log records about one job, with Procrastinate's `extra` fields, built only when emitted.

A record that Procrastinate's worker also writes carries its `action` and its `extra` keys
(`worker`, `job`, the job result's `start_timestamp`, `end_timestamp`, `duration`,
`result`), so what alerts on Procrastinate's logs works on dawdle's; dawdle's own flat
fields (`task_name`, `job_id`, `queue`, `attempt`, `outcome`) sit beside them. Records
with no Procrastinate counterpart keep dawdle's own action names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from procrastinate import job_context, jobs

from dawdle._worker.state import WorkerState

logger = logging.getLogger("dawdle.worker")


def describe(job: jobs.Job) -> str:
    """`task[id](args)` for logs; never fails, whatever the arguments are."""
    arguments = job.task_kwargs
    if isinstance(arguments, dict):
        shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    else:
        shown = repr(arguments)
    return f"{job.task_name}[{job.id}]({shown:.200})"


def log_job(
    state: WorkerState,
    level: int,
    action: str,
    message: Callable[[], str],
    context: job_context.JobContext,
    *,
    exc_info: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log `message()` about the job of `context`, if a handler would take `level`."""
    # At least twice per job: build nothing unless the record will be emitted.
    if not logger.isEnabledFor(level):
        return
    job = context.job
    extra = {
        "action": action,
        "worker": state.worker_log_fields(job_id=job.id),
        "job": job_log_context(job),
        "task_name": job.task_name,
        "job_id": job.id,
        "queue": job.queue,
        "attempt": job.attempts + 1,
        # Procrastinate's JobResult fields, for a job still running unless `fields` say more.
        "start_timestamp": context.start_timestamp,
        "duration": time.time() - context.start_timestamp,
        **fields,
    }
    logger.log(level, message(), extra=extra, exc_info=exc_info)


def job_log_context(job: jobs.Job) -> dict[str, Any]:
    """Procrastinate's `Job.log_context()`, which fails on arguments that are not an object."""
    return {
        "id": job.id,
        "status": job.status,
        "queue": job.queue,
        "priority": job.priority,
        "lock": job.lock,
        "queueing_lock": job.queueing_lock,
        "task_name": job.task_name,
        "task_kwargs": job.task_kwargs,
        "scheduled_at": job.scheduled_at.isoformat() if job.scheduled_at else None,
        "attempts": job.attempts,
        "abort_requested": job.abort_requested,
        "worker_id": job.worker_id,
        "call_string": describe(job),
    }


def log_task_not_found(
    state: WorkerState, context: job_context.JobContext, exc: BaseException
) -> None:
    """Procrastinate's `task_not_found` record: its level, wording and `extra`, nothing more.

    dawdle's own record of the failure (`job_error`, with dawdle's fields and the
    traceback) follows, as in Procrastinate: one ERROR record per failed job carries
    dawdle's `job_id`.
    """
    if not logger.isEnabledFor(logging.ERROR):
        return
    job = context.job
    extra = {
        "action": "task_not_found",
        "worker": state.worker_log_fields(job_id=job.id),
        "job": job_log_context(job),
        "start_timestamp": context.start_timestamp,
        "duration": time.time() - context.start_timestamp,
        "exception": str(exc),
    }
    logger.error("Task was not found", extra=extra, exc_info=exc)
