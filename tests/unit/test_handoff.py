"""The hand-off from the claimer to the runners: claim order, the end, and cancelled runners."""

from __future__ import annotations

from typing import cast

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from dawdle._worker.handoff import Handoff
from dawdle._worker.state import Running

pytestmark = pytest.mark.anyio


def jobs(count: int) -> list[Running]:
    """Stand-ins for claimed jobs: the hand-off only passes them on."""
    return [cast(Running, object()) for _ in range(count)]


async def take_all(handoff: Handoff, into: list[Running]) -> None:
    """A runner: take jobs until the hand-off is closed and empty."""
    while (running := await handoff.receive()) is not None:
        into.append(running)
        await checkpoint()  # the job's own awaits


async def test_jobs_reach_runners_once_each_in_claim_order() -> None:
    """Jobs sent before and after the runners wait are each taken once, oldest first."""
    handoff, early, late = Handoff(), jobs(3), jobs(3)
    taken: list[list[Running]] = [[], []]
    for job in early:
        handoff.send_nowait(job)
    async with anyio.create_task_group() as tg:
        for into in taken:
            tg.start_soon(take_all, handoff, into)
        await wait_all_tasks_blocked()
        for job in late:
            handoff.send_nowait(job)
        await wait_all_tasks_blocked()
        handoff.close()
    order = {id(job): n for n, job in enumerate(early + late)}
    assert sorted(id(job) for job in taken[0] + taken[1]) == sorted(order)
    for into in taken:
        assert [order[id(job)] for job in into] == sorted(order[id(job)] for job in into)


async def test_close_lets_runners_take_what_is_queued_then_ends_them() -> None:
    """After close(), queued jobs are still taken; then every runner's receive is None."""
    handoff, queued = Handoff(), jobs(2)
    for job in queued:
        handoff.send_nowait(job)
    handoff.close()
    taken: list[Running] = []
    with anyio.fail_after(5):
        await take_all(handoff, taken)
    assert taken == queued
    assert await handoff.receive() is None


async def test_a_runner_cancelled_while_waiting_leaves_jobs_to_the_others() -> None:
    """A runner cancelled while it waits is no longer woken: the next job goes to another."""
    handoff = Handoff()
    (job,) = jobs(1)
    first: list[Running] = []
    second: list[Running] = []
    doomed = anyio.CancelScope()

    async def cancelled_runner() -> None:
        with doomed:
            await take_all(handoff, first)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancelled_runner)
        await wait_all_tasks_blocked()
        tg.start_soon(take_all, handoff, second)
        await wait_all_tasks_blocked()
        doomed.cancel()  # the runner that waited longest, which the send would wake
        await wait_all_tasks_blocked()
        handoff.send_nowait(job)
        await wait_all_tasks_blocked()
        taken = (list(first), list(second))
        handoff.close()
    assert taken == ([], [job])
