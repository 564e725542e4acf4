"""RetryBudget: caps retries at a share of recent traffic so a failing dependency is not stormed."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dawdle._validate import number

_SLOTS = 10


@dataclass(frozen=True, eq=False)
class RetryBudget:
    """Allow, over any sliding `window` seconds, `ratio` retries per request plus a floor.

    With `ratio=0.2` retries add at most 20 % to the load a dependency already sees; the
    floor of `min_per_second` lets a quiet client still retry now and then. Thread-safe.
    The window slides in tenths, so an old slot is forgotten up to `window / 10` late.

    The settings are frozen; the counts are not, so budgets compare by identity. Pickling,
    copying and `dataclasses.replace` give a fresh budget with the same settings and clock
    (the clock deep-copied by `copy.deepcopy`): a lock cannot be copied, and the counts
    describe this process's recent traffic, not the copy's.
    """

    ratio: float = 0.2
    min_per_second: float = 1.0
    window: float = 10.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    # [slot number, requests, retries], oldest first; at most _SLOTS entries.
    _slots: deque[list[int]] = field(init=False, repr=False, default_factory=deque)

    def __post_init__(self) -> None:
        ratio = number("RetryBudget: ratio", self.ratio, at_least=0)
        min_per_second = number("RetryBudget: min_per_second", self.min_per_second, at_least=0)
        window = number("RetryBudget: window", self.window, above=0)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "min_per_second", min_per_second)
        object.__setattr__(self, "window", window)

    def __reduce__(self) -> tuple[type[RetryBudget], tuple[object, ...]]:
        return (type(self), (self.ratio, self.min_per_second, self.window, self.clock))

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
        current = int(self.clock() * _SLOTS / self.window)
        while self._slots and self._slots[0][0] <= current - _SLOTS:
            self._slots.popleft()
        if not self._slots or self._slots[-1][0] != current:
            self._slots.append([current, 0, 0])
        return self._slots[-1]
