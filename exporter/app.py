"""The exporter's WSGI application: ``/metrics`` from a registry built per process."""

from __future__ import annotations

import base64
import hmac
import json
import os
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from peewee import Database
from prometheus_client import CollectorRegistry
from prometheus_client import PlatformCollector
from prometheus_client import ProcessCollector
from prometheus_client import make_wsgi_app
from prometheus_client import multiprocess

from exporter.collector import StoreCollector
from patchwatch.health import check_database

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def make_registry(db: Database, include_store: bool = True) -> CollectorRegistry:
    """Build the registry: store state, process metrics, and counters of all workers.

    Counters incremented in gunicorn workers live in ``PROMETHEUS_MULTIPROC_DIR``; they
    are merged here so one scrape sees the whole server. A receiver running apart
    leaves the store's series to the exporter (``include_store=False``), so that
    scaling out receivers does not duplicate every host series.
    """
    registry = CollectorRegistry(auto_describe=True)
    if include_store:
        registry.register(StoreCollector(db))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    return registry


def _authorized(environ: dict[str, Any], token: str) -> bool:
    """Accept ``Authorization: Bearer <token>`` or basic auth with the token as password.

    Prometheus's scrape config offers both (``authorization`` and ``basic_auth``).
    """
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip().encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        _user, _, password = decoded.partition(":")
        return hmac.compare_digest(password.encode(), token.encode())
    return False


def make_app(
    db: Database,
    registry: CollectorRegistry | None = None,
    include_store: bool = True,
    token: str = "",
) -> WSGIApp:
    """Serve ``/metrics`` (and ``/healthz`` when run alone) for ``db``.

    With ``token`` set, ``/metrics`` answers 401 without it: host names, kernels and
    OS versions of a fleet are worth protecting on a shared network.
    """
    metrics_app = make_wsgi_app(registry or make_registry(db, include_store))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if token and path != "/healthz" and not _authorized(environ, token):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"),
                 ("WWW-Authenticate", 'Bearer realm="patchwatch metrics"')],
            )  # fmt: skip
            return [b"metrics need the token (setting metrics_token)\n"]
        if path == "/healthz":
            with db.connection_context():
                status = check_database(db)
            body = json.dumps(status).encode()
            code = "200 OK" if status["ok"] else "503 Service Unavailable"
            start_response(code, [("Content-Type", "application/json")])
            return [body]
        return metrics_app(environ, start_response)

    return app
