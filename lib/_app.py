"""dawdle's App and Blueprint: Procrastinate's, plus task timeouts and an anyio worker."""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import anyio
import procrastinate
from procrastinate import connector as procrastinate_connector

from dawdle._errors import ConfigurationError
from dawdle._schema import SchemaManager
from dawdle._worker import Worker


class _TaskTimeouts:
    """Adds `timeout=` (seconds) to `task()`; everything else is Procrastinate's."""

    def task(  # type: ignore[no-untyped-def]
        self, _func: Any = None, *, timeout: float | None = None, **options: Any
    ):
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

        def wrap(func: Any) -> Any:
            task = register(func)
            task.dawdle_timeout = timeout
            return task

        return wrap if _func is None else wrap(_func)


class Blueprint(_TaskTimeouts, procrastinate.Blueprint):
    """Procrastinate's `Blueprint`, whose tasks take `timeout=` as well."""


class App(_TaskTimeouts, procrastinate.App):
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
