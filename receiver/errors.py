"""Map errors to JSON answers in one place, so no input ever gets an HTML page or a trace.

The read API, the admin API and ingest share these answers: :func:`json_answer` is the
one mapping of the errors patchwatch raises on purpose to a status and a JSON body,
registered for the whole application and used as it is by the ingest protocols that
answer in patchwatch's own shape (``patchwatch.receiver.api``).
"""

from __future__ import annotations

import logging

from flask import Flask
from flask import Response
from flask import jsonify
from peewee import InterfaceError
from peewee import InternalError
from peewee import OperationalError
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException

from patchwatch.domain.errors import AmbiguousError
from patchwatch.domain.errors import AuthError
from patchwatch.domain.errors import ConflictError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.receiver.gate import RETRY_AFTER_SECONDS
from patchwatch.receiver.gate import Busy

log = logging.getLogger(__name__)

# what a client can be told and do something about; anything else is a 500
ANSWERED = (ParseError, AmbiguousError, TooLargeError, AuthError, NotFoundError, ConflictError,
            Busy)  # fmt: skip
Answerable = (
    ParseError | AmbiguousError | TooLargeError | AuthError | NotFoundError | ConflictError | Busy
)


def retry_later(message: str) -> tuple[Response, int]:
    """503 with ``Retry-After``: nothing was acknowledged, so the client sends it again."""
    response = jsonify(error=message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response, 503


def json_answer(exc: Answerable) -> tuple[Response, int]:
    """The status and JSON body of an error a client can act on.

    A 401 names the scheme to use (the read and admin APIs and native reports all take
    ``Bearer`` tokens).
    """
    if isinstance(exc, ParseError):
        return jsonify(error=exc.message, where=exc.where), 400
    if isinstance(exc, AmbiguousError):
        return jsonify(error=str(exc)), 400
    if isinstance(exc, TooLargeError):
        return jsonify(error=str(exc)), 413
    if isinstance(exc, NotFoundError):
        return jsonify(error=str(exc)), 404
    if isinstance(exc, ConflictError):
        return jsonify(error=str(exc)), 409
    if isinstance(exc, Busy):
        return retry_later(str(exc))
    response = jsonify(error=str(exc))
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="patchwatch"'
    return response, exc.status


def register_error_handlers(app: Flask) -> None:
    for kind in ANSWERED:
        app.register_error_handler(kind, json_answer)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        message = exc.description or exc.name
        if code == 413:
            message = "request body is larger than the limit (setting max_report_bytes)"
        return jsonify(error=message), code

    @app.errorhandler(MaxConnectionsExceeded)
    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(InternalError)
    def database_unavailable(exc: Exception) -> tuple[Response, int]:
        """The store is down, locked for too long, full or read-only (PostgreSQL says
        so with an "internal" error, as a standby does after a failover): tell the
        agent to come back.

        Nothing was acknowledged, so nothing is lost: agents spool and retry.
        """
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:200] if str(exc) else "")
        return retry_later("database unavailable; retry later")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:  # boundary: log, answer JSON
        log.exception("unexpected error")
        return jsonify(error="internal error; see the server log"), 500
