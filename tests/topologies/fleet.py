"""One host of a fleet, as a process: `python -m tests.topologies.fleet ROLE DSN SECONDS [N]`.

N is psycopg's prepare_threshold (`none`: never prepare; psycopg's 5 unless given).

ROLE `asyncio` or `trio` runs a worker of no-op jobs for SECONDS, timing each claim
statement, then stops gracefully and prints one JSON line (jobs worked, claim times).
ROLE `produce` defers batches of jobs for SECONDS, keeping the queue between LOW and HIGH
jobs deep so that workers never starve and the table never grows without bound.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio

import dawdle
from dawdle._worker.store import JobStore

BATCH = 100
LOW, HIGH = 2_000, 6_000
CONCURRENCY = 10


def make_app(dsn: str, prepare: int | None = 5) -> tuple[dawdle.App, dict[str, int]]:
    """An app with the fleet's no-op task, and its count of jobs run."""
    connector = dawdle.PsycopgConnector(
        conninfo=dsn, min_size=2, max_size=4, prepare_threshold=prepare
    )
    app = dawdle.App(connector=connector)
    counts = {"worked": 0}

    @app.task(name="noop")
    async def noop(i: int) -> None:
        counts["worked"] += 1

    return app, counts


async def work(dsn: str, seconds: float, prepare: int | None) -> dict[str, Any]:
    """Run a worker for `seconds`; what it did."""
    app, counts = make_app(dsn, prepare)
    claims: list[float] = []
    claim = JobStore.claim

    async def timed_claim(store: JobStore, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await claim(store, **kwargs)
        finally:
            claims.append(time.perf_counter() - started)

    JobStore.claim = timed_claim  # type: ignore[method-assign]
    cpu = time.process_time()
    async with app.open_async():
        with anyio.move_on_after(seconds):
            await app.run_worker_async(concurrency=CONCURRENCY, install_signal_handlers=False)
    return {"worked": counts["worked"], "claims": claims, "cpu": time.process_time() - cpu}


async def produce(dsn: str, seconds: float) -> dict[str, Any]:
    """Defer batches for `seconds`, the queue kept between LOW and HIGH; how many."""
    app, _ = make_app(dsn)
    deferred = 0
    async with app.open_async():
        deadline = anyio.current_time() + seconds
        while anyio.current_time() < deadline:
            row = await app.connector.execute_query_one_async(
                "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'"
            )
            if row["n"] > HIGH:
                while row["n"] > LOW and anyio.current_time() < deadline:
                    await anyio.sleep(0.02)  # paced by the queue's depth
                    row = await app.connector.execute_query_one_async(
                        "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'"
                    )
                continue
            await app.tasks["noop"].batch_defer_async(*({"i": deferred + n} for n in range(BATCH)))
            deferred += BATCH
    return {"deferred": deferred}


def main() -> None:
    """Run ROLE for SECONDS on DSN; print its JSON line."""
    role, dsn, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    threshold = sys.argv[4] if len(sys.argv) > 4 else "5"
    prepare = None if threshold == "none" else int(threshold)
    if role == "produce":
        result = anyio.run(produce, dsn, seconds)
    else:
        result = anyio.run(work, dsn, seconds, prepare, backend=role)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
