"""The worker on the in-memory connector: fast checks of its logic on virtual clocks.

Durability (real PostgreSQL, faults, both runtimes on the real clock) lives in
tests/durability; these tests only check decisions that need no database.
"""

from __future__ import annotations

import anyio
import pytest
from procrastinate import RetryStrategy

from dawdle import App, ConfigurationError, InMemoryConnector, JobTimeout, Worker
from dawdle.backoff import Constant, RetryPolicy

pytestmark = pytest.mark.anyio


def statuses(app: App) -> dict[str, tuple[str, int]]:
    connector = app.connector
    assert isinstance(connector, InMemoryConnector)
    return {
        f"{job['task_name']}#{job['id']}": (job["status"], job["attempts"])
        for job in connector.jobs.values()
    }


async def work(app: App, **options: object) -> None:
    await app.run_worker_async(wait=False, install_signal_handlers=False, **options)


async def test_worker_runs_deferred_jobs(in_memory_app: App) -> None:
    """The original guide's pattern: defer, run_worker_async(wait=False), jobs succeeded."""
    seen: list[int] = []

    @in_memory_app.task(name="record")
    async def record(value: int) -> None:
        seen.append(value)

    for value in range(5):
        await record.defer_async(value=value)
    await work(in_memory_app)
    assert seen == [0, 1, 2, 3, 4]
    assert set(statuses(in_memory_app).values()) == {("succeeded", 1)}


async def test_sync_tasks_run_in_threads(in_memory_app: App) -> None:
    """A plain function task runs (in a worker thread) and succeeds."""
    results: list[int] = []

    @in_memory_app.task(name="square")
    def square(n: int) -> None:
        results.append(n * n)

    await square.defer_async(n=7)
    await work(in_memory_app)
    assert results == [49]


async def test_async_timeout_fails_the_job_with_job_timeout(in_memory_app: App) -> None:
    """An async job past timeout= is cancelled; its retry policy sees a JobTimeout."""
    seen: list[type[BaseException]] = []

    def remember(exc: BaseException) -> bool:
        seen.append(type(exc))
        return False

    @in_memory_app.task(name="stuck", timeout=1.0, retry=RetryPolicy(retry_if=remember))
    async def stuck() -> None:
        await anyio.sleep(3600)

    await stuck.defer_async()
    started = anyio.current_time()
    await work(in_memory_app)
    assert seen == [JobTimeout]
    assert anyio.current_time() - started < 60
    assert list(statuses(in_memory_app).values()) == [("failed", 1)]


async def test_failure_is_retried_per_policy(in_memory_app: App) -> None:
    """A failing job is put back as todo with attempts counted, not left doing."""

    @in_memory_app.task(name="flaky", retry=RetryPolicy(backoff=Constant(30.0), max_attempts=3))
    async def flaky() -> None:
        raise ConnectionError

    await flaky.defer_async()
    await work(in_memory_app)
    assert list(statuses(in_memory_app).values()) == [("todo", 1)]


async def test_procrastinate_retry_strategy_is_honoured(in_memory_app: App) -> None:
    """Procrastinate's RetryStrategy(max_attempts=1, wait=0): one retry, then failed."""

    @in_memory_app.task(name="twice", retry=RetryStrategy(max_attempts=1))
    async def twice() -> None:
        raise ValueError

    await twice.defer_async()
    await work(in_memory_app)
    assert list(statuses(in_memory_app).values()) == [("failed", 2)]


async def test_unknown_task_fails_and_the_worker_goes_on(
    in_memory_app: App, in_memory_connector: InMemoryConnector
) -> None:
    """A job whose task this app does not know ends failed; other jobs still run."""
    other = App(connector=in_memory_connector)

    @other.task(name="elsewhere")
    async def elsewhere() -> None: ...

    @in_memory_app.task(name="here")
    async def here() -> None: ...

    await elsewhere.defer_async()
    await here.defer_async()
    await work(in_memory_app)
    assert statuses(in_memory_app) == {"elsewhere#1": ("failed", 1), "here#2": ("succeeded", 1)}


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt, SystemExit, lambda: ExceptionGroup("g", [ValueError()])]
)
async def test_base_exceptions_from_a_task_fail_only_that_job(
    in_memory_app: App, error: type[BaseException]
) -> None:
    """KeyboardInterrupt, SystemExit or a group raised by a task fail the job, not the worker."""

    @in_memory_app.task(name="bad")
    async def bad() -> None:
        raise error()

    @in_memory_app.task(name="good")
    async def good() -> None: ...

    await bad.defer_async()
    await good.defer_async()
    await work(in_memory_app)
    assert statuses(in_memory_app) == {"bad#1": ("failed", 1), "good#2": ("succeeded", 1)}


async def test_delete_jobs_successful(in_memory_app: App) -> None:
    """delete_jobs='successful' removes succeeded rows and keeps failed ones."""

    @in_memory_app.task(name="ok")
    async def ok() -> None: ...

    @in_memory_app.task(name="ko")
    async def ko() -> None:
        raise ValueError

    await ok.defer_async()
    await ko.defer_async()
    await work(in_memory_app, delete_jobs="successful")
    assert statuses(in_memory_app) == {"ko#2": ("failed", 1)}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"fetch_job_polling_interval": -1}, "fetch_job_polling_interval"),
        ({"delete_jobs": "sometimes"}, "delete_jobs"),
    ],
)
def test_bad_worker_options_are_named(
    in_memory_connector: InMemoryConnector, options: dict[str, object], named: str
) -> None:
    """Invalid worker options raise ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=named):
        Worker(App(connector=in_memory_connector), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), "5"])
def test_bad_task_timeout_is_named(in_memory_connector: InMemoryConnector, timeout: object) -> None:
    """timeout= must be a positive number of seconds."""
    app = App(connector=in_memory_connector)
    with pytest.raises(ConfigurationError, match="timeout"):
        app.task(timeout=timeout)  # type: ignore[arg-type]
