"""What preparing saves on the worker's hottest statements: claim, outcome write, defer.

`python -m tests.topologies.prepared_cost [DSN [ROUNDS]]` times, on a fresh database of
DSN's server (default: $DAWDLE_TEST_DSN, else an embedded server), one claim of one job
(`FETCH_JOBS`), the write of its verdict (`RECORD_OUTCOMES`) and one defer, with psycopg's
prepare_threshold None (never prepared), 5 (psycopg's default) and 0 (prepared at once).
Each setting runs the same rounds on its own jobs.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import anyio

import dawdle
from dawdle._worker.outcomes import Outcome, Verdict
from dawdle._worker.store import JobStore
from tests.perf.benchmark._database import fresh_database, server

SETTINGS: tuple[int | None, ...] = (None, 5, 0)


async def _time_one(dsn: str, threshold: int | None, rounds: int) -> dict[str, float]:
    """Median microseconds of each statement over `rounds`, with `threshold`."""
    app = dawdle.App(
        connector=dawdle.PsycopgConnector(
            conninfo=dsn, min_size=1, max_size=1, prepare_threshold=threshold
        )
    )

    @app.task(name="noop")
    def noop() -> None:
        return None

    times: dict[str, list[float]] = {"claim": [], "outcome": [], "defer": []}
    async with app.open_async():
        store = JobStore(app)
        worker_id = await store.register()
        for _ in range(rounds):
            started = time.perf_counter()
            await noop.defer_async()
            times["defer"].append(time.perf_counter() - started)
            started = time.perf_counter()
            claimed = await store.claim(
                queues=None, task_names=["noop"], limit=1, worker_id=worker_id
            )
            times["claim"].append(time.perf_counter() - started)
            verdict = Verdict(claimed[0].job.id, Outcome.SUCCEEDED)
            started = time.perf_counter()
            await store.record([verdict], worker_id=worker_id)
            times["outcome"].append(time.perf_counter() - started)
        await store.unregister(worker_id)
    # The first rounds warm caches and, for 5, run unprepared: the steady state is the rest.
    return {name: statistics.median(values[10:]) * 1e6 for name, values in times.items()}


def measure(dsn: str | None, rounds: int = 2000) -> dict[int | None, dict[str, Any]]:
    """Median microseconds of claim, outcome and defer, by prepare_threshold."""
    results: dict[int | None, dict[str, Any]] = {}
    with server(dsn) as (server_dsn, _), fresh_database(server_dsn) as database:
        for threshold in SETTINGS:
            results[threshold] = anyio.run(_time_one, database, threshold, rounds)
    return results


def main() -> None:
    """Print the table for the DSN given (the README's figures come from it)."""
    dsn = sys.argv[1] if len(sys.argv) > 1 else None
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    results = measure(dsn, rounds)
    print(f"median µs per statement over {rounds} rounds (one job each):")
    print(f"{'prepare_threshold':>18} {'claim':>8} {'outcome':>8} {'defer':>8}")
    for threshold, row in results.items():
        print(f"{threshold!s:>18} {row['claim']:8.0f} {row['outcome']:8.0f} {row['defer']:8.0f}")


if __name__ == "__main__":
    main()
