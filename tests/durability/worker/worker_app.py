"""A dawdle app for worker subprocesses: `python worker_app.py DSN BACKEND [GRACEFUL_TIMEOUT]`.

It runs a worker with its own signal handlers on BACKEND (asyncio or trio) until a signal
stops it. Its tasks print "started <job id>" (flushed) so the parent knows a job is in
progress: `worker_app.sleep` then sleeps for its `seconds` argument, `worker_app.spin` (sync)
never returns and never checks `should_abort()`.

`dawdle worker --app tests.durability.worker.worker_app:app` runs the same tasks, on the
database in $DAWDLE_WORKER_APP_DSN; $DAWDLE_SYNC_ABORT_TIMEOUT shortens the worker's wait
for sync jobs at shutdown.
"""

from __future__ import annotations

import os
import sys
import time

import anyio
import procrastinate

import dawdle
from dawdle._worker import shutdown


def make_app(dsn: str) -> dawdle.App:
    """The app, with its task, on the database at `dsn`."""
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, max_size=4))

    @app.task(name="worker_app.sleep", pass_context=True)
    async def sleep(context: procrastinate.JobContext, seconds: float) -> None:
        print(f"started {context.job.id}", flush=True)
        await anyio.sleep(seconds)

    @app.task(name="worker_app.spin", pass_context=True)
    def spin(context: procrastinate.JobContext) -> None:
        print(f"started {context.job.id}", flush=True)
        while True:  # the behaviour: a sync job that never ends and never checks should_abort()
            time.sleep(0.05)

    return app


if "DAWDLE_SYNC_ABORT_TIMEOUT" in os.environ:
    shutdown.SYNC_ABORT_TIMEOUT = float(os.environ["DAWDLE_SYNC_ABORT_TIMEOUT"])  # type: ignore[misc]
app = make_app(os.environ.get("DAWDLE_WORKER_APP_DSN", ""))


def main(argv: list[str]) -> None:
    """Run a worker until SIGINT or SIGTERM."""
    dsn, backend = argv[0], argv[1]
    graceful = float(argv[2]) if len(argv) > 2 else 0.5
    make_app(dsn).run_worker(
        backend=backend,  # type: ignore[arg-type]
        install_signal_handlers=True,
        shutdown_graceful_timeout=graceful,
        listen_notify=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
