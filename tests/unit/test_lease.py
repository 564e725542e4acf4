"""The heartbeat lease: when a worker may believe its jobs are its own (a fake clock)."""

from __future__ import annotations

import pytest

from dawdle import App, ConfigurationError, InMemoryConnector, Worker
from dawdle._worker.lease import Lease, default_lease, heartbeat_timeout

LEASE = 20.0


def registered_at(now: float) -> Lease:
    """A lease whose registration was sent and acknowledged at `now`."""
    lease = Lease(LEASE, now)
    lease.renew(now, now, new_registration=True)
    return lease


def test_nothing_is_held_before_the_registration() -> None:
    """A new lease holds nothing: no claim before the worker's row exists."""
    assert not Lease(LEASE, 100.0).held(100.0)


def test_lease_runs_from_the_heartbeat_sent_not_acknowledged() -> None:
    """A heartbeat sent at 10 and answered at 14 holds until 30, not 34."""
    lease = registered_at(0.0)
    lease.renew(10.0, 14.0)
    assert lease.held(29.9)
    assert not lease.held(30.0)


def test_lease_lapses_without_heartbeats() -> None:
    """No acknowledged heartbeat for the lease's duration: it lapses."""
    lease = registered_at(0.0)
    assert lease.held(19.9)
    assert not lease.held(20.0)


def test_a_late_answer_to_an_old_heartbeat_does_not_shorten_the_lease() -> None:
    """Renewals only move the expiry later, whatever order the answers come in."""
    lease = registered_at(0.0)
    lease.renew(10.0, 11.0)
    lease.renew(5.0, 12.0)
    assert lease.expires_at == 30.0


def test_claim_sent_within_an_unbroken_lease_is_trusted() -> None:
    """A claim sent at 5, answered at 12, with heartbeats all along: its jobs are ours."""
    lease = registered_at(0.0)
    lease.renew(10.0, 10.1)
    assert lease.held_since(5.0, 12.0)


def test_claim_answered_across_a_lapse_is_not_trusted() -> None:
    """A claim sent at 5 and answered after a lapse (20 to 40) healed: not trusted."""
    lease = registered_at(0.0)
    lease.renew(39.0, 40.0)  # the first heartbeat through after the partition
    assert lease.held(41.0)
    assert not lease.held_since(5.0, 41.0)
    assert lease.held_since(40.5, 41.0)  # a claim sent after the lapse ended is


def test_claim_answered_while_lapsed_is_not_trusted() -> None:
    """A claim answered while the lease has lapsed is not trusted."""
    lease = registered_at(0.0)
    assert not lease.held_since(5.0, 25.0)


def test_new_registration_breaks_the_lease() -> None:
    """Registered again (the old row was pruned): claims of the old row are not trusted."""
    lease = registered_at(0.0)
    lease.renew(10.0, 10.0, new_registration=True)
    assert lease.held(11.0)
    assert not lease.held_since(5.0, 11.0)


def test_lose_ends_the_lease_at_once() -> None:
    """The row is gone: nothing is held, whatever time is left."""
    lease = registered_at(0.0)
    lease.lose(3.0)
    assert not lease.held(3.0)
    lease.renew(3.5, 4.0, new_registration=True)
    assert lease.held(4.0)
    assert not lease.held_since(3.2, 4.0)


def test_default_lease_leaves_margin_on_both_sides() -> None:
    """Procrastinate's defaults (10 s, 30 s): a 20 s lease, heartbeats time out after 5 s."""
    assert default_lease(10.0, 30.0) == 20.0
    assert heartbeat_timeout(20.0, 10.0) == 5.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"heartbeat_lease": 5.0}, r"heartbeat_lease \(5 s\).*\(10 s\).*\(30 s\)"),
        ({"heartbeat_lease": 30.0}, r"heartbeat_lease \(30 s\)"),
        ({"heartbeat_lease": 0}, r"heartbeat_lease must be a number > 0, got 0"),
        (
            {"update_heartbeat_interval": 30.0},
            r"update_heartbeat_interval \(30 s\) must be shorter than stalled_worker_timeout",
        ),
    ],
)
def test_lease_outside_its_bounds_is_refused(
    in_memory_connector: InMemoryConnector, options: dict[str, float], message: str
) -> None:
    """The lease must lie between the heartbeat interval and the stalled timeout: named."""
    with pytest.raises(ConfigurationError, match=message):
        Worker(App(connector=in_memory_connector), **options)  # type: ignore[arg-type]


def test_lease_given_and_default(in_memory_connector: InMemoryConnector) -> None:
    """A lease given is kept; none given is halfway between interval and stalled timeout."""
    app = App(connector=in_memory_connector)
    assert Worker(app, heartbeat_lease=12.5).settings.heartbeat_lease == 12.5
    worker = Worker(app, update_heartbeat_interval=0.5, stalled_worker_timeout=3)
    assert worker.settings.heartbeat_lease == 1.75
