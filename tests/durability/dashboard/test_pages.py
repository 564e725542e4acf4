"""The dashboard's pages on PostgreSQL, on asyncio and on Trio.

What each shows, filters, pagination, stored errors, escaping of user data, bad query strings.
"""

from __future__ import annotations

import html
import re

import httpx
import psycopg
import psycopg.conninfo
import pytest

from dawdle import App, PsycopgConnector
from dawdle._dashboard import queries
from dawdle._dashboard.app import dashboard
from tests.durability.dashboard.conftest import Client
from tests.durability.made_jobs import add_worker, make_job
from tests.durability.worker.helpers import dawdle_table_dropped

pytestmark = pytest.mark.anyio

HOSTILE = "<script>window.pwned = 1</script>\"&'"


def next_link(text: str) -> str | None:
    """The query string of the page's link to older jobs, or None."""
    found = re.search(r'<a href="/jobs\?([^"]*)" rel="next" id="next-page">', text)
    return None if found is None else html.unescape(found.group(1))


async def test_overview_counts_queues_workers_and_runs(
    db: psycopg.Connection, client: Client
) -> None:
    worker = add_worker(db)
    add_worker(db, age_seconds=3600)
    for _ in range(3):
        make_job(db, "todo", queue="mail")
    make_job(db, "doing", queue="mail", worker_id=worker)
    make_job(db, "failed", queue="reports")
    make_job(db, "succeeded", queue="reports")
    db.execute("INSERT INTO dawdle_queue_pauses (queue_name, reason) VALUES ('idle', 'why')")
    async with client() as http:
        page = await http.get("/")
    assert page.status_code == 200
    text = page.text
    mail = text.split('data-queue="mail"')[1].split("</tr>")[0]
    assert [cell.split(">")[-1] for cell in mail.split("</td>")[1:4]] == ["3", "1", "0"]
    reports = text.split('data-queue="reports"')[1].split("</tr>")[0]
    assert "/jobs?queue=reports&amp;status=failed" in reports
    idle = text.split('data-queue="idle"')[1].split("</tr>")[0]
    assert "paused since" in idle
    assert '<span id="workers-alive">1</span>' in text
    assert '<svg class="chart"' in text
    assert 'id="failed-index-hint"' in text  # the module's database has no such index
    assert 'aria-label="runs ended in the last hour: 2"' in text


async def test_the_failed_index_is_used_once_created(
    db: psycopg.Connection, client: Client
) -> None:
    make_job(db, "failed", queue="mail")
    db.execute(queries.CREATE_FAILED_INDEX)
    try:
        async with client() as http:
            page = await http.get("/")
    finally:
        db.execute(f"DROP INDEX {queries.FAILED_INDEX}")
    assert 'id="failed-index-hint"' not in page.text
    assert "/jobs?queue=mail&amp;status=failed" in page.text


async def test_the_chart_counts_runs_that_end_after_the_first_render(
    db: psycopg.Connection, client: Client
) -> None:
    make_job(db, "succeeded")
    async with client() as http:
        first = await http.get("/")
        make_job(db, "failed")
        make_job(db, "aborted")
        second = await http.get("/")
    assert 'aria-label="runs ended in the last hour: 1"' in first.text
    assert 'aria-label="runs ended in the last hour: 3"' in second.text


async def test_jobs_filters_by_status_queue_and_task(
    db: psycopg.Connection, client: Client
) -> None:
    failed = make_job(db, "failed", queue="mail", task="send")
    make_job(db, "failed", queue="other", task="send")
    make_job(db, "todo", queue="mail", task="send")
    make_job(db, "failed", queue="mail", task="bill")
    async with client() as http:
        page = await http.get("/jobs", params={"status": "failed", "queue": "mail", "task": "send"})
        everything = await http.get("/jobs")
    assert page.status_code == 200
    assert page.text.count('<a href="/jobs/') == 1
    assert f'<a href="/jobs/{failed}">' in page.text
    assert everything.text.count('<a href="/jobs/') == 4


async def test_jobs_pages_by_id_newest_first(db: psycopg.Connection, client: Client) -> None:
    ids = [make_job(db, "todo") for _ in range(queries.PAGE_SIZE + 10)]
    async with client() as http:
        first = await http.get("/jobs")
        assert f'<a href="/jobs/{ids[-1]}">' in first.text
        assert first.text.count('<a href="/jobs/') == queries.PAGE_SIZE
        link = next_link(first.text)
        assert link == f"before={ids[10]}"
        second = await http.get(f"/jobs?{link}")
    assert second.text.count('<a href="/jobs/') == 10
    assert f'<a href="/jobs/{ids[0]}">' in second.text
    assert 'id="next-page"' not in second.text


async def test_a_rare_filter_searches_a_window_of_ids_per_page(
    db: psycopg.Connection, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "SCAN_WINDOW", 10)
    rare = make_job(db, "failed")
    for _ in range(25):
        make_job(db, "todo")
    async with client() as http:
        first = await http.get("/jobs", params={"status": "failed"})
        assert "No job matches" in first.text
        pages = [first]
        while (link := next_link(pages[-1].text)) is not None:
            pages.append(await http.get(f"/jobs?{link}"))
    found = [page for page in pages if f'<a href="/jobs/{rare}">' in page.text]
    assert len(found) == 1
    assert len(pages) == 3  # 26 ids, 10 a page


async def test_job_page_shows_arguments_events_and_stored_errors(
    db: psycopg.Connection, client: Client
) -> None:
    job = make_job(db, "failed", args='{"to": "a@example.com", "n": 2}')
    db.execute(
        "INSERT INTO dawdle_job_errors (job_id, attempt, exception_type, message, traceback) "
        "VALUES (%s, 1, 'ValueError', 'bad address', 'Traceback (most recent call last):\n  boom')",
        (job,),
    )
    async with client() as http:
        page = await http.get(f"/jobs/{job}")
    assert page.status_code == 200
    assert '<span class="status failed" id="job-status">failed</span>' in page.text
    assert "&#34;to&#34;: &#34;a@example.com&#34;" in page.text
    events = page.text.split('id="events"')[1].split("</ol>")[0]
    assert [line.split("</time> ")[1].split("<")[0] for line in events.split("<li>")[1:]] == [
        "deferred",
        "started",
        "failed",
    ]
    assert "<code>ValueError</code>: bad address" in page.text
    assert "Traceback (most recent call last):" in page.text
    assert 'id="retry"' in page.text


async def test_job_page_without_the_errors_table_says_so(
    db: psycopg.Connection, client: Client, schema_dsn: str
) -> None:
    job = make_job(db, "failed")
    with dawdle_table_dropped(schema_dsn, "dawdle_job_errors"):
        async with client() as http:
            page = await http.get(f"/jobs/{job}")
    assert page.status_code == 200
    assert '<p id="errors-missing">errors not stored: run dawdle schema --apply</p>' in page.text


async def test_workers_page_shows_heartbeat_age_and_running_jobs(
    db: psycopg.Connection, client: Client
) -> None:
    worker = add_worker(db, age_seconds=5)
    running = make_job(db, "doing", task="resize", worker_id=worker)
    async with client() as http:
        page = await http.get("/workers")
    row = page.text.split(f'<tr data-worker="{worker}">')[1].split("</tr>")[0]
    assert "<td>alive</td>" in row
    assert f'<a href="/jobs/{running}">{running}</a> <span class="task">resize</span>' in row
    found = re.search(r"<td>(\d+\.\d)s ago</td>", row)
    assert found is not None
    assert 5 <= float(found.group(1)) < 60


async def test_user_data_is_escaped_on_every_page(db: psycopg.Connection, client: Client) -> None:
    worker = add_worker(db)
    job = make_job(
        db,
        "doing",
        task=HOSTILE,
        queue=HOSTILE,
        args='{"html": "<script>window.pwned = 1</script>"}',
        worker_id=worker,
    )
    async with client() as http:
        pages = [
            await http.get("/"),
            await http.get("/jobs"),
            await http.get("/jobs", params={"queue": HOSTILE, "task": HOSTILE}),
            await http.get(f"/jobs/{job}"),
            await http.get("/workers"),
        ]
    for page in pages:
        assert page.status_code == 200
        assert "<script" not in page.text
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page.text
        assert "script-src 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=bogus", "unknown status &#39;bogus&#39;"),
        ("before=abc", "before must be a job id (a positive integer), got &#39;abc&#39;"),
        ("before=0", "before must be a job id"),
    ],
)
async def test_bad_query_strings_are_refused_with_one_line(
    db: psycopg.Connection,
    client: Client,
    query: str,
    message: str,
) -> None:
    async with client() as http:
        page = await http.get(f"/jobs?{query}")
    assert page.status_code == 400
    assert message in page.text


async def test_an_unknown_job_is_a_404(db: psycopg.Connection, client: Client) -> None:
    async with client() as http:
        page = await http.get("/jobs/424242")
    assert page.status_code == 404
    assert "no job 424242" in page.text


async def test_no_page_shows_the_connection_string_or_its_password(
    db: psycopg.Connection, schema_dsn: str
) -> None:
    secret = "hunter2-not-shown"  # noqa: S105 (a password that must not show)
    job = make_job(db, "failed")
    conninfo = psycopg.conninfo.make_conninfo(schema_dsn, password=secret)
    app = App(connector=PsycopgConnector(conninfo=conninfo, max_size=2))
    async with app.open_async():
        transport = httpx.ASGITransport(app=dashboard(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            pages = [
                await http.get(path)
                for path in ("/", "/jobs", f"/jobs/{job}", "/workers", "/jobs/999999", "/login")
            ]
    dbname = psycopg.conninfo.conninfo_to_dict(schema_dsn)["dbname"]
    for page in pages:
        assert secret not in page.text
        assert str(dbname) not in page.text
