"""How the worker goes without one of dawdle's tables: off for a while, warned once.

A feature whose table is missing (`dawdle schema --apply` not run) is believed missing for
TABLE_RECHECK seconds after a statement found it so, then tried again, so that applying the
schema takes effect without restarting the worker.
"""

from __future__ import annotations

from typing import Final

import anyio

TABLE_RECHECK: Final = 60.0


class TableWatch:
    """Whether a feature's table may be used now, by what the worker's statements found."""

    def __init__(self) -> None:
        # When a statement last found the table missing (anyio's clock); None: found.
        self._missing_at: float | None = None

    def ready(self) -> bool:
        """Whether the next statement should use the table."""
        missing_at = self._missing_at
        return missing_at is None or anyio.current_time() - missing_at >= TABLE_RECHECK

    def found(self) -> None:
        """A statement used the table: it is there."""
        self._missing_at = None

    def missing(self) -> bool:
        """A statement found the table missing; True the first time since it was found."""
        first = self._missing_at is None
        self._missing_at = anyio.current_time()
        return first
