"""The hand-off of claimed jobs from the claimer to the runners: a queue with no checkpoint.

anyio's memory object stream checkpoints on every receive, a scheduler round trip per job
even when a job is waiting; on no-op jobs that round trip and its event were the largest
per-job cost left (py-spy, both runtimes, Trio's more). Here a runner that finds a job
takes it at once; one that finds none waits on an event of its own, set by the next send.
A job still gives other tasks a turn wherever it awaits, and `Runners._execute` keeps its
`checkpoint_if_cancelled`, so a cancelled runner never begins a job.
"""

from __future__ import annotations

from collections import deque

import anyio

from dawdle._worker.state import Running


class Handoff:
    """Claimed jobs in claim order, each taken by one runner; empty and closed ends them."""

    def __init__(self) -> None:
        self._jobs: deque[Running] = deque()
        self._waiting: deque[anyio.Event] = deque()  # one per idle runner, oldest first
        self._closed = False

    def send_nowait(self, running: Running) -> None:
        """Queue a job and wake the runner that has waited longest, if one waits."""
        self._jobs.append(running)
        if self._waiting:
            self._waiting.popleft().set()

    def close(self) -> None:
        """No more jobs: runners take the queued ones, then `receive` returns None."""
        self._closed = True
        while self._waiting:
            self._waiting.popleft().set()

    async def receive(self) -> Running | None:
        """The next job, waiting for one if need be; None once closed and empty."""
        while not self._jobs:
            if self._closed:
                return None
            woken = anyio.Event()
            self._waiting.append(woken)
            try:
                await woken.wait()
            except BaseException:
                # Cancelled while waiting: leave the waiters, or a later job would wake this
                # runner and nobody else. (anyio never cancels a task whose wait has ended:
                # a woken runner resumes and takes its job.)
                if not woken.is_set():
                    self._waiting.remove(woken)
                raise
        return self._jobs.popleft()
