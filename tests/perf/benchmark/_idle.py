"""An idle worker: CPU and queries per second of a worker with nothing to do.

Each worker runs in a process of its own (see `_child`) with its defaults (listen_notify on,
waiting for jobs) on an empty queue. Once it has settled, the process's CPU time and the
queries it sent are measured over a window: polling, heartbeats and abort checks are what
an idle worker costs the machine and the database. The three configurations' processes run
side by side: idle, they hardly disturb one another, and a window long enough to catch the
5 s polling and the 10 s heartbeats then costs its length once, not three times.
"""

from __future__ import annotations

from contextlib import ExitStack

from tests.perf.benchmark._child import Child
from tests.perf.benchmark._configurations import rotations
from tests.perf.benchmark._database import empty
from tests.perf.benchmark._figures import Metric, Section
from tests.perf.benchmark._settings import Settings

START_TIMEOUT = 30.0  # seconds a child may take to connect and warm up


def measure(dsn: str, settings: Settings) -> Section:
    """CPU % and queries/s of an idle worker process, median of `settings.idle_rounds`."""
    cpu = Metric("idle.cpu_percent", "idle worker, CPU of its process (%)", "lower", ".2f")
    queries = Metric("idle.queries_per_second", "idle worker (queries/s)", "lower", ".2f")
    empty(dsn)
    for order in rotations(settings.idle_rounds):
        with ExitStack() as stack:
            children = {
                configuration: stack.enter_context(
                    Child(
                        "idle",
                        configuration,
                        dsn,
                        seconds=settings.idle_seconds,
                        settle=settings.settle,
                    )
                )
                for configuration in order
            }
            for child in children.values():
                child.read("ready", START_TIMEOUT)
            for child in children.values():
                child.go()
            for configuration, child in children.items():
                result = child.read("done", settings.settle + settings.idle_seconds + 30)
                cpu.add(configuration, 100 * result["cpu"] / result["wall"])
                queries.add(configuration, result["queries"] / result["wall"])
    return Section(
        "idle worker",
        [cpu, queries],
        notes=[
            f"{settings.idle_seconds:g} s after {settings.settle:g} s to settle, worker "
            "defaults, a process each, the three side by side; queries sent through the "
            "connector's execute_query_* (LISTEN's own connection not counted)"
        ],
    )
