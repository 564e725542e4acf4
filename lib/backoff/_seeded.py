"""A cheap seeded generator for job decisions: SplitMix64 behind `random.Random`'s interface.

Seeding a Mersenne Twister costs about 3.5 µs, as much as the rest of a retry decision; a
job's jitter only needs a few well-mixed draws from (job id, attempt), which SplitMix64
gives for a few integer operations each. Not for anything that needs unpredictability.
"""

from __future__ import annotations

import random
from typing import Final

_MASK: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15
_FOLD: Final = 0xD1B54A32D192ED03  # an odd multiplier unrelated to _GOLDEN


class SplitMix(random.Random):
    """`random.Random` whose `random()` and `getrandbits()` come from SplitMix64."""

    _state: int

    def __init__(self, *keys: int) -> None:
        # Random.__init__ would only call seed() and clear gauss_next: do both directly.
        self.seed(keys)
        self.gauss_next = None

    def seed(self, a: object = None, version: int = 2) -> None:
        """Start the stream from the integers in `a`; other seeds mean 0.

        The keys are folded together, then mixed once: streams of nearby seeds (job 7 and
        job 8, attempt 3 and 4) start at unrelated points, so they never overlap in practice.
        """
        folded = 0
        for key in a if isinstance(a, tuple) else ():
            folded = (folded * _FOLD + int(key)) & _MASK
        self._state = _mix(folded)

    def _next(self) -> int:
        self._state = (self._state + _GOLDEN) & _MASK
        return _mix(self._state)

    def random(self) -> float:
        """A float in [0, 1) from the top 53 bits of the next output."""
        return (self._next() >> 11) * (1.0 / (1 << 53))

    def getrandbits(self, k: int) -> int:
        """`k` random bits, 64 at a time."""
        bits, filled = 0, 0
        while filled < k:
            bits = (bits << 64) | self._next()
            filled += 64
        return bits >> (filled - k)

    def getstate(self) -> tuple[int]:
        """The stream's position: copies and pickles continue from it."""
        return (self._state,)

    def setstate(self, state: tuple[int]) -> None:  # type: ignore[override]
        """Continue from a position `getstate` gave."""
        self._state = state[0]


def _mix(value: int) -> int:
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)
