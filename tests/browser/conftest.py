"""A real `dawdle dashboard` and a real worker, each its own process, over one database.

The database is the module's (`schema_dsn` from tests/conftest.py: $DAWDLE_TEST_DSN, else
dawdle's embedded server). Chromium is Debian's (`/usr/bin/chromium`, or
$DAWDLE_CHROMIUM), driven by Playwright; Playwright downloads no browser.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def poll(check: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """`check()`'s first true value, tried every 0.1 s until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)  # the polling interval, not a wait for the condition


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Process:
    """A `python -m dawdle ...` child, stopped by SIGTERM (killed if it lingers)."""

    def __init__(
        self, arguments: list[str], dsn: str, log: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        env = {**os.environ, "DAWDLE_DSN": dsn, **(extra_env or {})}
        env.pop("DAWDLE_APP", None)
        self.log = log
        self.output = log.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [sys.executable, "-m", "dawdle", *arguments],
            cwd=ROOT,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.output.close()


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The dashboard's runtime; the worker runs on the other one."""
    return str(request.param)


@contextlib.contextmanager
def dashboard(
    dsn: str, backend: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A running `dawdle dashboard` (stopped on exit): its base URL once it answers."""
    port = free_port()
    process = Process(["dashboard", "--port", str(port), "--backend", backend], dsn, log, env)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.alive(), process.log.read_text()
        try:
            return httpx.get(f"{base}/favicon.ico", timeout=1).status_code == 204
        except httpx.TransportError:
            return False

    try:
        poll(answers, timeout=30, what="the dashboard to answer")
        yield base
    finally:
        process.stop()


@pytest.fixture
def server(schema_dsn: str, backend: str, tmp_path: Path) -> Iterator[str]:
    """A running `dawdle dashboard` without a token: its base URL."""
    with dashboard(schema_dsn, backend, tmp_path / "dash.log") as base:
        yield base


@pytest.fixture
def worker(schema_dsn: str, backend: str, tmp_path: Path) -> Iterator[Process]:
    """A running `dawdle worker` of tests/browser/browser_app.py."""
    other = "trio" if backend == "asyncio" else "asyncio"
    process = Process(
        [
            "worker",
            "--app",
            "tests.browser.browser_app:app",
            "--backend",
            other,
            "--concurrency",
            "4",
        ],
        schema_dsn,
        tmp_path / "worker.log",
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def screenshots() -> Path:
    """Where screenshots go: $DAWDLE_SCREENSHOTS, else browser-results/."""
    path = Path(os.environ.get("DAWDLE_SCREENSHOTS", ROOT / "browser-results"))
    path.mkdir(parents=True, exist_ok=True)
    return path
