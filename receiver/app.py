"""The receiver's Flask application: the only place it is wired together.

Each request opens a database connection and closes it afterwards, so gunicorn workers
hold no connection between requests and SQLite's file lock is held only while needed.
"""

from __future__ import annotations

import logging

from flask import Flask
from flask import jsonify
from flask import request
from peewee import Database
from peewee import PeeweeException

from patchwatch.domain.settings import Settings
from patchwatch.receiver.admin_api import bp as admin_bp
from patchwatch.receiver.api import bp as ingest_bp
from patchwatch.receiver.errors import register_error_handlers
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


def create_app(settings: Settings, db: Database | None = None) -> Flask:
    """Build the receiver for ``settings``; bind the database unless one is given."""
    app = Flask("receiver")
    app.config["PATCHWATCH_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_report_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_report_bytes  # protocol 1 fields
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if db is None:
        db = open_database(settings.resolved_database_url)
    limit_id_caches(ID_CACHE_ENTRIES)

    @app.before_request
    def _connect() -> None:
        if request.path != "/healthz":  # it connects itself, to say why it cannot
            connect_checked()

    @app.teardown_request
    def _close(_exc: BaseException | None) -> None:
        if not database.is_closed():
            database.close()

    app.register_blueprint(ingest_bp)
    app.register_blueprint(read_bp)
    app.register_blueprint(admin_bp)
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
