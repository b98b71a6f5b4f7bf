"""Map errors to JSON answers in one place, so no input ever gets an HTML page or a trace."""

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

from patchwatch.domain.errors import AuthError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        message = exc.description or exc.name
        if code == 413:
            message = "request body is larger than the limit (setting max_report_bytes)"
        return jsonify(error=message), code

    @app.errorhandler(ParseError)
    def parse_error(exc: ParseError) -> tuple[Response, int]:
        return jsonify(error=exc.message, where=exc.where), 400

    @app.errorhandler(TooLargeError)
    def too_large(exc: TooLargeError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 413

    @app.errorhandler(AuthError)
    def auth_error(exc: AuthError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), exc.status

    @app.errorhandler(NotFoundError)
    def not_found(exc: NotFoundError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 404

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
        response = jsonify(error="database unavailable; retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response, 503

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:  # boundary: log, answer JSON
        log.exception("unexpected error")
        return jsonify(error="internal error; see the server log"), 500
