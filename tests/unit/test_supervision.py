"""supervise(): a failing worker loop is logged under Procrastinate's action and restarted."""

from __future__ import annotations

import logging

import anyio
import pytest

from dawdle._hooks_dispatch import HookDispatch
from dawdle._worker.builtin_hooks import StatsHook
from dawdle._worker.state import WorkerStats
from dawdle._worker.supervision import RESTART_BACKOFF, Restarts, supervise

pytestmark = pytest.mark.anyio


async def test_a_failing_loop_is_restarted_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    """Two failures, two restarts after jittered delays, then the loop's return ends it."""
    stats = WorkerStats()
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("database away")

    started = anyio.current_time()
    with caplog.at_level(logging.ERROR, logger="dawdle.worker"):
        await supervise(HookDispatch([StatsHook(stats)]), "heartbeat", flaky)
    assert calls == 3
    assert stats.loop_restarts == {"heartbeat": 2}
    actions = [getattr(record, "action", None) for record in caplog.records]
    assert actions == ["side_task_failed", "side_task_failed"]
    waited = anyio.current_time() - started
    assert RESTART_BACKOFF.initial * 2 <= waited <= RESTART_BACKOFF.max_delay * 2


async def test_cancellation_ends_the_supervision() -> None:
    """Cancellation is not a failure: it is never caught, so nothing is restarted."""
    stats = WorkerStats()

    async def forever() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(5):
        await supervise(HookDispatch([StatsHook(stats)]), "listener", forever)
    assert stats.loop_restarts == {}


def test_restarts_grow_and_reset() -> None:
    """Delays stay within the backoff's envelope; reset() starts from the shortest again."""
    restarts = Restarts()
    delays = [restarts.next_delay() for _ in range(60)]
    assert all(RESTART_BACKOFF.initial <= delay <= RESTART_BACKOFF.max_delay for delay in delays)
    restarts.reset()
    assert restarts.failures == 0
    assert restarts.next_delay() <= RESTART_BACKOFF.initial * 3
