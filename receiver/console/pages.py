"""The console's pages: each reads what the JSON API and the CLI read, and renders it.

No page has a query of its own: they call ``patchwatch.inventory`` and
``patchwatch.store.queries`` as ``patchwatch.receiver.read_api`` and
``patchwatch.receiver.admin_api`` do, and long lists are cut into pages
(``patchwatch.domain.paging``) as the API's are.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from flask import Response
from flask import g
from flask import redirect
from flask import request
from flask import url_for

from patchwatch.domain import listings
from patchwatch.domain.diffs import host_diff_dict
from patchwatch.domain.errors import AuthError
from patchwatch.domain.paging import page_of
from patchwatch.domain.paging import parse_sort
from patchwatch.domain.paging import sort_rows
from patchwatch.inventory.attention import attention as attention_rows
from patchwatch.inventory.hosts import diff_hosts
from patchwatch.inventory.hosts import get_host
from patchwatch.inventory.hosts import host_overview
from patchwatch.inventory.hosts import recent_reports
from patchwatch.inventory.os_groups import os_release_detail
from patchwatch.inventory.os_groups import os_release_list
from patchwatch.inventory.os_groups import resolve_os_release
from patchwatch.inventory.packages import orphan_packages
from patchwatch.inventory.packages import search_packages
from patchwatch.inventory.repositories import mirror_list
from patchwatch.inventory.repositories import mirrors_by_repository_key
from patchwatch.inventory.repositories import possible_mirrors
from patchwatch.inventory.repositories import repository_choices
from patchwatch.inventory.repositories import repository_detail
from patchwatch.inventory.repositories import repository_list
from patchwatch.inventory.repositories import resolve_repository
from patchwatch.inventory.vulns import host_vulnerabilities
from patchwatch.receiver.console.blueprint import bp
from patchwatch.receiver.console.blueprint import now
from patchwatch.receiver.console.blueprint import page
from patchwatch.receiver.console.blueprint import safe_next
from patchwatch.receiver.console.blueprint import session
from patchwatch.receiver.console.blueprint import settings
from patchwatch.receiver.console.session import sign_in
from patchwatch.receiver.console.session import signed_out
from patchwatch.receiver.read_api import host_filter
from patchwatch.receiver.read_api import number_arg
from patchwatch.store.approval import mirror_state
from patchwatch.store.audit import count_entries
from patchwatch.store.audit import recent_entries
from patchwatch.store.queries import host_summaries
from patchwatch.store.queries import hosts_with_package

PER_PAGE = 50
MAX_PER_PAGE = 500
HOST_SORTS = ("name", "os", "security_updates", "other_updates", "held_updates",
              "reboot_required", "last_report_at", "packages", "kernel")  # fmt: skip
HOST_FILTER_ARGS = ("name", "os", "tag", "domain", "repository", "security", "reboot",
                    "stale_days", "maintenance")  # fmt: skip


def paging_args(default: int = PER_PAGE) -> tuple[int, int]:
    page_no = int(number_arg("page", 1, 1) or 1)
    per_page = min(int(number_arg("per_page", default, 1) or default), MAX_PER_PAGE)
    return page_no, per_page


# --- signing in and out ----------------------------------------------------------------


@bp.get("/login")
def login() -> Response:
    if session().signed_in:
        return redirect(safe_next(request.args.get("next")), 303)  # type: ignore[return-value]
    expired = request.args.get("expired") == "1"
    return page("login.html", next=request.args.get("next", ""), expired=expired, error="")


@bp.post("/login")
def login_post() -> Response:
    target = request.form.get("next", "")
    try:
        new = sign_in(request.form.get("token", ""), settings(), now(), session().csrf)
    except AuthError as exc:
        return page("login.html", exc.status, next=target, expired=False, error=str(exc))
    # a new CSRF value with the new sign-in: a value seen before it is no use after
    g.console_session = dataclasses.replace(new, csrf=signed_out().csrf)
    return redirect(safe_next(target), 303)  # type: ignore[return-value]


@bp.post("/logout")
def logout() -> Response:
    g.console_session = signed_out()
    return redirect(url_for("console.login"), 303)  # type: ignore[return-value]


# --- pages -----------------------------------------------------------------------------


def subject_link(issue: str, subject: str) -> str | None:
    """Where an attention row's subject lives in the console."""
    if issue.startswith(("repo_", "mirror_")):
        ref = subject.split(" ", 1)[0]
        return url_for("console.repository", repo_id=int(ref)) if ref.isdigit() else None
    if issue == "os_group_empty":
        return url_for("console.os_group", ref=subject)
    if issue == "reports_stuck":
        return None
    return url_for("console.host", name=subject)


@bp.get("/")
def attention() -> Response:
    stale_days = number_arg("stale_days", 2.0) or 0.0
    rows = attention_rows(now(), stale_days)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[str(r["issue"])] += 1
    page_no, per_page = paging_args(100)
    shown = page_of(rows, page_no, per_page)
    for r in shown.items:
        r["link"] = subject_link(str(r["issue"]), str(r["subject"]))
    return page("attention.html", rows=shown, counts=dict(counts), stale_days=stale_days)


@bp.get("/hosts")
def hosts() -> Response:
    flt = host_filter()
    sort = parse_sort(request.args.get("sort") or "name", HOST_SORTS)
    rows = sort_rows(host_summaries(flt, now()), sort)
    page_no, per_page = paging_args()
    shown = page_of(rows, page_no, per_page)
    api_args: dict[str, Any] = {
        k: v for k, v in request.args.items() if k in (*HOST_FILTER_ARGS, "sort") and v
    }
    return page(
        "hosts.html", rows=shown, args=request.args, sort=request.args.get("sort") or "name",
        json_url=url_for("read_api.hosts", **api_args, per_page=1000),
        csv_url=url_for("read_api.hosts", **api_args, per_page=1000, format="csv"),
        os_names=[r["name"] for r in os_release_list()],
        repositories=repository_choices(),
        counts={
            "security": sum(1 for r in rows if r["security_updates"]),
            "reboot": sum(1 for r in rows if r["reboot_required"]),
            "unknown": sum(1 for r in rows if r["updates_state"] == "unknown"),
        },
    )  # fmt: skip


@bp.get("/hosts/<name>")
def host(name: str) -> Response:
    h = get_host(name)
    detail = host_overview(h, now())
    query = (request.args.get("q") or "").strip().lower()
    packages: list[dict[str, Any]] = list(detail.pop("packages"))  # type: ignore[call-overload]
    total_packages = len(packages)
    if query:
        packages = [p for p in packages if query in p["name"].lower()]
    page_no, per_page = paging_args(100)
    repos: list[dict[str, Any]] = detail["repositories"]  # type: ignore[assignment]
    mirrors = mirrors_by_repository_key([r["key"] for r in repos])
    return page(
        "host.html", host=detail, packages=page_of(packages, page_no, per_page), q=query,
        total_packages=total_packages, mirrors=mirrors, reports=recent_reports(h),
        packages_without_repository=h.packages_without_repository,
        vulns=host_vulnerabilities(h),
    )  # fmt: skip


@bp.get("/hosts/<name>/orphans")
def host_orphans(name: str) -> Response:
    h = get_host(name)
    return page("orphans.html", host=h.name, rows=orphan_packages(h))


@bp.get("/hosts/<name>/diff")
def host_diff(name: str) -> Response:
    a = get_host(name)
    other = (request.args.get("other") or "").strip()
    diff = host_diff_dict(diff_hosts(a, get_host(other))) if other else None
    return page("diff.html", host=a.name, other=other, diff=diff)


@bp.get("/packages")
def packages() -> Response:
    query = (request.args.get("q") or "").strip()
    rows = search_packages(query) if query else []
    page_no, per_page = paging_args(100)
    return page("packages.html", q=query, rows=page_of(rows, page_no, per_page))


@bp.get("/packages/<name>")
def package(name: str) -> Response:
    version = request.args.get("version") or None
    rows = hosts_with_package(name, version, request.args.get("arch") or None)
    versions: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (str(r["version_string"]), str(r["arch"]))
        v = versions.setdefault(key, {"version": key[0], "arch": key[1], "hosts": 0,
                                      "repositories": set()})  # fmt: skip
        v["hosts"] += 1
        v["repositories"].update(r["repositories"])
    page_no, per_page = paging_args(100)
    api_args: dict[str, Any] = {
        k: v for k, v in request.args.items() if k in ("version", "arch") and v
    }
    return page(
        "package.html", name=name, version=version,
        versions=sorted(versions.values(), key=lambda v: (-v["hosts"], v["version"])),
        rows=page_of(rows, page_no, per_page),
        json_url=url_for("read_api.package_hosts", name=name, **api_args),
        csv_url=url_for("read_api.package_hosts", name=name, **api_args, format="csv"),
        fields=listings.PACKAGE_HOSTS,
    )  # fmt: skip


def with_states(mirrors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mirrors with whether the server reads them: allowed (a pattern covers the URL),
    approved (by an operator) or pending (``patchwatch.store.approval``)."""
    policy = settings().mirror_policy
    for m in mirrors:
        m["state"] = mirror_state(str(m["url"]), bool(m["approved"]), policy)
    return mirrors


@bp.get("/repositories")
def repositories() -> Response:
    key = request.args.get("key")
    if key:  # a Grafana link names the repository by its key (the metrics' label)
        repo = resolve_repository(key, exact=True)
        return redirect(url_for("console.repository", repo_id=repo.id), 303)  # type: ignore[return-value]
    rows = repository_list()
    page_no, per_page = paging_args(100)
    return page("repositories.html", rows=page_of(rows, page_no, per_page))


@bp.get("/repositories/<int:repo_id>")
def repository(repo_id: int) -> Response:
    detail = repository_detail(resolve_repository(str(repo_id), exact=True))
    groups = possible_mirrors()
    mine = {r["group"] for r in groups if r["id"] == repo_id}
    candidates = [r for r in groups if r["group"] in mine and r["id"] != repo_id]
    users: list[str] = detail.pop("hosts")  # type: ignore[assignment]
    with_states(detail["mirrors"])  # type: ignore[arg-type]
    page_no, per_page = paging_args(100)
    return page(
        "repository.html", repo=detail, users=page_of([{"name": n} for n in users], page_no,
                                                      per_page),
        candidates=candidates, done=request.args.get("done", ""),
    )  # fmt: skip


@bp.get("/mirrors")
def mirrors() -> Response:
    url = request.args.get("url") or None
    rows = with_states(mirror_list(url))
    page_no, per_page = paging_args(100)
    return page("mirrors.html", rows=page_of(rows, page_no, per_page), url=url or "")


@bp.get("/os")
def os_groups() -> Response:
    return page("os_groups.html", rows=os_release_list())


@bp.get("/os/<path:ref>")
def os_group(ref: str) -> Response:
    detail = os_release_detail(resolve_os_release(ref, exact=True))
    hosts_of: list[dict[str, Any]] = detail.pop("hosts")  # type: ignore[assignment]
    page_no, per_page = paging_args(100)
    return page("os_group.html", group=detail, hosts=page_of(hosts_of, page_no, per_page))


@bp.get("/audit")
def audit() -> Response:
    page_no, per_page = paging_args(100)
    entries = recent_entries((page_no - 1) * per_page, per_page)
    return page("audit.html", entries=entries, page_no=page_no, per_page=per_page,
                total=count_entries())  # fmt: skip
