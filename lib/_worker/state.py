"""What the worker's parts share: its settings, its counters and the jobs it owns right now.

`WorkerState` is the one mutable object they all see. It is made inside `Worker.run()`,
because its events belong to the running event loop.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import anyio
from procrastinate import job_context, jobs, middleware, tasks

from dawdle._worker.outcomes import Outcome, Verdict

logger = logging.getLogger("dawdle.worker")

# What a worker does with jobs of tasks its app does not register.
UnknownTasks: TypeAlias = Literal["leave", "fail"]


@dataclass(frozen=True)
class WorkerSettings:
    """The worker's options, validated by `Worker`: Procrastinate's `WorkerOptions`, and more."""

    queues: list[str] | None
    name: str | None
    concurrency: int
    wait: bool
    fetch_job_polling_interval: float
    abort_job_polling_interval: float
    shutdown_graceful_timeout: float | None
    listen_notify: bool
    delete_jobs: jobs.DeleteJobCondition
    additional_context: dict[str, Any]
    install_signal_handlers: bool
    update_heartbeat_interval: float
    stalled_worker_timeout: float
    task_middleware: tuple[middleware.TaskMiddleware, ...]
    worker_middleware: tuple[middleware.WorkerMiddleware, ...]
    # dawdle's own: "leave" claims only jobs of the app's tasks; "fail" claims any job and
    # fails those of unknown tasks (TaskNotFound), as Procrastinate's worker does.
    unknown_tasks: UnknownTasks


@dataclass
class WorkerStats:
    """Counters for metrics: runs by `Outcome`, timeouts, and restarts of internal loops."""

    jobs: collections.Counter[Outcome] = field(default_factory=collections.Counter)
    timed_out: int = 0
    loop_restarts: collections.Counter[str] = field(default_factory=collections.Counter)


class Wakeup:
    """A reusable event: `wait()` returns once `set()` is called after the last `clear()`."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        """Wake whoever waits, now or next."""
        self._event.set()

    def is_set(self) -> bool:
        """Whether `set()` was called since the last `clear()`."""
        return self._event.is_set()

    def clear(self) -> None:
        """Forget earlier `set()` calls: the next `wait()` waits for a new one."""
        if self._event.is_set():
            self._event = anyio.Event()

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (a wait with a limit is the point)
        """Wait until set, or at most `timeout` seconds."""
        with anyio.move_on_after(timeout):
            await self._event.wait()


@dataclass(slots=True, eq=False)
class Running:
    """A job in a slot: its task, its context, the scope that can cancel it and why it would."""

    task: tasks.Task[Any, Any, Any] | None
    context: job_context.JobContext
    is_async: bool
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    abort_reason: job_context.AbortReason | None = None


class WorkerState:
    """The jobs this worker owns and the signals between its parts.

    A job this worker claimed is in `running` until it ends, then in `unwritten` until its
    outcome is in the database: in exactly one of the two, never in none before then.
    """

    def __init__(self, settings: WorkerSettings, stats: WorkerStats) -> None:
        self.settings = settings
        self.stats = stats
        self.worker_id: int | None = None
        self.stopping = False
        self.running: dict[int, Running] = {}
        self.unwritten: list[Verdict] = []
        self.wake_claimer = Wakeup()
        self.slot_freed = Wakeup()
        # A claim and the recovery of this worker's lost claims never overlap.
        self.claim_lock = anyio.Lock()

    @property
    def free_slots(self) -> int:
        """How many more jobs may run now."""
        return self.settings.concurrency - len(self.running)

    def own_job_ids(self) -> list[int]:
        """Jobs this worker runs, or ended without having written their outcome yet."""
        return [*self.running, *(verdict.job_id for verdict in self.unwritten)]

    def end(self, job_id: int) -> None:
        """The job left its slot; its verdict goes to `unwritten` next, with no await between."""
        del self.running[job_id]
        self.slot_freed.set()

    def abort_reason(self, job_id: int) -> job_context.AbortReason | None:
        """Why the job is being cancelled, if it is (Procrastinate's `should_abort()` reads it)."""
        running = self.running.get(job_id)
        return running.abort_reason if running else None

    def request_abort(self, job_ids: Iterable[int]) -> list[Running]:
        """Abort the given running jobs (async ones are cancelled); those newly asked to."""
        asked = []
        for job_id in job_ids:
            running = self.running.get(job_id)
            if running is None or running.abort_reason is not None:
                continue
            running.abort_reason = job_context.AbortReason.USER_REQUEST
            if running.is_async:
                running.scope.cancel()
            asked.append(running)
        return asked

    def cancel_running(self, *, include_sync: bool) -> None:
        """Cancel the running jobs for the shutdown (sync ones only if `include_sync`)."""
        for running in self.running.values():
            running.abort_reason = job_context.AbortReason.SHUTDOWN
            if running.is_async or include_sync:
                running.scope.cancel()

    def request_stop(self) -> None:
        """Stop claiming; the worker then ends its running jobs and stops."""
        if self.stopping:
            return
        logger.info("stop requested", extra={"action": "stopping_worker"})
        self.stopping = True
        self.wake_claimer.set()
        self.slot_freed.set()
