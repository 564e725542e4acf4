"""A RetryPolicy's decision, written through Procrastinate's own SQL, lands in the job row.

Synchronous on purpose: this checks the policy against the real schema with Procrastinate's
own sync connector; the async connectors have their own suites on both runtimes.
"""

from __future__ import annotations

from collections.abc import Iterator

import procrastinate
import pytest
from procrastinate.jobs import Job
from procrastinate.sql import queries

from dawdle.backoff import Exponential, RetryPolicy


@pytest.fixture(scope="module")
def app(database_dsn: str) -> Iterator[procrastinate.App]:
    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=database_dsn))
    with app.open():
        app.schema_manager.apply_schema()
        yield app


def claim(app: procrastinate.App) -> Job:
    row = app.connector.execute_query_one(queries["fetch_job"], queues=None, worker_id=None)
    assert row["id"] is not None
    return Job.from_row(row)


def test_policy_delays_are_written_to_scheduled_at(app: procrastinate.App) -> None:
    """Two failures reschedule the job 0.5 s then 1 s later; the third failure ends retries."""
    policy = RetryPolicy(backoff=Exponential(0.5, 2.0), max_attempts=3)

    @app.task(retry=policy)
    def flaky() -> None: ...

    job_id = flaky.defer()
    for expected_wait in (0.5, 1.0):
        job = claim(app)
        decision = policy.get_retry_decision(exception=ConnectionError(), job=job)
        assert decision is not None
        assert decision.retry_at is not None
        app.connector.execute_query(
            queries["retry_job"],
            job_id=job_id,
            retry_at=decision.retry_at,
            new_priority=None,
            new_queue_name=None,
            new_lock=None,
        )
        row = app.connector.execute_query_one(
            "SELECT status, attempts, scheduled_at, now() AS now FROM procrastinate_jobs "
            "WHERE id = %(job_id)s",
            job_id=job_id,
        )
        assert row["status"] == "todo"
        assert row["attempts"] == job.attempts + 1
        wait = (row["scheduled_at"] - row["now"]).total_seconds()
        assert expected_wait - 0.5 <= wait <= expected_wait
        app.connector.execute_query(
            "UPDATE procrastinate_jobs SET scheduled_at = now() - interval '1 second' "
            "WHERE id = %(job_id)s",
            job_id=job_id,
        )
    last = claim(app)
    assert last.attempts == 2
    assert policy.get_retry_decision(exception=ConnectionError(), job=last) is None
