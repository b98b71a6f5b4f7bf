"""The admin API behind the operator CLI (admin token): attention, host diff and flags,
host deletion, repository flags and links, OS groups, orphan packages.

Lists are paginated and answer CSV exactly as the read API's do (``page``,
``per_page``, ``?format=csv``). Objects are named exactly here: a host by its full name,
a repository by its id or exact key, an OS release by its id or name; the CLI's
shortcuts (first label, unique substring) are for people typing, not for scripts.
Writes take a JSON object and answer the object as it is after the change.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import jsonify
from flask import request

from patchwatch.domain import listings
from patchwatch.domain.diffs import host_diff_dict
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.jsondoc import decode_json
from patchwatch.inventory.attention import attention
from patchwatch.inventory.hosts import KEEP
from patchwatch.inventory.hosts import delete_hosts
from patchwatch.inventory.hosts import diff_hosts
from patchwatch.inventory.hosts import get_host
from patchwatch.inventory.hosts import parse_maintenance_until
from patchwatch.inventory.hosts import set_host_flags
from patchwatch.inventory.os_groups import add_os_repositories
from patchwatch.inventory.os_groups import os_release_detail
from patchwatch.inventory.os_groups import os_release_list
from patchwatch.inventory.os_groups import remove_os_repositories
from patchwatch.inventory.os_groups import resolve_os_release
from patchwatch.inventory.os_groups import set_vuln_ecosystem
from patchwatch.inventory.packages import orphan_packages
from patchwatch.inventory.repositories import link_repositories
from patchwatch.inventory.repositories import possible_mirrors
from patchwatch.inventory.repositories import repository_detail
from patchwatch.inventory.repositories import resolve_repository
from patchwatch.inventory.repositories import set_repositories_enabled
from patchwatch.inventory.repositories import set_repository_security
from patchwatch.receiver.ingest import authenticate_request
from patchwatch.receiver.read_api import listing
from patchwatch.receiver.read_api import number_arg
from patchwatch.store import rdns
from patchwatch.store.tokens import require_admin

bp = Blueprint("admin_api", __name__, url_prefix="/api/v1")

HOST_FLAGS = ("use_os_repositories", "check_updates", "maintenance_until", "reverse_dns_check")
REPOSITORY_FLAGS = ("enabled", "security")


@bp.before_request
def _admin_only() -> None:
    token = authenticate_request(request, current_app.config["PATCHWATCH_SETTINGS"], "Bearer",
                                 time.time())  # fmt: skip
    require_admin(token)  # type: ignore[arg-type]


MAX_BODY_BYTES = 64 * 1024
MAX_BODY_VALUES = 10_000


def _body(allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object, with only known keys.

    Decoded with the report bodies' bounds (``patchwatch.domain.jsondoc``), scaled down to
    what a flag change needs: a body nested a thousand levels deep is a 400, not a
    ``RecursionError`` and a 500.

    :raises ParseError: for a body that is not a JSON object or has unknown keys.
    :raises TooLargeError: for a body above 64 KiB or 10,000 values.
    """
    raw = request.get_data(cache=False)
    if len(raw) > MAX_BODY_BYTES:
        raise TooLargeError(f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = decode_json(raw, MAX_BODY_VALUES)
    except TooLargeError:
        raise TooLargeError(f"request body holds more than {MAX_BODY_VALUES} values") from None
    if not isinstance(body, dict):
        raise ParseError("expected a JSON object", "body")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ParseError(f"unknown field; expected one of {', '.join(allowed)}", unknown[0])
    return body


def _bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise ParseError("expected true or false", key)
    return value


def _ids(body: dict[str, Any], key: str = "repositories") -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not value:
        raise ParseError("expected a non-empty list of repository ids or keys", key)
    if not all(isinstance(v, int | str) and not isinstance(v, bool) for v in value):
        raise ParseError("expected repository ids (numbers) or exact keys (strings)", key)
    return [str(v) for v in value]


@bp.get("/attention")
def attention_list() -> Response:
    stale_days = number_arg("stale_days", 2.0) or 0.0
    return listing(attention(time.time(), stale_days), listings.ATTENTION)


@bp.get("/hosts/<a>/diff/<b>")
def host_diff(a: str, b: str) -> Response:
    return jsonify(host_diff_dict(diff_hosts(get_host(a), get_host(b))))


@bp.route("/hosts/<name>", methods=["PATCH", "POST"])
def host_flags(name: str) -> Response:
    host = get_host(name)
    body = _body(HOST_FLAGS)
    now = time.time()
    until = (
        parse_maintenance_until(body["maintenance_until"], now)
        if "maintenance_until" in body
        else KEEP
    )
    if "reverse_dns_check" in body:  # true, false, or null / "os": as its OS release
        rdns.set_host_check(host, rdns.parse_switch(body["reverse_dns_check"]))
    flags = set_host_flags(
        host, now, use_os_repositories=_bool(body, "use_os_repositories"),
        check_updates=_bool(body, "check_updates"), maintenance_until=until,
    )  # fmt: skip
    host = get_host(name)
    os_flag = host.os_release.reverse_dns_check if host.os_release_id else None
    flags["reverse_dns_check"] = rdns.check_enabled(host.reverse_dns_check, os_flag)
    return jsonify(flags)


@bp.delete("/hosts/<name>")
def host_delete(name: str) -> Response:
    host = get_host(name)
    delete_hosts([host.name])
    return jsonify(deleted=[host.name])


@bp.get("/packages/orphans")
def package_orphans() -> Response:
    name = request.args.get("host")
    return listing(orphan_packages(get_host(name) if name else None), listings.ORPHANS)


@bp.get("/repositories/possible-mirrors")
def repository_possible_mirrors() -> Response:
    return listing(possible_mirrors(), listings.POSSIBLE_MIRRORS)


@bp.get("/repositories/<ref>")
def repository(ref: str) -> Response:
    return jsonify(repository_detail(resolve_repository(ref, exact=True)))


@bp.route("/repositories/<ref>", methods=["PATCH", "POST"])
def repository_flags(ref: str) -> Response:
    repo = resolve_repository(ref, exact=True)
    body = _body(REPOSITORY_FLAGS)
    enabled = _bool(body, "enabled")
    if enabled is not None:
        set_repositories_enabled([repo], enabled)
    if "security" in body:
        value = body["security"]
        if value == "auto":
            value = None
        if value is not None and not isinstance(value, bool):
            raise ParseError('expected true, false, or null (or "auto")', "security")
        set_repository_security(repo, value)
    return jsonify(repository_detail(resolve_repository(str(repo.id), exact=True)))


@bp.post("/repositories/<ref>/link")
def repository_link(ref: str) -> Response:
    target = resolve_repository(ref, exact=True)
    body = _body(("repositories", "force"))
    sources = [resolve_repository(s, exact=True) for s in _ids(body)]
    return jsonify(link_repositories(target, sources, force=bool(_bool(body, "force"))))


@bp.get("/os-releases")
def os_releases() -> Response:
    return listing(os_release_list(), listings.OS_RELEASES)


@bp.get("/os-releases/<ref>")
def os_release(ref: str) -> Response:
    return jsonify(os_release_detail(resolve_os_release(ref, exact=True)))


@bp.route("/os-releases/<ref>", methods=["PATCH", "POST"])
def os_release_flags(ref: str) -> Response:
    """``{"reverse_dns_check": bool, "vuln_ecosystem": str}``: the reverse DNS check for
    the release's hosts; the vulnerability ecosystems they read (``os set
    --vuln-ecosystem``: ecosystems, ``none`` or ``auto``)."""
    release = resolve_os_release(ref, exact=True)
    body = _body(("reverse_dns_check", "vuln_ecosystem"))
    if "vuln_ecosystem" in body:
        text = body["vuln_ecosystem"]
        if not isinstance(text, str):
            raise ParseError("expected a string: ecosystems, none or auto", "vuln_ecosystem")
        set_vuln_ecosystem(release, text)
    value = _bool(body, "reverse_dns_check")
    if value is not None:
        rdns.set_os_release_check(release, value)
    return jsonify(os_release_detail(resolve_os_release(str(release.id), exact=True)))


@bp.post("/os-releases/<ref>/repositories")
def os_release_add(ref: str) -> Response:
    release = resolve_os_release(ref, exact=True)
    repos = [resolve_repository(s, exact=True) for s in _ids(_body(("repositories",)))]
    add_os_repositories(release, repos)
    return jsonify(os_release_detail(release))


@bp.delete("/os-releases/<ref>/repositories/<repo>")
def os_release_remove(ref: str, repo: str) -> Response:
    release = resolve_os_release(ref, exact=True)
    remove_os_repositories(release, [resolve_repository(repo, exact=True)])
    return jsonify(os_release_detail(release))
