"""Procrastinate compatibility: its task contract, and its worker and App on our database.

Sync tasks in threads and `pass_context` run on connector x runtime; sharing a database with
Procrastinate's own connector, worker or event loop needs PostgreSQL.
"""

from __future__ import annotations

import functools
import threading

import anyio
import anyio.to_thread
import procrastinate
import pytest

from dawdle import App
from tests.durability.worker.helpers import job_states, postgres_only, work

pytestmark = pytest.mark.anyio


async def test_sync_task_runs_in_a_worker_thread(app: App) -> None:
    """A plain function task runs outside the event loop's thread and succeeds."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    results: list[int] = []

    @app.task(name="square")
    def square(n: int) -> None:
        threads.append(threading.get_ident())
        results.append(n * n)

    job_id = await square.defer_async(n=7)
    await work(app)
    assert results == [49]
    assert len(threads) == 1
    assert threads[0] != loop_thread
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_pass_context_gives_procrastinate_job_context(app: App) -> None:
    """pass_context=True tasks get a JobContext naming their job, worker and extra context."""
    contexts: list[procrastinate.JobContext] = []

    @app.task(name="contextual", pass_context=True, queue="ctx")
    async def contextual(context: procrastinate.JobContext, n: int) -> None:
        assert not context.should_abort()
        contexts.append(context)

    @app.task(name="contextual_sync", pass_context=True, queue="ctx")
    def contextual_sync(context: procrastinate.JobContext, n: int) -> None:
        contexts.append(context)

    first = await contextual.defer_async(n=1)
    second = await contextual_sync.defer_async(n=2)
    await work(app, name="w-ctx", additional_context={"tenant": "acme"})
    assert [type(c) for c in contexts] == [procrastinate.JobContext] * 2
    assert [(c.job.id, c.job.task_name, c.job.task_kwargs) for c in contexts] == [
        (first, "contextual", {"n": 1}),
        (second, "contextual_sync", {"n": 2}),
    ]
    assert {c.worker_name for c in contexts} == {"w-ctx"}
    assert [c.additional_context for c in contexts] == [{"tenant": "acme"}] * 2
    assert all(c.app is app for c in contexts)
    assert await job_states(app) == {first: ("succeeded", 1), second: ("succeeded", 1)}


@postgres_only("Procrastinate's own PsycopgConnector, in its own event loop, shares the database")
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_job_deferred_by_procrastinate_on_asyncio_runs_on_trio(
    app: App, schema_dsn: str
) -> None:
    """Trio only: Procrastinate's App defers on asyncio (a thread), dawdle runs it on Trio."""
    received: list[int] = []

    @app.task(name="interop.shared")
    async def shared(value: int) -> None:
        received.append(value)

    async def defer_with_procrastinate() -> int:
        upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=schema_dsn))

        @upstream.task(name="interop.shared")
        async def shared(value: int) -> None: ...

        async with upstream.open_async():
            return await shared.defer_async(value=17)

    job_id = await anyio.to_thread.run_sync(
        functools.partial(anyio.run, defer_with_procrastinate, backend="asyncio")
    )
    await work(app)
    assert received == [17]
    assert await job_states(app) == {job_id: ("succeeded", 1)}


@postgres_only("Procrastinate's own worker and PsycopgConnector share the database")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_job_deferred_by_dawdle_runs_on_procrastinate_worker(
    app: App, schema_dsn: str
) -> None:
    """Asyncio only (Procrastinate's worker needs it): a dawdle job, Procrastinate's worker."""
    received: list[int] = []

    @app.task(name="interop.shared")
    async def shared(value: int) -> None: ...

    upstream = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=schema_dsn))

    @upstream.task(name="interop.shared")
    async def upstream_shared(value: int) -> None:
        received.append(value)

    job_id = await shared.defer_async(value=23)
    async with upstream.open_async():
        with anyio.fail_after(10):
            await upstream.run_worker_async(wait=False, install_signal_handlers=False)
    assert received == [23]
    assert await job_states(app) == {job_id: ("succeeded", 1)}
