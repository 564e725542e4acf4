"""The dashboard in Debian's Chromium, against a real dashboard and worker.

Every page loads without a console error, user data shows as text (no script runs), retry
runs a failed job, a paused queue is not claimed; with a token, the login form sets a cookie
no script reads, and forged posts are refused.

Each test starts a real `dawdle dashboard` and a real worker (on the other runtime) and
waits for what it checks by polling with a deadline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.browser.conftest import Process, dashboard, poll

CHROMIUM = os.environ.get("DAWDLE_CHROMIUM", "/usr/bin/chromium")
# Short enough for a queue name: its NOTIFY channel holds under 64 bytes.
HOSTILE = "<script>window.__pwn=1</script>"
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page that records console errors and uncaught exceptions; none may occur."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield tab
    context.close()
    assert problems == []


@pytest.fixture
def db(schema_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(schema_dsn, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, dawdle_queue_pauses "
            "RESTART IDENTITY CASCADE"
        )
        yield conn


def defer(db: psycopg.Connection, task: str, queue: str, args: object = None) -> int:
    """A job inserted as Procrastinate defers one (its trigger notifies the workers)."""
    row = db.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) VALUES (%s, %s, %s) "
        "RETURNING id",
        (queue, task, json.dumps(args or {})),
    ).fetchone()
    assert row is not None
    return int(row[0])


def status(db: psycopg.Connection, job: int) -> str:
    row = db.execute("SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job,)).fetchone()
    assert row is not None
    return str(row[0])


def shown_status(page: Page, url: str) -> str:
    page.goto(url)
    return page.inner_text("#job-status")


def test_pages_actions_and_escaping(
    server: str, worker: Process, db: psycopg.Connection, page: Page, screenshots: Path
) -> None:
    for queue in ("mail", "reports"):
        for _ in range(20):
            defer(db, "noop", queue)
    hostile = defer(db, HOSTILE, HOSTILE, {"note": HOSTILE})
    failing = defer(db, "fail_once", "billing", {"card": "4242", "amount": 1999})
    poll(lambda: status(db, failing) == "failed", timeout=30, what="the job to fail")

    page.goto(f"{server}/workers")
    poll(
        lambda: page.reload() and "alive" in page.inner_text("#workers"),
        timeout=30,
        what="the worker to show as alive",
    )

    # Every page loads; user data is text, never markup.
    for path in ("/", "/jobs", f"/jobs/{hostile}", "/workers", f"/jobs?queue={HOSTILE}"):
        page.goto(f"{server}{path}")
        assert page.evaluate("window.__pwn") is None
        assert page.locator("script").count() == 0
    page.goto(f"{server}/jobs/{hostile}")
    assert page.inner_text("#job-task") == HOSTILE
    assert HOSTILE in page.inner_text("#job-args")

    # Retry a failed job: it runs again, and succeeds.
    job_url = f"{server}/jobs/{failing}"
    page.goto(job_url)
    assert page.inner_text("#job-status") == "failed"
    page.click("#retry")
    assert "Retried" in page.inner_text(".notice")
    poll(
        lambda: shown_status(page, job_url) == "succeeded",
        timeout=30,
        what="the retried job to succeed",
    )
    # The first run's error, stored by the worker, is shown with its traceback.
    error = page.locator(".error-entry").first
    assert "card 4242 declined for 1999 (first run)" in error.inner_text()
    assert "in fail_once" in error.locator("pre").inner_text()
    page.screenshot(path=str(screenshots / "dashboard-job.png"), full_page=True)

    # Pause a queue: the worker claims other queues' jobs, not its own; resume: it does.
    page.goto(f"{server}/")
    page.locator('tr[data-queue="reports"] button').click()
    assert "Queue paused" in page.inner_text(".notice")
    assert "paused since" in page.inner_text('tr[data-queue="reports"]')
    held = defer(db, "noop", "reports")
    control = defer(db, "noop", "mail")
    poll(
        lambda: shown_status(page, f"{server}/jobs/{control}") == "succeeded",
        timeout=30,
        what="the worker to run a job of an active queue",
    )
    assert shown_status(page, f"{server}/jobs/{held}") == "todo"
    assert status(db, held) == "todo"
    page.goto(f"{server}/")
    page.screenshot(path=str(screenshots / "dashboard-overview.png"), full_page=True)
    page.locator('tr[data-queue="reports"] button').click()
    assert "Queue resumed" in page.inner_text(".notice")
    poll(
        lambda: shown_status(page, f"{server}/jobs/{held}") == "succeeded",
        timeout=30,
        what="the resumed queue's job to run",
    )
    assert worker.alive()


def forged_post(tab: Page, target: str) -> tuple[int, str]:
    """From the page `tab` shows, post a pause of 'mail' with a made-up CSRF token."""
    tab.set_content(
        f'<form method="post" action="{target}/queues/pause">'
        '<input name="queue" value="mail"><input name="csrf" value="forged"></form>'
    )
    with tab.expect_navigation() as navigation:
        tab.locator("form").evaluate("form => form.submit()")
    return navigation.value.status, tab.inner_text("#error-message")


def test_token_login_and_a_forged_post(
    schema_dsn: str, backend: str, tmp_path: Path, db: psycopg.Connection, browser: Browser
) -> None:
    token = "browser-test-token"  # noqa: S105 (a test's token)
    defer(db, "noop", "mail")
    with dashboard(
        schema_dsn, backend, tmp_path / "dash.log", {"DAWDLE_DASHBOARD_TOKEN": token}
    ) as base:
        context = browser.new_context()
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        tab.goto(f"{base}/workers")
        assert tab.url == f"{base}/login"
        tab.fill("input[name=token]", "wrong")
        tab.click("button[type=submit]")
        assert "not the dashboard's" in tab.inner_text("main")
        tab.fill("input[name=token]", token)
        tab.click("button[type=submit]")
        assert tab.url == f"{base}/"
        cookies = {cookie["name"]: cookie for cookie in context.cookies()}
        session = cookies["dawdle_session"]
        assert session["httpOnly"]
        assert session["sameSite"] == "Strict"
        assert token not in session["value"]
        assert tab.evaluate("document.cookie") == ""  # no script can read either cookie
        # A form without the session's CSRF token, on a page of the dashboard's: refused.
        refused = (403, "refused: the form's CSRF token is missing or stale")
        assert forged_post(tab, base) == refused
        # The same from a page of no site of the dashboard's (a new tab's about:blank): the
        # browser keeps the SameSite=Strict session cookie to itself.
        elsewhere = context.new_page()
        assert forged_post(elsewhere, base) == (401, "refused: a valid token is needed")
        assert db.execute("SELECT count(*) FROM dawdle_queue_pauses").fetchone() == (0,)
        context.close()
