"""Log records about one job, with Procrastinate's `extra` fields, built only when emitted."""

from __future__ import annotations

import logging
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
    settings = state.settings
    extra = {
        "action": action,
        "worker": {"name": settings.name, "id": state.worker_id, "queues": settings.queues},
        "job": {
            "id": job.id,
            "task_name": job.task_name,
            "queue": job.queue,
            "lock": job.lock,
            "priority": job.priority,
            "attempts": job.attempts,
        },
        "task_name": job.task_name,
        "job_id": job.id,
        "queue": job.queue,
        "attempt": job.attempts + 1,
        **fields,
    }
    logger.log(level, message(), extra=extra, exc_info=exc_info)
