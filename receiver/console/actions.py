"""The console's operator actions: the CLI's verbs, each confirmed, then recorded.

An action is a POST from the object's page. Without ``confirm=yes`` it changes
nothing and answers a page that says exactly what would happen, with the same form
to send again confirmed; with it, the change is made through the same
``patchwatch.inventory`` function the CLI and the admin API call, and recorded in
the audit trail (``patchwatch.store.audit``) with who did it. Only an admin session
may act: a viewer gets a 403 and nothing changes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Response
from flask import redirect
from flask import request
from flask import url_for

from patchwatch.domain.errors import ParseError
from patchwatch.inventory.hosts import delete_hosts
from patchwatch.inventory.hosts import get_host
from patchwatch.inventory.hosts import parse_maintenance_until
from patchwatch.inventory.hosts import set_host_flags
from patchwatch.inventory.repositories import is_security
from patchwatch.inventory.repositories import link_repositories
from patchwatch.inventory.repositories import repository_label
from patchwatch.inventory.repositories import resolve_repository
from patchwatch.inventory.repositories import set_repositories_enabled
from patchwatch.inventory.repositories import set_repository_security
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.receiver.console.blueprint import bp
from patchwatch.receiver.console.blueprint import fmt_time
from patchwatch.receiver.console.blueprint import now
from patchwatch.receiver.console.blueprint import page
from patchwatch.receiver.console.blueprint import require_admin_page
from patchwatch.receiver.console.blueprint import session
from patchwatch.store.audit import record
from patchwatch.store.models import Repository
from patchwatch.store.queries import hosts_using_repository

log = logging.getLogger(__name__)

# hosts whose updates a repository change recomputes at once; a larger fleet's wait
# for the scheduler's next updates run (updates_interval_minutes), as the CLI's do
RECOMPUTE_NOW_HOSTS = 500

SECURITY_VALUES = {"yes": True, "no": False, "auto": None}
ENABLED_VALUES = {"yes": True, "no": False}


@dataclass(frozen=True)
class Plan:
    """An action ready to run: what it does in words, and the change itself."""

    what: str  # shown on the confirmation page and kept in the audit trail
    subject: str
    back: str  # the object's page
    run: Callable[[], str]  # makes the change; returns what happened, for the page


def _choice(name: str, allowed: Mapping[str, object]) -> str:
    value = request.form.get(name, "")
    if value not in allowed:
        raise ParseError(f"expected one of {', '.join(allowed)}", name)
    return value


def admins_only(view: Callable[..., Response]) -> Callable[..., Response]:
    """Refuse a viewer before anything of the request is read: 403, nothing changed."""

    @functools.wraps(view)
    def guarded(*args: object, **kwargs: object) -> Response:
        refused = require_admin_page()
        return refused if refused is not None else view(*args, **kwargs)

    return guarded


def _carry_out(action: str, plan: Plan) -> Response:
    if request.form.get("confirm") != "yes":
        fields = [(k, v) for k, v in request.form.items(multi=True)
                  if k not in ("csrf", "confirm")]  # fmt: skip
        return page("confirm.html", what=plan.what, subject=plan.subject, back=plan.back,
                    action=request.path, fields=fields)  # fmt: skip
    outcome = plan.run()
    record(now(), session().who, action, plan.subject, f"{plan.what}: {outcome}")
    log.info("console: %s by %s on %s", action, session().who, plan.subject)
    return page("done.html", what=plan.what, outcome=outcome, back=plan.back)


def _repository(ref: int | str) -> tuple[Repository, str]:
    """The repository an action names (exactly), and how its plan and audit name it."""
    repo = resolve_repository(str(ref), exact=True)
    return repo, f"{repo.id} {repository_label(repo)}"


def _on_repository(
    action: str, what: str, repo: Repository, label: str, run: Callable[[], str]
) -> Response:
    """:func:`_carry_out` an action on a repository, whose page it goes back to."""
    return _carry_out(
        action, Plan(what, label, url_for("console.repository", repo_id=repo.id), run)
    )


def _recompute(repo_id: int) -> str:
    names = sorted(hosts_using_repository(repo_id))
    if not names:
        return "no host uses it"
    if len(names) > RECOMPUTE_NOW_HOSTS:
        return (f"the updates of its {len(names)} hosts change at the scheduler's next "
                "updates run")  # fmt: skip
    refresh_host_updates(now(), names)
    return f"the updates of its {len(names)} hosts were recomputed"


@bp.post("/repositories/<int:repo_id>/security")
@admins_only
def repository_security(repo_id: int) -> Response:
    repo, label = _repository(repo_id)
    value = _choice("value", SECURITY_VALUES)
    meaning = {"yes": "all its updates count as security updates",
               "no": "none of its updates counts as a security update",
               "auto": "its updates count as its metadata says"}[value]  # fmt: skip

    def run() -> str:
        changed = set_repository_security(repo, SECURITY_VALUES[value])
        return f"security is now {'yes' if is_security(changed) else 'no'}; " + _recompute(repo.id)

    what = f"Mark repository {label} security: {value} ({meaning})"
    return _on_repository("repository_security", what, repo, label, run)


@bp.post("/repositories/<int:repo_id>/enabled")
@admins_only
def repository_enabled(repo_id: int) -> Response:
    repo, label = _repository(repo_id)
    value = _choice("value", ENABLED_VALUES)
    verb = "Enable" if value == "yes" else "Disable"

    def run() -> str:
        set_repositories_enabled([repo], ENABLED_VALUES[value] is True)
        return f"{verb.lower()}d; " + _recompute(repo.id)

    detail = "" if value == "yes" else " (it is then neither read nor offers updates)"
    return _on_repository("repository_enabled", f"{verb} repository {label}{detail}", repo,
                          label, run)  # fmt: skip


@bp.post("/repositories/<int:repo_id>/link")
@admins_only
def repository_link(repo_id: int) -> Response:
    target, label = _repository(repo_id)
    refs = [r for r in request.form.getlist("source") if r.strip()]
    if not refs:
        raise ParseError("choose at least one repository to link", "source")
    sources = [resolve_repository(r, exact=True) for r in refs]
    force = request.form.get("force") == "yes"
    names = ", ".join(f"{s.id} {repository_label(s)}" for s in sources)

    def run() -> str:
        out = link_repositories(target, sources, force=force)
        return (f"{out['mirrors_moved']} mirrors moved, "
                f"{out['repository_sets_repointed']} repository sets repointed")  # fmt: skip

    what = (f"Link {names} into repository {label} as its mirrors (they are then deleted as "
            "repositories of their own)")  # fmt: skip
    what += " even though they do not look alike" if force else ""
    return _on_repository("repository_link", what, target, label, run)


@bp.post("/hosts/<name>/maintenance")
@admins_only
def host_maintenance(name: str) -> Response:
    h = get_host(name)
    raw = (request.form.get("until") or "").strip()
    if not raw:
        raise ParseError("give an end (12h, 3d, 2030-06-01T18:00Z) or off", "until")
    until = parse_maintenance_until(raw, now())
    if until is not None and until <= now():
        raise ParseError("the maintenance end is in the past", "until")
    what = (f"Put host {h.name} in maintenance until {fmt_time(until)} (its alerts are "
            "inhibited meanwhile)" if until is not None
            else f"End host {h.name}'s maintenance window")  # fmt: skip

    def run() -> str:
        flags = set_host_flags(h, now(), maintenance_until=until)
        end = flags["maintenance_until"]
        return f"in maintenance until {fmt_time(end)}" if end else "not in maintenance"  # type: ignore[arg-type]

    return _carry_out("host_maintenance", Plan(
        what, h.name, url_for("console.host", name=h.name), run
    ))  # fmt: skip


@bp.post("/hosts/<name>/delete")
@admins_only
def host_delete(name: str) -> Response:
    h = get_host(name)

    def run() -> str:
        delete_hosts([h.name])
        return "deleted (it comes back if it reports again; revoke its token to stop it)"

    return _carry_out("host_delete", Plan(
        f"Delete host {h.name} with its pending updates and stored reports", h.name,
        url_for("console.hosts"), run,
    ))  # fmt: skip


@bp.get("/hosts/<name>/delete")
@bp.get("/repositories/<int:repo_id>/<action>")
def action_by_get(**_kw: object) -> Response:
    """Actions are POSTs: a GET (a prefetch, a pasted link) changes nothing."""
    return redirect(request.path.rsplit("/", 1)[0], 303)  # type: ignore[return-value]
