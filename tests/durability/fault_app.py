"""A dawdle App for worker subprocesses in the fault and soak tests.

Run as `python -m dawdle worker --app tests.durability.fault_app:app ...` from the project
root. It reads its database from $DAWDLE_FAULT_DSN and extra worker options (for example
`{"stalled_worker_timeout": 2}`, which the CLI has no flag for) from $DAWDLE_FAULT_WORKER, a
JSON object. Tests build the same app on their own database with `make_app(dsn)`.

Every task leaves its side effects in tables of the same database (`SETUP_SQL`), written
through the worker's own connector, so the tests read what ran, where and when:

- `fault_runs`: one row per run of a job, keyed by (job id, attempt), with the server's
  clock at start and end. `attempt` numbers the job's runs from 0, counted from its 'started'
  events (its `attempts` column skips runs cut short by a dead worker or a shutdown). A
  second run under the same number would violate the key.
- `fault_once`: one row per job, keyed by job id, for the exactly-once test.

`fault.poison` writes nothing: it kills its worker process (SIGKILL) each time it runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Final

import anyio
import anyio.abc
import procrastinate
from procrastinate import exceptions

from dawdle import App, PsycopgConnector
from dawdle.backoff import Constant, RetryPolicy

ROOT: Final = Path(__file__).resolve().parents[2]
APP_PATH: Final = "tests.durability.fault_app:app"
DSN_ENV: Final = "DAWDLE_FAULT_DSN"
WORKER_ENV: Final = "DAWDLE_FAULT_WORKER"
# Set in a worker's environment: jobs deferred with block=True never finish there.
BLOCK_ENV: Final = "DAWDLE_FAULT_BLOCK"

# Soak jobs: each run fails, times out or succeeds at random; this many runs at most.
SOAK_MAX_ATTEMPTS: Final = 4
SOAK_RETRY_DELAY: Final = 0.2
SOAK_TIMEOUT: Final = 0.2

SETUP_SQL: Final = """
CREATE TABLE IF NOT EXISTS fault_runs (
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL,
    plan text NOT NULL DEFAULT 'ok',
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS fault_once (
    job_id bigint PRIMARY KEY,
    queue_name text NOT NULL,
    lock text,
    priority integer NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz
);
"""

START_RUN: Final = """
INSERT INTO fault_runs (job_id, attempt, pid, plan)
VALUES (%(job_id)s, %(attempt)s, %(pid)s, %(plan)s)
"""
END_RUN: Final = """
UPDATE fault_runs SET ended_at = clock_timestamp()
 WHERE job_id = %(job_id)s AND attempt = %(attempt)s
"""
START_ONCE: Final = """
INSERT INTO fault_once (job_id, queue_name, lock, priority, pid)
VALUES (%(job_id)s, %(queue)s, %(lock)s, %(priority)s, %(pid)s)
"""
END_ONCE: Final = "UPDATE fault_once SET ended_at = clock_timestamp() WHERE job_id = %(job_id)s"


class PlannedFailure(Exception):  # noqa: N818 (named for what the test planned)
    """The failure a soak job drew for this run."""


# This run's number: the claims of the job before this one (each wrote a 'started' event).
RUN_NUMBER: Final = """
SELECT count(*) - 1 AS run FROM procrastinate_events
 WHERE job_id = %(job_id)s AND type = 'started'
"""


async def _ids(context: procrastinate.JobContext) -> dict[str, Any]:
    job = context.job
    row = await context.app.connector.execute_query_one_async(RUN_NUMBER, job_id=job.id)
    return {"job_id": job.id, "attempt": row["run"]}


def make_app(dsn: str | None = None) -> App:
    """The app on `dsn` (default $DAWDLE_FAULT_DSN), worker options from $DAWDLE_FAULT_WORKER."""
    worker_defaults: dict[str, Any] = json.loads(os.environ.get(WORKER_ENV) or "{}")
    connector = PsycopgConnector(
        conninfo=dsn or os.environ.get(DSN_ENV) or None, max_size=12, reconnect_timeout=60.0
    )
    app = App(connector=connector, worker_defaults=worker_defaults)  # type: ignore[arg-type]

    # A task that writes to the database can meet an outage there: retry it like any
    # application would (its run rows are keyed by attempt, so a retry never collides).
    @app.task(
        name="fault.run",
        pass_context=True,
        retry=RetryPolicy(
            backoff=Constant(0.1), max_attempts=5, retry_on=(exceptions.ConnectorException,)
        ),
    )
    async def run(
        context: procrastinate.JobContext, hold: float = 0.0, *, block: bool = False
    ) -> None:
        """Record the run, hold for `hold` s (forever if `block` and $DAWDLE_FAULT_BLOCK)."""
        ids = await _ids(context)
        connector = context.app.connector
        await connector.execute_query_async(START_RUN, **ids, pid=os.getpid(), plan="ok")
        if block and os.environ.get(BLOCK_ENV):
            await anyio.sleep_forever()
        await anyio.sleep(hold)
        await connector.execute_query_async(END_RUN, **ids)

    @app.task(name="fault.slow_first", pass_context=True)
    async def slow_first(context: procrastinate.JobContext, first: float, later: float) -> None:
        """Record the run; the first attempt holds for `first` s, later ones for `later` s."""
        ids = await _ids(context)
        connector = context.app.connector
        await connector.execute_query_async(START_RUN, **ids, pid=os.getpid(), plan="ok")
        await anyio.sleep(first if ids["attempt"] == 0 else later)
        await connector.execute_query_async(END_RUN, **ids)

    @app.task(name="fault.once", pass_context=True)
    async def once(context: procrastinate.JobContext, hold: float = 0.0) -> None:
        """Record the job in fault_once (a second run violates its key), hold, record the end."""
        job = context.job
        connector = context.app.connector
        await connector.execute_query_async(
            START_ONCE,
            job_id=job.id,
            queue=job.queue,
            lock=job.lock,
            priority=job.priority,
            pid=os.getpid(),
        )
        if hold:
            await anyio.sleep(hold)
        await connector.execute_query_async(END_ONCE, job_id=job.id)

    @app.task(name="fault.poison")
    async def poison() -> None:
        """Kill this worker process, as a segfault or the OOM killer would, at every run."""
        os.kill(os.getpid(), signal.SIGKILL)

    @app.task(
        name="fault.soak",
        pass_context=True,
        timeout=SOAK_TIMEOUT,
        retry=RetryPolicy(backoff=Constant(SOAK_RETRY_DELAY), max_attempts=SOAK_MAX_ATTEMPTS),
    )
    async def soak(
        context: procrastinate.JobContext, fail: float, time_out: float, hold: float
    ) -> None:
        """Draw this run's fate (fail, time out, succeed) with the given odds, record it, do it."""
        ids = await _ids(context)
        draw = random.random()
        plan = "fail" if draw < fail else "timeout" if draw < fail + time_out else "ok"
        connector = context.app.connector
        await connector.execute_query_async(START_RUN, **ids, pid=os.getpid(), plan=plan)
        if plan == "fail":
            raise PlannedFailure(f"run {ids['attempt'] + 1} of job {ids['job_id']} drew a failure")
        await anyio.sleep(SOAK_TIMEOUT * 5 if plan == "timeout" else hold)
        await connector.execute_query_async(END_RUN, **ids)

    return app


app = make_app()


class WorkerProcesses:
    """`dawdle worker` subprocesses on this app; each logs to a file of its own under `logs`.

    Use it as `async with WorkerProcesses(logs) as workers:`; leaving the block (or `close()`)
    kills whatever is still running, so a failed test leaves no worker behind.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[anyio.abc.Process] = []
        self._files: list[IO[bytes]] = []

    async def __aenter__(self) -> WorkerProcesses:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _log_file(self, name: str) -> IO[bytes]:
        file = (self.logs / f"{len(self._files)}-{name}.log").open("wb")
        self._files.append(file)
        return file

    async def start(
        self,
        dsn: str,
        backend: str,
        *cli_options: str,
        block: bool = False,
        **worker_options: float,
    ) -> anyio.abc.Process:
        """Start `dawdle worker --app fault_app:app --backend BACKEND CLI_OPTIONS...`.

        `worker_options` (e.g. stalled_worker_timeout=2) reach the worker through the app's
        worker_defaults; `block` makes the jobs deferred with block=True hang in this worker.
        """
        env = {**os.environ, DSN_ENV: dsn, WORKER_ENV: json.dumps(worker_options)}
        env.pop(BLOCK_ENV, None)
        if block:
            env[BLOCK_ENV] = "1"
        log = self._log_file(backend)
        command = [sys.executable, "-m", "dawdle", "worker", "--app", APP_PATH]
        process = await anyio.open_process(
            [*command, "--backend", backend, *cli_options],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        self.processes.append(process)
        return process

    async def stop(
        self, process: anyio.abc.Process, *, sig: int = signal.SIGTERM, within: float = 30.0
    ) -> int:
        """Send `sig` and return the exit code, which must come within `within` seconds."""
        process.send_signal(sig)
        return await self.wait(process, within=within)

    async def wait(self, process: anyio.abc.Process, *, within: float) -> int:
        """The exit code of `process`, which must exit within `within` seconds."""
        with anyio.move_on_after(within):
            return await process.wait()
        raise AssertionError(f"worker {process.pid} still running after {within} s{self.tails()}")

    def tails(self, lines: int = 15) -> str:
        """The last lines of every worker's log, for assertion messages."""
        parts = []
        for file in self._files:  # written by the workers, never through these objects
            text = Path(file.name).read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"\n--- {Path(file.name).name}\n" + "\n".join(text))
        return "".join(parts)

    async def close(self) -> None:
        """Kill the workers still running, reap them, close the logs."""
        for process in self.processes:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
        for file in self._files:
            file.close()
