"""The read API (admin or viewer token): hosts, one host, package lookups, repositories,
updates.

Lists are paginated (``page``, ``per_page`` up to 1000), sorted with ``sort=field`` or
``sort=-field``, and answer CSV instead of JSON with ``?format=csv`` or ``Accept:
text/csv``, for spreadsheets and scripts. A browser signed in to the web console reads
it with its session cookie (GET only: nothing here changes anything), so that the
console's CSV and JSON links are the very same queries.
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
from patchwatch.domain.errors import AuthError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.paging import page_of
from patchwatch.domain.paging import parse_sort
from patchwatch.domain.paging import sort_rows
from patchwatch.domain.tabular import csv_text
from patchwatch.inventory.hosts import get_host
from patchwatch.inventory.hosts import host_overview
from patchwatch.inventory.vulns import vuln_filter
from patchwatch.receiver.console.session import COOKIE
from patchwatch.receiver.console.session import load_session
from patchwatch.receiver.ingest import authenticate_request
from patchwatch.store.queries import HostFilter
from patchwatch.store.queries import host_summaries
from patchwatch.store.queries import hosts_with_package
from patchwatch.store.queries import pending_update_summary
from patchwatch.store.queries import repository_summaries
from patchwatch.store.tokens import require_reader

bp = Blueprint("read_api", __name__, url_prefix="/api/v1")

MAX_PER_PAGE = 1000


@bp.before_request
def _readers_only() -> None:
    settings = current_app.config["PATCHWATCH_SETTINGS"]
    now = time.time()
    if "Authorization" not in request.headers and COOKIE in request.cookies:
        if not load_session(request, settings, now).signed_in:
            raise AuthError("the console session has ended; sign in again")
        return
    token = authenticate_request(request, settings, "Bearer", now)
    require_reader(token)  # type: ignore[arg-type]


def flag_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":  # an HTML form's "any" choice sends the field empty
        return None
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise ParseError(f"expected true or false, got {raw!r}", name)


def number_arg(name: str, default: float | None = None, minimum: float = 0) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
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
    items = sort_rows(items, parse_sort(request.args.get("sort"), fields))
    chunk = page_of(items, page, per_page).items
    wants_csv = request.args.get("format") == "csv" or (request.accept_mimetypes.best == "text/csv")
    if wants_csv:
        response = Response(csv_text(chunk, fields), mimetype="text/csv")
    else:
        response = jsonify(items=chunk, page=page, per_page=per_page, total=len(items))
    response.headers["X-Total-Count"] = str(len(items))
    return response


def host_filter() -> HostFilter:
    """The hosts filter of the request's query string (the console's hosts page reads the
    same parameters, so that its CSV and JSON links are its own query)."""
    repository = number_arg("repository")
    return HostFilter(
        os=request.args.get("os") or None, tag=request.args.get("tag") or None,
        domain=request.args.get("domain") or None, security=flag_arg("security"),
        reboot=flag_arg("reboot"), stale_days=number_arg("stale_days"),
        name=request.args.get("name") or None,
        repository=int(repository) if repository is not None else None,
        maintenance=flag_arg("maintenance"),
    )  # fmt: skip


@bp.get("/hosts")
def hosts() -> Response:
    return listing(host_summaries(host_filter(), time.time()), listings.HOSTS)


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
