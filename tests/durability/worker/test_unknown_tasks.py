"""Jobs of tasks the worker's app does not register: left for a worker that knows them.

One database may serve several projects, or Procrastinate and dawdle workers together, and
a worker listens on every queue by default. With `unknown_tasks="leave"` (the default) a
worker claims only jobs of its app's task names and aliases, blueprints' included; with
"fail" it claims them and fails them (TaskNotFound), as Procrastinate's worker does.
On connector x runtime; the mixed fleet with Procrastinate's own worker is in
test_mixed_fleet.py.
"""

from __future__ import annotations

import pytest

from dawdle import App, Blueprint
from tests.durability.worker.helpers import insert_raw_job, job_states, same_database, work

pytestmark = pytest.mark.anyio


async def test_job_of_an_unknown_task_stays_todo(app: App) -> None:
    """The known jobs run, the unknown one stays todo with no attempt, and wait=False returns."""
    ran: list[int] = []

    @app.task(name="known")
    async def known(n: int) -> None:
        ran.append(n)

    stranger = await insert_raw_job(app, "another_project.task")
    first = await known.defer_async(n=1)
    second = await known.defer_async(n=2)
    await work(app, concurrency=2)
    assert sorted(ran) == [1, 2]
    assert await job_states(app) == {
        stranger: ("todo", 0),
        first: ("succeeded", 1),
        second: ("succeeded", 1),
    }


async def test_unknown_tasks_fail_fails_them_as_procrastinate_does(app: App) -> None:
    """unknown_tasks="fail": the unknown job is claimed and failed, the known one runs."""

    @app.task(name="known")
    async def known() -> None: ...

    stranger = await insert_raw_job(app, "another_project.task")
    job_id = await known.defer_async()
    await work(app, unknown_tasks="fail")
    assert await job_states(app) == {stranger: ("failed", 1), job_id: ("succeeded", 1)}


async def test_a_task_alias_counts_as_known(app: App) -> None:
    """A job deferred under a task's old name (an alias) is claimed and run by that task."""
    ran: list[str] = []

    @app.task(name="mail.send_v2", aliases=["mail.send"])
    async def send(to: str) -> None:
        ran.append(to)

    job_id = await insert_raw_job(app, "mail.send", '{"to": "ada"}')
    await work(app)
    assert ran == ["ada"]
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_tasks_of_a_blueprint_count_as_known(app: App) -> None:
    """A blueprint's task, added to the app under a namespace, is claimed by its full name."""
    ran: list[str] = []
    blueprint = Blueprint()

    @blueprint.task(name="report")
    async def report(day: str) -> None:
        ran.append(day)

    app.add_tasks_from(blueprint, namespace="reports")
    job_id = await insert_raw_job(app, "reports:report", '{"day": "monday"}')
    await work(app)
    assert ran == ["monday"]
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_unknown_job_first_in_its_lock_holds_the_lock_back(app: App) -> None:
    """A ready unknown job ahead of a known one in the same lock keeps it waiting.

    Procrastinate's lock order (priority, then id) holds across workers: the known job runs
    only after a worker that knows the head job has run it. Other locks are not held back.
    """
    ran: list[str] = []

    @app.task(name="mine")
    async def mine(which: str) -> None:
        ran.append(which)

    async with same_database(app) as other:

        @other.task(name="theirs")
        async def theirs(which: str) -> None:
            ran.append(which)

        head = await theirs.configure(lock="L").defer_async(which="theirs L")
        behind = await mine.configure(lock="L").defer_async(which="mine L")
        free = await mine.configure(lock="M").defer_async(which="mine M")
        await work(app)
        assert ran == ["mine M"]
        assert await job_states(app) == {
            head: ("todo", 0),
            behind: ("todo", 0),
            free: ("succeeded", 1),
        }
        await work(other)  # knows only the head job: runs it, leaves the one behind
        await work(app)
    assert ran == ["mine M", "theirs L", "mine L"]
    assert set((await job_states(app)).values()) == {("succeeded", 1)}
