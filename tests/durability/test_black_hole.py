"""A server that accepts TCP connections and never answers: every command says so, in seconds.

The black hole is a listener in the test's own event loop that accepts each connection and
holds it open without a byte in reply, as a hung server or a half-dead proxy does. Without a
connect timeout, libpq would wait for ever (psycopg for 130 s); dawdle's default is
`DEFAULT_CONNECT_TIMEOUT` seconds per address.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import pytest

from dawdle import App, DatabaseUnavailable, PsycopgConnector
from dawdle._connector._arguments import DEFAULT_CONNECT_TIMEOUT

pytestmark = pytest.mark.anyio

PASSWORD: Final = "S3cret-black-hole"  # noqa: S105 (a made-up one, to check it never shows)
# Each command must give up well within this, the bound.
WITHIN_SECONDS: Final = 15
# A log record on stderr (the worker logs at INFO), as opposed to the command's error.
LOG_LINE: Final = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")

APP_MODULE: Final = """\
from dawdle import App

app = App()


@app.task(name="black_hole.noop")
async def noop() -> None:
    pass
"""

COMMANDS: Final = {
    "defer": ["defer", "--unknown", "black_hole.noop"],
    "worker": ["worker", "--app", "black_hole_app:app"],
    "healthcheck": ["healthcheck"],
    "schema --check": ["schema", "--check"],
    "schema --apply": ["schema", "--apply"],
}


@asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A local port whose connections are accepted, held open and never answered."""

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 (anyio, not Django)
        tg.cancel_scope.cancel()


async def run_command(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, str]:
    """Run `dawdle ARGV`; its exit status, how long it took, and its stderr."""
    started = time.monotonic()
    done = await anyio.run_process(
        [sys.executable, "-m", "dawdle", *argv],
        env=env,
        cwd=cwd,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    return done.returncode, time.monotonic() - started, done.stderr.decode()


async def test_every_command_names_the_silent_server_within_seconds(
    anyio_backend: str, tmp_path: Path
) -> None:
    """defer, worker, healthcheck, schema --check/--apply: exit 1 in < 15 s, one line, no password.

    The commands run at once (each on the test's runtime), so the test takes one timeout.
    """
    (tmp_path / "black_hole_app.py").write_text(APP_MODULE)
    results: dict[str, tuple[int, float, str]] = {}
    async with black_hole() as port:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PG", "DAWDLE_", "PROCRASTINATE_", "DATABASE_URL"))
        }
        env["DAWDLE_DSN"] = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/jobs"
        env["PYTHONPATH"] = str(tmp_path)

        async def run(name: str, argv: list[str]) -> None:
            results[name] = await run_command([*argv, "--backend", anyio_backend], env, tmp_path)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for name, argv in COMMANDS.items():
                    tg.start_soon(run, name, argv)

    expected = (
        f"no answer from 127.0.0.1:{port} within {DEFAULT_CONNECT_TIMEOUT} s "
        f"(connect_timeout={DEFAULT_CONNECT_TIMEOUT})"
    )
    for name, (code, took, stderr) in results.items():
        # The worker also logs (INFO) what it loads: the command's own output is the rest.
        said = [line for line in stderr.splitlines() if not LOG_LINE.match(line)]
        assert code == 1, (name, stderr)
        assert took < WITHIN_SECONDS, (name, took)
        assert len(said) == 1, (name, stderr)
        assert expected in said[0], (name, stderr)
        assert PASSWORD not in stderr, name


async def test_connect_timeout_is_configurable(anyio_backend: str) -> None:
    """connect_timeout in kwargs= replaces the default: DatabaseUnavailable after 2 s, named."""
    async with black_hole() as port:
        connector = PsycopgConnector(
            conninfo=f"host=127.0.0.1 port={port} user=postgres password={PASSWORD}",
            kwargs={"connect_timeout": 2},
        )
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as caught:
            await App(connector=connector).open_async()
        took = time.monotonic() - started
    assert 1.9 < took < DEFAULT_CONNECT_TIMEOUT
    message = str(caught.value)
    assert f"no answer from 127.0.0.1:{port} within 2 s (connect_timeout=2)" in message
    assert PASSWORD not in message
    assert "\n" not in message
