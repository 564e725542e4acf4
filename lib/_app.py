"""dawdle's App and Blueprint: Procrastinate's, plus task timeouts and an anyio worker."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar, overload

import anyio
import procrastinate
from procrastinate import connector as procrastinate_connector
from procrastinate import tasks

from dawdle._errors import ConfigurationError
from dawdle._schema import SchemaManager
from dawdle._worker import Worker

P = ParamSpec("P")
R = TypeVar("R")


class _TaskTimeouts:
    """Adds `timeout=` (seconds) to `task()`; everything else is Procrastinate's."""

    @overload
    def task(self, _func: Callable[P, R], /) -> tasks.Task[P, R, P]: ...
    @overload
    def task(
        self, _func: None = None, /, *, timeout: float | None = None, **options: Any
    ) -> Callable[[Callable[P, R]], tasks.Task[P, R, P]]: ...
    def task(
        self,
        _func: Callable[P, R] | None = None,
        /,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> tasks.Task[P, R, P] | Callable[[Callable[P, R]], tasks.Task[P, R, P]]:
        """Procrastinate's `task()`; `timeout` cancels an async job after that many seconds."""
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ConfigurationError(
                f"task timeout must be a number of seconds > 0, got {timeout!r}"
            )
        register = super().task(**options)  # type: ignore[misc]

        def wrap(func: Callable[P, R]) -> tasks.Task[P, R, P]:
            task: tasks.Task[P, R, P] = register(func)
            task.dawdle_timeout = timeout  # type: ignore[attr-defined]
            return task

        return wrap if _func is None else wrap(_func)


# Procrastinate's overloads of task() are not ours (they lack timeout=), hence the ignores.
class Blueprint(_TaskTimeouts, procrastinate.Blueprint):  # type: ignore[misc]
    """Procrastinate's `Blueprint`, whose tasks take `timeout=` as well."""


class App(_TaskTimeouts, procrastinate.App):  # type: ignore[misc]
    """Procrastinate's `App` (tasks, blueprints, job manager) that runs on asyncio and Trio.

    Without a connector it uses dawdle's `PsycopgConnector` on the default database:
    DAWDLE_DSN, else libpq's environment, else an embedded PostgreSQL server.
    """

    def __init__(
        self, *, connector: procrastinate_connector.BaseConnector | None = None, **kwargs: Any
    ) -> None:
        if connector is None:
            from dawdle._connector.psycopg import PsycopgConnector  # noqa: PLC0415

            connector = PsycopgConnector()
        super().__init__(connector=connector, **kwargs)

    @property
    def schema_manager(self) -> SchemaManager:
        """Applies the schema (`apply_schema_async`) and checks it (`check_schema_async`)."""
        return SchemaManager(connector=self.connector)

    async def run_worker_async(self, **kwargs: Any) -> None:
        """Run a worker with Procrastinate's `WorkerOptions` on the running anyio backend."""
        await Worker(self, **{**self.worker_defaults, **kwargs}).run()

    def run_worker(self, *, backend: Literal["asyncio", "trio"] = "asyncio", **kwargs: Any) -> None:
        """Open the app and run a worker until it stops, on a new event loop of `backend`."""

        async def main() -> None:
            async with self.open_async():
                await self.run_worker_async(**kwargs)

        anyio.run(functools.partial(main), backend=backend)
