"""Restarting what fails: one backoff for the worker's loops, its claims and its last writes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from dawdle._hooks import LoopRestarted
from dawdle._hooks_dispatch import HookDispatch
from dawdle.backoff import DecorrelatedJitter

logger = logging.getLogger("dawdle.worker")

# Restart delays of something that keeps failing: from 0.1 s, spread out, at most 10 s apart.
RESTART_BACKOFF: Final = DecorrelatedJitter(0.1, max_delay=10.0)
# A loop that ran this long before failing starts its backoff from the beginning again.
HEALTHY_AFTER: Final = 60.0
# The retry number past which the delay no longer grows (the envelope is capped long before).
_MOST_COUNTED_FAILURES: Final = 50


class Restarts:
    """The growing, jittered delays between tries of something that keeps failing."""

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure; the seconds to wait before trying again."""
        self.failures += 1
        return RESTART_BACKOFF.delay(min(self.failures, _MOST_COUNTED_FAILURES))

    def reset(self) -> None:
        """It worked: the next failure waits the shortest delay again."""
        self.failures = 0


async def supervise(hooks: HookDispatch, name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run `loop`; if it fails, tell the hooks, log, and run it again after a jittered delay.

    Cancellation is never caught: it ends the loop and the supervision together.
    """
    restarts = Restarts()
    while True:
        started = anyio.current_time()
        try:
            await loop()
        except Exception as exc:
            if anyio.current_time() - started > HEALTHY_AFTER:
                restarts.reset()
            delay = restarts.next_delay()
            hooks.emit(LoopRestarted(name, exc, delay))
            logger.exception(
                "worker loop %r failed; restarting in %.2f s",
                name,
                delay,
                # Procrastinate's name for a failed side task, which its users alert on.
                extra={"action": "side_task_failed", "loop": name, "restart_in": delay},
            )
            await anyio.sleep(delay)
        else:
            return
