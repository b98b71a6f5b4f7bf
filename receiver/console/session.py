"""The console's session: a signed cookie, exchanged once for an admin or viewer token.

The cookie holds no secret of the token, only its id, its kind, who it is (for the
audit trail), when the sign-in happened and the session's CSRF value; it is signed
(``itsdangerous``) with ``console_secret`` or, when that is empty, with a key the
server generates once and keeps in the database (``patchwatch.store.server_secrets``),
so that every gunicorn worker and every receiver checks the others' cookies.

Each request checks the token again: a revoked or expired token ends its sessions at
once, and a sign-in older than ``console_session_minutes`` asks for the token again.
The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Lax`` (a link from Grafana
keeps the session, a form posted from another site does not carry it) and ``Secure``
unless ``console_cookie_secure`` is off.

Every POST carries the session's CSRF value in a hidden field (:func:`check_csrf`),
and an ``Origin`` header, when the browser sends one, must be this server's: together
they refuse a form another site makes a signed-in browser send.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import Request
from flask import Response
from flask import current_app
from itsdangerous import BadSignature
from itsdangerous import URLSafeSerializer

from patchwatch.domain.errors import AuthError
from patchwatch.domain.settings import Settings
from patchwatch.store.server_secrets import server_secret
from patchwatch.store.tokens import CONSOLE_KINDS
from patchwatch.store.tokens import authenticate
from patchwatch.store.tokens import live_token

COOKIE = "pw_console"
SALT = "patchwatch.console.session"
SECRET_NAME = "console_session"
CSRF_FIELD = "csrf"
MAX_COOKIE_CHARS = 2048  # ours are about 300; a longer one is not ours


@dataclass(frozen=True)
class Session:
    """What the cookie says, checked: ``kind`` is None when nobody is signed in."""

    csrf: str
    kind: str | None = None
    token_id: int | None = None
    who: str = ""
    signed_in_at: float = 0.0
    static_digest: str = ""  # for the static admin token: which one (it may change)
    expired: bool = False  # a sign-in was there and has run out

    @property
    def signed_in(self) -> bool:
        return self.kind is not None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


def _serializer(settings: Settings) -> URLSafeSerializer:
    key = current_app.config.get("PATCHWATCH_CONSOLE_KEY")
    if key is None:
        key = settings.console_secret or server_secret(SECRET_NAME, time.time())
        current_app.config["PATCHWATCH_CONSOLE_KEY"] = key
    return URLSafeSerializer(key, salt=SALT)


def _static_digest(settings: Settings) -> str:
    return hashlib.sha256(settings.admin_token.encode()).hexdigest()[:32]


def _fresh() -> Session:
    return Session(csrf=secrets.token_urlsafe(24))


def load_session(request: Request, settings: Settings, now: float) -> Session:
    """The request's session, checked against the token store and the clock.

    A missing, forged or stale cookie gives a fresh anonymous session (with a new CSRF
    value); one whose sign-in ran out or whose token was revoked gives an anonymous
    session marked ``expired``, keeping its CSRF value.
    """
    raw = request.cookies.get(COOKIE, "")
    if not raw or len(raw) > MAX_COOKIE_CHARS:
        return _fresh()
    try:
        data: Any = _serializer(settings).loads(raw)
    except BadSignature:
        return _fresh()
    if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
        return _fresh()
    csrf = data["csrf"]
    kind = data.get("kind")
    if kind is None:
        return Session(csrf=csrf)
    signed_in_at = float(data.get("at") or 0.0)
    ended = Session(csrf=csrf, expired=True)
    if kind not in CONSOLE_KINDS or now - signed_in_at > settings.console_session_minutes * 60:
        return ended
    token_id = data.get("tid")
    if token_id is None:  # the static admin token: still the one configured?
        if not settings.admin_token or data.get("sd") != _static_digest(settings):
            return ended
    elif (
        not isinstance(token_id, int)
        or (tok := live_token(token_id, now)) is None
        or (tok.kind != kind)
    ):
        return ended
    return Session(csrf=csrf, kind=kind, token_id=token_id, who=str(data.get("who", "")),
                   signed_in_at=signed_in_at, static_digest=str(data.get("sd", "")))  # fmt: skip


def sign_in(plaintext: str, settings: Settings, now: float, csrf: str) -> Session:
    """Exchange a token for a session.

    :raises AuthError: 401 for a token that is not valid, 403 for one that is valid
        but may not sign in (a host or enrollment token).
    """
    plaintext = plaintext.strip()
    if not plaintext:
        raise AuthError("paste an admin or viewer token")
    if settings.admin_token and hmac.compare_digest(
        plaintext.encode(), settings.admin_token.encode()
    ):
        return Session(csrf=csrf, kind="admin", who="static admin token (setting admin_token)",
                       signed_in_at=now, static_digest=_static_digest(settings))  # fmt: skip
    token = authenticate(plaintext, now)
    if token.kind not in CONSOLE_KINDS:
        raise AuthError(
            f"a {token.kind} token cannot sign in to the console: use an admin or viewer "
            "token ('patchwatch token create --viewer')",
            403,
        )
    who = f"{token.kind} token {token.prefix}" + (f" ({token.comment})" if token.comment else "")
    return Session(csrf=csrf, kind=token.kind, token_id=token.id, who=who, signed_in_at=now)


def save_session(response: Response, session: Session, settings: Settings) -> None:
    """Write ``session`` to the response's cookie (a browser-session cookie: the
    sign-in's age is checked on the server, not left to the browser)."""
    data: dict[str, object] = {"csrf": session.csrf}
    if session.signed_in:
        data.update(kind=session.kind, tid=session.token_id, who=session.who,
                    at=session.signed_in_at)  # fmt: skip
        if session.static_digest:
            data["sd"] = session.static_digest
    response.set_cookie(
        COOKIE, _serializer(settings).dumps(data), path="/", httponly=True,
        secure=settings.console_cookie_secure, samesite="Lax",
    )  # fmt: skip


def signed_out() -> Session:
    """The session after signing out: nobody, and a new CSRF value."""
    return _fresh()


def check_csrf(request: Request, session: Session, allowed_origins: set[str]) -> bool:
    """Whether a POST is the console's own form: its CSRF field matches the session's,
    and its ``Origin`` (when sent) is this server."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.rstrip("/") not in allowed_origins:
        return False
    given = request.form.get(CSRF_FIELD, "")
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
