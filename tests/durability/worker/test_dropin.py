"""Procrastinate's promises a switching user relies on: import paths and signal handling."""

from __future__ import annotations

import signal
import sys
import types
import uuid
from pathlib import Path

import anyio
import pytest

from dawdle import App, ConfigurationError, Worker
from tests.durability.worker.helpers import job_states, running

pytestmark = pytest.mark.anyio


def tasks_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: App) -> str:
    """A module on sys.path that registers task `imported` on `app` when imported; its name.

    The way a Procrastinate project lays out `import_paths`: the tasks' module imports the
    app from the app's module (here a module made for the test) and decorates its tasks.
    """
    suffix = uuid.uuid4().hex[:8]
    app_module = types.ModuleType(f"dawdle_test_app_{suffix}")
    app_module.app = app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, app_module.__name__, app_module)
    name = f"dawdle_test_tasks_{suffix}"
    (tmp_path / f"{name}.py").write_text(
        f"from {app_module.__name__} import app\n\n"
        "RUNS = []\n\n\n"
        "@app.task(name='imported')\n"
        "async def imported():\n"
        "    RUNS.append(1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize("how", ["run_worker_async", "Worker"])
async def test_import_paths_are_imported_before_the_first_claim(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A task registered by a module of `import_paths` runs, however the worker is started."""
    project = App(connector=app.connector, import_paths=["placeholder"])
    project.import_paths = [tasks_module(tmp_path, monkeypatch, project)]
    # Deferred by a producer that does not import the tasks (which would import them here).
    job_id = await app.configure_task("imported", allow_unknown=True).defer_async()
    with anyio.fail_after(10):
        if how == "run_worker_async":
            await project.run_worker_async(wait=False)
        else:
            await Worker(project, wait=False).run()
    assert await job_states(app) == {job_id: ("succeeded", 1)}
    assert sys.modules[project.import_paths[0]].RUNS == [1]


async def test_an_import_path_that_fails_is_named(app: App) -> None:
    """A module of `import_paths` that cannot be imported stops the worker, named."""
    project = App(connector=app.connector, import_paths=["dawdle_no_such_module"])
    with pytest.raises(ConfigurationError, match="dawdle_no_such_module"):
        await Worker(project, wait=False).run()


async def test_a_worker_leaves_the_programs_signals_alone(app: App) -> None:
    """`dawdle.Worker` by default: a SIGTERM the program handles does not stop the worker."""
    ran = anyio.Event()

    @app.task(name="after_signal")
    async def after_signal() -> None:
        ran.set()

    worker = Worker(app)
    assert worker.settings.install_signal_handlers is False
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with running(worker):
            await anyio.wait_all_tasks_blocked()
            signal.raise_signal(signal.SIGTERM)
            with anyio.fail_after(5):
                assert await anext(aiter(signals)) == signal.SIGTERM
            await after_signal.defer_async()
            with anyio.fail_after(5):
                await ran.wait()


async def test_run_worker_async_stops_on_sigterm(app: App) -> None:
    """`run_worker_async`, like Procrastinate's, stops gracefully on SIGTERM by default."""
    started = anyio.Event()

    @app.task(name="idle_until_stopped")
    async def idle_until_stopped() -> None:
        started.set()

    await idle_until_stopped.defer_async()
    # The program's own receiver comes first: a worker that handles SIGTERM takes it over.
    with anyio.open_signal_receiver(signal.SIGTERM), anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.run_worker_async)
            await started.wait()
            await anyio.wait_all_tasks_blocked()
            signal.raise_signal(signal.SIGTERM)
    assert set((await job_states(app)).values()) == {("succeeded", 1)}
