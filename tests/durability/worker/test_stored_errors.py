"""Stored errors: each failed or retried run's exception in dawdle_job_errors, by attempt.

On connector x runtime (the missing table on PostgreSQL alone).
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from dawdle import App, InMemoryConnector, RetryPolicy, Snooze
from dawdle._worker import table_watch
from dawdle._worker.outcomes import Outcome, Verdict
from dawdle._worker.store import JobStore
from dawdle._worker.stored_errors import MAX_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, job_error
from dawdle.backoff import Constant
from tests.durability.worker.helpers import (
    actions,
    dawdle_table_dropped,
    job_states,
    postgres_only,
    work,
)

pytestmark = pytest.mark.anyio

NO_WAIT = RetryPolicy(max_attempts=3, backoff=Constant(0.0))


class PaymentDeclinedError(Exception):
    """An exception of the test's own, to see its qualified name stored."""


async def stored(app: App, job_id: int) -> list[dict[str, Any]]:
    """The job's rows of dawdle_job_errors, by attempt."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        return connector.stored_errors(job_id)
    return await connector.execute_query_all_async(
        "SELECT job_id, attempt, failed_at, exception_type, message, traceback "
        "FROM dawdle_job_errors WHERE job_id = %(id)s ORDER BY attempt",
        id=job_id,
    )


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_failed_job_keeps_its_type_message_and_traceback(app: App, kind: str) -> None:
    """One run, failed: one row, attempt 1, the qualified type, the message, the traceback."""
    before = datetime.datetime.now(datetime.UTC)

    def charge_card(amount: int) -> None:
        raise PaymentDeclinedError(f"card declined for {amount}")

    if kind == "async":

        @app.task(name="charge")
        async def charge(amount: int) -> None:
            charge_card(amount)

    else:

        @app.task(name="charge")
        def charge(amount: int) -> None:
            charge_card(amount)

    job_id = await charge.defer_async(amount=42)
    await work(app)
    assert (await job_states(app))[job_id] == ("failed", 1)
    (row,) = await stored(app, job_id)
    assert row["attempt"] == 1
    assert row["exception_type"] == f"{__name__}.PaymentDeclinedError"
    assert row["message"] == "card declined for 42"
    assert "in charge_card" in row["traceback"]
    assert row["traceback"].endswith("PaymentDeclinedError: card declined for 42\n")
    # It starts at the task: none of the worker's frames (nor anyio's thread) above it.
    first_frame = row["traceback"].splitlines()[1]
    assert first_frame.endswith(", in charge"), row["traceback"]
    assert before <= row["failed_at"] <= datetime.datetime.now(datetime.UTC)


async def test_a_retried_job_has_one_row_per_failed_attempt(app: App) -> None:
    """Two failures then a success: rows for attempts 1 and 2, each with its own message."""
    runs = 0

    @app.task(name="flaky", retry=NO_WAIT)
    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ValueError(f"failure {runs}")

    job_id = await flaky.defer_async()
    await work(app)
    assert (await job_states(app))[job_id] == ("succeeded", 3)
    rows = await stored(app, job_id)
    assert [(row["attempt"], row["exception_type"], row["message"]) for row in rows] == [
        (1, "ValueError", "failure 1"),
        (2, "ValueError", "failure 2"),
    ]


async def test_successes_snoozes_and_put_backs_store_nothing(app: App) -> None:
    """Only failed and retried runs are errors: a snooze or a success leaves no row."""
    snoozed = False

    @app.task(name="sleepy")
    async def sleepy() -> None:
        nonlocal snoozed
        if not snoozed:
            snoozed = True
            raise Snooze(0)

    job_id = await sleepy.defer_async()
    await work(app)
    assert (await job_states(app))[job_id] == ("succeeded", 1)
    assert await stored(app, job_id) == []


async def test_errors_are_bounded_and_storable(app: App) -> None:
    """A huge message (so a huge traceback), a NUL: cut with a marker, the write succeeds."""

    @app.task(name="noisy")
    async def noisy() -> None:
        raise RuntimeError("x" * 30_000 + "\x00end")

    job_id = await noisy.defer_async()
    await work(app)
    assert (await job_states(app))[job_id] == ("failed", 1)
    (row,) = await stored(app, job_id)
    assert len(row["message"]) <= MAX_MESSAGE_CHARS
    assert row["message"].startswith("xxx")
    assert "characters cut]" in row["message"]
    assert len(row["traceback"]) <= MAX_TRACEBACK_CHARS
    assert "characters cut]" in row["traceback"]
    assert row["traceback"].startswith("Traceback (most recent call last):")
    assert row["traceback"].endswith("\\x00end\n")  # the last line, NUL written out


async def test_an_exception_groups_traceback_shows_its_leaves(app: App) -> None:
    """An ExceptionGroup: its type stored, every leaf in the traceback."""

    @app.task(name="grouped")
    async def grouped() -> None:
        raise ExceptionGroup("two failed", [KeyError("left"), PaymentDeclinedError("right")])

    job_id = await grouped.defer_async()
    await work(app)
    (row,) = await stored(app, job_id)
    assert row["exception_type"] == "ExceptionGroup"
    assert "KeyError: 'left'" in row["traceback"]
    assert "PaymentDeclinedError: right" in row["traceback"]


async def test_a_deleted_job_takes_its_errors_with_it(app: App) -> None:
    """Procrastinate's delete_old_jobs removes the failed job: its error rows go too."""

    @app.task(name="doomed")
    async def doomed() -> None:
        raise ValueError("doomed")

    job_id = await doomed.defer_async()
    await work(app)
    assert len(await stored(app, job_id)) == 1
    await app.job_manager.delete_old_jobs(nb_hours=0, include_failed=True)
    assert job_id not in await job_states(app)
    assert await stored(app, job_id) == []


def failed_verdict(job_id: int, message: str) -> Verdict:
    """The verdict a runner hands the writer for a failed first run raising `message`."""
    return Verdict(job_id, Outcome.FAILED, error=job_error(ValueError(message), attempt=1))


async def claimed_by(app: App, store: JobStore) -> tuple[int, int]:
    """A new worker and the one job it claimed: (worker id, job id)."""
    worker_id = await store.register()
    (claimed,) = await store.claim(queues=None, task_names=None, limit=1, worker_id=worker_id)
    assert claimed.job.id is not None
    return worker_id, claimed.job.id


async def test_a_job_recovered_by_another_worker_keeps_only_that_workers_error(app: App) -> None:
    """The first worker's late write finds the job taken: neither outcome nor error written."""

    @app.task(name="contested")
    async def contested() -> None: ...

    await contested.defer_async()
    store = JobStore(app)
    first, job_id = await claimed_by(app, store)
    second = await store.register()
    await move_job(app, job_id, second)  # as recovery and the second worker's claim leave it
    late = await store.record([failed_verdict(job_id, "from the first")], worker_id=first)
    assert late.count == 0
    assert await stored(app, job_id) == []
    written = await store.record([failed_verdict(job_id, "from the second")], worker_id=second)
    assert written.count == 1
    assert [row["message"] for row in await stored(app, job_id)] == ["from the second"]


async def move_job(app: App, job_id: int, worker_id: int) -> None:
    """Give a 'doing' job to another worker."""
    connector = app.connector
    if isinstance(connector, InMemoryConnector):
        connector.jobs[job_id]["worker_id"] = worker_id
        return
    await connector.execute_query_async(
        "UPDATE procrastinate_jobs SET worker_id = %(worker)s WHERE id = %(id)s",
        worker=worker_id,
        id=job_id,
    )


@postgres_only("the table is dropped: the in-memory database always has dawdle's tables")
async def test_without_the_table_outcomes_are_written_with_one_warning(
    app: App, schema_dsn: str
) -> None:
    """No dawdle_job_errors: jobs still fail and retry as they should; one job_errors_off line."""

    @app.task(name="tableless", retry=NO_WAIT)
    async def tableless() -> None:
        raise ValueError("nowhere to go")

    with dawdle_table_dropped(schema_dsn, "dawdle_job_errors"):
        ids = [await tableless.defer_async() for _ in range(3)]
        with actions() as log:
            await work(app, concurrency=1)
        assert {(await job_states(app))[job_id] for job_id in ids} == {("failed", 3)}
        assert len(log.of("job_errors_off")) == 1


@postgres_only("the table is dropped: the in-memory database always has dawdle's tables")
async def test_the_table_is_tried_again_after_the_recheck(
    app: App, schema_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the table is back, the next write past the recheck stores errors again."""

    @app.task(name="returning")
    async def returning() -> None: ...

    store = JobStore(app)
    with dawdle_table_dropped(schema_dsn, "dawdle_job_errors"):
        await returning.defer_async()
        worker_id, before = await claimed_by(app, store)
        with actions() as log:
            written = await store.record([failed_verdict(before, "lost")], worker_id=worker_id)
        assert written.count == 1
        assert len(log.of("job_errors_off")) == 1
    monkeypatch.setattr(table_watch, "TABLE_RECHECK", 0.0)  # the minute is over
    await returning.defer_async()
    (claimed,) = await store.claim(queues=None, task_names=None, limit=1, worker_id=worker_id)
    assert claimed.job.id is not None
    after = claimed.job.id
    written = await store.record([failed_verdict(after, "kept")], worker_id=worker_id)
    assert written.count == 1
    assert await stored(app, before) == []
    assert [row["message"] for row in await stored(app, after)] == ["kept"]
