"""Finding what a `dawdle` command works on: the App named by --app, and a task on it."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from procrastinate import tasks

from dawdle._app import App
from dawdle._cli_errors import UsageError


def load_app(path: str) -> App:
    """The dawdle App at `path`: 'package.module:attribute' or 'package.module.attribute'.

    The current directory is importable, as with `python -m`.
    """
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module_name, _, attribute = path.rpartition(".")
    names = [*module_name.split("."), *attribute.split(".")]
    if not module_name or not attribute or not all(name.isidentifier() for name in names):
        raise UsageError(
            f"--app {path!r}: expected MODULE:ATTRIBUTE, for example 'myproject.tasks:app'"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise UsageError(f"--app {path!r}: no module named {missing!r}") from exc
        raise UsageError(f"--app {path!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(
            f"--app {path!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    where = module_name
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise UsageError(f"--app {path!r}: {where!r} has no attribute {name!r}") from None
        where = f"{where}.{name}"
    if not isinstance(target, App):
        kind = f"{type(target).__module__}.{type(target).__qualname__}"
        raise UsageError(f"--app {path!r} is a {kind}, not a dawdle.App")
    return target


def app_from_args(args: argparse.Namespace, *, required: bool) -> App:
    """The app named by --app/DAWDLE_APP, or dawdle.App() on the default database."""
    if args.app:
        return load_app(args.app)
    if required:
        raise UsageError(f"`dawdle {args.command}` needs --app MODULE:ATTR (or $DAWDLE_APP)")
    return App()


def find_task(app: App, name: str) -> tasks.Task[Any, Any, Any]:
    """The task registered on `app` as `name`, or a UsageError listing the known ones."""
    # Tasks in the app's import_paths register when imported (Procrastinate leaves this untyped).
    try:
        app.perform_import_paths()  # type: ignore[no-untyped-call]
    except Exception as exc:
        paths = ", ".join(map(repr, app.import_paths))
        raise UsageError(
            f"importing the app's import_paths ({paths}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    task = app.tasks.get(name)
    if task is None:
        # Procrastinate's builtin task is left out: every App() renames that shared task
        # object once more ("builtin:builtin:..."), which would only confuse the list.
        own = (
            task_name
            for task_name, task in app.tasks.items()
            if getattr(task.func, "__module__", None) != "procrastinate.builtin_tasks"
        )
        known = ", ".join(sorted(set(own))) or "none"
        raise UsageError(
            f"no task named {name!r} on this app (--unknown defers it anyway); known tasks: {known}"
        )
    return task
