"""The exporter's WSGI application: ``/metrics`` from a registry built per process.

The per-host families are written by :mod:`patchwatch.exporter.exposition`; prometheus_client
negotiates the format and writes everything else.
"""

from __future__ import annotations

import base64
import gzip
import hmac
import json
import os
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from peewee import Database
from prometheus_client import CollectorRegistry
from prometheus_client import PlatformCollector
from prometheus_client import make_wsgi_app
from prometheus_client import multiprocess
from prometheus_client.exposition import gzip_accepted

from patchwatch.exporter.collector import StoreCollector
from patchwatch.exporter.exposition import negotiate
from patchwatch.exporter.exposition import render
from patchwatch.exporter.processes import ServerProcesses
from patchwatch.store.health import check_database

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# prometheus_client compresses at gzip's level 9, which for a 10,000-host scrape takes
# more than writing the text now does. Level 1 takes a seventh of that time and sends
# about a quarter more bytes (docs/performance.md); Prometheus asks for gzip on every
# scrape, so the CPU matters more than the bytes on the network between them.
GZIP_LEVEL = 1


class WorkerCounters(multiprocess.MultiProcessCollector):
    """The counters of all gunicorn workers, read at scrape time only.

    Registering a collector without ``describe`` makes the registry collect it once
    (auto_describe): at a worker's boot that read the other workers' files while one
    of them was still being created, empty, and the error failed the boot, which
    stopped the whole server. The merged families have no fixed names to clash on.
    """

    def describe(self) -> list[object]:
        return []


def make_registry(
    db: Database, include_store: bool = True, server_pid: int | None = None
) -> CollectorRegistry:
    """Build the registry: store state, process metrics, and counters of all workers.

    Counters incremented in gunicorn workers live in ``PROMETHEUS_MULTIPROC_DIR``; they
    are merged here so one scrape sees the whole server. A receiver running apart
    leaves the store's series to the exporter (``include_store=False``), so that
    scaling out receivers does not duplicate every host series. ``process_*`` cover
    the process tree under ``server_pid`` (gunicorn's master; by default this
    process), whichever worker answers (:mod:`patchwatch.exporter.processes`).
    """
    registry = CollectorRegistry(auto_describe=True)
    if include_store:
        registry.register(StoreCollector(db))
    registry.register(ServerProcesses(server_pid or os.getpid()))
    PlatformCollector(registry=registry)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        WorkerCounters(registry)
    return registry


def make_metrics_app(registry: CollectorRegistry) -> WSGIApp:
    """prometheus_client's ``/metrics`` app, with the per-host families written fast.

    A plain GET is answered here: the format is negotiated exactly as prometheus_client
    does (text, or OpenMetrics when Prometheus asks for it), the per-host families
    (:class:`patchwatch.exporter.exposition.RowFamily`) are written by the exporter's own writer
    and every other family by prometheus_client's, in registry order, so the body is
    the one prometheus_client would send, several times faster (docs/performance.md).
    Only the gzip level differs (:data:`GZIP_LEVEL`). Anything unusual goes to
    prometheus_client's app unchanged: other methods, the favicon, ``name[]``
    filtering, and name escaping schemes that rewrite metric names.
    """
    generic = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (
            environ.get("REQUEST_METHOD") != "GET"
            or environ.get("PATH_INFO") == "/favicon.ico"
            or "name[]" in parse_qs(environ.get("QUERY_STRING", ""))
        ):
            return generic(environ, start_response)
        encoder, content_type, openmetrics_format = negotiate(environ.get("HTTP_ACCEPT"))
        if openmetrics_format is None:
            return generic(environ, start_response)
        output = render(registry.collect(), encoder, openmetrics_format)
        headers = [("Content-Type", content_type)]
        if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            output = gzip.compress(output, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]

    return app


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
    server_pid: int | None = None,
) -> WSGIApp:
    """Serve ``/metrics`` (and ``/healthz`` when run alone) for ``db``.

    With ``token`` set, ``/metrics`` answers 401 without it: host names, kernels and
    OS versions of a fleet are worth protecting on a shared network.
    """
    metrics_app = make_metrics_app(registry or make_registry(db, include_store, server_pid))

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
