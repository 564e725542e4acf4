"""The worker's loops beside its jobs: registration and heartbeat, recovery, aborts, periodic jobs.

Each loop runs under `supervise()`: one that fails is restarted while the others go on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import anyio
from procrastinate import exceptions
from procrastinate.manager import get_channel_for_queues

from dawdle._connector.memory import InMemoryConnector
from dawdle._connector.psycopg import PsycopgConnector
from dawdle._periodic import PeriodicDeferrer
from dawdle._retention import RETENTION_INTERVAL, Retention, apply_retention
from dawdle._worker.fencing import fence
from dawdle._worker.joblog import describe, log_job
from dawdle._worker.lease import heartbeat_timeout
from dawdle._worker.notifications import Hint, Malformed, MalformedLog
from dawdle._worker.notifications import parse as parse_notification
from dawdle._worker.state import Running, WorkerState
from dawdle._worker.store import JobStore
from dawdle.backoff import DecorrelatedJitter, RetryPolicy, retrying

if TYPE_CHECKING:
    import procrastinate

logger = logging.getLogger("dawdle.worker")

# Registering and unregistering the worker, through a database that may be restarting.
BOOKKEEPING_RETRIES: Final = RetryPolicy(
    backoff=DecorrelatedJitter(0.05, max_delay=2.0),
    max_attempts=None,
    deadline=30.0,
    retry_on=(exceptions.ConnectorException,),
)
# How long the worker tries to remove its row when it stops; a row left behind is pruned
# once its heartbeat is stale.
UNREGISTER_TIMEOUT: Final = 5.0


class Registration:
    """The worker's row in procrastinate_workers: registered, kept alive, and taken back.

    Another worker prunes this one if its heartbeat is late (a long pause, a partition).
    `confirm()` is the one place that notices and registers again, taking back the jobs
    this worker still owns.
    """

    def __init__(self, state: WorkerState, store: JobStore) -> None:
        self._state = state
        self._store = store
        self._lock = anyio.Lock()

    async def register(self) -> None:
        """Prune stalled workers, register this one and publish its tasks.

        Retries while the database is away. Without dawdle's table the tasks are not
        published: one warning, once per run (re-registering does not warn again).
        """
        async for attempt in retrying(BOOKKEEPING_RETRIES):
            with attempt:
                await self._store.prune_stalled_workers(self._state.settings.stalled_worker_timeout)
                sent_at = anyio.current_time()
                worker_id = await self._store.register()
        self._state.worker_id = worker_id
        self._state.renew_lease(sent_at, new_registration=True)
        async for attempt in retrying(BOOKKEEPING_RETRIES):
            with attempt:
                published = await self._store.publish_tasks(worker_id)
        if not published:
            logger.warning(
                "worker %s did not publish its tasks: the database has no dawdle_worker_tasks "
                "table, so `dawdle healthcheck` cannot name jobs no worker knows; run "
                "`dawdle schema --apply`",
                worker_id,
                extra={"action": "tasks_not_published", "worker_id": worker_id},
            )

    async def unregister(self) -> None:
        """Remove the worker's row, for a few seconds at most."""
        worker_id = self._state.worker_id
        if worker_id is None:
            return
        with anyio.move_on_after(UNREGISTER_TIMEOUT):
            async for attempt in retrying(BOOKKEEPING_RETRIES):
                with attempt:
                    await self._store.unregister(worker_id)

    async def beat_forever(self) -> None:
        """Confirm the registration every `update_heartbeat_interval` seconds.

        A heartbeat that fails or times out is tried again sooner (after its own timeout),
        so that one lost or slow query does not cost the lease. The first failure of a
        series is logged as a warning, the next ones at debug level: fencing says the rest.
        """
        settings = self._state.settings
        timeout = heartbeat_timeout(settings.heartbeat_lease, settings.update_heartbeat_interval)
        delay = settings.update_heartbeat_interval
        failing = False
        while True:
            await anyio.sleep(delay)
            try:
                await self.confirm()
            except (TimeoutError, exceptions.ConnectorException) as exc:
                logger.log(
                    logging.DEBUG if failing else logging.WARNING,
                    "heartbeat of worker %s failed (%s); trying again in %.2f s",
                    self._state.worker_id,
                    f"no answer within {timeout:.2f} s"
                    if isinstance(exc, TimeoutError)
                    else f"{type(exc).__name__}: {exc}",
                    min(timeout, settings.update_heartbeat_interval),
                    extra={"action": "heartbeat_failed", "worker_id": self._state.worker_id},
                )
                failing = True
                delay = min(timeout, settings.update_heartbeat_interval)
            else:
                failing = False
                delay = settings.update_heartbeat_interval

    async def confirm(self) -> None:
        """Beat the heart; if this worker was pruned, register again and take its jobs back.

        Each acknowledged heartbeat renews the lease from the moment it was sent. The
        heartbeat query has a timeout shorter than the lease, so that a hung one is tried
        again in time. Its tasks are published again too: their row went with the pruned one.
        """
        settings = self._state.settings
        timeout = heartbeat_timeout(settings.heartbeat_lease, settings.update_heartbeat_interval)
        async with self._lock:
            state = self._state
            sent_at = anyio.current_time()
            with anyio.fail_after(timeout):
                alive = await self._store.heartbeat(state.worker_id)
            if alive:
                state.renew_lease(sent_at)
                return
            # Gone: other workers may recover its jobs from now on, so they stop here first.
            state.lose_lease()
            fence(state, f"its row {state.worker_id} is gone (pruned as stalled)")
            old = state.worker_id
            sent_at = anyio.current_time()
            state.worker_id = await self._store.register()
            state.renew_lease(sent_at, new_registration=True)
            own = state.own_job_ids()
            lost = set(own) - await self._store.reclaim(worker_id=state.worker_id, job_ids=own)
            logger.warning(
                "worker %s was pruned as stalled; registered again as %s%s",
                old,
                state.worker_id,
                f"; jobs {sorted(lost)} were recovered by others meanwhile" if lost else "",
                extra={"action": "worker_registered_again", "worker_id": state.worker_id},
            )
            # Last, so that a failure here cannot keep the jobs above from being taken back.
            # Without dawdle's table, register() has warned already: once per run is enough.
            await self._store.publish_tasks(state.worker_id)


class Housekeeping:
    """The loops that recover stalled jobs, watch for aborts, listen, and defer periodic jobs."""

    def __init__(self, state: WorkerState, store: JobStore, app: procrastinate.App) -> None:
        self._state = state
        self._store = store
        self._app = app
        # Once per kind for the worker's whole run, across restarts of the listener.
        self._malformed = MalformedLog()

    async def recover_stalled_forever(self) -> None:
        """Put back the jobs of stalled workers, and this worker's lost claims, every beat.

        A job whose worker died in more than `max_recoveries` runs in a row fails instead.
        """
        state = self._state
        seconds = state.settings.stalled_worker_timeout
        max_recoveries = state.settings.max_recoveries
        while True:
            await self._store.prune_stalled_workers(seconds)
            async with state.claim_lock:
                rows = await self._store.recover_stalled(
                    seconds=seconds,
                    own_job_ids=state.own_job_ids(),
                    worker_id=state.worker_id,
                    max_recoveries=max_recoveries,
                )
            for row in rows:
                if row["status"] == "failed":
                    logger.error(
                        "job %s[%s] failed: its worker died or stalled in its last %s runs in "
                        "a row, more than max_recoveries=%s",
                        row["task_name"],
                        row["id"],
                        row["runs"],
                        max_recoveries,
                        extra={
                            "action": "job_failed_recovery_limit",
                            "job_id": row["id"],
                            "runs": row["runs"],
                        },
                    )
                    continue
                logger.warning(
                    "recovered job %s[%s] from a stalled worker: now %s",
                    row["task_name"],
                    row["id"],
                    row["status"],
                    extra={"action": "recover_stalled_job", "job_id": row["id"]},
                )
            if rows:
                state.wake_claimer.set()
            await anyio.sleep(state.settings.update_heartbeat_interval)

    async def poll_aborts_forever(self) -> None:
        """Ask the database for abort requests: every polling interval, and on a hint.

        A notification only hints that a job running here was asked to abort (anyone may
        send one); this query is what decides. Hints that come while it runs are answered
        by the next one, so a flood of them costs one query at a time.
        """
        state = self._state
        while True:
            await state.abort_hinted.wait(state.settings.abort_job_polling_interval)
            state.abort_hinted.clear()
            if state.running:
                self.abort(await self._store.jobs_to_abort())

    def abort(self, job_ids: Iterable[int]) -> None:
        """Abort the given jobs if they run here: async ones are cancelled, sync ones asked."""
        for running in self._state.request_abort(job_ids):
            log_job(
                self._state,
                logging.INFO,
                "abort_job",
                functools.partial(_abort_message, running),
                running.context,
            )

    async def listen(self) -> None:
        """Wake the claimer on new jobs and abort on abort requests, as they are announced."""
        state = self._state
        channels = list(get_channel_for_queues(state.settings.queues))

        async def on_notification(*, channel: str, payload: str) -> None:
            hint = parse_notification(payload)
            if isinstance(hint, Malformed):
                self._malformed.ignored(channel=channel, payload=payload, malformed=hint)
            elif isinstance(hint, Hint) and hint.type == "abort_job_requested":
                if hint.job_id in state.running:
                    state.abort_hinted.set()  # confirmed in the database before any abort
            else:
                # A job inserted or a queue resumed. A forged one costs one claim query.
                state.wake_claimer.set()

        async def on_listening() -> None:
            state.wake_claimer.set()  # whatever was announced while not listening: claim now

        connector = self._app.connector
        if isinstance(connector, PsycopgConnector) and not connector.can_listen:
            logger.warning(
                "not listening for new jobs: LISTEN cannot work through a transaction-mode "
                "pooler (pooler='transaction'); polling every %g s instead (pass "
                "listen_conninfo= for a direct connection to listen on)",
                state.settings.fetch_job_polling_interval,
                extra={"action": "listen_unavailable"},
            )
            return
        # Procrastinate's own connectors cannot say when LISTEN is in place; dawdle's can.
        if isinstance(connector, PsycopgConnector | InMemoryConnector):
            await connector.listen_notify(on_notification, channels, on_listening=on_listening)
        else:
            await connector.listen_notify(on_notification, channels)

    async def retain_forever(self, retention: Retention) -> None:
        """Apply the app's retention now and every RETENTION_INTERVAL (one worker at a time).

        Each round starts where the last one stopped in the events, so old jobs kept (of
        statuses not listed) are read once, not every round.
        """
        positions: dict[tuple[str, ...], int] = {}
        while True:
            await apply_retention(self._app.connector, retention, self._state.hooks.emit, positions)
            await anyio.sleep(RETENTION_INTERVAL)

    async def defer_periodic_forever(self) -> None:
        """Defer `@app.periodic` tasks when due; Procrastinate's table de-duplicates workers."""
        deferrer = PeriodicDeferrer(
            registry=self._app.periodic_registry, **self._app.periodic_defaults
        )
        await deferrer.worker()


def _abort_message(running: Running) -> str:
    text = f"abort requested for job {describe(running.context.job)}"
    return text if running.is_async else text + ": a sync job must check context.should_abort()"
