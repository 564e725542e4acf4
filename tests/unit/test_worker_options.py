"""Worker and task options are checked when they are given, and a bad one is named."""

from __future__ import annotations

import pytest

from dawdle import App, ConfigurationError, InMemoryConnector, Worker


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"fetch_job_polling_interval": -1}, "fetch_job_polling_interval"),
        ({"delete_jobs": "sometimes"}, "delete_jobs"),
        ({"unknown_tasks": "skip"}, "unknown_tasks.*'skip'"),
        ({"max_recoveries": -1}, "max_recoveries.*-1"),
        ({"max_recoveries": 2.5}, "max_recoveries.*2.5"),
        ({"max_recoveries": True}, "max_recoveries.*True"),
    ],
)
def test_bad_worker_options_are_named(
    in_memory_connector: InMemoryConnector, options: dict[str, object], named: str
) -> None:
    """Invalid worker options raise ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match=named):
        Worker(App(connector=in_memory_connector), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), "5"])
def test_bad_task_timeout_is_named(in_memory_connector: InMemoryConnector, timeout: object) -> None:
    """timeout= must be a positive number of seconds."""
    app = App(connector=in_memory_connector)
    with pytest.raises(ConfigurationError, match="timeout"):
        app.task(timeout=timeout)  # type: ignore[arg-type]
