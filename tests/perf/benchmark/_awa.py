"""awa-pg (a Rust core with a Python SDK) drained as dawdle's worked-jobs rows are: a peer column.

Where awa-pg installs and imports (the `perf` dependency group), each worked-jobs drain is
repeated with it: the same number of no-op jobs, put in its queue storage by COPY before the
clock starts, worked by an `AsyncClient` with one queue of that many workers; the rate is
jobs over the whole run, start-up and graceful shutdown included, as dawdle's. It runs in a
database of its own on the same server (its `awa` schema), so Procrastinate's tables are
never touched, and only on asyncio (its SDK's own). Without it, the section says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import conninfo, sql

from tests.perf.benchmark._figures import Metric
from tests.perf.benchmark._settings import Settings

PEER = "awa-pg"
QUEUE = "bench"
SHUTDOWN_TIMEOUT = 30.0  # seconds a drain may take before it is called failed


@dataclass
class Noop:
    """The job's arguments: its number, as dawdle's no-op jobs have."""

    i: int


def available() -> bool:
    """Whether awa-pg is installed."""
    return importlib.util.find_spec("awa") is not None


@contextlib.contextmanager
def _database(dsn: str) -> Iterator[str]:
    """A database of its own on `dsn`'s server, dropped at the end."""
    name = f"dawdle_perf_awa_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _url(dsn: str) -> str:
    """`dsn` as the postgresql:// URL awa's client takes (a socket directory as `?host=`)."""
    parts = {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items() if v is not None}
    host, port = parts.get("host", "localhost"), parts.get("port", "5432")
    user = quote(parts.get("user", ""), safe="")
    password = quote(parts["password"], safe="") if "password" in parts else None
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    database = quote(parts["dbname"], safe="")
    if host.startswith("/"):  # its parser wants a host name before `?host=`
        query = urlencode({"host": host})
        return f"postgresql://{credentials}localhost:{port}/{database}?{query}"
    return f"postgresql://{credentials}{host}:{port}/{database}"


async def _prepare(url: str) -> None:
    from awa import AsyncClient  # noqa: PLC0415 - optional peer

    client = AsyncClient(url)
    await client.migrate()
    await client.install_queue_storage(reset=True)
    await client.close()


async def _drain(url: str, jobs: int, concurrency: int) -> float:
    """Jobs/s of one drain of `jobs` no-op jobs by `concurrency` workers."""
    from awa import AsyncClient  # noqa: PLC0415 - optional peer

    client: Any = AsyncClient(url)
    done = asyncio.Event()
    worked = 0

    @client.task(Noop, queue=QUEUE)
    async def noop(job: Any) -> None:
        nonlocal worked
        worked += 1
        if worked == jobs:
            done.set()

    inserted = await client.enqueue_many_copy([Noop(i) for i in range(jobs)], queue=QUEUE)
    assert inserted == jobs, f"awa-pg took {inserted} of {jobs} jobs"
    started = time.perf_counter()
    await client.start([(QUEUE, concurrency)])
    await asyncio.wait_for(done.wait(), SHUTDOWN_TIMEOUT)
    await client.shutdown()
    elapsed = time.perf_counter() - started
    await client.close()
    assert worked == jobs, f"awa-pg worked {worked} of {jobs} jobs"
    return jobs / elapsed


def measure(dsn: str, settings: Settings, rates: dict[int, Metric]) -> str:
    """Add awa-pg's drains to the worked-jobs rates by concurrency; a note on how, or why not."""
    if not available():
        return f"{PEER}: not available (not installed)"
    from importlib.metadata import version  # noqa: PLC0415

    concurrencies = [c for c in rates if c > 1]
    with _database(dsn) as own:
        url = _url(own)
        try:
            asyncio.run(_prepare(url))
        except Exception as error:  # noqa: BLE001 - any failure of the peer only skips it
            return f"{PEER}: not available ({type(error).__name__}: {error})"
        for _ in range(settings.rounds):
            for c in concurrencies:
                rates[c].add_peer(PEER, asyncio.run(_drain(url, settings.drain_depth, c)))
    return (
        f"{PEER} {version(PEER)}: the same drains at concurrency "
        f"{', '.join(map(str, concurrencies))} (queue storage, jobs put in by COPY), asyncio, "
        "its own database"
    )
