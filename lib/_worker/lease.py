"""The worker's lease on its jobs: how long it may believe they are still its own.

Another worker may recover this worker's jobs once its heartbeat is `stalled_worker_timeout`
old. The database stamps a heartbeat when it runs it, never before the worker sent it, so a
worker that measures from the moment it SENT its last acknowledged heartbeat knows a bound
that the database's view can only be later than: while `sent + lease` has not passed, no
other worker can have recovered its jobs. Past it the worker is fenced (`fencing`): it
stops claiming and stops its running jobs, `stalled_worker_timeout - lease` seconds before
any recovery may begin.

Pure: times are the caller's (anyio's monotonic clock in the worker, a fake one in tests).
"""

from __future__ import annotations

from dawdle._errors import ConfigurationError


def default_lease(update_heartbeat_interval: float, stalled_worker_timeout: float) -> float:
    """Halfway between the heartbeat interval and the stalled timeout.

    With Procrastinate's defaults (10 s, 30 s): 20 s. That leaves one heartbeat interval
    (and a retried, timed-out heartbeat) before the lease lapses, and 10 s between fencing
    and the earliest recovery by another worker for running jobs to be cancelled.
    """
    return (update_heartbeat_interval + stalled_worker_timeout) / 2


def check_lease(
    lease: float, update_heartbeat_interval: float, stalled_worker_timeout: float
) -> None:
    """Refuse a lease outside (update_heartbeat_interval, stalled_worker_timeout)."""
    if not update_heartbeat_interval < lease < stalled_worker_timeout:
        raise ConfigurationError(
            f"Worker: heartbeat_lease ({lease:g} s) must be longer than "
            f"update_heartbeat_interval ({update_heartbeat_interval:g} s) and shorter than "
            f"stalled_worker_timeout ({stalled_worker_timeout:g} s)"
        )


def heartbeat_timeout(lease: float, update_heartbeat_interval: float) -> float:
    """How long one heartbeat query may take: short enough for a retry inside the lease.

    A heartbeat sent `update_heartbeat_interval` after the last acknowledged one that
    hangs for this long still leaves time for another try before the lease lapses.
    """
    return (lease - update_heartbeat_interval) / 2


class Lease:
    """The lease of one worker: renewed by each acknowledged heartbeat, lost when it lapses.

    `held_since(start, now)` tells whether the lease held without a break from `start` to
    `now`: a claim sent at `start` whose reply came back then is still this worker's. A
    break is a lapse (no acknowledged heartbeat for `duration`) or a new registration (the
    old row, and the jobs it claimed, may have gone to another worker meanwhile).
    """

    def __init__(self, duration: float, now: float) -> None:
        self.duration = duration
        # Until the first registration is acknowledged, nothing is held.
        self._sent = now - duration
        self._broken_at = now

    @property
    def expires_at(self) -> float:
        """When the lease lapses unless renewed."""
        return self._sent + self.duration

    def held(self, now: float) -> bool:
        """Whether no other worker can have recovered this worker's jobs by `now`."""
        return now < self.expires_at

    def held_since(self, start: float, now: float) -> bool:
        """Whether the lease held all the time from `start` to `now`."""
        return self.held(now) and self._broken_at <= start

    def renew(self, sent_at: float, now: float, *, new_registration: bool = False) -> None:
        """A heartbeat (or registration) sent at `sent_at` was acknowledged at `now`."""
        if new_registration or not self.held(now):
            self._broken_at = now
        self._sent = max(self._sent, sent_at)

    def lose(self, now: float) -> None:
        """The worker's row is gone: whatever the clock says, nothing is held any more."""
        self._sent = min(self._sent, now - self.duration)
        self._broken_at = now
