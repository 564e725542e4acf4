"""Run the demo: defer a mixed workload, work it on asyncio or Trio, show progress and a summary.

`python -m demo [--backend trio] [--jobs N] [--concurrency N]`, or `nox -s demo -- ...`.
The database is dawdle's default: DAWDLE_DSN, libpq's environment, or the embedded server.
Each run first deletes the jobs of earlier runs (tasks named `demo.*`), and nothing else.
"""

from __future__ import annotations

import argparse
import collections
import functools
import itertools
import logging
import random
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import anyio
from procrastinate import tasks

import dawdle
from demo.app import PERIODIC_TASK, TASK_PREFIX, app, flaky, noop, slow, too_slow

PREFIX_PATTERN: Final = TASK_PREFIX + "%"
STATUSES: Final = ("todo", "doing", "succeeded", "failed")
FINISHED: Final = frozenset({"succeeded", "failed", "cancelled", "aborted"})
# How often the jobs are counted: the demo ends at most this long after its last job.
POLL_INTERVAL: Final = 0.1
# The jobs/s shown are those finished over about this many seconds.
RATE_WINDOW: Final = 1.0

# The periodic_defers rows go first: they reference the jobs (Procrastinate's ON DELETE
# trigger would only null their job_id, and they are of no use to the next run).
CLEAR_PERIODIC_DEFERS: Final = """
DELETE FROM procrastinate_periodic_defers WHERE task_name LIKE %(prefix)s
"""
CLEAR_JOBS: Final = """
DELETE FROM procrastinate_jobs WHERE task_name LIKE %(prefix)s
"""

PROGRESS_QUERY: Final = """
SELECT task_name, status::text AS status, count(*) AS count
  FROM procrastinate_jobs
 WHERE task_name LIKE %(prefix)s
 GROUP BY task_name, status
"""

SUMMARY_QUERY: Final = """
SELECT task_name,
       count(*) AS jobs,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE attempts > 1) AS retried,
       coalesce(sum(attempts), 0) AS runs
  FROM procrastinate_jobs
 WHERE task_name LIKE %(prefix)s
 GROUP BY task_name
 ORDER BY task_name
"""

# A run lasts from its 'started' event (todo -> doing) to the event that ended it. Both are
# written by Procrastinate's triggers at the time of the statement that claimed or recorded
# the job, so a run's time includes the worker's batching of claims and outcomes.
DURATION_QUERY: Final = """
WITH transition AS (
    SELECT event.type,
           job.task_name,
           event.at,
           lead(event.type) OVER run AS next_type,
           lead(event.at) OVER run AS next_at
      FROM procrastinate_events AS event
      JOIN procrastinate_jobs AS job ON job.id = event.job_id
     WHERE job.task_name LIKE %(prefix)s
       AND event.type IN ('started', 'succeeded', 'failed', 'deferred_for_retry', 'aborted')
    WINDOW run AS (PARTITION BY event.job_id ORDER BY event.at, event.id)
)
SELECT task_name, avg(extract(epoch FROM next_at - at))::float8 AS mean_seconds
  FROM transition
 WHERE type = 'started' AND next_type IS NOT NULL AND next_type <> 'started'
 GROUP BY task_name
"""


@dataclass(frozen=True)
class Options:
    """The demo's command line."""

    backend: str
    jobs: int
    concurrency: int


@dataclass
class Progress:
    """Job counts per task and status at one moment, and the recent rate of finishing."""

    elapsed: float
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    rate: float = 0.0

    def total(self, status: str) -> int:
        """Jobs in `status`, all tasks together."""
        return sum(counter[status] for counter in self.counts.values())

    def finished(self) -> int:
        """Jobs that reached a final status, all tasks together."""
        return sum(self.total(status) for status in FINISHED)

    def busy(self) -> bool:
        """True while a non-periodic job is waiting, scheduled for a retry or running."""
        return any(
            counter["todo"] or counter["doing"]
            for task_name, counter in self.counts.items()
            if task_name != PERIODIC_TASK
        )


class Display:
    """Shows progress: a few lines redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.interval = 0.2 if self.tty else 1.0  # seconds between drawings
        self._drawn = 0

    def show(self, progress: Progress) -> None:
        """Draw `progress` (on a terminal, over the previous drawing)."""
        if not self.tty:
            totals = "  ".join(f"{status} {progress.total(status):>5}" for status in STATUSES)
            print(
                f"{progress.elapsed:6.1f} s  {totals}  {progress.rate:6.0f} jobs/s", file=self.out
            )
            return
        lines = [
            f"{progress.elapsed:6.1f} s   {progress.rate:6.0f} jobs/s   "
            f"{progress.finished()} finished",
            f"  {'task':<14}" + "".join(f"{status:>11}" for status in STATUSES),
            *(
                f"  {task_name:<14}" + "".join(f"{counter[status]:>11}" for status in STATUSES)
                for task_name, counter in sorted(progress.counts.items())
            ),
        ]
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # back to the first line drawn
        self.out.write("".join(f"{line}\x1b[K\n" for line in lines))
        self.out.write("\x1b[J")  # a line fewer than last time leaves nothing behind
        self.out.flush()
        self._drawn = len(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    """The demo's options from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Defer a mixed workload and work it with a dawdle worker, with live "
        "progress and a summary. Database: DAWDLE_DSN, libpq's environment, or an embedded "
        "PostgreSQL server.",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1000,
        metavar="N",
        help="no-op jobs to defer, plus N/25 slow, N/50 flaky and N/100 timing-out jobs "
        "(default: 1000)",
    )
    parser.add_argument("--concurrency", type=int, default=10, metavar="N")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1:
        parser.error("--jobs and --concurrency must be >= 1")
    return Options(backend=args.backend, jobs=args.jobs, concurrency=args.concurrency)


def workload(
    jobs: int, rng: random.Random
) -> list[tuple[tasks.Task[Any, Any, Any], dict[str, Any]]]:
    """The jobs to defer, shuffled so that slow and failing jobs mix with the fast ones."""
    work: list[tuple[tasks.Task[Any, Any, Any], dict[str, Any]]] = [
        *((noop, {"n": n}) for n in range(jobs)),
        *((slow, {"seconds": round(rng.uniform(0.2, 1.0), 3)}) for _ in range(max(1, jobs // 25))),
        *((flaky, {"n": n}) for n in range(max(1, jobs // 50))),
        *((too_slow, {"n": n}) for n in range(max(1, jobs // 100))),
    ]
    rng.shuffle(work)
    return work


async def defer_all(work: list[tuple[tasks.Task[Any, Any, Any], dict[str, Any]]]) -> None:
    """Defer `work`, one batch per run of consecutive jobs of the same task."""
    for task, group in itertools.groupby(work, key=lambda item: item[0]):
        await task.batch_defer_async(*(kwargs for _, kwargs in group))


async def poll(started: float) -> Progress:
    """The demo jobs' counts now."""
    rows = await app.connector.execute_query_all_async(PROGRESS_QUERY, prefix=PREFIX_PATTERN)
    progress = Progress(elapsed=anyio.current_time() - started)
    for row in rows:
        progress.counts.setdefault(row["task_name"], Counter())[row["status"]] = row["count"]
    return progress


async def watch(worker: dawdle.Worker, display: Display, started: float) -> Progress:
    """Show progress until no non-periodic job is left to run; then stop the worker."""
    recent: collections.deque[Progress] = collections.deque()  # the last RATE_WINDOW seconds
    shown: Progress | None = None
    while True:
        progress = await poll(started)
        recent.append(progress)
        while progress.elapsed - recent[0].elapsed > RATE_WINDOW:
            recent.popleft()
        if progress.elapsed > recent[0].elapsed:
            finished = progress.finished() - recent[0].finished()
            progress.rate = finished / (progress.elapsed - recent[0].elapsed)
        done = not progress.busy()
        if shown is None or done or progress.elapsed - shown.elapsed >= display.interval:
            display.show(progress)
            shown = progress
        if done:
            worker.stop()
            return progress
        await anyio.sleep(POLL_INTERVAL)


def print_summary(
    rows: list[dict[str, Any]],
    durations: dict[str, float],
    wall: float,
    defer_time: float,
    worker: dawdle.Worker,
) -> None:
    """The table of outcomes per task, the wall time and the worker's own counters."""
    header = ("task", "jobs", "succeeded", "failed", "retried", "runs", "mean run")
    table = [
        (
            row["task_name"] + (" *" if row["task_name"] == PERIODIC_TASK else ""),
            str(row["jobs"]),
            str(row["succeeded"]),
            str(row["failed"]),
            str(row["retried"]),
            str(row["runs"]),
            f"{durations[row['task_name']]:.3f} s" if row["task_name"] in durations else "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    rule = "  ".join("-" * width for width in widths)
    print()
    for line in [header, None, *table]:
        if line is None:
            print(rule)
            continue
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    print(rule)
    finished = sum(row["succeeded"] + row["failed"] for row in rows)
    print(
        f"wall time {wall:.2f} s working ({finished / wall:.0f} jobs/s), "
        f"{defer_time:.2f} s deferring"
    )
    print("* periodic (cron '* * * * * */5'): deferred every 5 s while the worker ran")
    jobs = ", ".join(f"{label} {count}" for label, count in sorted(worker.stats.jobs.items()))
    restarts = ", ".join(f"{loop} {n}" for loop, n in worker.stats.loop_restarts.items())
    print(
        f"worker counters: {jobs}; timed out {worker.stats.timed_out}; "
        f"internal loop restarts: {restarts or 'none'}"
    )


async def run(options: Options) -> int:
    """The whole demo on the running backend; the exit code."""
    rng = random.Random()  # noqa: S311 (sleep lengths for a demo, not secrets)
    async with app.open_async():
        print(f"dawdle demo on {options.backend}, database {app.connector!r}")
        await app.schema_manager.apply_schema_async()
        await app.connector.execute_query_async(CLEAR_PERIODIC_DEFERS, prefix=PREFIX_PATTERN)
        await app.connector.execute_query_async(CLEAR_JOBS, prefix=PREFIX_PATTERN)
        work = workload(options.jobs, rng)
        began = anyio.current_time()
        await defer_all(work)
        defer_time = anyio.current_time() - began
        print(
            f"deferred {len(work)} jobs in {defer_time:.2f} s; working them with "
            f"concurrency {options.concurrency} (Ctrl-C stops early)"
        )
        # A Worker of our own rather than app.run_worker_async: stop() ends it cleanly, and
        # its counters go in the summary. SIGINT/SIGTERM stop it early, also cleanly.
        worker_options: dict[str, Any] = {
            **app.worker_defaults,
            "name": "demo",
            "concurrency": options.concurrency,
            "install_signal_handlers": True,
        }
        worker = dawdle.Worker(app, **worker_options)
        display = Display(sys.stdout)
        started = anyio.current_time()
        completed: list[Progress] = []
        async with anyio.create_task_group() as group:

            async def watch_then_record() -> None:
                """Watch, and keep the last progress to know the run was not interrupted."""
                completed.append(await watch(worker, display, started))

            group.start_soon(watch_then_record)
            await worker.run()
            group.cancel_scope.cancel()  # stopped by a signal: the watcher goes too
        wall = anyio.current_time() - started
        if not completed:
            print("interrupted: the summary covers what was done so far")
        rows = await app.connector.execute_query_all_async(SUMMARY_QUERY, prefix=PREFIX_PATTERN)
        durations = {
            row["task_name"]: row["mean_seconds"]
            for row in await app.connector.execute_query_all_async(
                DURATION_QUERY, prefix=PREFIX_PATTERN
            )
        }
    print_summary(rows, durations, wall, defer_time, worker)
    return 0 if completed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo from the command line; its exit code."""
    options = parse_args(argv)
    # pgserver warns where there is no login session, then uses /tmp: noise for the demo.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dawdle.connector").setLevel(logging.INFO)  # where the embedded server is
    # The demo's failures are on purpose: keep the worker's error lines about jobs quiet, and
    # anything else it reports (a failing internal loop) visible.
    logging.getLogger("dawdle.worker").addFilter(
        lambda record: getattr(record, "action", None) != "job_error"
    )
    return anyio.run(functools.partial(run, options), backend=options.backend)
