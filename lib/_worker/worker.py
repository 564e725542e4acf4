"""The worker: its options, `run()` and `stop()`, signals, and the task group of its parts.

`run()` registers the worker, starts the supervised loops (writer, heartbeat, stalled-job
recovery, abort polling, periodic deferrer, listener, retention), then claims and runs jobs
until stopped; running jobs then get the graceful timeout, the last outcomes are written,
and the worker unregisters.
"""

from __future__ import annotations

import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, get_args

import anyio
import anyio.from_thread
import anyio.lowlevel
from procrastinate import jobs, middleware, utils

from dawdle._errors import ConfigurationError
from dawdle._hooks import Hooks
from dawdle._hooks_dispatch import HookDispatch, checked_hooks, merged
from dawdle._validate import integer, number
from dawdle._worker.builtin_hooks import OutcomeLog, StatsHook
from dawdle._worker.claimer import Claimer
from dawdle._worker.fencing import guard_lease_forever
from dawdle._worker.handoff import Handoff
from dawdle._worker.housekeeping import Housekeeping, Registration
from dawdle._worker.lease import check_lease, default_lease
from dawdle._worker.runners import Runners
from dawdle._worker.shutdown import end_running_jobs
from dawdle._worker.state import (
    UnknownTasks,
    WorkerSettings,
    WorkerState,
    WorkerStats,
)
from dawdle._worker.store import JobStore
from dawdle._worker.supervision import supervise
from dawdle._worker.writer import OutcomeWriter

if TYPE_CHECKING:
    from dawdle._app import App

logger = logging.getLogger("dawdle.worker")


class Worker:
    """Runs jobs of `app` on asyncio or Trio, with Procrastinate's `WorkerOptions`.

    `await worker.run()` works until stopped (`stop()`, cancellation of the enclosing
    scope, or SIGINT/SIGTERM if `install_signal_handlers=True`: off by default, so that a
    worker inside a larger program leaves its signals alone), or with
    `wait=False` until no job is ready and none is running. On stop, claiming stops,
    running jobs get `shutdown_graceful_timeout` seconds (None: as long as they need),
    then async ones are cancelled and put back in the queue; sync ones see
    `should_abort()` True and get a few more seconds to return (then a thread still running
    is abandoned: its job stays 'doing' until recovered as stalled, never run twice at once).

    A job of a task the app does not register (by name or alias, blueprints included) is
    left for a worker that knows it (`unknown_tasks="leave"`, for databases shared between
    projects or with Procrastinate workers); `unknown_tasks="fail"` claims it and fails it
    (TaskNotFound), as Procrastinate's worker does.

    Fencing: a worker that has had no heartbeat acknowledged for `heartbeat_lease` seconds
    (None: halfway between `update_heartbeat_interval` and `stalled_worker_timeout`, 20 s
    with the defaults) stops claiming and stops its running jobs (async ones cancelled and
    put back, sync ones see `should_abort()`), before another worker may recover them as
    stalled; it resumes once a heartbeat gets through again.

    Hooks: the app's `hooks`, then `hooks` given here (each once), receive the events of
    this worker's runs, claims and loops (`dawdle.Hooks`); the worker's own counters and
    outcome log records are made by built-in hooks called before them.

    Poison jobs: a job recovered from dead or stalled workers more than `max_recoveries`
    times in a row (its worker process killed by each run: a crash, the OOM killer) fails
    instead of being put back again; None: no limit. A recovery spends no attempt, so
    without this limit such a job would run for ever.
    """

    def __init__(  # noqa: PLR0917 (Procrastinate's Worker takes these positionally too)
        self,
        app: App,
        queues: Iterable[str] | None = None,
        name: str | None = "worker",
        concurrency: int = 1,
        wait: bool = True,  # noqa: FBT001, FBT002 (Procrastinate's signature)
        fetch_job_polling_interval: float = 5.0,
        abort_job_polling_interval: float = 5.0,
        shutdown_graceful_timeout: float | None = None,
        listen_notify: bool = True,  # noqa: FBT001, FBT002
        delete_jobs: str | jobs.DeleteJobCondition | None = None,
        additional_context: dict[str, Any] | None = None,
        install_signal_handlers: bool = False,  # noqa: FBT001, FBT002
        update_heartbeat_interval: float = 10.0,
        stalled_worker_timeout: float = 30.0,
        task_middleware: list[middleware.TaskMiddleware] | None = None,
        worker_middleware: list[middleware.WorkerMiddleware] | None = None,
        unknown_tasks: UnknownTasks = "leave",
        heartbeat_lease: float | None = None,
        max_recoveries: int | None = 5,
        hooks: Iterable[Hooks] | None = None,
    ) -> None:
        def interval(option: str, value: float) -> float:
            return number(f"Worker: {option}", value, above=0, finite=False)

        try:
            delete = jobs.DeleteJobCondition(delete_jobs or "never")
        except ValueError as exc:
            raise ConfigurationError(
                "Worker: delete_jobs must be 'never', 'successful' or 'always', "
                f"got {delete_jobs!r}"
            ) from exc
        if isinstance(queues, str | bytes):
            raise ConfigurationError(
                f"Worker: queues must be a list of queue names, got the string {queues!r}"
            )
        if unknown_tasks not in get_args(UnknownTasks):
            raise ConfigurationError(
                f"Worker: unknown_tasks must be 'leave' or 'fail', got {unknown_tasks!r}"
            )
        for mw in worker_middleware or []:
            if not middleware.is_async_middleware(mw):
                raise ConfigurationError(f"Worker: worker middleware {mw!r} must be async")
        heartbeat = interval("update_heartbeat_interval", update_heartbeat_interval)
        stalled = interval("stalled_worker_timeout", stalled_worker_timeout)
        if heartbeat_lease is None:
            if not heartbeat < stalled:
                raise ConfigurationError(
                    f"Worker: update_heartbeat_interval ({heartbeat:g} s) must be shorter than "
                    f"stalled_worker_timeout ({stalled:g} s), or other workers recover the "
                    "jobs of this one while it runs them"
                )
            lease = default_lease(heartbeat, stalled)
        else:
            lease = interval("heartbeat_lease", heartbeat_lease)
            check_lease(lease, heartbeat, stalled)
        self.app = app
        self.settings = WorkerSettings(
            queues=None if queues is None else list(queues),
            name=name,
            concurrency=integer("Worker: concurrency", concurrency, at_least=1),
            wait=wait,
            fetch_job_polling_interval=interval(
                "fetch_job_polling_interval", fetch_job_polling_interval
            ),
            abort_job_polling_interval=interval(
                "abort_job_polling_interval", abort_job_polling_interval
            ),
            shutdown_graceful_timeout=None
            if shutdown_graceful_timeout is None
            else number(
                "Worker: shutdown_graceful_timeout",
                shutdown_graceful_timeout,
                at_least=0,
                finite=False,
            ),
            listen_notify=listen_notify,
            delete_jobs=delete,
            additional_context=dict(additional_context or {}),
            install_signal_handlers=install_signal_handlers,
            update_heartbeat_interval=heartbeat,
            stalled_worker_timeout=stalled,
            heartbeat_lease=lease,
            task_middleware=tuple(task_middleware or ()),
            worker_middleware=tuple(worker_middleware or ()),
            unknown_tasks=unknown_tasks,
            max_recoveries=None
            if max_recoveries is None
            else integer("Worker: max_recoveries", max_recoveries, at_least=0),
            hooks=merged(app.hooks, checked_hooks("Worker", hooks)),
        )
        self.stats = WorkerStats()
        self._state: WorkerState | None = None
        self._stop_before_run = False
        self._token: anyio.lowlevel.EventLoopToken | None = None

    @property
    def worker_id(self) -> int | None:
        """The worker's id in procrastinate_workers while it runs (and after), else None."""
        return None if self._state is None else self._state.worker_id

    def stop(self) -> None:
        """Ask the worker to stop gracefully; safe to call from any thread."""
        token = self._token
        if token is not None and not _in_event_loop_thread(token):
            anyio.from_thread.run_sync(self._request_stop, token=token)
        else:
            self._request_stop()

    def _request_stop(self) -> None:
        if self._token is None:  # not running yet: run() will return at once
            self._stop_before_run = True
        elif self._state is not None:
            self._state.request_stop()

    async def run(self) -> None:
        """Work until stopped; return after a clean shutdown.

        The app's `import_paths` are imported first, as Procrastinate's worker does, so that
        the tasks they register are known before the first claim. No job is left 'doing'
        here, but sync jobs abandoned at shutdown (their thread ran on): those stay 'doing'
        with this worker's row, until recovered as stalled.
        """
        _import_tasks(self.app)
        self._state = state = WorkerState(self.settings, self.stats)
        # The built-in hooks first: a user's hook sees the counters and log records already
        # made for its event.
        state.hooks = HookDispatch((StatsHook(self.stats), OutcomeLog(state), *self.settings.hooks))
        self._token = anyio.lowlevel.current_token()
        try:
            if not self._stop_before_run:
                await self._run_until_done(state)
        finally:
            self._token = None
            self._stop_before_run = False  # the worker may be run again

    async def _run_until_done(self, state: WorkerState) -> None:
        finished = anyio.Event()

        async def run_shielded() -> None:
            try:
                with anyio.CancelScope(shield=True):
                    await self._run(state)
            finally:
                finished.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_shielded)
            try:
                await finished.wait()
            except anyio.get_cancelled_exc_class():
                # Cancelled from outside: shut down as gracefully as a stop() would.
                state.request_stop()
                with anyio.CancelScope(shield=True):
                    await finished.wait()
                raise

    async def _run(self, state: WorkerState) -> None:
        store = JobStore(self.app)
        registration = Registration(state, store)
        await registration.register()
        queues = self.settings.queues
        logger.info(
            "starting worker %s on %s",
            state.worker_id,
            utils.queues_display(queues),
            extra={
                "action": "start_worker",
                "worker": state.worker_log_fields(),
                "worker_id": state.worker_id,
                "queues": queues,
            },
        )
        try:
            housekeeping = Housekeeping(state, store, self.app)
            writer = OutcomeWriter(state, store, registration)
            claimer = Claimer(state, store, registration, self.app)
            loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("writer", writer.write_forever),
                ("heartbeat", registration.beat_forever),
                ("lease", functools.partial(guard_lease_forever, state)),
                ("stalled jobs", housekeeping.recover_stalled_forever),
                ("abort polling", housekeeping.poll_aborts_forever),
                ("periodic", housekeeping.defer_periodic_forever),
            ]
            if self.settings.listen_notify:
                loops.append(("listener", housekeeping.listen))
            if (retention := self.app.retention) is not None:
                loops.append(
                    ("retention", functools.partial(housekeeping.retain_forever, retention))
                )
            async with anyio.create_task_group() as group:
                for name, loop in loops:
                    group.start_soon(supervise, state.hooks, name, loop)
                if self.settings.install_signal_handlers:
                    group.start_soon(self._handle_signals, state)
                await self._work(state, claimer, writer)
                await writer.final_flush()
                group.cancel_scope.cancel()
        finally:
            if state.abandoned:
                # Its row stays, its heartbeat stops: another worker recovers the jobs as
                # stalled once it is stalled_worker_timeout old, not while they still run.
                logger.error(
                    "worker %s keeps its row: jobs %s still run in abandoned threads",
                    state.worker_id,
                    sorted(state.abandoned),
                    extra={
                        "action": "worker_left_registered",
                        "worker_id": state.worker_id,
                        "job_ids": sorted(state.abandoned),
                    },
                )
            else:
                await registration.unregister()
            logger.info(
                "stopped worker %s",
                state.worker_id,
                extra={
                    "action": "stop_worker",
                    "worker": state.worker_log_fields(),
                    "queues": queues,
                },
            )

    async def _work(self, state: WorkerState, claimer: Claimer, writer: OutcomeWriter) -> None:
        """Claim and run jobs until stopped, then end the running ones."""
        # The hand-off never holds more jobs than there are free slots.
        handoff = Handoff()
        async with anyio.create_task_group() as jobs_group:
            runners = Runners(state, self, claimer, writer, jobs_group)
            for _ in range(self.settings.concurrency):
                jobs_group.start_soon(runners.run_jobs, handoff)
            try:
                await claimer.claim_until_stopped(handoff)
                await end_running_jobs(state)
            finally:
                handoff.close()

    async def _handle_signals(self, state: WorkerState) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if state.stopping:
                    logger.warning("second signal %s: cancelling the running jobs", signum)
                    state.abort_for_shutdown()
                else:
                    logger.info("received signal %s", signum)
                    state.request_stop()


def _import_tasks(app: App) -> None:
    """Import the app's `import_paths`; a module that fails to import is named."""
    try:
        # Procrastinate leaves perform_import_paths untyped.
        app.perform_import_paths()  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise ConfigurationError(
            f"Worker: the app's import_paths {list(app.import_paths)!r} could not be imported: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _in_event_loop_thread(token: anyio.lowlevel.EventLoopToken) -> bool:
    try:
        return anyio.lowlevel.current_token() == token
    except RuntimeError:
        return False
