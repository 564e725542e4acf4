"""The runners: one long-lived task per slot, running each job it is handed in a cancel scope.

A job runs inside the middlewares, async ones on the event loop (cancelled at the task's
timeout), sync ones in a worker thread (watched for overrunning it). Whatever a job
raises ends as a `Verdict` for the writer; nothing a job does reaches the worker.

How running jobs end at shutdown, abandoned sync jobs included, is in `shutdown`.
"""

from __future__ import annotations

import inspect
import logging
import math
import types
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
from procrastinate import exceptions, middleware, tasks

from dawdle._errors import JobTimeout
from dawdle._hooks import JobStarted
from dawdle._worker.claimer import Claimer
from dawdle._worker.handoff import Handoff
from dawdle._worker.joblog import describe, log_job, log_task_not_found
from dawdle._worker.outcomes import Outcome, Verdict, decide, job_deadline
from dawdle._worker.run_events import emit_outcome, started_event
from dawdle._worker.shutdown import abandon
from dawdle._worker.state import Running, ThreadStage, WorkerState
from dawdle._worker.stored_errors import with_error
from dawdle._worker.writer import OutcomeWriter
from dawdle.backoff import RetryEvent, RetryPolicy

if TYPE_CHECKING:
    from dawdle._worker.worker import Worker

logger = logging.getLogger("dawdle.worker")


def task_code(task: tasks.Task[Any, Any, Any] | None) -> types.CodeType | None:
    """The code of the task's function, where its stored traceback starts (None if unknown)."""
    code: types.CodeType | None = getattr(getattr(task, "func", None), "__code__", None)
    return code


def task_timeout(task: tasks.Task[Any, Any, Any]) -> float | None:
    """The `timeout=` given to `@app.task`, in seconds, or None."""
    timeout: float | None = getattr(task, "dawdle_timeout", None)
    return timeout


class Runners:
    """What each slot's runner does with a job, from claim to verdict."""

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

    async def run_jobs(self, handoff: Handoff) -> None:
        """One slot's runner: run the jobs it is handed, one after another, until the end."""
        # One long-lived runner per slot: spawning a task (and anyio's scope) per job took
        # 6-7 % of the worker's samples on no-op jobs (py-spy).
        while (running := await handoff.receive()) is not None:
            await self._run_job(running)

    async def _run_job(self, running: Running) -> None:
        context = running.context
        job = context.job
        assert job.id is not None  # noqa: S101 (claimed jobs have ids)
        hooks = self._state.hooks
        # The loop's clock: a test's virtual clock reads a virtual sleep's full length.
        started = anyio.current_time()
        if running.task is not None:  # Procrastinate logs neither for an unknown task
            log_job(
                self._state,
                logging.DEBUG,
                "loaded_job_info",
                lambda: f"loaded job info, about to start job {describe(job)}",
                context,
            )
            log_job(
                self._state,
                logging.INFO,
                "start_job",
                lambda: f"starting job {describe(job)}",
                context,
            )
        overrun_watch = self._watch_overrun(running)
        failure: BaseException | None = None
        result: Any = None
        with running.scope:
            try:
                if hooks.wants(JobStarted):
                    hooks.emit(started_event(running))
                result = await self._execute(running)
            except anyio.get_cancelled_exc_class() as exc:
                if anyio.current_effective_deadline() == -math.inf:
                    raise  # a real cancellation: our scope or the worker's
                failure = exc  # the task raised a cancellation of its own (or the other runtime's)
            except BaseException as exc:  # noqa: BLE001 (a job's failure, whatever it is, is recorded)
                failure = exc
        duration = anyio.current_time() - started
        if overrun_watch is not None:
            overrun_watch.cancel()
        if running.stage is ThreadStage.ABANDONED:
            abandon(self._state, running, duration)
            return
        deadline = job_deadline(running.task)
        verdict = decide(
            running.task,
            job,
            failure,
            running.abort_reason,
            # A skipped sync job never ran, even if its thread's empty return won the race.
            cancelled=running.scope.cancelled_caught or running.stage is ThreadStage.SKIPPED,
            delete_jobs=self._state.settings.delete_jobs,
            elapsed=None if deadline is None else running.since_first_run(),
        )
        if failure is not None:  # a success costs nothing; only a failure or retry is kept
            verdict = with_error(
                verdict, failure, attempt=job.attempts + 1, task_code=task_code(running.task)
            )
        self._state.end(job.id)
        if isinstance(failure, exceptions.TaskNotFound):
            log_task_not_found(self._state, context, failure)
        if deadline is not None and verdict.outcome in (Outcome.RETRY, Outcome.FAILED):
            self._check_first_run_known(running, deadline)
        self._record(running, verdict, failure, duration, result)
        if verdict.event is not None:
            self._call_on_retry(running, verdict.event)

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
        # Fenced (or aborted) between its claim and now: never begin it.
        await anyio.lowlevel.checkpoint_if_cancelled()
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
        if is_async and not chain and not settings.worker_middleware:
            # No middleware: the task itself, without the composed closures (what
            # `run_task` below does with empty chains).
            result = await task(*args, **job.task_kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

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
                # stops waiting for it (`shutdown.end_running_jobs`), and never puts it back then.
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
        running.overran = True  # counted when it ends (`JobFinished.timed_out`)
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

    def _check_first_run_known(self, running: Running, deadline: float) -> None:
        """Say so when a job that ran before has no recorded first run: its deadline is late.

        Its `procrastinate_events` rows are gone (deleted by hand, or the job was inserted
        with attempts > 0): the deadline is measured from this run instead.
        """
        job = running.context.job
        if running.first_run_age is not None or job.attempts == 0:
            return
        log_job(
            self._state,
            logging.WARNING,
            "job_first_run_unknown",
            lambda: (
                f"job {describe(job)} ran {job.attempts} time(s) before, but procrastinate_events "
                f"records no earlier start: its deadline of {deadline:g} s counts from this run"
            ),
            running.context,
        )

    def _call_on_retry(self, running: Running, event: RetryEvent) -> None:
        """The policy's `on_retry` hook, if it has one; a failing hook is logged, not raised."""
        task = running.task
        policy = None if task is None else task.retry_strategy
        hook = policy.on_retry if isinstance(policy, RetryPolicy) else None
        if hook is None:
            return
        try:
            hook(event)
        except Exception as exc:  # noqa: BLE001 (a user's hook never stops the worker)
            log_job(
                self._state,
                logging.ERROR,
                "retry_hook_failed",
                lambda: f"the on_retry hook of job {describe(running.context.job)} failed",
                running.context,
                exc_info=exc,
            )

    def _record(
        self,
        running: Running,
        verdict: Verdict,
        failure: BaseException | None,
        duration: float,
        result: Any,
    ) -> None:
        """Remember the retry time, hand the verdict to the writer, and tell the hooks.

        The built-in hooks count the outcome (`StatsHook`) and log it (`OutcomeLog`).
        """
        state = self._state
        context = running.context
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
        emit_outcome(
            state.hooks, running, verdict, failure=failure, duration=duration, result=result
        )
