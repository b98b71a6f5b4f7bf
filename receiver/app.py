"""The receiver's Flask application: the only place it is wired together.

Each of a worker's threads keeps its database connection from one request to the
next: opening and closing one per request (SQLite's pragmas, the file's mode check,
PostgreSQL's pool bookkeeping) was about a seventh of answering a report
(docs/performance.md, "Acknowledging reports"). Connections are opened in the worker,
by the thread that uses them, so none crosses gunicorn's fork; a request that ends in
an unhandled error closes its thread's connection, and the next one opens a fresh one.
A kept SQLite connection holds no lock and no snapshot between requests (autocommit,
every statement finished), so it neither blocks writers nor the log's checkpoints.
"""

from __future__ import annotations

import logging

from flask import Flask
from flask import Response
from flask import jsonify
from flask import request
from peewee import Database
from peewee import PeeweeException

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.processor import Waker
from patchwatch.receiver.admin_api import bp as admin_bp
from patchwatch.receiver.api import bp as ingest_bp
from patchwatch.receiver.console.routes import bp as console_bp
from patchwatch.receiver.errors import register_error_handlers
from patchwatch.receiver.ratelimit import HostLimits
from patchwatch.receiver.read_api import bp as read_bp
from patchwatch.store.db import connect_checked
from patchwatch.store.db import database
from patchwatch.store.db import open_database
from patchwatch.store.health import check_database
from patchwatch.store.sets import limit_id_caches

log = logging.getLogger(__name__)

# package ids a worker remembers for inline processing: a fleet's builds, not a
# hostile report's hundreds of thousands (about 450 bytes each with its record)
ID_CACHE_ENTRIES = 100_000


def _close_quietly() -> None:
    """Close this thread's connection; one that cannot even close is dropped."""
    if database.is_closed():
        return
    try:
        database.close()
    except PeeweeException:
        database.obj._state.reset()  # a transaction left open by a failed request


def create_app(
    settings: Settings, db: Database | None = None, processor: Waker | None = None
) -> Flask:
    """Build the receiver for ``settings``; bind the database unless one is given.

    ``processor``: the wake-up of the processing process ``serve`` started
    (``patchwatch.pipeline.processor``); without one, and with ``process_inline`` on,
    the worker processes what it stored on a thread of its own
    (``patchwatch.receiver.feed``).
    """
    app = Flask("receiver")
    app.config["PATCHWATCH_SETTINGS"] = settings
    app.config["PATCHWATCH_PROCESSOR"] = processor
    app.config["MAX_CONTENT_LENGTH"] = settings.max_report_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_report_bytes  # protocol 1 fields
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["PATCHWATCH_HOST_LIMITS"] = HostLimits(
        settings.report_burst_per_host, settings.report_rate_per_host
    )
    if db is None:
        db = open_database(settings.resolved_database_url)
    limit_id_caches(ID_CACHE_ENTRIES)

    @app.before_request
    def _connect() -> None:
        if request.path != "/healthz":  # it connects itself, to say why it cannot
            connect_checked()

    @app.after_request
    def _close_after_failure(response: Response) -> Response:
        # kept for the thread's next request (``connect_checked`` finds a dead pooled
        # one), unless this one failed on the server's side (the store away, a bug)
        if response.status_code >= 500:
            _close_quietly()
        return response

    @app.teardown_request
    def _close_after_error(exc: BaseException | None) -> None:
        if exc is not None:
            _close_quietly()

    app.register_blueprint(ingest_bp)
    app.register_blueprint(read_bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(console_bp)
    register_error_handlers(app)

    @app.get("/healthz")
    def healthz():
        try:
            connect_checked()
        except (PeeweeException, OSError):
            pass  # check_database finds out again, and says why
        status = check_database(database.obj, writer="receiver")
        return jsonify(status), 200 if status["ok"] else 503

    return app
