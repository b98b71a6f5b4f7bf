"""Which installed packages have updates, decided the way apt and dnf decide (pure).

The inputs are records: the installed packages, every version the host's repositories
offer (with the repository's priority and whether it is a security source), and the
security advisories that apply. Nothing here reads the database.

Candidate selection per (name, arch), against the newest installed version; pacman
matches by name alone (:func:`match_arch`), so for Arch packages the arch part of that
key is empty:

- deb (apt's ``pkgPolicy::GetCandidateVer``): walk the offered versions newest first,
  down to the installed one; the candidate is the first version with the highest pin
  priority, where the installed version counts with at least priority 100 (the dpkg
  status file) or the priority of any repository that also offers it. So backports
  (priority 100) never update a package installed from the main archive (500), but do
  update one installed from backports. Priority <= 0 never offers anything.
- rpm (dnf and zypper priorities, negated so that higher wins): only the repositories
  with the best priority among those offering the name count; the candidate is their
  newest version.
- arch (pacman's ``alpm_sync_get_new_version``): the first repository of pacman.conf
  that offers the name decides; the agent reports minus each repository's position as
  its priority, so this is the rpm rule, in pacman's own ordering.
- apk: the newest version any of the host's repositories offers (apk's solver
  prefers the highest version; repositories report priority 0), the rpm rule again.

An update is a security update when the candidate comes from a security repository
(Debian's security suite, Ubuntu's ``-security``, or one an operator marked), when a
security advisory covers a version between the installed one and the candidate, or
when the host itself said so; and, once vulnerability findings exist, when the
installed package has a fixable vulnerability (``patchwatch.pipeline.hostupdates``:
an update that fixes a vulnerability is a security update whatever suite offers it).

An update of a held package (apt/dpkg hold, dnf versionlock, zypper lock) is still
computed, as the package manager still sees it (``apt list --upgradable`` lists it), but
marked held per host: an upgrade will not install it, so it is counted apart and raises
no security alarm (see :func:`is_held`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from patchwatch.domain.records import HeldPackage
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.records import PendingUpdate
from patchwatch.domain.versions import Key
from patchwatch.domain.versions import sort_key

STATUS_PRIORITY = 100  # what apt gives the installed version (dpkg status file)
ARCH_INDEPENDENT = frozenset({"all", "noarch", "any"})  # dpkg, rpm and apk, pacman


@dataclass(frozen=True, slots=True)
class Offer:
    """One version offered by one repository the host uses."""

    package: Package
    repository: str  # repository key or id, reported back with the update
    priority: int = 500  # normalised: higher wins
    security: bool = False


HoldKey = tuple[str, str]  # (name, arch); arch "" holds every arch of the name


def match_arch(kind: str, arch: str) -> str:
    """The architecture part of the key installed packages and offers are matched by.

    dpkg, rpm and apk keep one package per name and architecture (multiarch, multilib),
    so an update is of the same name and arch. pacman keeps one package per name and
    ``alpm_sync_get_new_version`` looks the name up alone: a package that moved between
    ``x86_64`` and ``any`` is still upgraded, as ``pacman -Qu`` lists it. ``kind`` is a
    ``PackageKind`` or its value.
    """
    return "" if kind == PackageKind.ARCH else arch


def encode_holds(held: Iterable[HeldPackage]) -> str:
    """A host's held packages as ``Host.held`` stores them: sorted JSON pairs, "" for none."""
    pairs = sorted({(h.name, h.arch) for h in held})
    return json.dumps(pairs, separators=(",", ":")) if pairs else ""


def decode_holds(text: str | None) -> frozenset[HoldKey]:
    """Read ``Host.held`` back; anything unreadable counts as no hold (never a crash)."""
    if not text:
        return frozenset()
    try:
        pairs = json.loads(text)
        return frozenset((str(name), str(arch)) for name, arch in pairs)
    except (ValueError, TypeError):
        return frozenset()


def is_held(holds: frozenset[HoldKey], name: str, arch: str) -> bool:
    """Tell whether the host holds this installed package (name and arch, or the name)."""
    return (name, arch) in holds or (name, "") in holds


def _key(p: Package) -> Key:
    return sort_key(p.kind, p.epoch, p.version, p.release)


def newest_installed(installed: Iterable[Package]) -> dict[tuple[str, str], Package]:
    """Keep the newest installed version per (name, arch): kernels are installed many times."""
    best: dict[tuple[str, str], Package] = {}
    for p in installed:
        k = (p.name, match_arch(p.kind, p.arch))
        if k not in best or _key(p) > _key(best[k]):
            best[k] = p
    return best


def compute_updates(
    installed: Iterable[Package],
    offers: Iterable[Offer],
    security_advisories: Mapping[tuple[str, str], Iterable[Package]] | None = None,
    reported_security: Iterable[tuple[str, str]] = (),
) -> list[PendingUpdate]:
    """Return the pending updates of one host (or of every host with these inputs).

    ``security_advisories`` maps (name, arch) to package versions that security
    advisories fix; ``reported_security`` lists (name, arch) the host's package manager
    itself called security updates. Packages are matched as :func:`match_arch` says.

    Each (name, arch) is decided by :func:`decide_update`, the rules the store's
    memoised computation applies too: this is the whole-host view of the same rules,
    which the tests hold against apt, dnf and the store.
    """
    by_name: dict[tuple[str, str], list[KeyedOffer]] = defaultdict(list)
    for o in offers:
        by_name[(o.package.name, match_arch(o.package.kind, o.package.arch))].append(
            (_key(o.package), o)
        )
    advisories: dict[tuple[str, str], list[Package]] = defaultdict(list)
    for (name, arch), fixed in (security_advisories or {}).items():
        for p in fixed:
            advisories[(name, match_arch(p.kind, arch))].append(p)
    reported = set(reported_security)
    out: list[PendingUpdate] = []
    for (name, arch), inst in sorted(newest_installed(installed).items()):
        decided = decide_update(
            inst,
            _key(inst),
            by_name.get((name, arch), ()),
            [_key(p) for p in advisories.get((name, arch), ())],
        )
        if decided is None:
            continue
        chosen, security = decided
        out.append(
            PendingUpdate(
                installed=inst,
                available=chosen.package,
                security=security or (name, inst.arch) in reported,
                repository=chosen.repository,
            )
        )
    return out


def count_packages_without_repository(installed: Iterable[Package], offers: Iterable[Offer]) -> int:
    """Count installed packages whose exact build no repository of the host offers.

    These are hand-installed packages, leftovers of removed repositories, or builds a
    repository has since replaced: nothing patchwatch can see will ever update them.
    """
    offered = {o.package for o in offers}
    return sum(1 for p in set(installed) if p not in offered)


# --- the candidate rules: one (name, arch) at a time ---------------------------------------
#
# A fleet's hosts are drifting copies of a few images: the same installed package meets
# the same offers in thousands of package sets. ``decide_update`` decides one
# (name, arch) from offers whose sort keys the caller already has, so that the store
# can remember each decision for a run and pay for a new package set only in what it
# does not share with sets already computed. It is the only place the rules live;
# ``compute_updates`` applies it to a whole host.

KeyedOffer = tuple[Key, Offer]  # an offer with the sort key of its package


def has_newer(installed_key: Key, offer_keys: Iterable[Key]) -> bool:
    """Tell whether any offered version is newer than the installed one.

    Both candidate rules only ever pick a version newer than the installed one, so
    without one there is nothing to decide: most installed packages of a fleet are
    offered at exactly their own version, and this answers them from keys alone.
    """
    return any(k > installed_key for k in offer_keys)


def decide_update(
    installed: Package,
    installed_key: Key,
    offers: Sequence[KeyedOffer],
    advisory_keys: Iterable[Key] = (),
) -> tuple[Offer, bool] | None:
    """Decide one (name, arch): the candidate and whether it is a security update.

    ``installed`` is the newest installed version of the name and arch (see
    :func:`newest_installed`), ``offers`` every offer of that name and arch in the
    order ``compute_updates`` would see them (repositories in the host's order), and
    ``advisory_keys`` the sort keys of the versions security advisories fix. The
    result equals that of ``compute_updates`` for this package, except for what the
    host itself reported (``reported_security``), which differs per host: the caller
    raises the flag for those.
    """
    if installed.arch in ARCH_INDEPENDENT and installed.kind != PackageKind.ARCH:
        offers = [ko for ko in offers if ko[1].package.arch in ARCH_INDEPENDENT]
    if not offers:
        return None
    if installed.kind == PackageKind.DEB:
        chosen = _deb_candidate_keyed(installed_key, offers)
    else:  # rpm, and pacman and apk through their priorities (module docstring)
        chosen = _rpm_candidate_keyed(installed_key, offers)
    if chosen is None:
        return None
    high, offer = chosen
    security = any(o.security and k == high for k, o in offers) or any(
        installed_key < a <= high for a in advisory_keys
    )
    return offer, security


def _deb_candidate_keyed(inst_key: Key, offers: Sequence[KeyedOffer]) -> KeyedOffer | None:
    """apt's candidate (see the module docstring) among offers newer than the installed."""
    inst_prio = STATUS_PRIORITY
    by_version: dict[Key, list[Offer]] = defaultdict(list)
    for k, o in offers:
        if o.priority > 0:
            by_version[k].append(o)
    for o in by_version.get(inst_key, ()):
        inst_prio = max(inst_prio, o.priority)
    best: KeyedOffer | None = None
    best_prio = 0
    for vkey in sorted((k for k in by_version if k > inst_key), reverse=True):
        top = max(by_version[vkey], key=lambda o: o.priority)
        if top.priority > best_prio:
            best, best_prio = (vkey, top), top.priority
    if best is None or best_prio < inst_prio:
        return None
    return best


def _rpm_candidate_keyed(inst_key: Key, offers: Sequence[KeyedOffer]) -> KeyedOffer | None:
    """dnf's candidate: the newest version of the best-priority repositories offering it."""
    usable = [ko for ko in offers if ko[1].priority > -100000]
    if not usable:
        return None
    top_priority = max(o.priority for _k, o in usable)
    best = max((ko for ko in usable if ko[1].priority == top_priority), key=lambda ko: ko[0])
    return best if best[0] > inst_key else None


_DEB_RUNNING = re.compile(
    r"^(?P<abi>\d+(?:\.\d+)+-\d+)(?:\.\d+)?-(?P<flavour>[a-z0-9][a-z0-9+.-]*)$"
)
_SUSE_RUNNING = re.compile(r"^(?P<vr>\d+(?:\.\d+)+-[\d.]+)-(?P<flavour>[a-z0-9]+)$")
RPM_KERNEL_NAMES = ("kernel-core", "kernel", "kernel-uek-core", "kernel-uek")


def compute_newer_kernel_installed(running: str, installed: Iterable[Package]) -> bool | None:
    """Tell whether a newer kernel of the running flavour is installed than the one running.

    ``None`` when it cannot tell (no kernel packages recognised): the host's own reboot
    signal then stands alone.
    """
    packages = list(installed)
    if not packages or not running:
        return None
    if packages[0].kind == PackageKind.DEB:
        m = _DEB_RUNNING.match(running)
        if not m:
            return None
        flavour = re.escape(m["flavour"])
        pattern = re.compile(
            rf"^linux-image-(\d+(?:\.\d+)+-\d+(?:\.\d+)?)-{flavour}(?:-unsigned)?$"
        )
        abis = [mm.group(1) for p in packages if (mm := pattern.match(p.name))]
        if not abis:
            return None
        newest = max(abis, key=lambda a: sort_key(PackageKind.DEB, "", *_split_upstream(a)))
        return sort_key(PackageKind.DEB, "", *_split_upstream(newest)) > sort_key(
            PackageKind.DEB, "", *_split_upstream(m["abi"])
        )
    suse = _SUSE_RUNNING.match(running)
    if suse:
        name = f"kernel-{suse['flavour']}"
        kernels = [p for p in packages if p.name == name]
        if not kernels:
            return None
        newest = max(kernels, key=_key)
        return not f"{newest.version}-{newest.release}".startswith(suse["vr"])
    for name in RPM_KERNEL_NAMES:
        kernels = [p for p in packages if p.name == name]
        if kernels:
            break
    else:
        return None
    newest = max(kernels, key=_key)
    return running not in (f"{newest.version}-{newest.release}.{newest.arch}",
                           f"{newest.version}-{newest.release}")  # fmt: skip


def _split_upstream(abi: str) -> tuple[str, str]:
    version, _, release = abi.rpartition("-")
    return version, release
