"""Procrastinate's periodic deferrer, waiting through anyio instead of asyncio."""

from __future__ import annotations

import anyio
from procrastinate import periodic


class PeriodicDeferrer(periodic.PeriodicDeferrer):
    """Defers `@app.periodic` tasks on time; Procrastinate's table de-duplicates across workers."""

    async def wait(self, next_tick: float) -> None:
        """Sleep until the next task is due (plus Procrastinate's safety margin)."""
        await anyio.sleep(next_tick + periodic.MARGIN)
