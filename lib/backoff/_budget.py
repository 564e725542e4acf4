"""RetryBudget: caps retries at a share of recent traffic so a failing dependency is not stormed."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from dawdle.backoff._strategies import check_number

_SLOTS = 10


class RetryBudget:
    """Allow, over any sliding `window` seconds, `ratio` retries per request plus a floor.

    With `ratio=0.2` retries add at most 20 % to the load a dependency already sees; the
    floor of `min_per_second` lets a quiet client still retry now and then. Thread-safe.
    The window slides in tenths, so an old slot is forgotten up to `window / 10` late.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 1.0,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = check_number("RetryBudget", "ratio", ratio)
        self.min_per_second = check_number("RetryBudget", "min_per_second", min_per_second)
        self.window = check_number("RetryBudget", "window", window, positive=True)
        self._clock = clock
        self._lock = threading.Lock()
        # [slot number, requests, retries], oldest first; at most _SLOTS entries.
        self._slots: deque[list[int]] = deque()

    def record_request(self) -> None:
        """Count a first attempt: it earns `ratio` retries for the next `window` seconds."""
        with self._lock:
            self._current_slot()[1] += 1

    def try_acquire_retry(self) -> bool:
        """Spend one retry if the budget allows it; False means: do not retry now."""
        with self._lock:
            slot = self._current_slot()
            if self._available() < 1.0:
                return False
            slot[2] += 1
            return True

    @property
    def available(self) -> float:
        """How many retries the budget would allow right now."""
        with self._lock:
            self._current_slot()
            return self._available()

    def _available(self) -> float:
        requests = sum(slot[1] for slot in self._slots)
        retries = sum(slot[2] for slot in self._slots)
        return self.ratio * requests + self.min_per_second * self.window - retries

    def _current_slot(self) -> list[int]:
        number = int(self._clock() * _SLOTS / self.window)
        while self._slots and self._slots[0][0] <= number - _SLOTS:
            self._slots.popleft()
        if not self._slots or self._slots[-1][0] != number:
            self._slots.append([number, 0, 0])
        return self._slots[-1]

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio!r}, min_per_second={self.min_per_second!r}, "
            f"window={self.window!r})"
        )
