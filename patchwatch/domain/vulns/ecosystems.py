"""OSV ecosystems: which version ordering each uses, and which ones a host's OS reads.

Why this module exists: a version range means nothing without the ordering it was
written in. ``2.36-9+deb12u3`` is ordered by dpkg, ``1:3.0.7-27.el9`` by rpm,
``8.22.0-r0`` by apk, and comparing any of them with the wrong rules gives answers that
look right and are not. Every ecosystem name is therefore tied here to exactly one of
``patchwatch.domain.versions``' orderings (the same sort keys the update computation uses), and
an ecosystem with no entry in the table is never matched rather than matched wrongly.

The second job is the OS-release mapping: which ecosystems' records apply to a host,
from what it reports in os-release (``ID``, ``VERSION_ID``; through
``patchwatch.domain.osinfo``'s ``OSInfo``, so Patchman clients map the same way):

=========================  ===============================================================
host                       ecosystems read
=========================  ===============================================================
Debian 12 (bookworm)       ``Debian:12`` (testing by codename: trixie is ``Debian:13``)
Ubuntu 22.04               ``Ubuntu:22.04`` and ``Ubuntu:22.04:LTS`` (not ``Ubuntu:Pro:*``)
AlmaLinux 9.x              ``AlmaLinux:9``
Rocky Linux 9.x            ``Rocky Linux:9``
Red Hat Enterprise Linux 9 ``Red Hat:enterprise_linux:9`` and its ``::appstream``,
                           ``::baseos``, ... repositories (not ``rhel_eus``/``rhel_aus``)
SLES 15 SP5                ``SUSE:Linux Enterprise <product> 15 SP5`` (every product and
                           module of that service pack)
openSUSE Leap 15.5         ``openSUSE:Leap 15.5``; Tumbleweed: ``openSUSE:Tumbleweed``
Alpine 3.20.x              ``Alpine:v3.20``
=========================  ===============================================================

Anything else (Debian unstable, Raspbian, Fedora, CentOS, Oracle Linux, Amazon Linux, an
unknown ID) maps to nothing: those hosts are not matched until an operator says which
ecosystem applies, per OS group (``patchwatch os set OS --vuln-ecosystem``: one or more
ecosystems of one ordering, or ``none``; :func:`host_ecosystem`).
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from patchwatch.domain.errors import ParseError
from patchwatch.domain.osinfo import DEBIAN_CODENAMES
from patchwatch.domain.records import OSInfo
from patchwatch.domain.versions import Key
from patchwatch.domain.versions import deb_sort_key
from patchwatch.domain.versions import rpm_sort_key
from patchwatch.domain.versions import split_deb
from patchwatch.domain.versions import split_rpm
from patchwatch.domain.versions_apk import apk_sort_key

__all__ = [
    "NOT_MATCHED",
    "HostEcosystem",
    "Ordering",
    "check_version",
    "ecosystem_for_os",
    "host_ecosystem",
    "ordering_for",
    "parse_override",
    "version_key",
]


class Ordering(enum.StrEnum):
    """The version orderings an ecosystem can use."""

    DPKG = "dpkg"
    RPM = "rpm"
    APK = "apk"


# The ecosystem's name before the first colon -> its ordering.
_ORDERING_BY_BASE = {
    "Debian": Ordering.DPKG,
    "Ubuntu": Ordering.DPKG,
    "AlmaLinux": Ordering.RPM,
    "Rocky Linux": Ordering.RPM,
    "Red Hat": Ordering.RPM,
    "SUSE": Ordering.RPM,
    "openSUSE": Ordering.RPM,
    "Alpine": Ordering.APK,
}


def ordering_for(ecosystem: str) -> Ordering | None:
    """Return the ordering of an OSV ecosystem (``Debian:12`` -> dpkg), None if unknown."""
    return _ORDERING_BY_BASE.get(ecosystem.partition(":")[0])


def _rpm_key(version: str) -> Key:
    return rpm_sort_key(*split_rpm(version))


_KEYS: dict[Ordering, Callable[[str], Key]] = {
    Ordering.DPKG: deb_sort_key,
    Ordering.RPM: functools.lru_cache(maxsize=1 << 17)(_rpm_key),
    Ordering.APK: apk_sort_key,
}


def version_key(ordering: Ordering, version: str) -> Key:
    """Sort key of ``version`` in ``ordering``; raises ``VersionError`` if it refuses it.

    Keys of one ordering compare as the package manager orders the versions (see
    ``patchwatch.domain.versions``); keys of two orderings must never be compared.
    """
    return _KEYS[ordering](version)


def _apk_check(version: str) -> None:
    """apk orders every string (see ``patchwatch.domain.versions_apk``): nothing to refuse."""


# Versions dpkg certainly accepts (printable ASCII, no space, an epoch of at most nine
# digits, no empty upstream or revision around a hyphen): one regular expression match
# instead of a split. Anything else, valid or not, is split as dpkg would.
_PLAIN_DEB = re.compile(r"(?:[0-9]{1,9}:)?[0-9A-Za-z.+~]+(?:-[0-9A-Za-z.+~]+)*").fullmatch
# split_deb's own cache is for the update computation's hot path; checking a feed's
# hundreds of thousands of versions once each goes around it rather than evicting it.
_split_deb = split_deb.__wrapped__


def _deb_check(version: str) -> None:
    if _PLAIN_DEB(version) is None:
        _split_deb(version)


_CHECKS = {
    Ordering.DPKG: _deb_check,
    Ordering.RPM: split_rpm,
    Ordering.APK: _apk_check,
}


def check_version(ordering: Ordering, version: str) -> None:
    """Raise ``VersionError`` exactly when :func:`version_key` would, without building a key.

    Parsing a feed checks every version it names (tens of thousands of ``versions``
    entries, most of which no host will ever compare); splitting is what refuses a
    version in every ordering, and costs a tenth of building its key.
    """
    _CHECKS[ordering](version)


@dataclass(frozen=True, slots=True)
class HostEcosystem:
    """The ecosystems whose records apply to one host, and the ordering they share.

    ``label`` is the main ecosystem's name (for display). ``names`` are accepted as they
    are; ``prefixes`` accept every ecosystem that starts with one of them, and when
    ``suffix`` is set an ecosystem must also end with it (SUSE's products of one service
    pack).
    """

    label: str
    ordering: Ordering
    names: frozenset[str]
    prefixes: tuple[str, ...] = ()
    suffix: str = ""

    def accepts(self, ecosystem: str) -> bool:
        """Whether records of ``ecosystem`` apply to this host."""
        if ecosystem in self.names:
            return True
        if not ecosystem.endswith(self.suffix):
            return False
        return any(ecosystem.startswith(p) for p in self.prefixes)


_DEBIAN_NUMBERS = {codename: number for number, codename in DEBIAN_CODENAMES.items()}


def ecosystem_for_os(os: OSInfo) -> HostEcosystem | None:
    """Map a host's OS (``OSInfo`` from os-release or a Patchman string) to its ecosystems.

    Returns None for an OS with no mapping (see the module docstring); the caller then
    reports the host as not matched instead of as free of vulnerabilities.
    """
    parts = os.version.split(".") if os.version else []
    major = parts[0] if parts and parts[0].isdigit() else ""
    minor = parts[1] if len(parts) > 1 and parts[1].isdigit() else ""
    os_id = os.id.lower()
    if os_id == "debian":
        number = major or _DEBIAN_NUMBERS.get(os.codename.lower(), "")
        if not number:
            return None  # unstable (sid) has no OSV ecosystem of its own
        name = f"Debian:{number}"
        return HostEcosystem(name, Ordering.DPKG, frozenset({name}))
    if os_id == "ubuntu" and major and minor:
        name = f"Ubuntu:{major}.{minor}"
        return HostEcosystem(name, Ordering.DPKG, frozenset({name, f"{name}:LTS"}))
    if os_id == "almalinux" and major:
        name = f"AlmaLinux:{major}"
        return HostEcosystem(name, Ordering.RPM, frozenset({name}))
    if os_id == "rocky" and major:
        name = f"Rocky Linux:{major}"
        return HostEcosystem(name, Ordering.RPM, frozenset({name}))
    if os_id == "rhel" and major:
        name = f"Red Hat:enterprise_linux:{major}"
        return HostEcosystem(name, Ordering.RPM, frozenset({name}), (f"{name}:",))
    if os_id in ("sles", "sles_sap", "sled") and major:
        pack = f" {major} SP{int(minor)}" if minor and int(minor) else f" {major}"
        return HostEcosystem(
            f"SUSE:Linux Enterprise{pack}",
            Ordering.RPM,
            frozenset(),
            ("SUSE:Linux Enterprise ",),
            pack,
        )
    if os_id in ("opensuse-leap", "opensuse") and major and minor:
        name = f"openSUSE:Leap {major}.{minor}"
        return HostEcosystem(name, Ordering.RPM, frozenset({name}))
    if os_id == "opensuse-tumbleweed":
        name = "openSUSE:Tumbleweed"
        return HostEcosystem(name, Ordering.RPM, frozenset({name}))
    if os_id == "alpine" and major and minor:
        name = f"Alpine:v{major}.{minor}"
        return HostEcosystem(name, Ordering.APK, frozenset({name}))
    return None


NOT_MATCHED = "none"  # an OS group's override: its hosts read no feed
MAX_OVERRIDE = 512  # characters of an override as stored
_MAX_OVERRIDE_NAMES = 8


def parse_override(text: str) -> HostEcosystem | None:
    """An OS group's ecosystem override: ``Debian:12``, or several ecosystems of one
    ordering separated by commas (``Ubuntu:22.04,Ubuntu:22.04:LTS``), the first being
    the label; ``none``: no feed applies (None).

    :raises ParseError: for an ecosystem with no known ordering (it could never be
        matched), several orderings, or more than a few names.
    """
    text = text.strip()
    if text == NOT_MATCHED:
        return None
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names or len(text) > MAX_OVERRIDE or len(names) > _MAX_OVERRIDE_NAMES:
        raise ParseError(
            f"expected up to {_MAX_OVERRIDE_NAMES} ecosystems separated by commas, "
            f"'{NOT_MATCHED}' or 'auto'",
            "vuln_ecosystem",
        )
    orderings = {ordering_for(n) for n in names}
    if None in orderings:
        unknown = ", ".join(n for n in names if ordering_for(n) is None)
        known = ", ".join(sorted(_ORDERING_BY_BASE))
        raise ParseError(
            f"no version ordering is known for {unknown} (known: {known})", "vuln_ecosystem"
        )
    if len(orderings) > 1:
        raise ParseError("the ecosystems of one OS group must share one ordering", "vuln_ecosystem")
    (ordering,) = orderings
    assert ordering is not None
    return HostEcosystem(names[0], ordering, frozenset(names))


def host_ecosystem(os: OSInfo, override: str = "") -> HostEcosystem | None:
    """The ecosystems a host reads: its OS group's override when set, else the mapping
    from its os-release (:func:`ecosystem_for_os`). A stored override that no longer
    parses (never written so) maps to nothing rather than to a guess."""
    if not override:
        return ecosystem_for_os(os)
    try:
        return parse_override(override)
    except ParseError:
        return None
