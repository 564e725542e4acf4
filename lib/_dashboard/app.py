"""The dashboard's ASGI app: pages over the jobs database, and the actions on jobs and queues.

Starlette runs on anyio, so the same app serves on asyncio and on Trio. Pages are rendered
on the server by Jinja2 with autoescaping on every template (job arguments, task and
queue names are user data); no page carries a script. `dashboard(app)` takes a dawdle App
that the caller has opened (the CLI opens it around the server).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dawdle._cli_actions import RETRYABLE, _retry_batches, _why_not_retried
from dawdle._cli_jobs import age, when
from dawdle._dashboard import chart, queries, security
from dawdle._errors import ConfigurationError

if TYPE_CHECKING:
    from dawdle._app import App

# What an action's redirect may say: a key of this table, never free text from the URL.
NOTICES: Final = {
    "retried": "Retried: the job is due now.",
    "cancelled": "Cancelled.",
    "abort_requested": "Abort requested: its worker stops it.",
    "paused": "Queue paused: workers claim none of its jobs.",
    "resumed": "Queue resumed.",
    "already": "Nothing to do: it was so already.",
}

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("dawdle._dashboard", "templates"),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters["age"] = age
_TEMPLATES.filters["when"] = when

_STYLESHEET = resources.files("dawdle._dashboard").joinpath("templates/dashboard.css")

Handler = Callable[[Request], Awaitable[Response]]


class _RefusedError(Exception):
    """A request the dashboard answers with an error page (status, one line)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Dashboard:
    """The handlers, bound to one dawdle App and the dashboard's settings."""

    def __init__(self, app: App, *, read_only: bool, token: str | None) -> None:
        self.app = app
        self.read_only = read_only
        self.token = token
        self.finished = queries.FinishedPerMinute()

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """The page `name`, with the CSRF token of the session (its cookie set if new)."""
        csrf = security.csrf_token(request)
        notice = NOTICES.get(request.query_params.get("done", ""))
        html = _TEMPLATES.get_template(name).render(
            read_only=self.read_only,
            csrf=csrf,
            csrf_field=security.CSRF_FIELD,
            login=self.token is not None,
            notice=notice,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(security.CSRF_COOKIE) != csrf:
            response.set_cookie(
                security.CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/"
            )
        return response

    # -- pages ---------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Queues, runs ended per minute, workers alive."""
        data = await queries.overview(self.app, self.finished)
        return self.render(request, "overview.html", chart=chart.svg(data["per_minute"]), **data)

    async def jobs(self, request: Request) -> Response:
        """Jobs, newest first, filtered; a page per range of ids."""
        params = request.query_params
        status = params.get("status") or None
        if status is not None and status not in queries.STATUSES:
            raise _RefusedError(400, f"unknown status {status!r}: expected one of the listed ones")
        filters = queries.JobFilter(
            status=status, queue=params.get("queue") or None, task=params.get("task") or None
        )
        before = _positive(params.get("before"), "before")
        page = await queries.list_jobs(self.app, filters, before=before)
        return self.render(
            request,
            "jobs.html",
            page=page,
            filters=filters,
            statuses=queries.STATUSES,
            before=before,
            next_query=_query(filters, page.next_before),
        )

    async def job(self, request: Request) -> Response:
        """One job: arguments, status, attempts, events, stored errors."""
        job_id: int = request.path_params["job_id"]
        details = await queries.job_details(self.app, job_id)
        if details is None:
            raise _RefusedError(404, f"no job {job_id}")
        arguments = json.dumps(details["job"]["args"], indent=2, ensure_ascii=False)
        return self.render(request, "job.html", arguments=arguments, retryable=RETRYABLE, **details)

    async def workers(self, request: Request) -> Response:
        """Workers, their heartbeat's age and running jobs."""
        rows = await queries.workers(self.app)
        return self.render(request, "workers.html", workers=rows)

    async def login(self, request: Request) -> Response:
        """The login form (GET); the session cookie for the right token (POST)."""
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return self.render(request, "login.html", failed=False)
        form = await request.form()
        if not security.csrf_valid(request, form.get(security.CSRF_FIELD)):
            raise _RefusedError(403, "refused: the form's CSRF token is missing or stale")
        given = form.get("token")
        if not isinstance(given, str) or not security.same(given, self.token):
            return self.render(request, "login.html", status=401, failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            security.SESSION_COOKIE,
            security.session_value(self.token),
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    async def stylesheet(self, request: Request) -> Response:
        """The one stylesheet, from the package."""
        return Response(_STYLESHEET.read_text(), media_type="text/css")

    async def no_icon(self, request: Request) -> Response:
        """No icon, and no 404 in the browser's console for it."""
        return Response(status_code=204)

    # -- actions -------------------------------------------------------------------------------

    async def _checked_form(self, request: Request) -> dict[str, Any]:
        """The action's form, once read-only mode, the origin and the CSRF token allow it."""
        if self.read_only:
            raise _RefusedError(403, "refused: the dashboard is read-only (--read-only)")
        form = await request.form()
        if not security.csrf_valid(request, form.get(security.CSRF_FIELD)):
            raise _RefusedError(403, "refused: the form's CSRF token is missing or stale")
        return dict(form)

    async def job_action(self, request: Request) -> Response:
        """Retry, cancel or abort one job."""
        await self._checked_form(request)
        job_id: int = request.path_params["job_id"]
        action: str = request.path_params["action"]
        if action not in {"retry", "cancel", "abort"}:
            raise _RefusedError(404, f"no action {action!r}")
        if await queries.job_status(self.app, job_id) is None:
            raise _RefusedError(404, f"no job {job_id}")
        if action == "retry":
            retried = await _retry_batches(
                self.app, statuses=list(RETRYABLE), id=job_id, task=None, queue=None
            )
            if not retried:
                raise _RefusedError(409, await _why_not_retried(self.app, job_id))
            return RedirectResponse(f"/jobs/{job_id}?done=retried", status_code=303)
        abort = action == "abort"
        if not await self.app.job_manager.cancel_job_by_id_async(job_id, abort=abort):
            raise _RefusedError(409, f"job {job_id} is not waiting or running: nothing to {action}")
        # Aborting a job still waiting cancels it (Procrastinate's rule): say which it was.
        done = "abort_requested"
        if not abort or await queries.job_status(self.app, job_id) == "cancelled":
            done = "cancelled"
        return RedirectResponse(f"/jobs/{job_id}?done={done}", status_code=303)

    async def queue_action(self, request: Request) -> Response:
        """Pause or resume a queue (its name in the form: any text can name a queue)."""
        form = await self._checked_form(request)
        action: str = request.path_params["action"]
        name = form.get("queue")
        if not isinstance(name, str):
            raise _RefusedError(400, "the form names no queue")
        try:
            if action == "pause":
                changed = await self.app.pause_queue_async(name, reason="paused from the dashboard")
            elif action == "resume":
                changed = await self.app.resume_queue_async(name)
            else:
                raise _RefusedError(404, f"no action {action!r}")
        except ConfigurationError as exc:
            raise _RefusedError(400, str(exc)) from None
        done = ("paused" if action == "pause" else "resumed") if changed else "already"
        return RedirectResponse(f"/?done={done}", status_code=303)


def _positive(text: str | None, what: str) -> int | None:
    """A positive int from the query string, or None; else a 400 naming the value."""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1 or len(text) > 19:
        raise _RefusedError(400, f"{what} must be a job id (a positive integer), got {text!r:.40}")
    return int(text)


def _query(filters: queries.JobFilter, before: int | None) -> str | None:
    """The next page's query string, or None."""
    if before is None:
        return None
    params = {"status": filters.status, "queue": filters.queue, "task": filters.task}
    kept = {key: value for key, value in params.items() if value}
    return urlencode({**kept, "before": before})


async def _lifespan(receive: Receive, send: Send) -> None:
    """The server's start and stop: nothing to do (the caller opens the App around it).

    Answered here rather than by Starlette, whose handler reports a cancelled lifespan (the
    server failing to listen) as a failure with a traceback.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Guard:
    """ASGI middleware: the token on every request, security headers, refusals as pages."""

    def __init__(self, inner: ASGIApp, dashboard: Dashboard) -> None:
        self.inner = inner
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(
                    (name.lower().encode(), value.encode())
                    for name, value in security.SECURITY_HEADERS.items()
                )
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope, receive)
        public = scope["path"] in {"/login", "/dashboard.css", "/favicon.ico"}
        if not public and not security.authorized(request, self.dashboard.token):
            if request.method == "GET" and "authorization" not in request.headers:
                response: Response = RedirectResponse("/login", status_code=303)
            else:
                response = self._error(request, 401, "refused: a valid token is needed")
            await response(scope, receive, with_headers)
            return
        await self.inner(scope, receive, with_headers)

    def _error(self, request: Request, status: int, message: str) -> Response:
        return self.dashboard.render(request, "error.html", status=status, message=message)


def dashboard(app: App, *, read_only: bool = False, token: str | None = None) -> ASGIApp:
    """The dashboard over `app`'s database, as an ASGI app (`app` opened by the caller)."""
    handlers = Dashboard(app, read_only=read_only, token=token)
    routes = [
        Route("/", handlers.overview, name="overview"),
        Route("/jobs", handlers.jobs, name="jobs"),
        Route("/jobs/{job_id:int}", handlers.job, name="job"),
        Route("/jobs/{job_id:int}/{action:str}", handlers.job_action, methods=["POST"]),
        Route("/queues/{action:str}", handlers.queue_action, methods=["POST"]),
        Route("/workers", handlers.workers, name="workers"),
        Route("/login", handlers.login, methods=["GET", "POST"]),
        Route("/dashboard.css", handlers.stylesheet),
        Route("/favicon.ico", handlers.no_icon),
    ]

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _RefusedError)  # noqa: S101 (registered for _RefusedError only)
        return handlers.render(request, "error.html", status=exc.status, message=exc.message)

    return _Guard(Starlette(routes=routes, exception_handlers={_RefusedError: refused}), handlers)
