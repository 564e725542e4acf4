"""A dawdle app for worker subprocesses: `python worker_app.py DSN BACKEND [GRACEFUL_TIMEOUT]`.

It runs a worker with its own signal handlers on BACKEND (asyncio or trio) until a signal
stops it. Its one task, `worker_app.sleep`, prints "started <job id>" (flushed) so the
parent knows a job is in progress, then sleeps for its `seconds` argument.
"""

from __future__ import annotations

import sys

import anyio
import procrastinate

import dawdle


def make_app(dsn: str) -> dawdle.App:
    """The app, with its task, on the database at `dsn`."""
    app = dawdle.App(connector=dawdle.PsycopgConnector(conninfo=dsn, max_size=4))

    @app.task(name="worker_app.sleep", pass_context=True)
    async def sleep(context: procrastinate.JobContext, seconds: float) -> None:
        print(f"started {context.job.id}", flush=True)
        await anyio.sleep(seconds)

    return app


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
