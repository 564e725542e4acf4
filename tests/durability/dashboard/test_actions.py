"""The dashboard's actions and guards on PostgreSQL, on asyncio and on Trio.

Retry, cancel, abort, pause and resume; CSRF and Origin refusals; read-only mode; the token.
"""

from __future__ import annotations

import socket

import psycopg
import pytest

from dawdle._cli import main
from dawdle._dashboard import security
from tests.durability.dashboard.conftest import BASE_URL, Client, csrf_of, status_of
from tests.durability.made_jobs import add_worker, make_job

pytestmark = pytest.mark.anyio
ANYWHERE = "0.0.0.0"  # noqa: S104 (an address the CLI must refuse, never bound)


def paused(db: psycopg.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT queue_name FROM dawdle_queue_pauses")]


async def test_retry_puts_a_failed_job_back_due_now(db: psycopg.Connection, client: Client) -> None:
    job = make_job(db, "failed")
    async with client() as http:
        page = await http.get(f"/jobs/{job}")
        done = await http.post(f"/jobs/{job}/retry", data={"csrf": csrf_of(page)})
    assert done.status_code == 200  # followed the redirect to the job's page
    assert done.url.path == f"/jobs/{job}"
    assert "Retried: the job is due now." in done.text
    assert status_of(db, job) == ("todo", False)


async def test_retry_of_a_waiting_job_is_a_409_naming_why(
    db: psycopg.Connection, client: Client
) -> None:
    job = make_job(db, "todo")
    async with client() as http:
        page = await http.get(f"/jobs/{job}")
        done = await http.post(f"/jobs/{job}/retry", data={"csrf": csrf_of(page)})
    assert done.status_code == 409
    assert f"job {job} is todo: only failed, cancelled or aborted jobs are retried" in done.text


async def test_cancel_and_abort(db: psycopg.Connection, client: Client) -> None:
    waiting = make_job(db, "todo")
    running = make_job(db, "doing", worker_id=add_worker(db))
    async with client() as http:
        csrf = csrf_of(await http.get(f"/jobs/{waiting}"))
        cancelled = await http.post(f"/jobs/{waiting}/cancel", data={"csrf": csrf})
        aborted = await http.post(f"/jobs/{running}/abort", data={"csrf": csrf})
        again = await http.post(f"/jobs/{waiting}/cancel", data={"csrf": csrf})
    assert "Cancelled." in cancelled.text
    assert "Abort requested" in aborted.text
    assert status_of(db, waiting) == ("cancelled", False)
    assert status_of(db, running) == ("doing", True)
    assert again.status_code == 409


async def test_actions_on_an_unknown_job_or_action_are_404s(
    db: psycopg.Connection, client: Client
) -> None:
    job = make_job(db, "todo")
    async with client() as http:
        csrf = csrf_of(await http.get(f"/jobs/{job}"))
        unknown_job = await http.post("/jobs/424242/cancel", data={"csrf": csrf})
        unknown_action = await http.post(f"/jobs/{job}/delete", data={"csrf": csrf})
        abort_waiting = await http.post(f"/jobs/{job}/abort", data={"csrf": csrf})
    assert unknown_job.status_code == 404
    assert "no job 424242" in unknown_job.text
    assert unknown_action.status_code == 404
    assert "no action &#39;delete&#39;" in unknown_action.text
    assert "Cancelled." in abort_waiting.text  # a waiting job is cancelled, not aborted
    assert status_of(db, job)[0] == "cancelled"


async def test_pause_and_resume_a_queue(db: psycopg.Connection, client: Client) -> None:
    make_job(db, "todo", queue="mail")
    async with client() as http:
        overview = await http.get("/")
        assert ">Pause</button>" in overview.text
        csrf = csrf_of(overview)
        done = await http.post("/queues/pause", data={"csrf": csrf, "queue": "mail"})
        assert paused(db) == ["mail"]
        assert "Queue paused" in done.text
        assert ">Resume</button>" in done.text
        await http.post("/queues/resume", data={"csrf": csrf, "queue": "mail"})
        blank = await http.post("/queues/pause", data={"csrf": csrf, "queue": " "})
    assert paused(db) == []
    assert blank.status_code == 400
    assert "a queue name must be a non-blank str" in blank.text


@pytest.mark.parametrize(
    "forge",
    ["no field", "wrong field", "no cookie", "other origin"],
)
async def test_csrf_refusals_change_nothing(
    db: psycopg.Connection, client: Client, forge: str
) -> None:
    job = make_job(db, "failed")
    async with client() as http:
        csrf = csrf_of(await http.get(f"/jobs/{job}"))
        data = {"csrf": csrf}
        headers = {}
        if forge == "no field":
            data = {}
        elif forge == "wrong field":
            data = {"csrf": csrf[:-2] + "xx"}
        elif forge == "no cookie":
            http.cookies.clear()
        else:
            headers = {"Origin": "http://evil.example"}
        refused = await http.post(f"/jobs/{job}/retry", data=data, headers=headers)
        same_origin = await http.post(
            "/queues/pause",
            data={"csrf": csrf, "queue": "q"},
            # The page's own host, over https as behind a TLS proxy.
            headers={"Origin": BASE_URL.replace("http:", "https:")},
        )
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    assert status_of(db, job) == ("failed", False)
    assert same_origin.status_code == (403 if forge == "no cookie" else 200)


async def test_read_only_hides_and_refuses_every_action(
    db: psycopg.Connection, client: Client
) -> None:
    failed = make_job(db, "failed", queue="mail")
    waiting = make_job(db, "todo", queue="mail")
    async with client(read_only=True) as http:
        overview = await http.get("/")
        job_page = await http.get(f"/jobs/{failed}")
        csrf = http.cookies[security.CSRF_COOKIE]  # read-only pages have no form
        refusals = [
            await http.post(f"/jobs/{failed}/retry", data={"csrf": csrf}),
            await http.post(f"/jobs/{waiting}/cancel", data={"csrf": csrf}),
            await http.post(f"/jobs/{waiting}/abort", data={"csrf": csrf}),
            await http.post("/queues/pause", data={"csrf": csrf, "queue": "mail"}),
            await http.post("/queues/resume", data={"csrf": csrf, "queue": "mail"}),
        ]
    assert "read-only" in overview.text
    for page in (overview, job_page):
        assert '<form method="post"' not in page.text
    assert [page.status_code for page in refusals] == [403] * 5
    assert all("read-only" in page.text for page in refusals)
    assert status_of(db, failed) == ("failed", False)
    assert status_of(db, waiting) == ("todo", False)
    assert paused(db) == []


async def test_a_token_guards_every_page(db: psycopg.Connection, client: Client) -> None:
    token = "s3cret-token-for-tests"  # noqa: S105 (a test's token)
    job = make_job(db, "failed")
    async with client(token=token) as http:
        anonymous = await http.get("/", follow_redirects=False)
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/login"
        assert (
            await http.get("/workers", headers={"Authorization": "Bearer nope"})
        ).status_code == 401
        assert (await http.post(f"/jobs/{job}/retry", data={})).status_code == 401
        bearer = await http.get("/", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200
        login = await http.get("/login")
        csrf = csrf_of(login)
        wrong = await http.post("/login", data={"csrf": csrf, "token": "guess"})
        assert wrong.status_code == 401
        logged = await http.post(
            "/login", data={"csrf": csrf, "token": token}, follow_redirects=False
        )
        cookie = logged.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert token not in cookie
        assert http.cookies[security.SESSION_COOKIE] == security.session_value(token)
        pages = [await http.get(path) for path in ("/", "/jobs", f"/jobs/{job}", "/workers")]
    assert [page.status_code for page in pages] == [200] * 4
    assert all(token not in page.text for page in [bearer, login, wrong, *pages])


async def test_login_without_csrf_is_refused(db: psycopg.Connection, client: Client) -> None:
    async with client(token="t0ken") as http:  # noqa: S106 (a test's token)
        refused = await http.post("/login", data={"token": "t0ken"})
    assert refused.status_code == 403
    assert security.SESSION_COOKIE not in refused.cookies


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    [
        (["--host", ANYWHERE], None, "--host '0.0.0.0' is reachable from other machines"),
        (["--host", "example.org"], None, "--host 'example.org' is reachable"),
        (["--host", ANYWHERE, "--token", " "], None, "the dashboard's token is blank"),
        (["--host", ANYWHERE], "", "the dashboard's token is blank"),
        (["--port", "70000"], None, "expected a port from 1 to 65535, got '70000'"),
    ],
)
def test_cli_refuses_to_listen_openly_without_a_token(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    environment: str | None,
    message: str,
) -> None:
    if environment is None:
        monkeypatch.delenv("DAWDLE_DASHBOARD_TOKEN", raising=False)
    else:
        monkeypatch.setenv("DAWDLE_DASHBOARD_TOKEN", environment)
    with pytest.raises(SystemExit) as exited:
        main(["dashboard", *arguments])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_cli_says_when_it_cannot_listen(
    schema_dsn: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    monkeypatch.setenv("DAWDLE_DSN", schema_dsn)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--port", str(port), "--backend", backend])
    assert code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (
        f"dawdle dashboard: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
