"""What the typed `task()` and worker options promise holds at runtime too."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dawdle import App, Blueprint, InMemoryConnector, JobContext

pytestmark = pytest.mark.anyio


async def test_pass_context_task_gets_its_job(in_memory_app: App) -> None:
    """`pass_context=True` (with timeout=) hands the task its JobContext; defer omits it."""
    seen: list[int | None] = []

    @in_memory_app.task(name="keyed", pass_context=True, timeout=5)
    async def keyed(context: JobContext, n: int) -> None:
        seen.append(context.job.id)

    job_id = await keyed.defer_async(n=1)
    await in_memory_app.run_worker_async(wait=False, install_signal_handlers=False)
    assert seen == [job_id]


@pytest.mark.parametrize(
    "make", [lambda: App(connector=InMemoryConnector()), Blueprint], ids=["App", "Blueprint"]
)
def test_typo_in_a_task_option_is_a_type_error_naming_it(make: Callable[[], Blueprint]) -> None:
    """`@app.task(queu=...)` is refused at runtime, as mypy refuses it, naming the typo."""
    with pytest.raises(TypeError, match="queu"):
        make().task(queu="mail")  # type: ignore[call-overload]


async def test_typo_in_a_worker_option_is_a_type_error_naming_it(in_memory_app: App) -> None:
    """`run_worker_async(concurency=2)` is refused before the worker starts, naming the typo."""
    with pytest.raises(TypeError, match="concurency"):
        await in_memory_app.run_worker_async(concurency=2)  # type: ignore[call-arg]
