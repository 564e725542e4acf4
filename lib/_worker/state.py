"""What the worker's parts share: its settings, its counters and the jobs it owns right now.

`WorkerState` is the one mutable object they all see. It is made inside `Worker.run()`,
because its events belong to the running event loop.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import anyio
from procrastinate import job_context, jobs, middleware, tasks

from dawdle._hooks import Hooks, TraceContext
from dawdle._hooks_dispatch import HookDispatch
from dawdle._worker.lease import Lease
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
    # dawdle's own: fenced after this long without an acknowledged heartbeat (`lease`).
    heartbeat_lease: float
    task_middleware: tuple[middleware.TaskMiddleware, ...]
    worker_middleware: tuple[middleware.WorkerMiddleware, ...]
    # dawdle's own: "leave" claims only jobs of the app's tasks; "fail" claims any job and
    # fails those of unknown tasks (TaskNotFound), as Procrastinate's worker does.
    unknown_tasks: UnknownTasks
    # dawdle's own: a job of a stalled worker whose last runs all ended with their worker
    # dead or stalled, more than this many in a row, fails when recovered (None: no limit).
    max_recoveries: int | None
    # dawdle's own: the app's hooks, then the worker's (`Hooks`), each once.
    hooks: tuple[Hooks, ...] = ()


@dataclass
class WorkerStats:
    """Counters for metrics: runs by `Outcome`, timeouts, and restarts of internal loops.

    The worker's built-in `StatsHook` counts them from the events every hook receives.
    """

    jobs: collections.Counter[Outcome] = field(default_factory=collections.Counter)
    timed_out: int = 0
    abandoned: int = 0
    """Sync jobs whose thread still ran at the end of a shutdown: left 'doing', not written."""
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


class ThreadStage(enum.Enum):
    """Where a sync job is with its thread; the end of a shutdown reads it under a lock."""

    WAITING = "waiting"
    """Handed to a thread that has not begun it yet (or to no thread yet)."""
    RUNNING = "running"
    ENDED = "ended"
    """The thread has left the job: its result is on its way to the runner."""
    SKIPPED = "skipped"
    """The shutdown came first: no thread will begin it; it goes back, safely."""
    ABANDONED = "abandoned"
    """The shutdown gave up on it while its thread ran: it stays 'doing', never put back."""


# Sync runs a worker of this process abandoned at shutdown whose thread is still inside the
# job. Process-wide: the process's exit waits for those threads (see `abandoned_threads()`).
_abandoned_runs: set[Running] = set()
_abandoned_lock = threading.Lock()


def abandoned_threads() -> list[threading.Thread]:
    """Threads still running a sync job that a worker of this process abandoned at shutdown."""
    with _abandoned_lock:
        return [run.thread for run in _abandoned_runs if run.thread is not None]


@dataclass(slots=True, eq=False)
class Running:
    """A job in a slot: its task, its context, the scope that can cancel it and why it would.

    `abort_reason` belongs to the run, not to the worker's set of running jobs: once set it
    stays, so a sync job's `should_abort()` stays True until its thread returns, whatever
    happens to the slot meanwhile.
    """

    task: tasks.Task[Any, Any, Any] | None
    context: job_context.JobContext
    is_async: bool
    first_run_age: float | None = None
    """For a task with a job deadline: seconds from the job's first run to its claim (None:
    no earlier run recorded). See `Claimed`."""
    trace_context: TraceContext | None = None
    """Its defer's trace context, for `JobStarted` (read only when a hook wants it)."""
    claimed_at: float = field(default_factory=time.monotonic)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    abort_reason: job_context.AbortReason | None = None
    overran: bool = False
    """A sync run went past its task's timeout (its thread cannot be cancelled)."""
    thread: threading.Thread | None = None
    stage: ThreadStage = ThreadStage.WAITING
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def since_first_run(self) -> float:
        """Seconds from the job's first run to now; from this run's claim if none is recorded."""
        # Never negative, even if an event's time was written from a clock ahead of now().
        return max(0.0, (self.first_run_age or 0.0) + time.monotonic() - self.claimed_at)

    def enter_thread(self) -> bool:
        """In the job's thread, before the job: False if the shutdown skipped it (don't run)."""
        with self._lock:
            if self.stage is not ThreadStage.WAITING:
                return False
            self.stage = ThreadStage.RUNNING
            self.thread = threading.current_thread()
            return True

    def leave_thread(self) -> None:
        """In the job's thread, after the job, whatever it did."""
        with self._lock:
            if self.stage is ThreadStage.RUNNING:
                self.stage = ThreadStage.ENDED
            elif self.stage is ThreadStage.ABANDONED:
                with _abandoned_lock:
                    _abandoned_runs.discard(self)

    def skip_if_not_begun(self) -> None:
        """Fencing: a sync job no thread has begun never begins (it goes back, safely)."""
        with self._lock:
            if self.stage is not ThreadStage.WAITING:
                return
            self.stage = ThreadStage.SKIPPED
        self.scope.cancel()

    def stop_thread(self) -> ThreadStage:
        """End of a shutdown: skip the job if no thread began it, abandon it if one runs it.

        The runner's scope is cancelled in both cases (the runner stops waiting for the
        thread); a job whose thread already ended is left to deliver its result. Returns
        the stage it is in now.
        """
        with self._lock:
            if self.stage is ThreadStage.WAITING:
                self.stage = ThreadStage.SKIPPED
            elif self.stage is ThreadStage.RUNNING:
                self.stage = ThreadStage.ABANDONED
                with _abandoned_lock:
                    _abandoned_runs.add(self)
            else:
                return self.stage
        self.scope.cancel()
        return self.stage


class WorkerState:
    """The jobs this worker owns and the signals between its parts.

    A job this worker claimed is in `running` until it ends, then in `unwritten` until its
    outcome is in the database: in exactly one of the two, never in none before then. The
    one exception is a sync job abandoned at shutdown while its thread ran: it goes from
    `running` to `abandoned` and stays 'doing' for this worker, which then keeps its row.
    """

    def __init__(self, settings: WorkerSettings, stats: WorkerStats) -> None:
        self.settings = settings
        self.stats = stats
        # The events' receivers: `Worker.run()` puts the built-in hooks, which need this
        # state, before the settings' ones.
        self.hooks = HookDispatch(settings.hooks)
        self.worker_id: int | None = None
        self.stopping = False
        self.running: dict[int, Running] = {}
        self.abandoned: dict[int, Running] = {}
        self.unwritten: list[Verdict] = []
        self.wake_claimer = Wakeup()
        self.slot_freed = Wakeup()
        # A notification said a job running here was asked to abort: check the database.
        self.abort_hinted = Wakeup()
        self.lease = Lease(settings.heartbeat_lease, anyio.current_time())
        self.lease_changed = Wakeup()
        # When the worker was fenced (`fencing`), while it is: no claims, running jobs stopped.
        self.fenced_since: float | None = None
        # A claim and the recovery of this worker's lost claims never overlap.
        self.claim_lock = anyio.Lock()

    @property
    def free_slots(self) -> int:
        """How many more jobs may run now."""
        return self.settings.concurrency - len(self.running)

    def own_job_ids(self) -> list[int]:
        """Jobs this worker runs, or ended without having written their outcome yet."""
        return [
            *self.running,
            *self.abandoned,
            *(verdict.job_id for verdict in self.unwritten),
        ]

    def end(self, job_id: int) -> None:
        """The job left its slot; its verdict goes to `unwritten` next, with no await between."""
        del self.running[job_id]
        self.slot_freed.set()

    def abandon(self, job_id: int) -> None:
        """The job left its slot but its thread still runs it: no verdict, it stays 'doing'."""
        self.abandoned[job_id] = self.running.pop(job_id)
        self.stats.abandoned += 1
        self.slot_freed.set()

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

    def abort_for_shutdown(self) -> None:
        """Cancel the running async jobs; ask the sync ones to stop (`should_abort()` is True).

        A thread cannot be cancelled: a sync job keeps its slot until it returns, or until
        the end of the shutdown abandons it (`Running.stop_thread`). A reason already set
        (a user's abort) is kept.
        """
        for running in self.running.values():
            if running.abort_reason is None:
                running.abort_reason = job_context.AbortReason.SHUTDOWN
            if running.is_async:
                running.scope.cancel()

    def renew_lease(self, sent_at: float, *, new_registration: bool = False) -> None:
        """A heartbeat (or registration) sent at `sent_at` (anyio's clock) was acknowledged."""
        self.lease.renew(sent_at, anyio.current_time(), new_registration=new_registration)
        self.lease_changed.set()

    def lose_lease(self) -> None:
        """The worker's row is gone: fence now, whatever the clock says."""
        self.lease.lose(anyio.current_time())
        self.lease_changed.set()

    def fence(self) -> list[Running]:
        """Stop the running jobs: the lease lapsed, so another worker may soon take them.

        Async jobs are cancelled (put back: their verdict only lands if the job is still
        'doing' for this worker), sync jobs not begun never begin, running ones see
        `should_abort()` True. A reason already set (a user's abort) is kept. Returns the
        sync jobs whose thread runs on.
        """
        threads = []
        for running in self.running.values():
            if running.abort_reason is None:
                running.abort_reason = job_context.AbortReason.SHUTDOWN
            if running.is_async:
                running.scope.cancel()
            else:
                running.skip_if_not_begun()
                if running.stage is ThreadStage.RUNNING:
                    threads.append(running)
        return threads

    def worker_log_fields(self, job_id: int | None = None) -> dict[str, Any]:
        """The `worker` of Procrastinate's log records (with dawdle's `id` beside it)."""
        settings = self.settings
        return {
            "name": settings.name,
            "worker_id": self.worker_id,
            "id": self.worker_id,
            "job_id": job_id,
            "queues": list(settings.queues or []),
        }

    def request_stop(self) -> None:
        """Stop claiming; the worker then ends its running jobs and stops."""
        if self.stopping:
            return
        logger.info(
            "stop requested",
            extra={"action": "stopping_worker", "worker": self.worker_log_fields()},
        )
        self.stopping = True
        self.wake_claimer.set()
        self.slot_freed.set()
