"""What the hooks' tests of both suites share: a recording `Hooks` and the same checks.

`fail_first_call` makes a store method fail once; the `check_...` functions are the tests
each suite runs on its connector (PostgreSQL, in memory), given how to work the jobs.
"""

from __future__ import annotations

import contextvars
import datetime
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from dawdle import (
    App,
    Hooks,
    JobDeferred,
    JobFinished,
    JobRetried,
    JobsClaimed,
    JobSnoozed,
    JobsPruned,
    JobStarted,
    LoopRestarted,
)

# What `Recorder.job_started` sets, for tasks and `job_finished` to read.
CURRENT_JOB: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "CURRENT_JOB", default=None
)


class Recorder(Hooks):
    """Every event as (method, event), in order; `CURRENT_JOB` set around each run.

    `finished` is set at each `job_finished`, `restarted` at each `loop_restarted`, so that
    tests wait on the event itself.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.seen_in_finished: list[int | None] = []
        self.finished = anyio.Event()
        self.restarted = anyio.Event()
        self._tokens: dict[int | None, contextvars.Token[int | None]] = {}

    def names(self, job_id: int | None = None) -> list[str]:
        """The methods called, in order; only those about `job_id` if given."""
        return [
            name
            for name, event in self.events
            if job_id is None or getattr(getattr(event, "job", None), "id", None) == job_id
        ]

    def of(self, kind: type[Any]) -> list[Any]:
        """The events of one kind, in order."""
        return [event for _, event in self.events if isinstance(event, kind)]

    def job_deferred(self, event: JobDeferred) -> None:
        self.events.append(("job_deferred", event))

    def job_started(self, event: JobStarted) -> None:
        self.events.append(("job_started", event))
        self._tokens[event.job.id] = CURRENT_JOB.set(event.job.id)

    def job_finished(self, event: JobFinished) -> None:
        self.events.append(("job_finished", event))
        self.seen_in_finished.append(CURRENT_JOB.get())
        token = self._tokens.pop(event.job.id, None)
        if token is not None:  # a runner runs one job after another: leave it as it was
            CURRENT_JOB.reset(token)
        self.finished.set()

    def job_retried(self, event: JobRetried) -> None:
        self.events.append(("job_retried", event))

    def job_snoozed(self, event: JobSnoozed) -> None:
        self.events.append(("job_snoozed", event))

    def loop_restarted(self, event: LoopRestarted) -> None:
        self.events.append(("loop_restarted", event))
        self.restarted.set()

    def jobs_claimed(self, event: JobsClaimed) -> None:
        self.events.append(("jobs_claimed", event))

    def jobs_pruned(self, event: JobsPruned) -> None:
        self.events.append(("jobs_pruned", event))


def fail_first_call(
    monkeypatch: pytest.MonkeyPatch, owner: type, method: str, error: Exception
) -> None:
    """`owner.method` (an async method taking keywords) raises `error` once, then works."""
    original = getattr(owner, method)
    failures = [error]

    async def flaky(self: Any, **arguments: Any) -> Any:
        if failures:
            raise failures.pop()
        return await original(self, **arguments)

    monkeypatch.setattr(owner, method, flaky)


async def check_context_reaches_the_tasks(
    app: App, run: Callable[[Recorder], Awaitable[None]]
) -> None:
    """`CURRENT_JOB`, set in `job_started`, reaches the tasks and `job_finished`, not the caller.

    Seen by an async task, a sync task (in its thread) and `job_finished`; `run` works the
    jobs with the recorder given.
    """
    recorder = Recorder()
    seen: dict[str, int | None] = {}

    @app.task(name="async_reader")
    async def async_reader() -> None:
        seen["async"] = CURRENT_JOB.get()

    @app.task(name="sync_reader")
    def sync_reader() -> None:
        assert threading.current_thread() is not threading.main_thread()
        seen["sync"] = CURRENT_JOB.get()

    async_id = await async_reader.defer_async()
    sync_id = await sync_reader.defer_async()
    await run(recorder)
    assert seen == {"async": async_id, "sync": sync_id}
    assert sorted(recorder.seen_in_finished, key=str) == sorted([async_id, sync_id], key=str)
    assert CURRENT_JOB.get() is None  # the runner's value never leaked here


async def check_queue_time_counts_from_the_due_time(
    app: App, run: Callable[[Recorder], Awaitable[None]]
) -> None:
    """A job due a minute ago waited about a minute (the database's clock, the wall's)."""
    recorder = Recorder()

    @app.task(name="late")
    async def late() -> None: ...

    due = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    await late.configure(schedule_at=due).defer_async()
    await run(recorder)
    [started] = recorder.of(JobStarted)
    assert 60.0 <= started.queue_time < 70.0
