"""dawdle's App and Blueprint: Procrastinate's, plus task timeouts and an anyio worker."""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

import anyio
import procrastinate
from procrastinate import app as procrastinate_app
from procrastinate import connector as procrastinate_connector
from procrastinate import jobs, middleware, retry, tasks

# typing_extensions' TypeVar takes a default (PEP 696) on Python 3.11, so that a bare `App`
# means `App[BaseConnector]`.
from typing_extensions import TypeVar as DefaultTypeVar
from typing_extensions import Unpack

from dawdle import _validate
from dawdle._breaker import Breaker
from dawdle._budget_fleet import FleetRetryBudget
from dawdle._connector.psycopg import PsycopgConnector
from dawdle._errors import ConfigurationError
from dawdle._options import WorkerOptions
from dawdle._queues import QueueState, list_queue_states, pause_queue, resume_queue
from dawdle._retention import Retention
from dawdle._schema import SchemaManager
from dawdle._worker import Worker

P = ParamSpec("P")
R = TypeVar("R")
# Covariant: an App[PsycopgConnector] is an App[BaseConnector] to code that takes any App.
C_co = DefaultTypeVar(
    "C_co",
    bound=procrastinate_connector.BaseConnector,
    default=procrastinate_connector.BaseConnector,
    covariant=True,
)


class Blueprint(procrastinate.Blueprint):
    """Procrastinate's `Blueprint`, whose tasks take `timeout=`, `retry_budget=`, `breaker=`."""

    @overload
    def task(
        self,
        *,
        _func: None = None,
        name: str | None = None,
        aliases: list[str] | None = None,
        retry: retry.RetryValue = False,
        pass_context: Literal[False] = False,
        queue: str = jobs.DEFAULT_QUEUE,
        priority: int = jobs.DEFAULT_PRIORITY,
        lock: str | None = None,
        queueing_lock: str | None = None,
        task_middleware: list[middleware.TaskMiddleware] | None = None,
        timeout: float | None = None,
        retry_budget: FleetRetryBudget | None = None,
        breaker: Breaker | None = None,
    ) -> Callable[[Callable[P, R]], tasks.Task[P, R, P]]: ...
    @overload
    def task(
        self,
        *,
        _func: None = None,
        name: str | None = None,
        aliases: list[str] | None = None,
        retry: retry.RetryValue = False,
        pass_context: Literal[True],
        queue: str = jobs.DEFAULT_QUEUE,
        priority: int = jobs.DEFAULT_PRIORITY,
        lock: str | None = None,
        queueing_lock: str | None = None,
        task_middleware: list[middleware.TaskMiddleware] | None = None,
        timeout: float | None = None,
        retry_budget: FleetRetryBudget | None = None,
        breaker: Breaker | None = None,
    ) -> Callable[
        [Callable[Concatenate[procrastinate.JobContext, P], R]],
        tasks.Task[Concatenate[procrastinate.JobContext, P], R, P],
    ]: ...
    @overload
    def task(self, _func: Callable[P, R]) -> tasks.Task[P, R, P]: ...
    def task(
        self,
        _func: Callable[P, R] | None = None,
        *,
        name: str | None = None,
        aliases: list[str] | None = None,
        retry: retry.RetryValue = False,
        pass_context: bool = False,
        queue: str = jobs.DEFAULT_QUEUE,
        priority: int = jobs.DEFAULT_PRIORITY,
        lock: str | None = None,
        queueing_lock: str | None = None,
        task_middleware: list[middleware.TaskMiddleware] | None = None,
        timeout: float | None = None,
        retry_budget: FleetRetryBudget | None = None,
        breaker: Breaker | None = None,
    ) -> Any:  # the overloads type it: mypy cannot match their ParamSpec unions to one type
        """Procrastinate's `task()`, plus dawdle's options.

        `timeout` cancels an async job after that many seconds; `retry_budget` caps the
        task's retries across the fleet (`FleetRetryBudget`); `breaker` stops the fleet
        claiming its jobs while they mostly fail (`Breaker`).
        """
        seconds = None if timeout is None else _validate.number("timeout", timeout, above=0)
        if retry_budget is not None and not isinstance(retry_budget, FleetRetryBudget):
            raise ConfigurationError(
                f"retry_budget must be a dawdle.FleetRetryBudget, got {retry_budget!r}"
            )
        if breaker is not None and not isinstance(breaker, Breaker):
            raise ConfigurationError(f"breaker must be a dawdle.Breaker, got {breaker!r}")
        # The overloads above type each call; Procrastinate's own overloads cannot take a
        # `pass_context` that is a plain bool, so forward to their implementation untyped.
        procrastinate_task: Callable[..., Any] = super().task
        register = procrastinate_task(
            name=name,
            aliases=aliases,
            retry=retry,
            pass_context=pass_context,
            queue=queue,
            priority=priority,
            lock=lock,
            queueing_lock=queueing_lock,
            task_middleware=task_middleware,
        )

        def wrap(func: Callable[P, R]) -> tasks.Task[P, R, P]:
            task: tasks.Task[P, R, P] = register(func)
            task.dawdle_timeout = seconds  # type: ignore[attr-defined]
            task.dawdle_retry_budget = retry_budget  # type: ignore[attr-defined]
            task.dawdle_breaker = breaker  # type: ignore[attr-defined]
            return task

        return wrap if _func is None else wrap(_func)


# Like Procrastinate's App, dawdle's App is a Blueprint: dawdle's, for its task().
class App(Blueprint, procrastinate.App, Generic[C_co]):
    """Procrastinate's `App` (tasks, blueprints, job manager) that runs on asyncio and Trio.

    Without a connector it uses dawdle's `PsycopgConnector` on the default database:
    DAWDLE_DSN, else libpq's environment, else an embedded PostgreSQL server.
    `app.connector` has the connector's own type, e.g. for `app.connector.connection()`.
    `retention` has the workers delete finished jobs once old enough, by status, e.g.
    `{"succeeded": "1d", "failed": "30d"}` (one worker at a time, in small batches).
    """

    connector: C_co

    @overload
    def __init__(
        self: App[PsycopgConnector],
        *,
        connector: None = None,
        import_paths: Iterable[str] | None = None,
        worker_defaults: procrastinate_app.WorkerOptions | None = None,
        periodic_defaults: dict[str, Any] | None = None,
        retention: Mapping[str, str | float | datetime.timedelta] | None = None,
    ) -> None: ...
    @overload
    def __init__(
        self,
        *,
        connector: C_co,
        import_paths: Iterable[str] | None = None,
        worker_defaults: procrastinate_app.WorkerOptions | None = None,
        periodic_defaults: dict[str, Any] | None = None,
        retention: Mapping[str, str | float | datetime.timedelta] | None = None,
    ) -> None: ...
    def __init__(
        self,
        *,
        connector: procrastinate_connector.BaseConnector | None = None,
        import_paths: Iterable[str] | None = None,
        worker_defaults: procrastinate_app.WorkerOptions | None = None,
        periodic_defaults: dict[str, Any] | None = None,
        retention: Mapping[str, str | float | datetime.timedelta] | None = None,
    ) -> None:
        # Checked first: a bad value fails before a connector is made.
        self.retention = Retention.from_option(retention)
        super().__init__(
            connector=PsycopgConnector() if connector is None else connector,
            import_paths=import_paths,
            worker_defaults=worker_defaults,
            periodic_defaults=periodic_defaults,
        )

    @property
    def schema_manager(self) -> SchemaManager:
        """Applies the schema (`apply_schema_async`) and checks it (`check_schema_async`)."""
        return SchemaManager(connector=self.connector)

    async def pause_queue_async(self, queue: str, *, reason: str | None = None) -> bool:
        """Pause `queue`: no dawdle worker claims its jobs until it is resumed.

        Its jobs wait as 'todo' (running ones finish); Procrastinate's own workers ignore
        pauses. `reason` is shown by `dawdle queue list`. False if the queue was paused
        already (that pause is kept as it is). Needs `dawdle schema --apply` (version 2).
        """
        return await pause_queue(self.connector, queue, reason=reason)

    async def resume_queue_async(self, queue: str) -> bool:
        """Resume `queue`, and wake the dawdle workers listening for it; False if not paused."""
        return await resume_queue(self.connector, queue)

    async def list_queue_states_async(self) -> list[QueueState]:
        """Every queue that has jobs or a pause, by name, and whether it is paused."""
        return await list_queue_states(self.connector)

    async def run_worker_async(self, **kwargs: Unpack[WorkerOptions]) -> None:
        """Run a worker with these options (over `worker_defaults`) on the running anyio backend.

        As in Procrastinate, this worker stops on SIGINT and SIGTERM unless
        `install_signal_handlers=False`; a `dawdle.Worker` made directly leaves signals alone.
        """
        options: WorkerOptions = {"install_signal_handlers": True, **self.worker_defaults, **kwargs}
        await Worker(self, **options).run()

    # Procrastinate types run_worker's options as Any; these are checked, so a typo is an error.
    def run_worker(  # type: ignore[override]
        self, *, backend: Literal["asyncio", "trio"] = "asyncio", **kwargs: Unpack[WorkerOptions]
    ) -> None:
        """Open the app and run a worker until it stops, on a new event loop of `backend`."""

        async def main() -> None:
            async with self.open_async():
                await self.run_worker_async(**kwargs)

        anyio.run(functools.partial(main), backend=backend)
