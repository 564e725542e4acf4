"""A primary fails mid-run and its streaming standby is promoted: nothing is lost.

The worker and a producer use a libpq multi-host DSN (`target_session_attrs=read-write`).
The standby is synchronous (`synchronous_standby_names = '*'` on the primary, set once it
streams), so every commit the producer saw is on the standby; the primary is stopped as a
crash (`-m immediate`), then the standby promoted. Every job whose defer returned must be
worked, none left `doing`, and LISTEN must come back on the new primary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import anyio
import anyio.to_thread
import psycopg
import pytest
from procrastinate import exceptions, schema

from dawdle import App, PsycopgConnector
from dawdle._dawdle_schema import DAWDLE_SCHEMA
from tests.topologies.cluster import Cluster, Node, cluster

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

STALLED_TIMEOUT = 5.0
DBNAME = "failover"


def wait_for(condition: str, dsn: str, seconds: float) -> None:
    """Poll a server (an external process: no event to wait on) until `condition` is true."""
    deadline = time.monotonic() + seconds
    while True:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(f"SELECT ({condition}) AS ok").fetchone()  # type: ignore[arg-type]
        if row is not None and row[0]:
            return
        assert time.monotonic() < deadline, f"not true after {seconds} s: {condition}"
        time.sleep(0.05)


@pytest.fixture
def nodes() -> Iterator[tuple[Cluster, Node, Node]]:
    """A primary with a synchronous streaming standby, and the database with the schema."""
    with cluster() as made:
        primary = made.primary()
        standby = made.standby_of(primary)
        standby.start()
        wait_for("SELECT count(*) = 1 FROM pg_stat_replication", primary.dsn(), 30)
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        wait_for("SELECT sync_state = 'sync' FROM pg_stat_replication", primary.dsn(), 30)
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DBNAME}")
        with psycopg.connect(primary.dsn(DBNAME), autocommit=True) as conn:
            conn.execute(schema.SchemaManager.get_schema())
            conn.execute(DAWDLE_SCHEMA)
        yield made, primary, standby


def tally(dsn: str, numbers: set[int]) -> tuple[set[int], int]:
    """Which of `numbers` have a succeeded job, and how many jobs are `doing`."""
    with psycopg.connect(dsn) as conn:
        done = {
            int(row[0])
            for row in conn.execute(
                "SELECT DISTINCT (args->>'i')::int FROM procrastinate_jobs "
                "WHERE task_name = 'noop' AND status = 'succeeded'"
            )
        }
        doing = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
        row = doing.fetchone()
    assert row is not None
    return done & numbers, int(row[0])


class Run:
    """The producer's and the worker's view of one run: what was committed, what ran, when."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.committed: dict[int, float] = {}  # defers that returned, and when
        self.ran: dict[int, float] = {}
        self.fifty_ran = anyio.Event()
        self.switched: float | None = None  # when the primary was stopped
        self.first_after: int | None = None  # the first job whose defer began after it
        self.recovered = anyio.Event()
        self.recovered_at = math.inf
        self.announced = anyio.Event()
        self.stop_producing = anyio.Event()

        @app.task(name="noop")
        async def noop(i: int) -> None:
            self.ran.setdefault(i, anyio.current_time())
            if len(self.ran) >= 50:
                self.fifty_ran.set()
            if self.first_after is not None and i >= self.first_after:
                self.recovered_at = min(self.recovered_at, anyio.current_time())
                self.recovered.set()

        @app.task(name="announce")
        async def announce() -> None:
            self.announced.set()

    async def produce(self) -> None:
        """Defer a steady stream of jobs; one the database refused is deferred again."""
        i = 0
        while not self.stop_producing.is_set():
            if self.switched is not None and self.first_after is None:
                self.first_after = i
            try:
                await self.app.tasks["noop"].defer_async(i=i)
            except exceptions.ConnectorException:
                await anyio.sleep(0.05)  # the database is away: try the same job again
                continue
            self.committed[i] = anyio.current_time()
            i += 1
            await anyio.sleep(0.01)  # a steady stream, not a flood

    async def switch(self, primary: Node, standby: Node) -> None:
        """Crash the primary, promote the standby; return once a job deferred since ran."""
        await anyio.to_thread.run_sync(primary.stop, "immediate")
        self.switched = anyio.current_time()  # the primary is gone: counted from here
        await anyio.to_thread.run_sync(standby.pg_ctl, "promote")
        with anyio.fail_after(60):
            await self.recovered.wait()

    async def all_worked(self, dsn: str) -> None:
        """Wait until every committed job succeeded and none is doing (stalled timeout bound)."""
        deadline = anyio.current_time() + 2 * STALLED_TIMEOUT + 30
        numbers = set(self.committed)
        while True:
            done, doing = await anyio.to_thread.run_sync(tally, dsn, numbers)
            if done == numbers and doing == 0:
                return
            assert anyio.current_time() < deadline, (len(numbers - done), doing)
            await anyio.sleep(0.2)


async def test_promoted_standby_takes_over(nodes: tuple[Cluster, Node, Node]) -> None:
    """Jobs committed before the switch are worked, none stays doing, LISTEN comes back."""
    made, primary, standby = nodes
    app = App(
        connector=PsycopgConnector(conninfo=made.multi_host_dsn(DBNAME), reconnect_timeout=60.0)
    )
    run = Run(app)
    async with app.open_async(), anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: app.run_worker_async(
                concurrency=4,
                update_heartbeat_interval=1.0,
                stalled_worker_timeout=STALLED_TIMEOUT,
                fetch_job_polling_interval=30.0,
                install_signal_handlers=False,
            )
        )
        tg.start_soon(run.produce)
        with anyio.fail_after(30):
            await run.fifty_ran.wait()
        await run.switch(primary, standby)
        assert run.switched is not None
        first_defer = min(at for at in run.committed.values() if at > run.switched)
        recovered = run.recovered_at - run.switched
        await anyio.sleep(2.0)  # keep producing on the new primary for a while
        run.stop_producing.set()
        new_primary = standby.dsn(DBNAME)
        await anyio.to_thread.run_sync(
            wait_for,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
            "AND datname = current_database()",
            new_primary,
            30,
        )
        announced_at = anyio.current_time()
        await app.tasks["announce"].defer_async()
        with anyio.fail_after(20):  # well under the 30 s polling interval: LISTEN heard it
            await run.announced.wait()
        heard = anyio.current_time() - announced_at
        await run.all_worked(new_primary)
        tg.cancel_scope.cancel()
    print(
        f"\nfailover: {len(run.committed)} jobs committed, all worked; first defer accepted "
        f"{first_defer - run.switched:.2f} s and first job worked {recovered:.2f} s after "
        f"the primary stopped (promoted at once); a job announced after: heard in {heard:.2f} s"
    )
