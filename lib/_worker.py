"""The worker: fetches jobs in batches, runs each in its own cancel scope, records outcomes.

Everything runs in one anyio task group. Its loops (listener, heartbeat, stalled-job
recovery, abort polling, periodic deferrer, outcome writer) are supervised: a loop that
fails is logged and restarted with backoff while the others go on. A job's failure never
reaches the worker.
"""

from __future__ import annotations

import collections
import datetime
import functools
import heapq
import inspect
import json
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import psycopg
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from procrastinate import exceptions, job_context, jobs, middleware, tasks, utils
from procrastinate import retry as retry_module
from procrastinate.manager import get_channel_for_queues

from dawdle._errors import ConfigurationError, JobTimeout
from dawdle._periodic import PeriodicDeferrer
from dawdle._sql import (
    FETCH_JOBS,
    HEARTBEAT,
    RECLAIM_JOBS,
    RECORD_OUTCOMES,
    RECOVER_STALLED_JOBS,
)
from dawdle.backoff import DecorrelatedJitter, RetryPolicy, retrying

logger = logging.getLogger("dawdle.worker")

# Restart delays of a failed internal loop: from 0.1 s, spread out, at most 10 s apart.
LOOP_RESTART_BACKOFF: Final = DecorrelatedJitter(0.1, max_delay=10.0)
# A loop that ran this long before failing starts its backoff from the beginning again.
LOOP_HEALTHY_AFTER: Final = 60.0
# How long the last outcomes may take to reach the database when the worker stops.
FINAL_FLUSH_TIMEOUT: Final = 30.0
# The longest a fetch or an outcome write may take before it counts as failed (and is
# retried): what a half-open connection would otherwise hold up forever.
QUERY_TIMEOUT: Final = 30.0
# Registering and unregistering the worker, through a database that may be restarting.
BOOKKEEPING_RETRIES: Final = RetryPolicy(
    backoff=DecorrelatedJitter(0.05, max_delay=2.0),
    max_attempts=None,
    deadline=30.0,
    retry_on=(exceptions.ConnectorException,),
)
# How long a full worker may wait, once a slot is free, for more to free up before claiming
# (measured on 5,000 no-op jobs, concurrency 10: about +20 % jobs/s on asyncio).
CLAIM_GATHER: Final = 0.005
# The most outcomes written in one statement.
MAX_OUTCOME_BATCH: Final = 1_000


def task_timeout(task: tasks.Task[Any, Any, Any]) -> float | None:
    """The `timeout=` given to `@app.task`, in seconds, or None."""
    timeout: float | None = getattr(task, "dawdle_timeout", None)
    return timeout


@dataclass(slots=True)
class _Outcome:
    """What became of one run of a job, waiting to be written."""

    job_id: int
    status: str  # succeeded | failed | aborted | todo (retry) | delete
    retry_at: datetime.datetime | None = None
    priority: int | None = None
    queue: str | None = None
    lock: str | None = None


@dataclass(slots=True)
class _Running:
    """A job in progress: its context, the scope that can cancel it, and why it would."""

    context: job_context.JobContext
    scope: anyio.CancelScope
    is_async: bool
    abort_reason: job_context.AbortReason | None = None
    overrun_watch: anyio.CancelScope | None = None  # sync jobs with a timeout only


# A claimed job on its way to a runner: its id and its task (None if unknown here).
_Dispatched = tuple[int, tasks.Task[Any, Any, Any] | None]


@dataclass(slots=True, frozen=True)
class _Starter:
    """Where claimed jobs go: the runners' stream, and the group for overrun watchers."""

    jobs_group: anyio.abc.TaskGroup
    dispatch: MemoryObjectSendStream[_Dispatched]


@dataclass
class WorkerStats:
    """Counters for metrics: jobs by outcome, and restarts of internal loops by loop name."""

    jobs: collections.Counter[str] = field(default_factory=collections.Counter)
    loop_restarts: collections.Counter[str] = field(default_factory=collections.Counter)


class Worker:
    """Runs jobs of `app` on asyncio or Trio, with Procrastinate's `WorkerOptions`.

    `await worker.run()` works until stopped (`stop()`, SIGINT/SIGTERM when
    `install_signal_handlers`, or cancellation of the enclosing scope), or with
    `wait=False` until no job is ready and none is running. On stop, fetching stops,
    running jobs get `shutdown_graceful_timeout` seconds (None: as long as they need),
    then are cancelled and put back in the queue.
    """

    def __init__(  # noqa: PLR0917 (Procrastinate's Worker takes these positionally too)
        self,
        app: Any,
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
        install_signal_handlers: bool = True,  # noqa: FBT001, FBT002
        update_heartbeat_interval: float = 10.0,
        stalled_worker_timeout: float = 30.0,
        task_middleware: list[middleware.TaskMiddleware] | None = None,
        worker_middleware: list[middleware.WorkerMiddleware] | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(
                f"Worker: concurrency must be an int >= 1, got {concurrency!r}"
            )
        for option, value in (
            ("fetch_job_polling_interval", fetch_job_polling_interval),
            ("abort_job_polling_interval", abort_job_polling_interval),
            ("update_heartbeat_interval", update_heartbeat_interval),
            ("stalled_worker_timeout", stalled_worker_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"Worker: {option} must be a number > 0, got {value!r}")
        self.app = app
        self.queues = list(queues) if queues is not None else None
        self.worker_name = name
        self.concurrency = concurrency
        self.wait = wait
        self.fetch_job_polling_interval = fetch_job_polling_interval
        self.abort_job_polling_interval = abort_job_polling_interval
        self.shutdown_graceful_timeout = shutdown_graceful_timeout
        self.listen_notify = listen_notify
        try:
            self.delete_jobs = jobs.DeleteJobCondition(delete_jobs or "never")
        except ValueError as exc:
            raise ConfigurationError(
                "Worker: delete_jobs must be 'never', 'successful' or 'always', "
                f"got {delete_jobs!r}"
            ) from exc
        self.additional_context = additional_context or {}
        self.install_signal_handlers = install_signal_handlers
        self.update_heartbeat_interval = update_heartbeat_interval
        self.stalled_worker_timeout = stalled_worker_timeout
        self.task_middleware = list(task_middleware or [])
        self.worker_middleware = list(worker_middleware or [])
        for mw in self.worker_middleware:
            if not middleware.is_async_middleware(mw):
                raise ConfigurationError(f"Worker: worker middleware {mw!r} must be async")
        self.worker_id: int | None = None
        self.stats = WorkerStats()
        self._running: dict[int, _Running] = {}
        self._pending: list[_Outcome] = []
        self._stopping = False
        self._token: anyio.lowlevel.EventLoopToken | None = None
        # When the retries this worker scheduled become due: a retry sends no NOTIFY.
        self._retry_times: list[float] = []
        self._fetch_started = 0.0
        # Events belong to an event loop, so they are made in run(), not here.
        self._wake_fetcher: anyio.Event
        self._slot_freed: anyio.Event
        self._job_done: anyio.Event
        self._wake_writer: anyio.Event
        self._write_lock: anyio.Lock
        self._register_lock: anyio.Lock
        self._claim_lock: anyio.Lock  # a claim and the recovery of lost claims never overlap

    # -- control -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop gracefully; safe to call from any thread."""
        if self._token is not None and not _in_event_loop_thread(self._token):
            anyio.from_thread.run_sync(self._request_stop, token=self._token)
        else:
            self._request_stop()

    def _request_stop(self) -> None:
        if self._stopping:
            return
        logger.info("stop requested", extra={"action": "stopping_worker"})
        self._stopping = True
        if self._token is not None:  # run() has made its events: wake whoever waits
            self._wake_fetcher.set()
            self._slot_freed.set()

    async def run(self) -> None:
        """Work until stopped; return after a clean shutdown (no job left 'doing' here)."""
        self._wake_fetcher = anyio.Event()
        self._slot_freed = anyio.Event()
        self._job_done = anyio.Event()
        self._wake_writer = anyio.Event()
        self._write_lock = anyio.Lock()
        self._register_lock = anyio.Lock()
        self._claim_lock = anyio.Lock()
        self._token = anyio.lowlevel.current_token()
        try:
            if not self._stopping:  # a stop() may come before run() starts: honour it
                await self._run_until_done()
        finally:
            self._token = None
            self._stopping = False  # the worker may be run again

    async def _run_until_done(self) -> None:
        finished = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run_shielded, finished)
            try:
                await finished.wait()
            except anyio.get_cancelled_exc_class():
                # Cancelled from outside: shut down as gracefully as a stop() would.
                self._request_stop()
                with anyio.CancelScope(shield=True):
                    await finished.wait()
                raise

    async def _run_shielded(self, finished: anyio.Event) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self._run()
        finally:
            finished.set()

    async def _run(self) -> None:
        manager = self.app.job_manager
        async for attempt in retrying(BOOKKEEPING_RETRIES):
            with attempt:
                await manager.prune_stalled_workers(self.stalled_worker_timeout)
                self.worker_id = await manager.register_worker()
        logger.info(
            "starting worker %s on %s",
            self.worker_id,
            utils.queues_display(self.queues),
            extra={"action": "start_worker", "worker_id": self.worker_id, "queues": self.queues},
        )
        try:
            async with anyio.create_task_group() as loops:
                loops.start_soon(self._supervise, "writer", self._write_outcomes_forever)
                loops.start_soon(self._supervise, "heartbeat", self._heartbeat)
                loops.start_soon(self._supervise, "stalled jobs", self._recover_stalled_jobs)
                loops.start_soon(self._supervise, "abort polling", self._poll_aborts)
                loops.start_soon(self._supervise, "periodic", self._defer_periodic_jobs)
                if self.listen_notify:
                    loops.start_soon(self._supervise, "listener", self._listen)
                if self.install_signal_handlers:
                    loops.start_soon(self._handle_signals)
                await self._work()
                await self._final_flush()
                loops.cancel_scope.cancel()
        finally:
            # Best effort: a worker row left behind is pruned once its heartbeat is stale.
            with anyio.move_on_after(5.0):
                async for attempt in retrying(BOOKKEEPING_RETRIES):
                    with attempt:
                        await manager.unregister_worker(self.worker_id)
            logger.info("stopped worker %s", self.worker_id, extra={"action": "stop_worker"})

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop`; if it fails, log and run it again after a growing, jittered delay."""
        failures = 0
        while True:
            started = anyio.current_time()
            try:
                await loop()
            except Exception:
                if anyio.current_time() - started > LOOP_HEALTHY_AFTER:
                    failures = 0
                failures += 1
                delay = LOOP_RESTART_BACKOFF.delay(min(failures, 50))
                self.stats.loop_restarts[name] += 1
                logger.exception(
                    "worker loop %r failed; restarting in %.2f s",
                    name,
                    delay,
                    extra={"action": "loop_failed", "loop": name, "restart_in": delay},
                )
                await anyio.sleep(delay)
            else:
                return

    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self._stopping:
                    logger.warning("second signal %s: cancelling the running jobs", signum)
                    self._cancel_running_jobs(job_context.AbortReason.SHUTDOWN)
                else:
                    logger.info("received signal %s", signum)
                    self._request_stop()

    # -- fetching and running --------------------------------------------------------------

    async def _work(self) -> None:
        # One long-lived runner per slot: spawning a task (and anyio's scope) per job took
        # 6-7 % of the worker's samples on no-op jobs (py-spy). The stream never holds more
        # jobs than there are free slots.
        dispatch, jobs_to_run = anyio.create_memory_object_stream[_Dispatched](math.inf)
        async with anyio.create_task_group() as jobs_group:
            with jobs_to_run:
                for _ in range(self.concurrency):
                    jobs_group.start_soon(self._run_jobs, jobs_to_run.clone())
            with dispatch:
                await self._fetch_until_stopped(_Starter(jobs_group, dispatch))
                await self._end_running_jobs()

    async def _end_running_jobs(self) -> None:
        """Give running jobs the graceful timeout to end, then cancel them (they go back)."""
        if self._running:
            logger.info(
                "waiting for %d running jobs",
                len(self._running),
                extra={"action": "ending_job"},
            )
            with anyio.move_on_after(
                math.inf
                if self.shutdown_graceful_timeout is None
                else self.shutdown_graceful_timeout
            ):
                while self._running:
                    self._job_done = anyio.Event()
                    await self._job_done.wait()
        if self._running:
            logger.info(
                "%d jobs still running after the graceful timeout: cancelling them",
                len(self._running),
            )
            self._cancel_running_jobs(job_context.AbortReason.SHUTDOWN, include_sync=True)

    async def _run_jobs(self, jobs_to_run: MemoryObjectReceiveStream[_Dispatched]) -> None:
        """One slot's runner: run the jobs it is handed, one after another, until the end."""
        with jobs_to_run:
            async for job_id, task in jobs_to_run:
                await self._run_job(job_id, task)

    async def _fetch_until_stopped(self, starter: _Starter) -> None:
        failures = 0
        while not self._stopping:
            free = self.concurrency - len(self._running)
            if free <= 0:
                await self._wait_for_free_slots()
                continue
            self._wake_fetcher = anyio.Event()
            try:
                async with self._claim_lock:
                    found = await self._fetch(free)
                    for job in found:
                        self._start(starter, job)
            except Exception as exc:
                if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                    await self._ensure_registered()  # our worker row is gone: pruned as stalled
                    continue
                failures += 1
                delay = LOOP_RESTART_BACKOFF.delay(min(failures, 50))
                self.stats.loop_restarts["fetcher"] += 1
                logger.exception("fetching jobs failed; again in %.2f s", delay)
                await self._wait_for_wake(delay)
                continue
            failures = 0
            if found:
                continue
            if not self.wait and not self._running and not self._pending:
                logger.info("no job ready: stopping because wait=False")
                return
            await self._wait_for_wake(self._poll_delay())

    async def _wait_for_free_slots(self) -> None:
        """Wait for a slot, then briefly for half of them, so that claims come in batches.

        Short jobs end in bursts: claiming for the first free slot alone would cost a round
        trip per job. The extra wait is at most CLAIM_GATHER seconds.
        """
        self._slot_freed = anyio.Event()
        await self._slot_freed.wait()
        with anyio.move_on_after(CLAIM_GATHER):
            while not self._stopping and len(self._running) > self.concurrency // 2:
                self._slot_freed = anyio.Event()
                await self._slot_freed.wait()

    def _poll_delay(self) -> float:
        # Only retries due before the last fetch began were seen by it; later ones may
        # have become due while it ran, and must still wake us.
        while self._retry_times and self._retry_times[0] <= self._fetch_started:
            heapq.heappop(self._retry_times)
        delay: float = self.fetch_job_polling_interval
        if self._retry_times:
            delay = min(delay, max(0.0, self._retry_times[0] - time.time()))
        return delay

    async def _wait_for_wake(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._wake_fetcher.wait()

    async def _fetch(self, limit: int) -> list[jobs.Job]:
        self._fetch_started = time.time()
        with anyio.fail_after(QUERY_TIMEOUT):
            rows = await self.app.connector.execute_query_all_async(
                FETCH_JOBS, queues=self.queues, limit=limit, worker_id=self.worker_id
            )
        found = [jobs.Job.from_row(row) for row in rows]
        found.sort(key=lambda job: (-job.priority, job.id))
        return found

    def _start(self, starter: _Starter, job: jobs.Job) -> None:
        assert job.id is not None  # noqa: S101 (fetched rows have ids)
        job_id = job.id
        task = self.app.tasks.get(job.task_name)
        context = job_context.JobContext(
            app=self.app,
            worker_name=self.worker_name,
            worker_queues=self.queues,
            additional_context=dict(self.additional_context),
            job=job,
            abort_reason=lambda: self._abort_reason(job_id),
            start_timestamp=time.time(),
        )
        is_async = task is not None and inspect.iscoroutinefunction(task.func)
        running = _Running(context=context, scope=anyio.CancelScope(), is_async=is_async)
        self._running[job_id] = running
        starter.dispatch.send_nowait((job_id, task))
        timeout = None if task is None else task_timeout(task)
        if not is_async and timeout is not None:
            running.overrun_watch = anyio.CancelScope()
            starter.jobs_group.start_soon(
                self._report_overrun, running, running.overrun_watch, timeout
            )

    def _abort_reason(self, job_id: int) -> job_context.AbortReason | None:
        running = self._running.get(job_id)
        return running.abort_reason if running else None

    async def _run_job(self, job_id: int, task: tasks.Task[Any, Any, Any] | None) -> None:
        running = self._running[job_id]
        context = running.context
        job = context.job
        started = time.monotonic()
        self._log_job(logging.INFO, "start_job", lambda: f"starting job {_describe(job)}", context)
        failure: BaseException | None = None
        with running.scope:
            try:
                await self._execute(task, running)
            except anyio.get_cancelled_exc_class() as exc:
                if anyio.current_effective_deadline() == -math.inf:
                    raise  # a real cancellation: our scope or the worker's
                failure = exc  # the task raised a cancellation of its own (or the other runtime's)
            except BaseException as exc:  # noqa: BLE001 (a job's failure, whatever it is, is recorded)
                failure = exc
        duration = time.monotonic() - started
        outcome = self._decide(task, running, failure)
        if running.overrun_watch is not None:
            running.overrun_watch.cancel()
        del self._running[job_id]
        self._job_done.set()
        self._slot_freed.set()
        self._record(outcome, context, failure, duration)

    async def _execute(self, task: tasks.Task[Any, Any, Any] | None, running: _Running) -> None:
        """Run the job's task; async ones are cancelled at their timeout (JobTimeout)."""
        job = running.context.job
        if task is None:
            raise exceptions.TaskNotFound(f"no task named {job.task_name!r} in this app")
        if not isinstance(job.task_kwargs, dict):
            raise TypeError(
                f"job arguments must be a JSON object, got {type(job.task_kwargs).__name__}: "
                f"{job.task_kwargs!r:.200}"
            )
        timeout = task_timeout(task)
        if not running.is_async or timeout is None:
            await self._call(task, running.context)
            return
        with anyio.move_on_after(timeout) as deadline:
            await self._call(task, running.context)
        if deadline.cancelled_caught:
            raise JobTimeout(f"task {task.name!r} ran past its timeout of {timeout:g} s")

    async def _call(self, task: tasks.Task[Any, Any, Any], context: job_context.JobContext) -> None:
        job = context.job
        args = [context] if task.pass_context else []
        is_async = inspect.iscoroutinefunction(task.func)
        chain = [
            mw for mw in self.task_middleware if middleware.is_async_middleware(mw) == is_async
        ] + list(task.task_middleware)

        async def run_task() -> Any:
            if is_async:

                async def call_async() -> Any:
                    return await task(*args, **job.task_kwargs)

                result = await middleware.compose(chain, call_async, context, self)()  # type: ignore[arg-type]
            else:

                def call_sync() -> Any:
                    return task(*args, **job.task_kwargs)

                composed = middleware.compose(chain, call_sync, context, self)  # type: ignore[arg-type]
                # The thread cannot be cancelled: it keeps its slot until it returns (past
                # its timeout too: _report_overrun says so). Only a final shutdown abandons
                # it, and puts the job back.
                result = await anyio.to_thread.run_sync(composed, abandon_on_cancel=True)
            if inspect.isawaitable(result):
                result = await result
            return result

        await middleware.compose(self.worker_middleware, run_task, context, self)()  # type: ignore[arg-type]

    async def _report_overrun(
        self, running: _Running, watch: anyio.CancelScope, limit: float
    ) -> None:
        context = running.context
        with watch:
            await anyio.sleep(limit)
        if watch.cancelled_caught:
            return  # the job ended in time
        self.stats.jobs["timed_out"] += 1
        self._log_job(
            logging.WARNING,
            "job_timeout",
            lambda: (
                f"sync job {_describe(context.job)} ran past its timeout of {limit:g} s; "
                "a thread cannot be cancelled, so it keeps its slot until it returns"
            ),
            context,
        )

    def _decide(
        self,
        task: tasks.Task[Any, Any, Any] | None,
        running: _Running,
        failure: BaseException | None,
    ) -> tuple[_Outcome, str]:
        job = running.context.job
        assert job.id is not None  # noqa: S101
        if (
            running.scope.cancelled_caught
            and running.abort_reason is job_context.AbortReason.SHUTDOWN
        ):
            return _Outcome(job.id, "todo", retry_at=_now()), "put back (shutdown)"
        if running.scope.cancelled_caught or isinstance(failure, exceptions.JobAborted):
            return self._finished(job.id, "aborted"), "aborted"
        if failure is None:
            return self._finished(job.id, "succeeded"), "succeeded"
        if isinstance(failure, JobTimeout):
            self.stats.jobs["timed_out"] += 1
        try:
            retry_exception = (
                None if task is None else task.get_retry_exception(exception=failure, job=job)
            )
        except Exception:
            logger.exception("the retry strategy of job %s failed; the job fails", _describe(job))
            retry_exception = None
        if retry_exception is None:
            return self._finished(job.id, "failed"), "failed"
        decision: retry_module.RetryDecision = retry_exception.retry_decision
        retry_at = decision.retry_at or _now()
        return (
            _Outcome(
                job.id,
                "todo",
                retry_at=retry_at,
                priority=decision.priority,
                queue=decision.queue,
                lock=decision.lock,
            ),
            "to retry",
        )

    def _finished(self, job_id: int, status: str) -> _Outcome:
        delete = self.delete_jobs is jobs.DeleteJobCondition.ALWAYS or (
            self.delete_jobs is jobs.DeleteJobCondition.SUCCESSFUL and status == "succeeded"
        )
        return _Outcome(job_id, "delete" if delete else status)

    def _record(
        self,
        decided: tuple[_Outcome, str],
        context: job_context.JobContext,
        failure: BaseException | None,
        duration: float,
    ) -> None:
        outcome, label = decided
        self.stats.jobs[label] += 1
        if outcome.status == "todo" and outcome.retry_at is not None:
            heapq.heappush(self._retry_times, outcome.retry_at.timestamp())
        self._pending.append(outcome)
        self._wake_writer.set()
        level = logging.ERROR if label == "failed" else logging.INFO

        def message() -> str:
            text = f"job {_describe(context.job)} {label} after {duration:.3f} s"
            if failure is not None:
                text += f": {type(failure).__name__}: {failure}"
            return text

        self._log_job(
            level,
            _LOG_ACTIONS[label],
            message,
            context,
            duration=duration,
            outcome=label,
            exc_info=failure if label == "failed" else None,
        )

    def _log_job(
        self,
        level: int,
        action: str,
        message: Callable[[], str],
        context: job_context.JobContext,
        *,
        exc_info: BaseException | None = None,
        **fields: Any,
    ) -> None:
        # Twice per job: build nothing unless the record will be emitted.
        if not logger.isEnabledFor(level):
            return
        job = context.job
        extra = {
            "action": action,
            "worker": {"name": self.worker_name, "id": self.worker_id, "queues": self.queues},
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

    # -- aborting ----------------------------------------------------------------------------

    def _cancel_running_jobs(
        self, reason: job_context.AbortReason, *, include_sync: bool = False
    ) -> None:
        for running in self._running.values():
            running.abort_reason = reason
            if running.is_async or include_sync:
                running.scope.cancel()

    def _abort(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            running = self._running.get(job_id)
            if running is None or running.abort_reason is not None:
                continue
            running.abort_reason = job_context.AbortReason.USER_REQUEST
            if running.is_async:
                running.scope.cancel()
            self._log_job(
                logging.INFO,
                "abort_job",
                functools.partial(_abort_message, running),
                running.context,
            )

    async def _poll_aborts(self) -> None:
        while True:
            await anyio.sleep(self.abort_job_polling_interval)
            if self._running:
                self._abort(await self.app.job_manager.list_jobs_to_abort_async())

    # -- loops ------------------------------------------------------------------------------

    async def _listen(self) -> None:
        channels = list(get_channel_for_queues(self.queues))

        async def on_notification(*, channel: str, payload: str) -> None:
            notification = json.loads(payload)
            if notification.get("type") == "abort_job_requested":
                self._abort([notification["job_id"]])
            else:
                self._wake_fetcher.set()

        async def on_listening() -> None:
            self._wake_fetcher.set()  # whatever was announced while not listening: poll now

        connector = self.app.connector
        # Procrastinate's own connectors do not take on_listening; dawdle's PsycopgConnector does.
        if "on_listening" in inspect.signature(connector.listen_notify).parameters:
            await connector.listen_notify(on_notification, channels, on_listening=on_listening)
        else:
            await connector.listen_notify(on_notification, channels)

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.update_heartbeat_interval)
            await self._ensure_registered()

    async def _ensure_registered(self) -> None:
        """Beat the heart; if another worker pruned us as stalled, register again."""
        async with self._register_lock:
            if not await self._still_registered():
                await self._register_again()

    async def _still_registered(self) -> bool:
        """Beat the heart; False if another worker pruned this one as stalled."""
        rows = await self.app.connector.execute_query_all_async(HEARTBEAT, worker_id=self.worker_id)
        return bool(rows)

    def _own_job_ids(self) -> list[int]:
        """Jobs this worker runs or has finished without having written their outcome yet."""
        return [*self._running, *(outcome.job_id for outcome in self._pending)]

    async def _register_again(self) -> None:
        """Our row was pruned (heartbeats lost): register anew and take back our jobs."""
        old = self.worker_id
        self.worker_id = await self.app.job_manager.register_worker()
        own = self._own_job_ids()
        rows = await self.app.connector.execute_query_all_async(
            RECLAIM_JOBS, worker_id=self.worker_id, ids=own
        )
        lost = set(own) - {row["id"] for row in rows}
        logger.warning(
            "worker %s was pruned as stalled; registered again as %s%s",
            old,
            self.worker_id,
            f"; jobs {sorted(lost)} were recovered by others meanwhile" if lost else "",
            extra={"action": "worker_registered_again", "worker_id": self.worker_id},
        )

    async def _recover_stalled_jobs(self) -> None:
        while True:
            await self.app.job_manager.prune_stalled_workers(self.stalled_worker_timeout)
            async with self._claim_lock:
                rows = await self.app.connector.execute_query_all_async(
                    RECOVER_STALLED_JOBS,
                    seconds=self.stalled_worker_timeout,
                    own_jobs=self._own_job_ids(),
                    worker_id=self.worker_id,
                )
            for row in rows:
                logger.warning(
                    "recovered job %s[%s] from a stalled worker: now %s",
                    row["task_name"],
                    row["id"],
                    row["status"],
                    extra={"action": "recover_stalled_job", "job_id": row["id"]},
                )
            if rows:
                self._wake_fetcher.set()
            await anyio.sleep(self.update_heartbeat_interval)

    async def _defer_periodic_jobs(self) -> None:
        deferrer = PeriodicDeferrer(
            registry=self.app.periodic_registry, **self.app.periodic_defaults
        )
        await deferrer.worker()

    async def _write_outcomes_forever(self) -> None:
        while True:
            if not self._pending:  # after a failed write, retry what is still pending
                await self._wake_writer.wait()
            self._wake_writer = anyio.Event()
            await self._flush_outcomes()

    async def _final_flush(self) -> None:
        """Write the last outcomes, retrying for a while if the database is away."""
        failures = 0
        with anyio.move_on_after(FINAL_FLUSH_TIMEOUT):
            while self._pending:
                try:
                    await self._flush_outcomes()
                except Exception:
                    failures += 1
                    logger.exception("writing the last outcomes failed; trying again")
                    await anyio.sleep(LOOP_RESTART_BACKOFF.delay(failures))
        if self._pending:
            logger.error(
                "%d outcomes could not be written; their jobs stay 'doing' until another "
                "worker recovers them as stalled, and will run again",
                len(self._pending),
                extra={"action": "outcomes_lost", "job_ids": [o.job_id for o in self._pending]},
            )

    async def _flush_outcomes(self) -> None:
        """Write every pending outcome; on failure they stay pending (never dropped)."""
        async with self._write_lock:
            await self._write_pending()

    async def _write_pending(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_OUTCOME_BATCH]
            # Shielded from the worker's cancellation, but not forever: a half-open
            # connection must not hang the shutdown (Procrastinate #1513). A write cut off
            # is simply written again: it only touches jobs still 'doing' for us.
            worker_id = self.worker_id
            with anyio.fail_after(QUERY_TIMEOUT, shield=True):
                row = await self.app.connector.execute_query_one_async(
                    RECORD_OUTCOMES,
                    ids=[o.job_id for o in batch],
                    statuses=[o.status for o in batch],
                    retry_at=[o.retry_at for o in batch],
                    priorities=[o.priority for o in batch],
                    queues=[o.queue for o in batch],
                    locks=[o.lock for o in batch],
                    worker_id=worker_id,
                )
            if row["recorded"] != len(batch):
                await self._ensure_registered()
                if self.worker_id != worker_id:
                    continue  # the same batch again, now that its jobs are ours again
            del self._pending[: len(batch)]
            if row["recorded"] != len(batch):
                logger.warning(
                    "%d of %d outcomes found their job no longer 'doing' (recovered by "
                    "another worker after a lost heartbeat?)",
                    len(batch) - row["recorded"],
                    len(batch),
                )
            self._wake_fetcher.set()


_LOG_ACTIONS: Final = {
    "succeeded": "job_success",
    "failed": "job_error",
    "aborted": "job_aborted",
    "to retry": "job_error_retry",
    "put back (shutdown)": "job_put_back",
}


def _abort_message(running: _Running) -> str:
    text = f"abort requested for job {_describe(running.context.job)}"
    return text if running.is_async else text + ": a sync job must check context.should_abort()"


def _describe(job: jobs.Job) -> str:
    """`task[id](args)` for logs; never fails, whatever the arguments are."""
    arguments = job.task_kwargs
    if isinstance(arguments, dict):
        shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    else:
        shown = repr(arguments)
    return f"{job.task_name}[{job.id}]({shown:.200})"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _in_event_loop_thread(token: anyio.lowlevel.EventLoopToken) -> bool:
    try:
        return anyio.lowlevel.current_token() == token
    except RuntimeError:
        return False
