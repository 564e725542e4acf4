"""The three configurations under comparison, their tasks, and how a worker is run and stopped.

`procrastinate/asyncio` is Procrastinate's own App and PsycopgConnector (psycopg_pool);
`dawdle/asyncio` and `dawdle/trio` are `dawdle.App` with `dawdle.PsycopgConnector` on each
anyio backend. Each gets a pool of POOL_SIZE connections, all opened before anything is
timed, and the same tasks. Each round runs every configuration once, in an order rotated from
round to round, so that no configuration always runs first (or last) on a warm machine.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import anyio
import procrastinate

import dawdle

T = TypeVar("T")

CONFIGURATIONS = ("procrastinate/asyncio", "dawdle/asyncio", "dawdle/trio")
POOL_SIZE = 10
SLEEP_SECONDS = 0.01  # what a `sleep` job awaits
PAUSE_SECONDS = 0.001  # what a `pause` job awaits


def backend_of(configuration: str) -> str:
    """The anyio backend a configuration runs on."""
    return configuration.rsplit("/", 1)[-1]


def is_procrastinate(configuration: str) -> bool:
    """Whether a configuration is Procrastinate's own worker."""
    return configuration.startswith("procrastinate")


def rotations(rounds: int) -> Iterator[tuple[str, ...]]:
    """The order of the configurations in each round: shifted by one each time."""
    for number in range(rounds):
        shift = number % len(CONFIGURATIONS)
        yield CONFIGURATIONS[shift:] + CONFIGURATIONS[:shift]


def run_on(configuration: str, function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run `function(*args)` in a new event loop of the configuration's backend."""
    return anyio.run(function, *args, backend=backend_of(configuration))


@dataclass
class Bench:
    """One configuration's app, and what its tasks saw while it ran."""

    configuration: str
    app: procrastinate.App
    worked: int = 0  # jobs of any task that ran to their end in this process
    latencies: list[float] = field(default_factory=list)  # seconds from defer to start


def make_bench(configuration: str, dsn: str) -> Bench:
    """The configuration's app on `dsn`, with the benchmark's four tasks.

    `noop(i)` does nothing, `sleep(i)` awaits SLEEP_SECONDS, `pause(i)` PAUSE_SECONDS, and
    `stamp(deferred_at)` records how long ago `deferred_at` (a `time.perf_counter()` of the
    deferring process) was. Each counts itself in `worked`, which costs the same few
    nanoseconds in every configuration.
    """
    if is_procrastinate(configuration):
        connector: Any = procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=POOL_SIZE, max_size=POOL_SIZE
        )
        app = procrastinate.App(connector=connector)
    else:
        app = dawdle.App(
            connector=dawdle.PsycopgConnector(conninfo=dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        )
    bench = Bench(configuration, app)

    @app.task(name="noop")
    async def noop(i: int) -> None:
        bench.worked += 1

    @app.task(name="sleep")
    async def sleep(i: int) -> None:
        await anyio.sleep(SLEEP_SECONDS)
        bench.worked += 1

    @app.task(name="pause")
    async def pause(i: int) -> None:
        await anyio.sleep(PAUSE_SECONDS)
        bench.worked += 1

    @app.task(name="stamp")
    async def stamp(deferred_at: float) -> None:
        bench.latencies.append(time.perf_counter() - deferred_at)
        bench.worked += 1

    return bench


async def warm_up(app: procrastinate.App) -> None:
    """Use every pooled connection a few times, so that no measurement pays for a connect."""

    async def borrow() -> None:
        for _ in range(3):
            await app.connector.execute_query_one_async("SELECT pg_sleep(0.01)")

    async with anyio.create_task_group() as tg:
        for _ in range(POOL_SIZE):
            tg.start_soon(borrow)
    for _ in range(20):
        await app.connector.execute_query_one_async("SELECT 1 AS one")


@asynccontextmanager
async def opened(bench: Bench) -> AsyncIterator[Bench]:
    """The bench's app open, its pool warm, and the garbage collected: ready to be timed."""
    async with bench.app.open_async():
        await warm_up(bench.app)
        gc.collect()
        yield bench


async def run_worker(
    bench: Bench, *, stop: anyio.Event | None = None, window: float = math.inf, **options: Any
) -> float:
    """Run a worker until it returns, `stop` is set or `window` passes; the seconds it ran.

    The stop is graceful: no new jobs, the running ones finish. dawdle's worker stops when
    its scope is cancelled. Procrastinate's stops on one asyncio cancellation of its task;
    anyio's level cancellation would cancel its graceful shutdown as well, so its task is
    cancelled once, by hand. The seconds include the worker's start-up and shutdown.
    """
    stop = stop or anyio.Event()
    options = {"install_signal_handlers": False, **options}
    started = time.perf_counter()
    if is_procrastinate(bench.configuration):
        worker = asyncio.ensure_future(bench.app.run_worker_async(**options))
        worker.add_done_callback(lambda _: stop.set())
        with anyio.move_on_after(window):
            await stop.wait()
        worker.cancel()
        await asyncio.wait([worker])
        if not worker.cancelled() and (error := worker.exception()) is not None:
            raise error
    else:

        async def work() -> None:
            await bench.app.run_worker_async(**options)
            stop.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            with anyio.move_on_after(window):
                await stop.wait()
            tg.cancel_scope.cancel()
    return time.perf_counter() - started


class Run(NamedTuple):
    """What one worker did: jobs worked, seconds it ran, and this process's CPU seconds."""

    worked: int
    elapsed: float
    cpu: float


async def _work(configuration: str, dsn: str, concurrency: int, window: float) -> Run:
    bench = make_bench(configuration, dsn)
    async with opened(bench):
        cpu = time.process_time()
        elapsed = await run_worker(
            bench, window=window, concurrency=concurrency, wait=False, listen_notify=False
        )
        cpu = time.process_time() - cpu
    return Run(bench.worked, elapsed, cpu)


def work(configuration: str, dsn: str, *, concurrency: int, window: float) -> Run:
    """Work the queue in this process until it is empty or `window` is over.

    The worker polls (`wait=False, listen_notify=False`) and stops by itself once no job is
    left, so a shallow queue drains and a deep one is worked for the whole window.
    """
    return run_on(configuration, _work, configuration, dsn, concurrency, window)
