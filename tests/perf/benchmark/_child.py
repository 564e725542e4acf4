"""A worker in a process of its own, driven by the benchmark through stdin and stdout.

`python -m tests.perf.benchmark._child MODE CONFIGURATION DSN PARAMS_JSON` opens the
configuration's app, warms its pool up, prints one JSON line `{"event": "ready", ...}`,
waits for a `go` line on stdin, does what MODE says, prints `{"event": "done", ...}` and
exits. Its own process is what makes CPU time and peak RSS its own, and what lets several
workers share the cores as they would in production. Modes:

- `idle`: run a worker with its defaults (listen_notify on, waiting for jobs) and, once it
  has settled, measure for `seconds`: the process's CPU time and the queries it sent;
- `memory`: report RSS, then drain the queue (wait=False) and report the peak RSS;
- `work`: work the queue for `window` seconds (wait=False, listen_notify=False).
"""

from __future__ import annotations

import functools
import json
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio

from tests.perf.benchmark._configurations import Bench, make_bench, opened, run_on, run_worker

ROOT = Path(__file__).resolve().parents[3]  # the repository, where `tests` is importable
COUNTED = ("execute_query_async", "execute_query_one_async", "execute_query_all_async")
MEMORY_FIELDS = {"rss_kib": "VmRSS", "peak_kib": "VmHWM"}


class Child:
    """A child process of the benchmark (the parent's side of the protocol)."""

    def __init__(self, mode: str, configuration: str, dsn: str, **params: float) -> None:
        self.name = f"{mode} child on {configuration}"
        self.process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            [sys.executable, "-m", __name__, mode, configuration, dsn, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def read(self, event: str, timeout: float) -> dict[str, Any]:
        """The child's next line, which must be `event`, within `timeout` seconds.

        The child writes one line and then waits (for `go`, or to exit), so there is never a
        second line in the pipe's buffer that `select` would not see.
        """
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else ""
        if not line:
            self.process.kill()
            raise RuntimeError(f"{self.name}: no {event!r} line (exit code {self.process.wait()})")
        message: dict[str, Any] = json.loads(line)
        assert message.pop("event") == event, message
        return message

    def go(self) -> None:
        """Tell the child to start."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.process.kill()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def memory_kib() -> dict[str, int]:
    """The resident set size of this process now (`rss_kib`) and at its peak (`peak_kib`), KiB.

    From /proc/self/status (VmRSS, VmHWM): `getrusage`'s ru_maxrss would not do, as Linux
    carries it across fork and exec, so that a child starts at its parent's size.
    """
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {name: int(fields[key].split()[0]) for name, key in MEMORY_FIELDS.items()}


class QueryCounter:
    """Counts the queries sent through the app connector's three `execute_query_*` methods.

    Both workers send every query through them; LISTEN has a connection of its own and is
    not counted.
    """

    def __init__(self, connector: Any) -> None:
        self.count = 0
        for name in COUNTED:
            setattr(connector, name, self._counted(getattr(connector, name)))

    def _counted(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await method(*args, **kwargs)

        return counted


def _say(event: str, **fields: float) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _ready(**fields: float) -> None:
    _say("ready", **fields)
    line = await anyio.to_thread.run_sync(sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit(f"expected 'go', got {line!r}")


async def _idle(bench: Bench, params: dict[str, float]) -> None:
    queries = QueryCounter(bench.app.connector)
    await _ready()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(run_worker, bench, stop=stop))
        await anyio.sleep(params["settle"])
        cpu, sent, started = time.process_time(), queries.count, time.perf_counter()
        await anyio.sleep(params["seconds"])
        wall = time.perf_counter() - started
        cpu, sent = time.process_time() - cpu, queries.count - sent
        stop.set()
    _say("done", cpu=cpu, wall=wall, queries=sent)


async def _memory(bench: Bench, params: dict[str, float]) -> None:
    await _ready(**memory_kib())
    elapsed = await run_worker(
        bench,
        window=params["window"],
        concurrency=int(params["concurrency"]),
        wait=False,
        listen_notify=False,
    )
    _say("done", **memory_kib(), worked=bench.worked, elapsed=elapsed)


async def _work(bench: Bench, params: dict[str, float]) -> None:
    await _ready()
    elapsed = await run_worker(
        bench,
        window=params["window"],
        concurrency=int(params["concurrency"]),
        wait=False,
        listen_notify=False,
    )
    _say("done", worked=bench.worked, elapsed=elapsed)


MODES = {"idle": _idle, "memory": _memory, "work": _work}


async def _main(mode: str, configuration: str, dsn: str, params: dict[str, float]) -> None:
    bench = make_bench(configuration, dsn)
    async with opened(bench):
        await MODES[mode](bench, params)


if __name__ == "__main__":
    mode, configuration, dsn, params = sys.argv[1:]
    run_on(configuration, _main, mode, configuration, dsn, json.loads(params))
