"""The console's blueprint and what every page shares: the gate, the cookie, the headers.

The gate (:func:`_gate`) runs before every console request: the console is off (a
page that says how to turn it on) while no admin or viewer token exists; a POST must
pass the CSRF check; every page but sign-in needs a session; an action needs an admin.
"""

from __future__ import annotations

import time
from datetime import UTC
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import g
from flask import make_response
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for

from patchwatch.domain.errors import AmbiguousError
from patchwatch.domain.errors import ConflictError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.settings import Settings
from patchwatch.receiver.console.session import CSRF_FIELD
from patchwatch.receiver.console.session import Session
from patchwatch.receiver.console.session import check_csrf
from patchwatch.receiver.console.session import load_session
from patchwatch.receiver.console.session import save_session
from patchwatch.store.tokens import console_token_exists

bp = Blueprint(
    "console", __name__, url_prefix="/ui", template_folder="templates",
    static_folder="static", static_url_path="/static",
)  # fmt: skip

OPEN_ENDPOINTS = frozenset({"console.login", "console.login_post", "console.static"})
SECURITY_HEADERS = {
    # no script at all: the console works without JavaScript, and none may be injected
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def settings() -> Settings:
    return current_app.config["PATCHWATCH_SETTINGS"]


def session() -> Session:
    return g.console_session


def now() -> float:
    return g.console_now


def page(template: str, status: int = 200, **context: Any) -> Response:
    """Render a console template with what every page shows (who is signed in)."""
    response = make_response(render_template(f"console/{template}", **context), status)
    return response


def message_page(title: str, message: str, status: int) -> Response:
    return page("message.html", status, title=title, message=message)


def _origins() -> set[str]:
    """The origins a console form may come from: this server as asked, and console_url."""
    out = {request.host_url.rstrip("/")}
    if settings().console_url:
        parts = urlsplit(settings().console_url)
        out.add(f"{parts.scheme}://{parts.netloc}")
    return out


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path on this server, else the landing page."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.attention")


@bp.before_request
def _gate() -> Response | None:
    g.console_now = time.time()
    if request.endpoint == "console.static":
        return None
    s = settings()
    if not s.admin_token and not console_token_exists(g.console_now):
        g.console_session = None
        return page("off.html", 503)
    g.console_session = load_session(request, s, g.console_now)
    if request.method == "POST" and not check_csrf(request, g.console_session, _origins()):
        return message_page(
            "Refused",
            "This form did not come from this console's own page (its CSRF check failed), "
            "or it was opened before you signed in again. Nothing was changed: go back, "
            "reload the page and try again.",
            403,
        )
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if not g.console_session.signed_in:
        target = request.full_path if request.method == "GET" else request.path
        args: dict[str, Any] = {"next": target.rstrip("?")}
        if g.console_session.expired:
            args["expired"] = "1"
        return redirect(url_for("console.login", **args), 303)  # type: ignore[return-value]
    return None


@bp.after_request
def _finish(response: Response) -> Response:
    if getattr(g, "console_session", None) is not None:
        save_session(response, g.console_session, settings())
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def require_admin_page() -> Response | None:
    """The answer to a viewer asking for an action: 403, nothing changed."""
    if session().is_admin:
        return None
    return message_page(
        "Not allowed",
        "You are signed in with a viewer token, which can look but not change anything. "
        "Sign in with an admin token to do this. Nothing was changed.",
        403,
    )


@bp.errorhandler(NotFoundError)
def _not_found(exc: NotFoundError) -> Response:
    return message_page("Not found", str(exc), 404)


@bp.get("/<path:unknown>")
def _no_such_page(unknown: str) -> Response:
    """A console address that names no page: the console's own 404 page, not the API's
    JSON, so that a mistyped or outdated link (from a dashboard, an alert, a bookmark)
    still lands somewhere with the console's navigation. It passes the gate like every
    page, so it tells a visitor who has not signed in nothing about what exists."""
    return message_page("Not found", f"The console has no page at /ui/{unknown}.", 404)


@bp.errorhandler(ParseError)
def _bad_input(exc: ParseError) -> Response:
    return message_page("Bad input", f"{exc.where}: {exc.message}", 400)


@bp.errorhandler(AmbiguousError)
def _ambiguous(exc: AmbiguousError) -> Response:
    return message_page("Ambiguous", str(exc), 400)


@bp.errorhandler(ConflictError)
def _conflict(exc: ConflictError) -> Response:
    return message_page("Refused", str(exc), 409)


def fmt_time(ts: float | None) -> str:
    """A stored time as people read it, in UTC; "never" or "unknown" is the caller's."""
    if ts is None:
        return ""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ts:g}"


def fmt_age(ts: float | None) -> str:
    """How long ago ``ts`` was: "3 min ago", "2.5 h ago", "4.0 days ago"."""
    if ts is None:
        return ""
    seconds = now() - ts
    if seconds < 0:
        return "in the future"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def query_with(**changes: object) -> str:
    """This page's URL with some query parameters changed (None or "" removes one)."""
    args: dict[str, Any] = request.args.to_dict()
    for key, value in changes.items():
        if value is None or value == "":
            args.pop(key, None)
        else:
            args[key] = str(value)
    return url_for(request.endpoint or "console.attention", **(request.view_args or {}), **args)


def count_of(n: int, singular: str, plural: str | None = None) -> str:
    """``1 host``, ``3 hosts``, ``1 repository``, ``2 repositories``."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


@bp.context_processor
def _shared() -> dict[str, object]:
    return {
        "console_session": getattr(g, "console_session", None), "csrf_field": CSRF_FIELD,
        "fmt_time": fmt_time, "fmt_age": fmt_age, "query_with": query_with,
        "count_of": count_of,
    }  # fmt: skip
