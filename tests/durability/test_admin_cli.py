"""The admin commands on PostgreSQL, run in-process through `main()` on asyncio and on Trio.

`dawdle jobs`, `job`, `retry`, `cancel`, `queues`, `workers`, `prune`: what each prints
(one line per row, or --json), what it changes, and its exit code on a refusal. Jobs are
walked through their statuses with plain UPDATEs, so Procrastinate's triggers write the
events a real run leaves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from dawdle._cli import main
from tests.durability.made_jobs import add_worker, emptied, make_job
from tests.durability.worker.helpers import dawdle_table_dropped

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@pytest.fixture
def db(schema_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[psycopg.Connection]:
    """The module's database, emptied, as the CLI's DAWDLE_DSN; a connection to it."""
    monkeypatch.setenv("DAWDLE_DSN", schema_dsn)
    monkeypatch.delenv("DAWDLE_APP", raising=False)
    with emptied(schema_dsn) as conn:
        yield conn


def age_jobs(conn: psycopg.Connection, ids: list[int], days: float) -> None:
    """Move the jobs' events `days` into the past."""
    conn.execute(
        "UPDATE procrastinate_events SET at = at - make_interval(secs => %s * 86400) "
        "WHERE job_id = ANY(%s)",
        (days, ids),
    )


def dawdle(backend: str, *arguments: str) -> int:
    return main([*arguments, "--backend", backend])


def status_of(conn: psycopg.Connection, job_id: int) -> tuple[str, int, bool] | None:
    row = conn.execute(
        "SELECT status::text, attempts, abort_requested FROM procrastinate_jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def events_of(conn: psycopg.Connection, job_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT type::text FROM procrastinate_events WHERE job_id = %s ORDER BY id", (job_id,)
    ).fetchall()
    return [row[0] for row in rows]


@BACKENDS
def test_jobs_lists_newest_first_filters_and_pages(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """One aligned line per job, newest first; filters; --before pages; --json for scripts."""
    done = make_job(db, "succeeded")
    failed = make_job(db, "failed", task="resize", queue="images")
    waiting = make_job(db, "todo")
    assert dawdle(backend, "jobs") == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert [int(line.split()[0]) for line in lines] == [waiting, failed, done]
    assert lines[1].split()[1:4] == ["failed", "images", "resize"]
    assert out.err == ""
    assert dawdle(backend, "jobs", "--status", "failed", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["status"], row["task_name"], row["attempts"]) == (
        failed,
        "failed",
        "resize",
        1,
    )
    assert dawdle(backend, "jobs", "--queue", "mail", "--limit", "1") == 0
    out = capsys.readouterr()
    assert [int(line.split()[0]) for line in out.out.splitlines()] == [waiting]
    assert out.err == f"more may follow: --before {waiting}\n"
    assert dawdle(backend, "jobs", "--queue", "mail", "--before", str(waiting)) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()] == [done]
    assert dawdle(backend, "jobs", "--task", "nothing") == 0
    assert capsys.readouterr().out == "no jobs\n"


@BACKENDS
def test_job_shows_args_events_and_stored_errors(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """The job, its events in order, each stored error (tracebacks on request); --json too."""
    job = make_job(db, "failed")
    db.execute(
        "INSERT INTO dawdle_job_errors (job_id, attempt, exception_type, message, traceback) "
        "VALUES (%s, 1, 'ValueError', 'bad input\nmore', 'Traceback (most recent call last):\n"
        '  File "t.py"\nValueError: bad input\'), '
        "(%s, 2, 'OperationalError', 'postgresql://app:s3cret@db/x refused', "
        "'at postgresql://app:s3cret@db/x')",
        (job, job),
    )
    assert dawdle(backend, "job", str(job), "--tracebacks") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"job {job}: send on queue mail, failed"
    assert lines[1] == '  args: {"n": 1}'
    assert [line.split()[-1] for line in lines[4:7]] == ["deferred", "started", "failed"]
    assert lines[7] == "  errors:"
    assert lines[8].endswith(": ValueError: bad input")
    assert lines[11] == "      ValueError: bad input"
    assert lines[12].endswith(": OperationalError: postgresql://app:***@db/x refused")
    assert lines[-1] == "      at postgresql://app:***@db/x"
    assert dawdle(backend, "job", str(job), "--json") == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert [event["type"] for event in shown["events"]] == ["deferred", "started", "failed"]
    assert [error["exception_type"] for error in shown["errors"]] == [
        "ValueError",
        "OperationalError",
    ]
    assert "s3cret" not in out


@BACKENDS
def test_job_without_the_errors_table_says_so_in_one_line(
    db: psycopg.Connection,
    schema_dsn: str,
    capsys: pytest.CaptureFixture[str],
    backend: str,
) -> None:
    """Before dawdle schema 4, the job is shown and the errors line says what to run."""
    job = make_job(db, "failed")
    with dawdle_table_dropped(schema_dsn, "dawdle_job_errors"):
        assert dawdle(backend, "job", str(job)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  errors: not stored (dawdle schema --apply)"
    )


@BACKENDS
def test_job_that_does_not_exist_is_exit_1(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    assert dawdle(backend, "job", "12345") == 1
    assert capsys.readouterr().err == "dawdle job: error: no job 12345\n"


@BACKENDS
def test_retry_puts_failed_cancelled_and_aborted_jobs_back(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A failed job by Procrastinate's function (attempts + 1), the others as it would."""
    failed, cancelled, aborted = (make_job(db, s) for s in ("failed", "cancelled", "aborted"))
    db.execute("UPDATE procrastinate_jobs SET abort_requested = true WHERE id = %s", (cancelled,))
    for job in (failed, cancelled, aborted):
        assert dawdle(backend, "retry", str(job)) == 0
        assert capsys.readouterr().out == f"retried job {job}: due now\n"
    assert status_of(db, failed) == ("todo", 2, False)
    assert status_of(db, cancelled) == ("todo", 0, False)
    assert status_of(db, aborted) == ("todo", 1, False)
    for job in (failed, cancelled, aborted):
        assert events_of(db, job)[-2:] in (["retried", "scheduled"], ["scheduled", "retried"])
    ready = db.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE scheduled_at <= now() AND status = 'todo'"
    ).fetchone()
    assert ready == (3,)


@BACKENDS
def test_retry_refuses_what_it_cannot_retry_with_the_reason(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """Exit 1 for a job in another status, a missing one, a held queueing lock; 2 for misuse."""
    done = make_job(db, "succeeded")
    blocked = make_job(db, "failed", queueing_lock="daily")
    make_job(db, "todo", queueing_lock="daily")
    assert dawdle(backend, "retry", str(done)) == 1
    assert dawdle(backend, "retry", "999") == 1
    assert dawdle(backend, "retry", str(blocked)) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"dawdle retry: error: job {done} is succeeded: only failed, cancelled or aborted "
        "jobs are retried",
        "dawdle retry: error: no job 999",
        f"dawdle retry: error: job {blocked} was not retried: a waiting job holds its "
        "queueing lock 'daily'",
    ]
    assert status_of(db, blocked) == ("failed", 1, False)
    for misuse in (["--failed"], ["--task", "send"]):
        with pytest.raises(SystemExit) as exit_info:
            dawdle(backend, "retry", str(done), *misuse)
        assert exit_info.value.code == 2


@BACKENDS
def test_retry_failed_takes_every_failed_job_of_the_filters(
    db: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """--failed --task/--queue: only those, batch after batch, one per queueing lock."""
    monkeypatch.setattr("dawdle._cli_actions.RETRY_BATCH", 2)
    chosen = [make_job(db, "failed", task="resize") for _ in range(5)]
    other_task = make_job(db, "failed")
    other_queue = make_job(db, "failed", task="resize", queue="images")
    # A lock's second job in a later batch, then two of another lock in one batch.
    first, second = (make_job(db, "failed", task="resize", queueing_lock="one") for _ in "ab")
    third, fourth = (make_job(db, "failed", task="resize", queueing_lock="two") for _ in "ab")
    assert dawdle(backend, "retry", "--failed", "--task", "resize", "--queue", "mail") == 0
    assert capsys.readouterr().out == "retried 7 failed jobs\n"
    assert all(status_of(db, job) == ("todo", 2, False) for job in [*chosen, first, third])
    for job in (other_task, other_queue, second, fourth):
        assert status_of(db, job) == ("failed", 1, False)


@BACKENDS
def test_cancel_and_abort_follow_procrastinate(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A waiting job is cancelled; a running one needs --abort, which asks its worker."""
    worker_id = add_worker(db)
    waiting = make_job(db, "todo")
    running = make_job(db, "doing", worker_id=worker_id)
    done = make_job(db, "succeeded")
    assert dawdle(backend, "cancel", str(waiting)) == 0
    assert dawdle(backend, "cancel", str(running)) == 1
    assert dawdle(backend, "cancel", str(running), "--abort") == 0
    assert dawdle(backend, "cancel", str(done), "--abort") == 1
    assert dawdle(backend, "cancel", "999") == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        f"cancelled job {waiting}",
        f"abort requested for job {running}: its worker stops it",
    ]
    assert out.err.splitlines() == [
        f"dawdle cancel: error: job {running} is running: --abort asks its worker to stop it",
        f"dawdle cancel: error: job {done} is succeeded: only a waiting job (or, with --abort, "
        "a running one) can be cancelled",
        "dawdle cancel: error: no job 999",
    ]
    assert status_of(db, waiting) == ("cancelled", 0, False)
    assert status_of(db, running) == ("doing", 0, True)


@BACKENDS
def test_queues_and_workers_count_what_is_there(
    db: psycopg.Connection, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """Per queue: todo, doing, failed, oldest ready age, finished per minute; per worker: jobs."""
    worker_id = add_worker(db)
    # Events are in time order by id, as the events' window expects: the old ones first.
    age_jobs(db, [make_job(db, "succeeded", queue="images")], days=1)  # outside the window
    old = make_job(db, "todo")
    age_jobs(db, [old], days=0.5)
    make_job(db, "todo")
    make_job(db, "doing", worker_id=worker_id)
    make_job(db, "failed")
    for _ in range(5):
        make_job(db, "succeeded", queue="images")
    assert dawdle(backend, "queues", "--json") == 0
    images, mail = json.loads(capsys.readouterr().out)
    assert images == {
        "queue": "images",
        "todo": 0,
        "doing": 0,
        "failed": 0,
        "oldest_ready_age": None,
        "finished_per_minute": 1.0,  # 5 in the last 5 minutes
    }
    assert (mail["todo"], mail["doing"], mail["failed"]) == (2, 1, 1)
    assert 0.5 * 86400 - 60 < mail["oldest_ready_age"] < 0.5 * 86400 + 60
    assert mail["finished_per_minute"] == 0.2
    assert dawdle(backend, "queues") == 0
    assert (
        capsys.readouterr()
        .out.splitlines()[1]
        .startswith("mail  todo 2  doing 1  failed 1  oldest ready 12h")
    )
    assert dawdle(backend, "workers") == 0
    assert capsys.readouterr().out.startswith(f"worker {worker_id}  heartbeat ")
    assert dawdle(backend, "workers", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["running"]) == (worker_id, 1)
    assert row["heartbeat_age"] < 60


@BACKENDS
def test_prune_deletes_old_jobs_of_the_statuses_with_their_rows(
    db: psycopg.Connection,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """Only jobs finished before the cutoff, of the statuses; events and errors go too."""
    monkeypatch.setattr("dawdle._retention.PRUNE_BATCH", 3)
    old_done = [make_job(db, "succeeded") for _ in range(7)]
    old_failed = make_job(db, "failed")
    old_waiting = make_job(db, "todo")
    recent_done = make_job(db, "succeeded")
    age_jobs(db, [*old_done, old_failed, old_waiting], days=8)
    db.execute(
        "INSERT INTO dawdle_job_errors (job_id, attempt, exception_type, message, traceback) "
        "VALUES (%s, 1, 'E', 'm', 't')",
        (old_done[0],),
    )
    assert dawdle(backend, "prune", "--older-than", "7d", "--status", "succeeded") == 0
    assert capsys.readouterr().out == "pruned 7 jobs (succeeded) finished more than 7d ago\n"
    left = db.execute("SELECT id FROM procrastinate_jobs ORDER BY id").fetchall()
    assert [row[0] for row in left] == [old_failed, old_waiting, recent_done]
    orphans = db.execute(
        "SELECT (SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(%(ids)s)) "
        "+ (SELECT count(*) FROM dawdle_job_errors)",
        {"ids": old_done},
    ).fetchone()
    assert orphans == (0,)
    assert dawdle(backend, "prune", "--older-than", "7d") == 0
    assert capsys.readouterr().out.startswith("pruned 1 job (succeeded, failed, cancelled")
    assert status_of(db, old_waiting) == ("todo", 0, False)


@BACKENDS
@pytest.mark.parametrize(
    "arguments",
    [
        ["prune", "--older-than", "7"],
        ["prune", "--older-than", "-1d"],
        ["prune", "--older-than", "7d", "--status", "todo"],
        ["prune"],
        ["jobs", "--status", "waiting"],
        ["jobs", "--limit", "0"],
        ["job", "abc"],
        ["cancel", "0"],
        ["retry"],
    ],
)
def test_bad_values_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], backend: str, arguments: list[str]
) -> None:
    """Exit 2, one line on stderr naming the option, nothing on stdout."""
    with pytest.raises(SystemExit) as exit_info:
        dawdle(backend, *arguments)
    assert exit_info.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert len(out.err.splitlines()) == 1
    assert out.err.startswith(f"dawdle {arguments[0]}: error: ")
