"""Calling registered `Hooks`: each event to the hooks that override its method, in order.

A hook that raises is logged once and removed (trio's `Instrument` rule), so a broken
hook never stops a job or the worker. Only the hooks that override a method are called
for its event, and `wants()` lets the caller skip building an event nobody receives (and
`wants_trace_context()` reading trace contexts nobody uses).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final, TypeAlias

from dawdle._errors import ConfigurationError
from dawdle._hooks import (
    Hooks,
    JobDeferred,
    JobFinished,
    JobRetried,
    JobsClaimed,
    JobSnoozed,
    JobsPruned,
    JobStarted,
    LoopRestarted,
)

logger = logging.getLogger("dawdle.hooks")

Event: TypeAlias = (
    JobDeferred
    | JobStarted
    | JobFinished
    | JobRetried
    | JobSnoozed
    | LoopRestarted
    | JobsClaimed
    | JobsPruned
)
# Each event's method on `Hooks`.
METHODS: Final[dict[type[Event], str]] = {
    JobDeferred: "job_deferred",
    JobStarted: "job_started",
    JobFinished: "job_finished",
    JobRetried: "job_retried",
    JobSnoozed: "job_snoozed",
    LoopRestarted: "loop_restarted",
    JobsClaimed: "jobs_claimed",
    JobsPruned: "jobs_pruned",
}


def checked_hooks(where: str, hooks: object) -> tuple[Hooks, ...]:
    """`hooks` (an iterable of `Hooks` instances, or None) as a tuple; `where` names a bad one."""
    if hooks is None:
        return ()
    if isinstance(hooks, Hooks | str | bytes) or not isinstance(hooks, Iterable):
        raise ConfigurationError(f"{where}: hooks must be a list of dawdle.Hooks, got {hooks!r}")
    checked = tuple(hooks)
    for hook in checked:
        if not isinstance(hook, Hooks):
            what = "the class" if isinstance(hook, type) else "a"
            raise ConfigurationError(
                f"{where}: each hook must be an instance of a dawdle.Hooks subclass, "
                f"got {what} {hook!r}"
            )
    return checked


def merged(*groups: Iterable[Hooks]) -> tuple[Hooks, ...]:
    """The hooks of each group in order, each one once (the same hook given twice: once)."""
    seen: dict[int, Hooks] = {}
    for group in groups:
        for hook in group:
            seen.setdefault(id(hook), hook)
    return tuple(seen.values())


class HookDispatch:
    """The hooks of one worker (or app): calls each event's receivers, drops failing ones."""

    def __init__(self, hooks: Iterable[Hooks], *, owner: str = "worker") -> None:
        self._hooks = list(hooks)
        self._owner = owner
        self._receivers: dict[type[Event], list[tuple[Hooks, Callable[[Event], None]]]] = {}
        self._trace_context = False
        self._sort()

    def _sort(self) -> None:
        """Each event's bound methods, of the hooks that override the base's no-op."""
        self._receivers = {
            kind: [
                (hook, getattr(hook, method))
                for hook in self._hooks
                if getattr(type(hook), method) is not getattr(Hooks, method)
            ]
            for kind, method in METHODS.items()
        }
        self._trace_context = any(hook.wants_trace_context for hook in self._hooks)

    def wants(self, kind: type[Event]) -> bool:
        """Whether any hook receives events of this kind (else the caller need not make one)."""
        return bool(self._receivers[kind])

    def wants_trace_context(self) -> bool:
        """Whether a hook wants claimed jobs' trace contexts (`Hooks.wants_trace_context`)."""
        return self._trace_context

    def emit(self, event: Event) -> None:
        """Call each receiver of `event` in registration order; remove one that raises."""
        for hook, receive in self._receivers[type(event)]:
            try:
                receive(event)
            except Exception as exc:  # noqa: BLE001 (a user's hook never stops a job or the worker)
                self._remove(hook, event, exc)

    def _remove(self, hook: Hooks, event: Event, exc: Exception) -> None:
        self._hooks = [other for other in self._hooks if other is not hook]
        self._sort()  # new lists: an emit iterating the old ones goes on safely
        method = METHODS[type(event)]
        # Its class names it: a user's __repr__ could fail too.
        name = f"{type(hook).__module__}.{type(hook).__qualname__}"
        logger.error(
            "hook %s failed in %s and is removed from this %s: it gets no more events",
            name,
            method,
            self._owner,
            exc_info=exc,
            extra={"action": "hook_failed", "hook": name, "event": method},
        )
