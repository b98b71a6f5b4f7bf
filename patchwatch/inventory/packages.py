"""Packages across the fleet: whether a name is known, names matching a search, and
installed packages that none of a host's repositories offers (orphans)."""

from __future__ import annotations

from collections import defaultdict

from peewee import fn

from patchwatch.domain.records import PackageKind
from patchwatch.inventory.common import ProgressFn
from patchwatch.inventory.common import evr
from patchwatch.pipeline.hostupdates import repository_membership
from patchwatch.store.db import chunks
from patchwatch.store.models import Host
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.package_sets import package_ids_of
from patchwatch.store.package_sets import packages_in

# Packages every rpm host has that no repository ever offers: the rpm database's
# stand-ins for imported signing keys. Listing them as "from no repository" is noise.
PSEUDO_PACKAGES = frozenset({"gpg-pubkey", "gpg-pubkey-release"})


def package_known(name: str) -> bool:
    """Tell whether any host or mirror has ever had a package of this name."""
    return bool(Package.select(Package.id).where(Package.name == name).exists())


MAX_SEARCH = 1000  # names one search returns: enough to page through, not the archive


def search_packages(text: str) -> list[dict[str, object]]:
    """Package names containing ``text`` (case-insensitive), those equal to it first, with
    how many builds (version, architecture) of each are known, from hosts or mirrors.

    At most :data:`MAX_SEARCH` names: a search for "lib" is narrowed, not read whole.
    """
    text = text.strip().lower()
    if not text:
        return []
    query = (
        Package.select(Package.name, fn.COUNT(Package.id))
        .where(Package.name.contains(text))  # escapes % and _; case-insensitive
        .group_by(Package.name)
        .order_by(Package.name)
        .limit(MAX_SEARCH)
        .tuples()
    )
    rows = [{"name": name, "builds": count} for name, count in query]
    rows.sort(key=lambda r: (str(r["name"]).lower() != text, str(r["name"])))
    return rows


def orphan_packages(
    host: Host | None = None, progress: ProgressFn | None = None
) -> list[dict[str, object]]:
    """Installed packages that none of the host's repositories offers under that name.

    A package counts as offered when any mirror of any of the host's repositories
    (its own or its OS group's) lists its name for its architecture (or for
    ``all``/``noarch``; a pacman package for any architecture, as pacman matches by
    name alone) in its last good index, whatever the version: an outdated package is
    an update, not an orphan. What is left was installed by hand, from a
    repository the host no longer has, or is an old kernel its repository dropped.
    Hosts whose repositories have no index yet are skipped: nothing can be said.
    """
    query = Host.select().where(Host.package_set.is_null(False)).order_by(Host.name)
    if host is not None:
        query = query.where(Host.id == host.id)
    groups: dict[tuple[int, frozenset[int]], list[str]] = defaultdict(list)
    for h in list(query):
        repo_ids = frozenset(r for r, *_rest in repository_membership(h))
        groups[(h.package_set_id, repo_ids)].append(h.name)
    mirror_sets: dict[int, set[int]] = defaultdict(set)
    for repo_id, pset_id in (
        Mirror.select(Mirror.repository, Mirror.package_set)
        .where(Mirror.package_set.is_null(False))
        .tuples()
    ):
        mirror_sets[repo_id].add(pset_id)
    names_by_pset: dict[int, set[tuple[str, str]]] = {}

    def offered(pset_id: int) -> set[tuple[str, str]]:
        if pset_id not in names_by_pset:
            names_by_pset[pset_id] = set(
                packages_in(pset_id, Package.name, Package.arch).distinct().tuples()
            )
        return names_by_pset[pset_id]

    out: list[dict[str, object]] = []
    for done, ((pset_id, repo_ids), names) in enumerate(sorted(groups.items(),
                                                               key=lambda g: g[1])):  # fmt: skip
        if progress is not None:
            progress(done, len(groups), names[0])
        psets = {p for rid in repo_ids for p in mirror_sets.get(rid, ())}
        if not psets:
            continue
        installed = list(
            packages_in(pset_id, Package.name, Package.arch, Package.epoch, Package.version,
                        Package.release, Package.kind)
            .order_by(Package.name, Package.arch)
            .tuples()
        )  # fmt: skip
        available: set[tuple[str, str]] = set()
        if host is not None:  # one host: only its own names looked up in its mirrors
            available = _offered_names(psets, {row[0] for row in installed})
        else:
            for p in psets:
                available |= offered(p)
        pacman_names = {n for n, _a in available} if any(
            row[5] == PackageKind.ARCH for row in installed) else set()  # fmt: skip
        lonely = [
            (n, a, evr(e, v, r))
            for n, a, e, v, r, k in installed
            if n not in PSEUDO_PACKAGES
            and not ({(n, a), (n, "all"), (n, "noarch"), (n, "any")} & available)
            and not (k == PackageKind.ARCH and n in pacman_names)
        ]
        for name in names:
            out.extend({"host": name, "name": n, "arch": a, "version": v} for n, a, v in lonely)
    if progress is not None:
        progress(len(groups), len(groups), "")
    out.sort(key=lambda row: (str(row["host"]), str(row["name"]), str(row["arch"])))
    return out


def _offered_names(psets: set[int], names: set[str]) -> set[tuple[str, str]]:
    """The (name, arch) pairs among ``names`` that these mirror sets hold.

    Why: one host's page needs only its own ~1,500 names, where reading every name of
    its mirrors' indexes (69,000 for bookworm) cost most of the page's time
    (docs/performance.md). The builds of those names are few; the sets' packed ids say
    which of them the mirrors hold.
    """
    in_mirrors: set[int] = set()
    for p in psets:
        in_mirrors |= package_ids_of(p)
    out: set[tuple[str, str]] = set()
    for chunk in chunks(sorted(names)):
        query = Package.select(Package.id, Package.name, Package.arch).where(
            Package.name.in_(list(chunk))
        )
        out.update((n, a) for i, n, a in query.tuples() if i in in_mirrors)
    return out
