"""Who may see the dashboard and change jobs: the token, CSRF, the headers of every page.

With a token, every request needs it: an `Authorization: Bearer` header (scripts) or the
session cookie the login form sets (HttpOnly, SameSite=Strict: the token itself never
reaches a page or a script). The cookie holds an HMAC of the token, not the token. Every
change is a POST carrying the per-session CSRF token of its page (double submit: a cookie
and a form field, which another site can neither read nor set) from a page of this origin
(Origin, when the browser sends it, must be ours). Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

SESSION_COOKIE: Final = "dawdle_session"
CSRF_COOKIE: Final = "dawdle_csrf"
CSRF_FIELD: Final = "csrf"

# No script, style from our own stylesheet only, no framing, forms post here only: an
# escaping mistake would still run nothing.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'none'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def session_value(token: str) -> str:
    """What the session cookie holds for `token`: a keyed hash, so the token stays unseen."""
    return hmac.new(token.encode(), b"dawdle dashboard session", hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """`given == expected`, in time independent of where they differ."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def authorized(request: Request, token: str | None) -> bool:
    """True without a token, or when the request carries it (header or session cookie)."""
    if token is None:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and same(credentials.strip(), token):
        return True
    return same(request.cookies.get(SESSION_COOKIE), session_value(token))


def csrf_token(request: Request) -> str:
    """The session's CSRF token: the cookie's, or a new one (set by `with_csrf_cookie`)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and len(existing) == 43 and existing.replace("-", "").replace("_", "").isalnum():
        return existing
    return secrets.token_urlsafe(32)


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another host than ours.

    The scheme is not compared: behind a TLS proxy the page is https and the request the
    dashboard sees is http.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not sent by every client; the CSRF token is the protection
    return urlsplit(origin).netloc == request.headers.get("host", "")


def csrf_valid(request: Request, field: object) -> bool:
    """True when the form's CSRF field matches the session's cookie, from our origin."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not isinstance(field, str) or cookie is None:
        return False
    return same_origin(request) and same(field, cookie)
