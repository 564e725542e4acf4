"""The runners: one long-lived task per slot, running each job it is handed in a cancel scope.

A job runs inside the middlewares, async ones on the event loop (cancelled at the task's
timeout), sync ones in a worker thread (watched for overrunning it). Whatever a job
raises ends as a `Verdict` for the writer; nothing a job does reaches the worker.

At shutdown, after the graceful timeout, async jobs are cancelled and put back; sync jobs
are asked to stop (`should_abort()`) and get SYNC_ABORT_TIMEOUT more seconds, since their
thread cannot be cancelled. A sync job is never put back while its thread runs it: one
still running after that is abandoned, 'doing' for this worker, until recovered as stalled.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream
from procrastinate import exceptions, job_context, middleware, tasks

from dawdle._errors import JobTimeout
from dawdle._worker.claimer import Claimer
from dawdle._worker.joblog import describe, log_job, log_task_not_found
from dawdle._worker.outcomes import Outcome, Verdict, decide
from dawdle._worker.state import Running, ThreadStage, WorkerState
from dawdle._worker.writer import OutcomeWriter

if TYPE_CHECKING:
    from dawdle._worker.worker import Worker

logger = logging.getLogger("dawdle.worker")

# How long sync jobs get to return once the shutdown asked them to (after the graceful
# timeout), before their threads are abandoned. An async job ends as soon as it is
# cancelled; a thread only ends by itself, so this is the one wait a job that checks
# `should_abort()` needs. 5 s suits a job that checks it between units of work of a few
# seconds, and keeps the whole stop after the graceful timeout (this, the final flush of a
# few ms on a healthy database, unregistering) well inside common stop limits (Kubernetes'
# default grace of 30 s, systemd's 90 s). The same bound as UNREGISTER_TIMEOUT.
SYNC_ABORT_TIMEOUT: Final = 5.0


def task_timeout(task: tasks.Task[Any, Any, Any]) -> float | None:
    """The `timeout=` given to `@app.task`, in seconds, or None."""
    timeout: float | None = getattr(task, "dawdle_timeout", None)
    return timeout


class Runners:
    """What each slot's runner does with a job, and how running jobs end at shutdown."""

    def __init__(
        self,
        state: WorkerState,
        worker: Worker,
        claimer: Claimer,
        writer: OutcomeWriter,
        jobs_group: anyio.abc.TaskGroup,
    ) -> None:
        self._state = state
        self._worker = worker  # middlewares receive it, as in Procrastinate
        self._claimer = claimer
        self._writer = writer
        self._jobs_group = jobs_group  # where overrun watchers of sync jobs run

    async def run_jobs(self, handed: MemoryObjectReceiveStream[Running]) -> None:
        """One slot's runner: run the jobs it is handed, one after another, until the end."""
        # One long-lived runner per slot: spawning a task (and anyio's scope) per job took
        # 6-7 % of the worker's samples on no-op jobs (py-spy).
        with handed:
            async for running in handed:
                await self._run_job(running)

    async def end_running_jobs(self) -> None:
        """End running jobs at shutdown: the graceful timeout, then abort (see the module)."""
        state = self._state
        if state.running:
            now = time.time()
            for running in state.running.values():
                log_job(
                    state,
                    logging.INFO,
                    "ending_job",
                    functools.partial(_waiting_message, running.context, now),
                    running.context,
                )
            grace = state.settings.shutdown_graceful_timeout
            with anyio.move_on_after(math.inf if grace is None else grace):
                while state.running:
                    state.slot_freed.clear()
                    await state.slot_freed.wait()
        if state.running:
            logger.info(
                "%d jobs still running after the graceful timeout: cancelling async ones, "
                "asking sync ones to abort",
                len(state.running),
                extra={
                    "action": "stop_worker",  # Procrastinate's, for this very record
                    "worker": state.worker_log_fields(),
                    "queues": state.settings.queues,
                },
            )
            state.abort_for_shutdown()
            await self._end_sync_jobs()

    async def _end_sync_jobs(self) -> None:
        """Wait SYNC_ABORT_TIMEOUT for sync jobs to return, then abandon the ones that run on."""
        state = self._state

        def sync_jobs() -> list[Running]:
            return [running for running in state.running.values() if not running.is_async]

        with anyio.move_on_after(SYNC_ABORT_TIMEOUT):
            while sync_jobs():
                state.slot_freed.clear()
                await state.slot_freed.wait()
        # What each thread is doing is read and changed under the run's lock: a thread that
        # has left its job is let deliver its result, one not begun never begins (the job
        # goes back), one inside the job is abandoned (its runner stops waiting).
        for running in sync_jobs():
            running.stop_thread()

    async def _run_job(self, running: Running) -> None:
        context = running.context
        job = context.job
        assert job.id is not None  # noqa: S101 (claimed jobs have ids)
        started = time.monotonic()
        if running.task is not None:  # Procrastinate logs neither for an unknown task
            log_job(
                self._state,
                logging.DEBUG,
                "loaded_job_info",
                lambda: f"loaded job info, about to start job {describe(job)}",
                context,
                **_job_started(context),
            )
            log_job(
                self._state,
                logging.INFO,
                "start_job",
                lambda: f"starting job {describe(job)}",
                context,
                **_job_started(context),
            )
        overrun_watch = self._watch_overrun(running)
        failure: BaseException | None = None
        result: Any = None
        with running.scope:
            try:
                result = await self._execute(running)
            except anyio.get_cancelled_exc_class() as exc:
                if anyio.current_effective_deadline() == -math.inf:
                    raise  # a real cancellation: our scope or the worker's
                failure = exc  # the task raised a cancellation of its own (or the other runtime's)
            except BaseException as exc:  # noqa: BLE001 (a job's failure, whatever it is, is recorded)
                failure = exc
        duration = time.monotonic() - started
        if overrun_watch is not None:
            overrun_watch.cancel()
        if running.stage is ThreadStage.ABANDONED:
            self._abandon(running, duration)
            return
        verdict = decide(
            running.task,
            job,
            failure,
            running.abort_reason,
            # A skipped sync job never ran, even if its thread's empty return won the race.
            cancelled=running.scope.cancelled_caught or running.stage is ThreadStage.SKIPPED,
            delete_jobs=self._state.settings.delete_jobs,
        )
        self._state.end(job.id)
        if isinstance(failure, exceptions.TaskNotFound):
            log_task_not_found(self._state, context, failure)
        self._record(running, verdict, failure, duration, result)

    def _abandon(self, running: Running, duration: float) -> None:
        """The shutdown gave up on a sync job whose thread runs on: nothing is written.

        Putting it back would let another worker start it while this thread still runs it.
        It stays 'doing' for this worker, which keeps its row: it is recovered as stalled
        once this worker's last heartbeat is `stalled_worker_timeout` old.
        """
        state = self._state
        job = running.context.job
        assert job.id is not None  # noqa: S101 (claimed jobs have ids)
        state.abandon(job.id)
        log_job(
            state,
            logging.ERROR,
            "job_abandoned",
            lambda: (
                f"job {describe(job)} abandoned after {duration:.3f} s: its thread still runs "
                f"{SYNC_ABORT_TIMEOUT:g} s after it was asked to abort; it stays 'doing' until "
                f"recovered as stalled, {state.settings.stalled_worker_timeout:g} s after this "
                "worker's last heartbeat"
            ),
            running.context,
            duration=duration,
        )

    async def _execute(self, running: Running) -> Any:
        """Run the job's task, return its result; async ones are cancelled at their timeout."""
        task, job = running.task, running.context.job
        if task is None:
            raise exceptions.TaskNotFound(f"no task named {job.task_name!r} in this app")
        if not isinstance(job.task_kwargs, dict):
            raise TypeError(
                f"job arguments must be a JSON object, got {type(job.task_kwargs).__name__}: "
                f"{job.task_kwargs!r:.200}"
            )
        timeout = task_timeout(task)
        if not running.is_async or timeout is None:
            return await self._call(task, running)
        result = None
        with anyio.move_on_after(timeout) as deadline:
            result = await self._call(task, running)
        if deadline.cancelled_caught:
            raise JobTimeout(f"task {task.name!r} ran past its timeout of {timeout:g} s")
        return result

    async def _call(self, task: tasks.Task[Any, Any, Any], running: Running) -> Any:
        context, job, is_async = running.context, running.context.job, running.is_async
        args = [context] if task.pass_context else []
        settings = self._state.settings
        chain = [
            mw for mw in settings.task_middleware if middleware.is_async_middleware(mw) == is_async
        ] + list(task.task_middleware)
        worker: Any = self._worker  # Procrastinate types the argument as its own Worker

        async def run_task() -> Any:
            if is_async:

                async def call_async() -> Any:
                    return await task(*args, **job.task_kwargs)

                result = await middleware.compose(chain, call_async, context, worker)()
            else:

                def call_sync() -> Any:
                    return task(*args, **job.task_kwargs)

                composed = middleware.compose(chain, call_sync, context, worker)

                def in_thread() -> Any:
                    if not running.enter_thread():
                        return None  # the shutdown skipped it: it goes back, never begun
                    try:
                        return composed()
                    finally:
                        running.leave_thread()

                # The thread cannot be cancelled: it keeps its slot until it returns (past
                # its timeout too: the overrun watch says so). Only the end of a shutdown
                # stops waiting for it (`Running.stop_thread`), and never puts it back then.
                result = await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=True)
            if inspect.isawaitable(result):
                result = await result
            return result

        return await middleware.compose(
            list(settings.worker_middleware), run_task, context, worker
        )()

    def _watch_overrun(self, running: Running) -> anyio.CancelScope | None:
        """For a sync job with a timeout: a watcher that logs when it runs past it."""
        timeout = None if running.task is None else task_timeout(running.task)
        if running.is_async or timeout is None:
            return None
        watch = anyio.CancelScope()
        self._jobs_group.start_soon(self._report_overrun, running, watch, timeout)
        return watch

    async def _report_overrun(
        self, running: Running, watch: anyio.CancelScope, limit: float
    ) -> None:
        with watch:
            await anyio.sleep(limit)
        if watch.cancelled_caught:
            return  # the job ended in time
        self._state.stats.timed_out += 1
        log_job(
            self._state,
            logging.WARNING,
            "job_timeout",
            lambda: (
                f"sync job {describe(running.context.job)} ran past its timeout of {limit:g} s; "
                "a thread cannot be cancelled, so it keeps its slot until it returns"
            ),
            running.context,
        )

    def _record(
        self,
        running: Running,
        verdict: Verdict,
        failure: BaseException | None,
        duration: float,
        result: Any,
    ) -> None:
        """Count, remember the retry time, hand the verdict to the writer, and log it."""
        state = self._state
        context = running.context
        state.stats.jobs[verdict.outcome] += 1
        if isinstance(failure, JobTimeout):
            state.stats.timed_out += 1
        if verdict.retry_at is not None:
            self._claimer.expect_retry(verdict.retry_at)
        self._writer.add(verdict)
        if verdict.strategy_error is not None:
            log_job(
                state,
                logging.ERROR,
                "retry_strategy_failed",
                lambda: f"the retry strategy of job {describe(context.job)} failed; the job fails",
                context,
                exc_info=verdict.strategy_error,
            )
        failed = verdict.outcome is Outcome.FAILED

        def message() -> str:
            text = f"job {describe(context.job)} {verdict.outcome.phrase} after {duration:.3f} s"
            if failure is not None:
                text += f": {type(failure).__name__}: {failure}"
            return text

        log_job(
            state,
            logging.ERROR if failed else logging.INFO,
            verdict.outcome.log_action,
            message,
            context,
            duration=duration,
            outcome=verdict.outcome.value,
            start_timestamp=context.start_timestamp,
            end_timestamp=time.time(),
            result=result,
            exc_info=failure if failed else None,
        )


def _waiting_message(context: job_context.JobContext, now: float) -> str:
    started = now - context.start_timestamp
    return f"waiting for job {describe(context.job)} to finish (started {started:.3f} s ago)"


def _job_started(context: job_context.JobContext) -> dict[str, Any]:
    """Procrastinate's `JobResult.as_dict()` for a job that has not ended."""
    return {
        "start_timestamp": context.start_timestamp,
        "duration": time.time() - context.start_timestamp,
    }
