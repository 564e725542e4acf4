"""The outage scenario: a dependency down 100 % for 30 s under four worker processes.

`python -m tests.perf.benchmark --scenario outage` (issue 13, item 5). Each job calls the
dependency once per run and raises if it is down; its task retries with dawdle's default
exponential backoff (`Exponential(1, 2, jitter="full")`, capped at 30 s here so that a
mode drains within the scenario's time) and enough attempts to outlast the outage. Per
mode, on an emptied queue:

1. four `dawdle.Worker` processes start (concurrency 10 each; asyncio and Trio in turn);
2. at T0 the dependency goes down until T0 + 30 s, a backlog of 200 jobs is deferred, and
   a producer defers 20 jobs/s until the end;
3. once every job deferred before the recovery has finished (or after a cap), the producer
   and the workers stop, and the figures are read from the database.

The dependency is a row and a table in PostgreSQL: a call is one INSERT into
`outage_calls` that says whether the server's clock has passed `outage_switch.down_until`,
so the calls of four processes are counted on one clock, each with its job and result.

Modes differ only in the task's keyword arguments, resolved by name on `dawdle` at run
time (`MODES`): a mode whose names this build lacks is reported as not available and
skipped, and the others run. Everything is printed side by side, and written as JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

import anyio
import anyio.to_thread
import psycopg
from psycopg.rows import dict_row

import dawdle
from dawdle.backoff import Exponential, RetryPolicy
from tests.perf.benchmark._report import machine, versions

ROOT: Final = Path(__file__).resolve().parents[3]
TASK: Final = "outage.call"
BACKENDS: Final = ("asyncio", "trio")

# Each mode: task keyword -> (name of a `dawdle` attribute, its keyword arguments).
MODES: Final[dict[str, dict[str, tuple[str, dict[str, float]]]]] = {
    "none": {},
    "budget": {
        "retry_budget": (
            "FleetRetryBudget",
            {"ratio": 0.2, "min_per_second": 1.0, "window": 60.0},
        ),
    },
    "budget+breaker": {
        "retry_budget": (
            "FleetRetryBudget",
            {"ratio": 0.2, "min_per_second": 1.0, "window": 60.0},
        ),
        "breaker": (
            "Breaker",
            {
                "failure_ratio": 0.5,
                "window": 60.0,
                "min_calls": 20,
                "open_for": 30.0,
                "max_open_for": 600.0,
                "half_open_probes": 1,
            },
        ),
    },
}

SETUP: Final = """
CREATE TABLE IF NOT EXISTS outage_switch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    down_until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS outage_calls (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ok boolean NOT NULL
);
"""
# Each mode starts from nothing: the budget's and the breaker's rows go too, else a mode
# inherits the previous one's far-future retry slots (its retries then wait for them).
RESET: Final = """
TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_events, outage_calls,
         dawdle_retry_budgets, dawdle_breakers
RESTART IDENTITY CASCADE;
DELETE FROM outage_switch;
INSERT INTO outage_switch (down_until) VALUES ('infinity');
"""
# The dependency: one call, answered by whether the outage is over on the server's clock.
CALL: Final = """
INSERT INTO outage_calls (job_id, ok)
SELECT %(job_id)s, clock_timestamp() >= down_until FROM outage_switch
RETURNING ok
"""
START_OUTAGE: Final = """
UPDATE outage_switch SET down_until = now() + make_interval(secs => %(seconds)s)
RETURNING now() AS t0, down_until AS recovered
"""
# Jobs deferred before the recovery that have not finished yet.
PENDING: Final = """
SELECT count(*) AS n
  FROM procrastinate_jobs AS job
  JOIN procrastinate_events AS deferred ON deferred.job_id = job.id AND deferred.type = 'deferred'
 WHERE deferred.at < %(recovered)s AND job.status IN ('todo', 'doing')
"""
FIGURES: Final = """
WITH early AS (
    SELECT job.id, job.status
      FROM procrastinate_jobs AS job
      JOIN procrastinate_events AS deferred
        ON deferred.job_id = job.id AND deferred.type = 'deferred'
     WHERE deferred.at < %(recovered)s
)
SELECT
    (SELECT count(*) FROM procrastinate_jobs) AS jobs,
    (SELECT count(*) FROM early) AS jobs_before_recovery,
    (SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded') AS succeeded,
    (SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed') AS failed,
    (SELECT count(*) FROM early WHERE status IN ('todo', 'doing')) AS undrained,
    (SELECT count(*) FROM outage_calls WHERE at < %(recovered)s) AS calls_during,
    (SELECT count(DISTINCT job_id) FROM outage_calls WHERE at < %(recovered)s)
        AS jobs_called_during,
    (SELECT count(*) FROM outage_calls WHERE at >= %(recovered)s AND at < %(drained)s)
        AS calls_after,
    (SELECT count(*) FROM outage_calls JOIN early ON early.id = outage_calls.job_id
      WHERE at >= %(recovered)s AND at < %(drained)s) AS early_calls_after,
    (SELECT count(*) FROM procrastinate_events WHERE type = 'deferred_for_retry') AS retries,
    (SELECT extract(epoch FROM max(done.at) - %(recovered)s)
       FROM procrastinate_events AS done JOIN early ON early.id = done.job_id
      WHERE done.type IN ('succeeded', 'failed', 'aborted')) AS drain_seconds
"""
# Calls per `bucket` seconds from T0, with how many failed.
TIMELINE: Final = """
SELECT floor(extract(epoch FROM at - %(t0)s) / %(bucket)s)::int AS slot,
       count(*) AS calls
  FROM outage_calls
 WHERE at >= %(t0)s AND at < %(drained)s
 GROUP BY slot ORDER BY slot
"""


@dataclass(frozen=True)
class OutageSettings:
    """The scenario's sizes; `QUICK_OUTAGE` is the short one (`--quick`)."""

    outage: float = 30.0  # seconds the dependency is down
    backlog: int = 200  # jobs waiting at T0
    rate: float = 20.0  # jobs deferred per second from T0 on
    processes: int = 4
    concurrency: int = 10  # of each worker process
    max_delay: float = 30.0  # cap of the default exponential backoff
    max_attempts: int = 20
    drain_cap: float = 90.0  # seconds after the recovery before a mode is stopped undrained
    bucket: float = 5.0  # seconds per column of the timeline
    settle: float = 1.0  # seconds the workers get to register and listen before T0


FULL_OUTAGE: Final = OutageSettings()
QUICK_OUTAGE: Final = OutageSettings(outage=10.0, backlog=50, drain_cap=40.0)


def policy(settings: OutageSettings) -> RetryPolicy:
    """The task's retry policy: the default backoff, capped, with enough attempts."""
    return RetryPolicy(
        backoff=Exponential(1.0, 2.0, jitter="full", max_delay=settings.max_delay),
        max_attempts=settings.max_attempts,
    )


def missing_names(mode: str) -> list[str]:
    """The `dawdle` names that `mode` needs and this build lacks."""
    return sorted({name for name, _ in MODES[mode].values() if not hasattr(dawdle, name)})


def task_options(mode: str) -> dict[str, Any]:
    """The task keyword arguments of `mode`, built from this build's `dawdle`."""
    return {
        keyword: getattr(dawdle, name)(**arguments)
        for keyword, (name, arguments) in MODES[mode].items()
    }


class DependencyDownError(Exception):
    """The dependency answered with an error (it is down)."""


# -- the worker processes ----------------------------------------------------------------------


def make_app(dsn: str, mode: str, settings: OutageSettings) -> dawdle.App:
    """The workers' app: one task calling the dependency, with the mode's options."""
    connector = dawdle.PsycopgConnector(conninfo=dsn, max_size=settings.concurrency + 2)
    app = dawdle.App(connector=connector)

    @app.task(name=TASK, pass_context=True, retry=policy(settings), **task_options(mode))
    async def call(context: dawdle.JobContext) -> None:
        row = await context.app.connector.execute_query_one_async(CALL, job_id=context.job.id)
        if not row["ok"]:
            raise DependencyDownError("the dependency is down")

    return app


async def _worker(dsn: str, mode: str, settings: OutageSettings, index: int) -> None:
    """Work until a line (or end of file) on stdin; print "ready" once running."""
    app = make_app(dsn, mode, settings)
    async with app.open_async():
        worker = dawdle.Worker(app, name=f"outage-{index}", concurrency=settings.concurrency)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            worker.stop()


class WorkerProcess:
    """One worker process of the scenario, its output in a log file of its own."""

    def __init__(self, dsn: str, mode: str, settings: OutageSettings, index: int, log: IO[bytes]):
        self.log = log
        self.process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            [
                sys.executable,
                "-m",
                __name__,
                dsn,
                mode,
                json.dumps(asdict(settings)),
                str(index),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float) -> None:
        """Return once the process printed "ready"; raise with its log if it does not."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.strip() == "ready":
                return
            if not line:
                break
        raise RuntimeError(f"a worker process did not start:\n{self.tail()}")

    def stop(self) -> int:
        """Ask the worker to stop; its exit code (killed after 60 s)."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def tail(self, lines: int = 20) -> str:
        """The end of the process's log."""
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def worker_processes(dsn: str, mode: str, settings: OutageSettings) -> Iterator[None]:
    """`settings.processes` workers running while the block runs; stopped (or killed) after."""
    with contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dawdle-outage-")))
        files = [
            stack.enter_context((logs / f"worker-{index}.log").open("wb"))
            for index in range(settings.processes)
        ]
        processes: list[WorkerProcess] = []

        def stop_all() -> None:  # before the logs are closed: it may show their ends
            codes = [process.stop() for process in processes]
            if any(codes):
                tails = "\n".join(process.tail() for process in processes)
                raise RuntimeError(f"worker processes exited with {codes}:\n{tails}")

        stack.callback(stop_all)
        for index, log in enumerate(files):
            processes.append(WorkerProcess(dsn, mode, settings, index, log))
        for process in processes:
            process.wait_ready(60.0)
        yield


# -- one mode ----------------------------------------------------------------------------------


@dataclass
class ModeResult:
    """What one mode measured (or why it did not run)."""

    mode: str
    available: bool
    why: str = ""  # why it did not run
    figures: dict[str, float] = field(default_factory=dict)
    timeline: list[int] = field(default_factory=list)  # calls per bucket from T0
    recovered_slot: int = 0  # the timeline's slot in which the dependency recovered
    wall_seconds: float = 0.0


def _execute(dsn: str, query: str, **params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        cursor = conn.execute(query, params or None)
        return cursor.fetchall() if cursor.description else []


async def _produce(app: dawdle.App, rate: float, stop: anyio.Event) -> None:
    """Defer one job every 1/rate s, on a fixed schedule, until `stop`."""
    task = app.configure_task(TASK)
    started, sent = time.monotonic(), 0
    while not stop.is_set():
        await task.defer_async()
        sent += 1
        await anyio.sleep(max(0.0, started + sent / rate - time.monotonic()))


async def _drive(dsn: str, settings: OutageSettings) -> tuple[datetime, datetime, datetime]:
    """T0: the outage starts, the backlog and the stream arrive; return at the drain or cap.

    Returns T0, the recovery and the end of the drain, on the server's clock.
    """
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, max_size=4))
    async with app.open_async():
        connector = app.connector
        times = await connector.execute_query_one_async(START_OUTAGE, seconds=settings.outage)
        t0, recovered = times["t0"], times["recovered"]
        await app.configure_task(TASK).batch_defer_async(*({} for _ in range(settings.backlog)))
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_produce, app, settings.rate, stop)
            await anyio.sleep(settings.outage)
            with anyio.move_on_after(settings.drain_cap):
                # Another process's commits send this one no event: poll, on a bounded loop.
                while True:
                    pending = await connector.execute_query_one_async(PENDING, recovered=recovered)
                    if not pending["n"]:
                        break
                    await anyio.sleep(0.25)
            stop.set()
        drained = (await connector.execute_query_one_async("SELECT now() AS now"))["now"]
    return t0, recovered, drained


def run_mode(dsn: str, mode: str, settings: OutageSettings) -> ModeResult:
    """Run the scenario once with `mode`'s task options; its figures."""
    missing = missing_names(mode)
    if missing:
        why = f"not available in this build (dawdle has no {', '.join(missing)})"
        return ModeResult(mode, available=False, why=why)
    try:
        make_app(dsn, mode, settings)  # the workers' app, built here first: no connection yet
    except (TypeError, ValueError, dawdle.DawdleError) as exc:
        why = f"not available in this build (the task refused its options: {exc})"
        return ModeResult(mode, available=False, why=why)
    started = time.perf_counter()
    _execute(dsn, RESET)
    try:
        with worker_processes(dsn, mode, settings):
            time.sleep(settings.settle)
            t0, recovered, drained = anyio.run(_drive, dsn, settings)
    except RuntimeError as exc:  # a worker process that did not start or did not exit 0
        print(exc, file=sys.stderr)
        return ModeResult(mode, available=False, why="failed: its worker processes failed")
    (row,) = _execute(dsn, FIGURES, recovered=recovered, drained=drained)
    slots = _execute(dsn, TIMELINE, t0=t0, drained=drained, bucket=settings.bucket)
    timeline = [0] * (max((slot["slot"] for slot in slots), default=-1) + 1)
    for slot in slots:
        timeline[slot["slot"]] = slot["calls"]
    after = max((drained - recovered).total_seconds(), 1e-9)
    figures = {
        "jobs deferred": row["jobs"],
        "jobs deferred before the recovery": row["jobs_before_recovery"],
        "calls during the outage": row["calls_during"],
        "calls/s during the outage": row["calls_during"] / settings.outage,
        "of which retries": row["calls_during"] - row["jobs_called_during"],
        "calls after the recovery, to the drain": row["calls_after"],
        "of which by jobs deferred before it": row["early_calls_after"],
        "calls/s after the recovery": row["calls_after"] / after,
        "retries scheduled (all)": row["retries"],
        "jobs failed": row["failed"],
        "jobs succeeded": row["succeeded"],
        "jobs deferred before the recovery left undrained": row["undrained"],
        "drain: recovery to last early job done (s)": (
            math.nan if row["undrained"] or row["drain_seconds"] is None else row["drain_seconds"]
        ),
    }
    return ModeResult(
        mode,
        available=True,
        figures={key: float(value) for key, value in figures.items()},
        timeline=timeline,
        recovered_slot=int(settings.outage // settings.bucket),
        wall_seconds=time.perf_counter() - started,
    )


# -- the report --------------------------------------------------------------------------------


def _cell(value: float) -> str:
    if math.isnan(value):
        return "not drained"
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:,.1f}"


def render(results: list[ModeResult], settings: OutageSettings, server: str, date: datetime) -> str:
    """Machine, versions, what was measured, then one column per mode."""
    host = machine()
    lines = [
        f"{host['platform']}, {host['cores']} cores, Python {host['python']}",
        ", ".join(f"{name} {version}" for name, version in versions().items()),
        f"server: {server}",
        f"{date:%Y-%m-%d %H:%M:%S %Z}, outage scenario",
        "",
        f"A dependency fails 100 % for {settings.outage:g} s. {settings.processes} worker "
        f"processes (dawdle.Worker, concurrency {settings.concurrency}, asyncio and Trio in "
        f"turn); each job calls the dependency once per run. At T0 {settings.backlog} jobs "
        f"wait and {settings.rate:g} jobs/s arrive until the end. Retries: "
        f"RetryPolicy(Exponential(1, 2, jitter='full', max_delay={settings.max_delay:g}), "
        f"max_attempts={settings.max_attempts}). The drain ends when every job deferred "
        f"before the recovery has finished (at most {settings.drain_cap:g} s after it). "
        "Calls are counted by the dependency itself (one row each, server clock). A job's "
        "jitter is drawn from a generator seeded by its id and attempt, and ids start at 1 "
        "in each mode, so every mode (and every run) meets the same draws.",
        "",
    ]
    ran = [result for result in results if result.available]
    width = max(len(key) for result in ran for key in result.figures) if ran else 40
    widths = [max(len(result.mode), 14) + 2 for result in results]
    lines.append(
        f"{'':<{width}}"
        + "".join(f"{result.mode:>{w}}" for result, w in zip(results, widths, strict=True))
    )
    lines.append("-" * len(lines[-1]))
    keys = list(ran[0].figures) if ran else []
    for key in keys:
        cells = [_cell(result.figures[key]) if result.available else "-" for result in results]
        lines.append(
            f"{key:<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    lines.append("")
    for result in results:
        if not result.available:
            lines.append(f"{result.mode}: {result.why}; skipped")
            continue
        during = " ".join(
            f"{n / settings.bucket:.0f}" for n in result.timeline[: result.recovered_slot]
        )
        after = " ".join(
            f"{n / settings.bucket:.0f}" for n in result.timeline[result.recovered_slot :]
        )
        lines.append(
            f"{result.mode}: calls/s per {settings.bucket:g} s from T0: {during} | recovered | "
            f"{after}  (mode's wall time {result.wall_seconds:.0f} s)"
        )
    return "\n".join(lines)


def server_version(dsn: str) -> str:
    """The server's `version()`."""
    (row,) = _execute(dsn, "SELECT version() AS version")
    return str(row["version"])


def main(dsn: str, *, quick: bool, output: Path) -> None:
    """Run every mode on the database at `dsn`, print them side by side, write the JSON."""
    settings = QUICK_OUTAGE if quick else FULL_OUTAGE
    date = datetime.now().astimezone()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SETUP)
    results = []
    for mode in MODES:
        print(f"outage scenario: mode {mode}", file=sys.stderr, flush=True)
        results.append(run_mode(dsn, mode, settings))
    server = server_version(dsn)
    print(render(results, settings, server, date))
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{date:%Y%m%d-%H%M%S}-outage.json"
    document = {
        "scenario": "outage",
        "date": date.isoformat(),
        "machine": machine(),
        "versions": versions(),
        "server": server,
        "settings": asdict(settings),
        "modes": {
            result.mode: {
                **asdict(result),
                "figures": {
                    key: None if math.isnan(value) else value
                    for key, value in result.figures.items()
                },
            }
            for result in results
        },
    }
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    worker_dsn, worker_mode, worker_settings, worker_index = sys.argv[1:]
    index = int(worker_index)
    anyio.run(
        _worker,
        worker_dsn,
        worker_mode,
        OutageSettings(**json.loads(worker_settings)),
        index,
        backend=BACKENDS[index % len(BACKENDS)],
    )
