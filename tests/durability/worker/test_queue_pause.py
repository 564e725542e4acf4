"""Paused queues: their jobs wait as 'todo' until resumed, and resuming wakes the workers.

On connector x runtime. Workers poll only every minute here, so a job that runs within
seconds of its queue's resume was claimed on the resume's notification. The scenarios
without dawdle's table, and the command run as a process, are PostgreSQL's alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from procrastinate import connector as procrastinate_connector
from procrastinate import exceptions

from dawdle import App, ConfigurationError, PsycopgConnector
from dawdle._sql import FETCH_JOBS, FETCH_JOBS_IGNORING_PAUSES
from dawdle._worker.store import Claimed, JobStore
from tests.durability.worker.helpers import (
    forge_notification,
    job_states,
    listening,
    make_worker,
    postgres_only,
    running,
)

pytestmark = pytest.mark.anyio

# Longer than any test: a claim seen within a test was woken by something else than polling.
SLOW_POLLING = {"fetch_job_polling_interval": 60.0}
# How soon a resumed queue's job must run: far below the polling interval.
PROMPTLY = 5.0


@pytest.fixture(autouse=True)
async def _no_pauses(app: App) -> None:
    """Start with no queue paused (PostgreSQL's pauses outlive the test's TRUNCATE)."""
    for state in await app.list_queue_states_async():
        if state.paused:
            await app.resume_queue_async(state.name)


@contextlib.contextmanager
def hints(app: App) -> Iterator[list[str]]:
    """The payloads of the notifications a worker on `app` receives, as they come."""
    connector: Any = app.connector
    heard: list[str] = []
    original: Callable[..., Awaitable[None]] = connector.listen_notify

    async def listen_notify(
        on_notification: procrastinate_connector.Notify, *args: Any, **kwargs: Any
    ) -> None:
        async def noted(*, channel: str, payload: str) -> None:
            heard.append(payload)
            await on_notification(channel=channel, payload=payload)

        await original(noted, *args, **kwargs)

    wrapped = "listen_notify" in vars(connector)  # by `listening`, say: put its wrapper back
    connector.listen_notify = listen_notify
    try:
        yield heard
    finally:
        if wrapped:
            connector.listen_notify = original
        else:
            del connector.listen_notify


class Claims:
    """The worker's claims, each noted with whether `watched` was set when it began."""

    def __init__(self) -> None:
        self.watched = anyio.Event()
        self.send, self.receive = anyio.create_memory_object_stream[tuple[list[int], bool]](
            math.inf
        )

    async def next_empty(self) -> None:
        """Wait for a claim that began once `watched` was set, and took nothing."""
        with anyio.fail_after(PROMPTLY):
            async for claimed, after_watched in self.receive:
                if after_watched and not claimed:
                    return


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> Iterator[Claims]:
    """Every claim of the worker, once it returned, in a `Claims`."""
    log = Claims()
    original = JobStore.claim

    async def recorded(store: JobStore, **arguments: Any) -> list[Claimed]:
        after_watched = log.watched.is_set()
        claimed = await original(store, **arguments)
        ids = [one.job.id for one in claimed if one.job.id is not None]
        log.send.send_nowait((ids, after_watched))
        return claimed

    monkeypatch.setattr(JobStore, "claim", recorded)
    with log.send, log.receive:
        yield log


async def test_a_paused_queue_waits_while_other_queues_run(app: App) -> None:
    """The claim takes the other queue's job, not the paused one's; resuming runs it promptly."""
    done = {"mail": anyio.Event(), "reports": anyio.Event()}

    @app.task(name="job")
    async def job(queue: str) -> None:
        done[queue].set()

    assert await app.pause_queue_async("mail", reason="smtp down")
    mail = await job.configure(queue="mail").defer_async(queue="mail")
    reports = await job.configure(queue="reports").defer_async(queue="reports")
    async with running(make_worker(app, concurrency=2, **SLOW_POLLING)):
        with anyio.fail_after(PROMPTLY):
            await done["reports"].wait()
        assert (await job_states(app))[mail] == ("todo", 0)
        assert await app.resume_queue_async("mail")
        with anyio.fail_after(PROMPTLY):
            await done["mail"].wait()
    assert await job_states(app) == {mail: ("succeeded", 1), reports: ("succeeded", 1)}


async def test_a_worker_of_the_paused_queue_alone_wakes_on_resume(app: App, claims: Claims) -> None:
    """A worker of the paused queue alone claims nothing; the resume's hint reaches it; it runs."""
    ran = anyio.Event()

    @app.task(name="send", queue="mail")
    async def send() -> None:
        ran.set()

    await app.pause_queue_async("mail")
    job_id = await send.defer_async()
    with listening(app) as listened, hints(app) as heard:
        claims.watched = listened
        async with running(make_worker(app, queues=["mail"], **SLOW_POLLING)):
            await claims.next_empty()
            assert (await job_states(app))[job_id] == ("todo", 0)
            await app.resume_queue_async("mail")
            with anyio.fail_after(PROMPTLY):
                await ran.wait()
    resumed = {"type": "queue_resumed", "queue": "mail"}
    assert [json.loads(payload) for payload in heard] == [resumed]
    assert await job_states(app) == {job_id: ("succeeded", 1)}


async def test_running_jobs_finish_when_their_queue_is_paused(app: App, claims: Claims) -> None:
    """A job running at the pause succeeds; the queue's next job is not claimed after it."""
    started, release = anyio.Event(), anyio.Event()

    @app.task(name="slow", queue="mail")
    async def slow() -> None:
        started.set()
        await release.wait()

    first = await slow.defer_async()
    async with running(make_worker(app, concurrency=1, **SLOW_POLLING)):
        with anyio.fail_after(PROMPTLY):
            await started.wait()
        second = await slow.defer_async()
        await app.pause_queue_async("mail", reason="deploy")
        claims.watched = release
        release.set()
        await claims.next_empty()  # the claim for the slot the first job freed
        assert (await job_states(app))[second] == ("todo", 0)
    assert await job_states(app) == {first: ("succeeded", 1), second: ("todo", 0)}


async def test_a_forged_resume_hint_claims_nothing(app: App, claims: Claims) -> None:
    """Anyone may NOTIFY `queue_resumed`: it costs one claim, and the queue stays paused."""

    @app.task(name="send", queue="mail")
    async def send() -> None:
        raise AssertionError("a paused queue's job ran")

    await app.pause_queue_async("mail")
    job_id = await send.defer_async()
    with listening(app) as listened:
        claims.watched = listened
        async with running(make_worker(app, **SLOW_POLLING)):
            await claims.next_empty()
            woken = anyio.Event()
            claims.watched = woken
            woken.set()
            forged = json.dumps({"type": "queue_resumed", "queue": "mail"})
            await forge_notification(app, forged)
            await claims.next_empty()  # the claim the forged hint woke
    assert await job_states(app) == {job_id: ("todo", 0)}
    assert [state.name for state in await app.list_queue_states_async() if state.paused] == ["mail"]


async def test_pause_resume_and_list_say_what_changed(app: App) -> None:
    """Pausing twice keeps the first pause; list shows it with its reason; resume ends it."""

    @app.task(name="job", queue="reports")
    async def job() -> None: ...

    await job.defer_async()
    assert await app.pause_queue_async("mail", reason="smtp down") is True
    assert await app.pause_queue_async("mail", reason="again") is False
    states = await app.list_queue_states_async()
    assert [(state.name, state.paused, state.reason) for state in states] == [
        ("mail", True, "smtp down"),
        ("reports", False, None),
    ]
    assert states[0].paused_by
    assert states[0].paused_at is not None
    assert states[0].to_dict()["queue"] == "mail"
    assert await app.resume_queue_async("mail") is True
    assert await app.resume_queue_async("mail") is False
    assert [state.paused for state in await app.list_queue_states_async()] == [False]


@pytest.mark.parametrize("name", ["", "   ", "q" * 129, 7])
async def test_a_bad_queue_name_is_refused_by_name(app: App, name: object) -> None:
    """A blank, too long or non-str queue name is a ConfigurationError that quotes it."""
    with pytest.raises(ConfigurationError, match="a queue name must be"):
        await app.pause_queue_async(name)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="a queue name must be"):
        await app.resume_queue_async(name)  # type: ignore[arg-type]


@postgres_only("the in-memory database always has dawdle's tables")
async def test_without_the_pauses_table_workers_claim_as_before(
    app: App, without_pauses_table: None, caplog: pytest.LogCaptureFixture
) -> None:
    """No dawdle_queue_pauses: jobs run, one warning says what to run; pausing says it too."""
    ran: list[int] = []

    @app.task(name="job", queue="mail")
    async def job(n: int) -> None:
        ran.append(n)

    first = await job.defer_async(n=1)
    second = await job.defer_async(n=2)
    with caplog.at_level(logging.WARNING, logger="dawdle.worker"):
        with anyio.fail_after(10):
            await app.run_worker_async(wait=False, concurrency=1, install_signal_handlers=False)
    assert sorted(ran) == [1, 2]
    assert await job_states(app) == {first: ("succeeded", 1), second: ("succeeded", 1)}
    warnings = [r.getMessage() for r in caplog.records if "queue pauses" in r.getMessage()]
    assert warnings == [
        "queue pauses are ignored: the database has no dawdle_queue_pauses table; "
        "run `dawdle schema --apply`"
    ]
    with pytest.raises(exceptions.ConnectorException, match="dawdle schema --apply"):
        await app.pause_queue_async("mail")


@postgres_only("the command runs in its own process, on a real database")
async def test_the_queue_command_pauses_lists_and_resumes(app: App) -> None:
    """`dawdle queue pause/list --json/resume` as a process: each says what it did, exit 0."""
    assert isinstance(app.connector, PsycopgConnector)
    env = {**os.environ, "DAWDLE_DSN": app.connector.conninfo}
    env.pop("DAWDLE_APP", None)

    async def dawdle(*arguments: str) -> str:
        result = await anyio.run_process(
            [sys.executable, "-m", "dawdle", "queue", *arguments], env=env, check=False
        )
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    assert await dawdle("pause", "mail", "--reason", "smtp down") == "paused queue 'mail'\n"
    (state,) = json.loads(await dawdle("list", "--json"))
    assert (state["queue"], state["paused"], state["reason"]) == ("mail", True, "smtp down")
    assert (await app.list_queue_states_async())[0].paused
    assert await dawdle("resume", "mail") == "resumed queue 'mail'\n"
    assert await dawdle("list") == "no queues: no jobs and no pauses\n"


@postgres_only("the query planner's estimates are PostgreSQL's")
async def test_skipping_paused_queues_keeps_the_claims_plan_and_cost(app: App) -> None:
    """At depth, the planner costs the claim with pauses as the one without (no 1,000x, no JIT)."""
    connector = app.connector
    await connector.execute_query_async(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT CASE WHEN n <= 20000 THEN 'bulk' ELSE 'other' END, 't', '{}' "
        "FROM generate_series(1, 20010) AS n"
    )
    await app.pause_queue_async("mail")
    try:
        await connector.execute_query_async("ANALYZE procrastinate_jobs")
        arguments = {"queues": None, "task_names": ["t"], "limit": 10, "worker_id": None}
        plain = await connector.execute_query_one_async(
            "EXPLAIN (FORMAT JSON) " + FETCH_JOBS_IGNORING_PAUSES, **arguments
        )
        paused = await connector.execute_query_one_async(
            "EXPLAIN (FORMAT JSON) " + FETCH_JOBS, **arguments
        )
    finally:
        # Statistics of 20,000 jobs would mislead the plans of the module's next tests.
        await connector.execute_query_async("TRUNCATE procrastinate_jobs CASCADE")
        await connector.execute_query_async("ANALYZE procrastinate_jobs")
    plain_cost = plain["QUERY PLAN"][0]["Plan"]["Total Cost"]
    paused_cost = paused["QUERY PLAN"][0]["Plan"]["Total Cost"]
    assert paused_cost < 1.2 * plain_cost, (plain_cost, paused_cost)
