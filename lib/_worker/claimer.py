"""The claimer: takes ready jobs for the free slots, in one statement per batch.

It wakes on a notification, on a written outcome, when a retry it knows of is due, or on
the polling interval; once every slot is busy it waits for slots to free up.
"""

from __future__ import annotations

import contextlib
import datetime
import heapq
import inspect
import logging
import time
from typing import TYPE_CHECKING, Final

import anyio
from procrastinate import exceptions, job_context

from dawdle._hooks import JobsClaimed, LoopRestarted
from dawdle._worker.handoff import Handoff
from dawdle._worker.housekeeping import Registration
from dawdle._worker.outcomes import job_deadline
from dawdle._worker.state import Running, WorkerState
from dawdle._worker.store import Claimed, JobStore, WorkerNotRegistered
from dawdle._worker.supervision import Restarts

if TYPE_CHECKING:
    import procrastinate

logger = logging.getLogger("dawdle.worker")

# How long a full worker may wait, once a slot is free, for more to free up before claiming
# (measured on 5,000 no-op jobs, concurrency 10: about +20 % jobs/s on asyncio).
CLAIM_GATHER: Final = 0.005


class Claimer:
    """Claims jobs for free slots and sends each, as a `Running`, to the runners."""

    def __init__(
        self,
        state: WorkerState,
        store: JobStore,
        registration: Registration,
        app: procrastinate.App,
    ) -> None:
        self._state = state
        self._store = store
        self._registration = registration
        self._app = app
        # When the retries this worker decided become due (epoch seconds): a retry sends no
        # NOTIFY, so the claimer must wake for it on its own.
        self._retry_times: list[float] = []
        self._claim_started = 0.0

    def expect_retry(self, at: datetime.datetime) -> None:
        """Wake up to claim when a retry becomes due at `at`."""
        heapq.heappush(self._retry_times, at.timestamp())

    async def claim_until_stopped(self, dispatch: Handoff) -> None:
        """Claim until the worker stops (or, with `wait=False`, until nothing is left to do)."""
        state = self._state
        restarts = Restarts()
        while not state.stopping:
            if not state.lease.held(anyio.current_time()):
                # Fenced: the end of the fencing (or a stop) wakes the claimer.
                state.wake_claimer.clear()
                await state.wake_claimer.wait(self._poll_delay())
                continue
            free = state.free_slots
            if free <= 0:
                await self._wait_for_free_slots()
                continue
            state.wake_claimer.clear()
            try:
                async with state.claim_lock:
                    sent_at = anyio.current_time()
                    claimed = await self._claim(free)
                    answered_at = anyio.current_time()
                    if state.hooks.wants(JobsClaimed):
                        state.hooks.emit(JobsClaimed(len(claimed), answered_at - sent_at))
                    if not state.lease.held_since(sent_at, answered_at):
                        self._leave_unheld(claimed)
                        continue
                    for one in claimed:
                        dispatch.send_nowait(self._prepare(one))
            except WorkerNotRegistered:
                # Registering again may fail too (a timeout, the database away): the
                # heartbeat loop tries again, and meanwhile the lapsed lease stops claims.
                with contextlib.suppress(TimeoutError, exceptions.ConnectorException):
                    await self._registration.confirm()
                continue
            except Exception as exc:
                delay = restarts.next_delay()
                state.hooks.emit(LoopRestarted("claimer", exc, delay))
                logger.exception("claiming jobs failed; again in %.2f s", delay)
                await state.wake_claimer.wait(delay)
                continue
            restarts.reset()
            if claimed:
                continue
            # With wait=False, stop once nothing is left, unless something woke the claimer
            # during its claim: a retry written meanwhile may be due now.
            if (
                not state.settings.wait
                and not state.running
                and not state.unwritten
                and not state.wake_claimer.is_set()
            ):
                logger.info("no job ready: stopping because wait=False")
                return
            await state.wake_claimer.wait(self._poll_delay())

    def _leave_unheld(self, claimed: list[Claimed]) -> None:
        """A claim answered after the lease broke: its jobs may be another worker's by now.

        They are not run. Still 'doing' for this worker, they are put back by its recovery
        of lost claims; 'doing' for a pruned row, by any worker's recovery of stalled jobs.
        """
        if claimed:
            job_ids = [one.job.id for one in claimed]
            logger.warning(
                "claimed jobs %s are not run: the claim's answer came after this worker's "
                "lease broke; they are recovered as stalled",
                job_ids,
                extra={"action": "claim_after_lease", "job_ids": job_ids},
            )

    async def _wait_for_free_slots(self) -> None:
        """Wait for a slot, then briefly for half of them, so that claims come in batches.

        Short jobs end in bursts: claiming for the first free slot alone would cost a round
        trip per job. The extra wait is at most CLAIM_GATHER seconds.
        """
        state = self._state
        state.slot_freed.clear()
        await state.slot_freed.wait()
        with anyio.move_on_after(CLAIM_GATHER):
            while not state.stopping and len(state.running) > state.settings.concurrency // 2:
                state.slot_freed.clear()
                await state.slot_freed.wait()

    def _poll_delay(self) -> float:
        # Only retries due before the last claim began were seen by it; later ones may
        # have become due while it ran, and must still wake the claimer.
        while self._retry_times and self._retry_times[0] <= self._claim_started:
            heapq.heappop(self._retry_times)
        delay = self._state.settings.fetch_job_polling_interval
        if self._retry_times:
            delay = min(delay, max(0.0, self._retry_times[0] - time.time()))
        return delay

    async def _claim(self, limit: int) -> list[Claimed]:
        self._claim_started = time.time()
        settings = self._state.settings
        return await self._store.claim(
            queues=settings.queues,
            task_names=self._known_task_names(),
            limit=limit,
            worker_id=self._state.worker_id,
            timed_tasks=self._timed_task_names(),
            trace_contexts=self._state.hooks.wants_trace_context(),
        )

    def _known_task_names(self) -> list[str] | None:
        """The task names to claim: the app's, or None (any) with unknown_tasks="fail".

        Read at every claim, since tasks may be registered (an import path, a blueprint)
        after the worker was made. `app.tasks` holds every name and alias, blueprints' too.
        """
        if self._state.settings.unknown_tasks == "fail":
            return None
        return list(self._app.tasks)

    def _timed_task_names(self) -> list[str]:
        """The names and aliases of tasks whose retry policy has a job deadline.

        Their jobs are claimed with the age of their first run. Read at every claim, as
        the task names are.
        """
        return [name for name, task in self._app.tasks.items() if job_deadline(task) is not None]

    def _prepare(self, claimed: Claimed) -> Running:
        """The job's place in `state.running`, taken before it is handed to a runner."""
        job = claimed.job
        assert job.id is not None  # noqa: S101 (claimed rows have ids)
        job_id = job.id
        settings = self._state.settings
        task = self._app.tasks.get(job.task_name)
        running: Running
        context = job_context.JobContext(
            app=self._app,
            worker_name=settings.name,
            worker_queues=settings.queues,
            additional_context=dict(settings.additional_context),
            job=job,
            # The run's own reason, not a lookup in `state.running`: once set it stays, so a
            # sync job's `should_abort()` stays True while its thread runs, slot or not.
            abort_reason=lambda: running.abort_reason,
            start_timestamp=time.time(),
        )
        is_async = task is not None and inspect.iscoroutinefunction(task.func)
        running = Running(
            task=task,
            context=context,
            is_async=is_async,
            first_run_age=claimed.first_run_age,
            trace_context=claimed.trace_context,
        )
        self._state.running[job_id] = running
        return running
