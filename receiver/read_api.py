"""The read API (admin token): hosts, one host, package lookups, repositories, updates.

Lists are paginated (``page``, ``per_page`` up to 1000) and answer CSV instead of JSON
with ``?format=csv`` or ``Accept: text/csv``, for spreadsheets and scripts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import jsonify
from flask import request

from patchwatch.domain import listings
from patchwatch.domain.errors import ParseError
from patchwatch.domain.tabular import csv_text
from patchwatch.inventory.hosts import get_host
from patchwatch.inventory.hosts import host_overview
from patchwatch.inventory.vulns import vuln_filter
from patchwatch.receiver.ingest import authenticate_request
from patchwatch.store.queries import HostFilter
from patchwatch.store.queries import host_summaries
from patchwatch.store.queries import hosts_with_package
from patchwatch.store.queries import pending_update_summary
from patchwatch.store.queries import repository_summaries
from patchwatch.store.tokens import require_admin

bp = Blueprint("read_api", __name__, url_prefix="/api/v1")

MAX_PER_PAGE = 1000


@bp.before_request
def _admin_only() -> None:
    token = authenticate_request(request, current_app.config["PATCHWATCH_SETTINGS"], "Bearer",
                                 time.time())  # fmt: skip
    require_admin(token)  # type: ignore[arg-type]


def flag_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ParseError(f"expected true or false, got {raw!r}", name)


def number_arg(name: str, default: float | None = None, minimum: float = 0) -> float | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ParseError(f"expected a number, got {raw!r}", name) from None
    if not math.isfinite(value):  # float() reads "nan" and "inf"; no count or age is either
        raise ParseError(f"expected a finite number, got {raw!r}", name)
    if value < minimum:
        raise ParseError(f"must be at least {minimum:g}", name)
    return value


def listing(items: list[dict[str, Any]], fields: Sequence[str]) -> Response:
    """One page of a listing as JSON, or as CSV under ``fields`` (patchwatch.domain.listings),
    written exactly as the CLI writes it (patchwatch.domain.tabular)."""
    page = int(number_arg("page", 1, 1) or 1)
    per_page = int(number_arg("per_page", 100, 1) or 100)
    per_page = min(per_page, MAX_PER_PAGE)
    chunk = items[(page - 1) * per_page : page * per_page]
    wants_csv = request.args.get("format") == "csv" or (request.accept_mimetypes.best == "text/csv")
    if wants_csv:
        response = Response(csv_text(chunk, fields), mimetype="text/csv")
    else:
        response = jsonify(items=chunk, page=page, per_page=per_page, total=len(items))
    response.headers["X-Total-Count"] = str(len(items))
    return response


@bp.get("/hosts")
def hosts() -> Response:
    flt = HostFilter(
        os=request.args.get("os"), tag=request.args.get("tag"),
        domain=request.args.get("domain"), security=flag_arg("security"),
        reboot=flag_arg("reboot"), stale_days=number_arg("stale_days"),
        name=request.args.get("name"),
    )  # fmt: skip
    return listing(host_summaries(flt, time.time()), listings.HOSTS)


@bp.get("/hosts/<name>")
def host(name: str) -> Response:
    """One host with every field ``hosts show --format json`` has (the same function);
    its vulnerabilities filtered by ``severity``, ``kev``, ``status``."""
    flt = vuln_filter(
        severity=request.args.get("severity"), kev=flag_arg("kev"),
        status=request.args.get("status"),
    )  # fmt: skip
    return jsonify(host_overview(get_host(name), time.time(), flt))


@bp.get("/packages/<name>/hosts")
def package_hosts(name: str) -> Response:
    found = hosts_with_package(name, request.args.get("version"), request.args.get("arch"))
    return listing(found, listings.PACKAGE_HOSTS)


@bp.get("/repositories")
def repositories() -> Response:
    return listing(repository_summaries(), listings.REPOSITORY_SUMMARIES)


@bp.get("/updates")
def updates() -> Response:
    items = pending_update_summary()
    security = flag_arg("security")
    if security is not None:
        items = [i for i in items if i["security"] == security]
    return listing(items, listings.PENDING_UPDATES)
