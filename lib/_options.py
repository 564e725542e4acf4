"""The worker's options as a TypedDict, so `run_worker_async(concurency=2)` is a type error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

from procrastinate import jobs, middleware

from dawdle._hooks import Hooks
from dawdle._worker.state import UnknownTasks


class WorkerOptions(TypedDict, total=False):
    """The options of `dawdle.Worker` (and `App.run_worker_async`), with their types.

    Procrastinate's `WorkerOptions` has the same keys, but dawdle's worker also takes None
    where it has a default meaning (all queues, no name, no graceful timeout, ...).
    `unknown_tasks` is dawdle's own: "leave" (the default) never claims a job of a task
    the app does not register; "fail" claims and fails it, as Procrastinate's worker does.
    `heartbeat_lease` is dawdle's own too: how long a worker goes on without an acknowledged
    heartbeat before it is fenced (stops claiming, stops its jobs); None: halfway between
    `update_heartbeat_interval` and `stalled_worker_timeout`. `max_recoveries` is dawdle's
    own: a job recovered from dead or stalled workers more than this many times in a row
    (5 by default) fails instead of being put back; None: no limit. `hooks` is dawdle's
    own: `dawdle.Hooks` that receive this worker's events, after the app's.
    """

    queues: Iterable[str] | None
    name: str | None
    concurrency: int
    wait: bool
    fetch_job_polling_interval: float
    abort_job_polling_interval: float
    shutdown_graceful_timeout: float | None
    listen_notify: bool
    delete_jobs: str | jobs.DeleteJobCondition | None
    additional_context: dict[str, Any] | None
    install_signal_handlers: bool
    update_heartbeat_interval: float
    stalled_worker_timeout: float
    task_middleware: list[middleware.TaskMiddleware] | None
    worker_middleware: list[middleware.WorkerMiddleware] | None
    unknown_tasks: UnknownTasks
    heartbeat_lease: float | None
    max_recoveries: int | None
    hooks: Iterable[Hooks] | None
