"""Normalise what hosts say about their operating system into one ``OSInfo``.

Hosts describe themselves two ways: the native agent sends the fields of
``/etc/os-release``, and Patchman's client sends one free-text string built from
whichever release file it found ("Debian 12.8", "Rocky Linux 9.5 (Blue Onyx)
[cpe:/o:rocky:rocky:9::baseos]", "Ubuntu 24.04.1 LTS"). A fleet that moves from the
Patchman client to the agent must keep its OS grouping, so both paths go through the
same table and produce the same stable name ("Debian 12", "Rocky Linux 9"): the name
changes with a major release, never with a point release, which ``version`` carries.

Debian testing and unstable have no version number ("Debian trixie-sid",
os-release without ``VERSION_ID``); they are named after their codename
("Debian trixie/sid", "Debian sid") instead of crashing the detection as Patchman does.

This module deliberately does not: read files (callers pass text or fields), guess a
family from package lists, or decide which repositories an OS should use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.records import OSInfo

__all__ = ["normalise_os", "parse_os_release", "parse_patchman_os"]

DEBIAN_CODENAMES: Mapping[str, str] = {
    "6": "squeeze",
    "7": "wheezy",
    "8": "jessie",
    "9": "stretch",
    "10": "buster",
    "11": "bullseye",
    "12": "bookworm",
    "13": "trixie",
    "14": "forky",
    "15": "duke",
}

UBUNTU_CODENAMES: Mapping[str, str] = {
    "14.04": "trusty",
    "16.04": "xenial",
    "18.04": "bionic",
    "20.04": "focal",
    "20.10": "groovy",
    "21.04": "hirsute",
    "21.10": "impish",
    "22.04": "jammy",
    "22.10": "kinetic",
    "23.04": "lunar",
    "23.10": "mantic",
    "24.04": "noble",
    "24.10": "oracular",
    "25.04": "plucky",
    "25.10": "questing",
    "26.04": "resolute",
}

# How the stable name is built from the version:
#   "major"        Debian 12, Rocky Linux 9 (point releases share repositories)
#   "major.minor"  Ubuntu 24.04, openSUSE Leap 15.5 (each minor is its own release)
#   "sp"           SUSE Linux Enterprise Server 15 SP5 (service packs are releases)
#   "rolling"      openSUSE Tumbleweed, Arch Linux (no release in the name)
# Alpine is "major.minor" (3.20 is a branch of its own repositories: v3.20/main).
_MAJOR = "major"
_MAJOR_MINOR = "major.minor"
_SERVICE_PACK = "sp"
_ROLLING = "rolling"

# Skip words until the first purely numeric one: "Red Hat Enterprise Linux Server
# release 7.9" -> 7.9, "Amazon Linux AMI 2018.03" -> 2018.03.
_VERSION_WORD = r"(?:(?:\s+[^\s\d]\S*)*?\s+(?P<version>\d+(?:\.\d+)*)(?=\s|$))?"


@dataclass(frozen=True, slots=True)
class _Distro:
    """One row of the detection table."""

    ids: tuple[str, ...]  # os-release IDs that select this row
    family: str
    label: str  # the stable name's words before the version
    pattern: re.Pattern[str]  # matches a Patchman OS string (cpe and "(...)" removed)
    style: str = _MAJOR
    codenames: Mapping[str, str] = field(default_factory=dict)  # name version -> codename
    cpe: str = ""  # template used when the host sends no CPE_NAME
    paren_is_codename: bool = True  # "(Blue Onyx)" yes; Fedora's "(Server Edition)" no
    aliases: Mapping[str, str] = field(default_factory=dict)  # name version -> shown


def _p(prefix: str, version: str = _VERSION_WORD) -> re.Pattern[str]:
    return re.compile(prefix + r"(?=\s|$)" + version, re.IGNORECASE)


_DEBIAN_VERSION = r"(?:\s+(?P<version>\S+))?"

# Order matters for Patchman strings: the first matching pattern wins, so the more
# specific prefix comes first (CentOS Stream before CentOS).
DISTROS: tuple[_Distro, ...] = (
    _Distro(
        ("debian",),
        "debian",
        "Debian",
        _p(r"Debian(?:\s+GNU/Linux)?", _DEBIAN_VERSION),
        codenames=DEBIAN_CODENAMES,
        cpe="cpe:2.3:o:debian:debian_linux:{major}.0:*:*:*:*:*:*:*",
    ),
    _Distro(
        ("raspbian",),
        "debian",
        "Raspbian",
        _p(r"Raspbian(?:\s+GNU/Linux)?", _DEBIAN_VERSION),
        codenames=DEBIAN_CODENAMES,
    ),
    _Distro(
        ("ubuntu",),
        "debian",
        "Ubuntu",
        _p(r"Ubuntu"),
        style=_MAJOR_MINOR,
        codenames=UBUNTU_CODENAMES,
        cpe="cpe:2.3:o:canonical:ubuntu_linux:{name_version}:*:*:*:{edition}:*:*:*",
    ),
    _Distro(("rhel",), "redhat", "Red Hat Enterprise Linux", _p(r"Red\s+Hat\s+Enterprise\s+Linux")),
    _Distro(("centos",), "redhat", "CentOS Stream", _p(r"CentOS\s+Stream")),
    _Distro(("centos",), "redhat", "CentOS Linux", _p(r"CentOS")),
    _Distro(("rocky",), "redhat", "Rocky Linux", _p(r"Rocky(?:\s+Linux)?")),
    _Distro(("almalinux",), "redhat", "AlmaLinux", _p(r"Alma\s*Linux")),
    _Distro(("ol",), "redhat", "Oracle Linux", _p(r"Oracle\s+Linux")),
    _Distro(("fedora",), "redhat", "Fedora Linux", _p(r"Fedora"), paren_is_codename=False),
    _Distro(
        ("amzn",),
        "redhat",
        "Amazon Linux",
        _p(r"Amazon\s+Linux"),
        # Amazon Linux AMI 2011.09 .. 2018.03 is what AWS now calls Amazon Linux 1.
        aliases={str(year): "1" for year in range(2011, 2019)},
    ),
    _Distro(
        ("opensuse-leap", "opensuse"),
        "suse",
        "openSUSE Leap",
        _p(r"openSUSE\s+Leap"),
        style=_MAJOR_MINOR,
    ),
    _Distro(
        ("opensuse-tumbleweed",),
        "suse",
        "openSUSE Tumbleweed",
        _p(r"openSUSE\s+Tumbleweed"),
        style=_ROLLING,
    ),
    _Distro(
        ("sles", "sles_sap"),
        "suse",
        "SUSE Linux Enterprise Server",
        _p(
            r"SUSE\s+Linux\s+Enterprise\s+Server(?:\s+for\s+SAP(?:\s+Applications)?)?",
            r"(?:\s+(?P<version>\d+)(?:[\s-]+SP(?P<sp>\d+))?)?",
        ),
        style=_SERVICE_PACK,
        paren_is_codename=False,
    ),
    _Distro(
        ("sled",),
        "suse",
        "SUSE Linux Enterprise Desktop",
        _p(
            r"SUSE\s+Linux\s+Enterprise\s+Desktop",
            r"(?:\s+(?P<version>\d+)(?:[\s-]+SP(?P<sp>\d+))?)?",
        ),
        style=_SERVICE_PACK,
        paren_is_codename=False,
    ),
    _Distro(("arch",), "arch", "Arch Linux", _p(r"Arch(?:\s+Linux)?"), style=_ROLLING),
    _Distro(
        ("alpine",),
        "alpine",
        "Alpine Linux",
        _p(r"Alpine(?:\s+Linux)?", r"(?:\s+v?(?P<version>\d+(?:\.\d+)*))?"),
        style=_MAJOR_MINOR,
        cpe="cpe:2.3:o:alpinelinux:alpine_linux:{name_version}:*:*:*:*:*:*:*",
    ),
    _Distro(("gentoo",), "unknown", "Gentoo Linux", _p(r"Gentoo(?:\s+Linux)?"), style=_ROLLING),
)

_BY_ID: dict[str, tuple[_Distro, ...]] = {}
for _row in DISTROS:
    for _id in _row.ids:
        _BY_ID[_id] = (*_BY_ID.get(_id, ()), _row)

# ID_LIKE words -> family, for derivatives not in the table (Linux Mint, Pop!_OS, ...).
FAMILY_BY_ID_LIKE: Mapping[str, str] = {
    "debian": "debian",
    "ubuntu": "debian",
    "rhel": "redhat",
    "fedora": "redhat",
    "centos": "redhat",
    "suse": "suse",
    "opensuse": "suse",
    "sles": "suse",
    "arch": "arch",
    "archlinux": "arch",
    "alpine": "alpine",
}

_CPE_SUFFIX = re.compile(r"^(?P<rest>.*?)\s*\[(?P<cpe>[^\[\]]*)\]\s*$", re.DOTALL)
_PAREN_SUFFIX = re.compile(r"^(?P<rest>.*?)\s*\((?P<paren>[^()]*)\)\s*$", re.DOTALL)
# "trixie/sid" (os-release PRETTY_NAME), "trixie-sid" (Patchman: "/" became "-"), "sid".
_DEBIAN_DEVEL = re.compile(r"^(?P<codename>[a-z]+)(?:[-/]sid)?$")
_NUMERIC_VERSION = re.compile(r"^\d+(?:\.\d+)*")
_OS_RELEASE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_os_release(text: str) -> dict[str, str]:
    """Parse ``/etc/os-release`` text into a dict with lower-cased keys.

    Keys are lower-cased because that is how the native report carries them. Values
    follow the shell-like quoting that os-release(5) allows (double quotes with
    backslash escapes, single quotes, bare words). Lines that are not assignments are
    skipped, as os-release(5) tells readers to do, so a stray line never loses the rest.
    """
    fields: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if not _OS_RELEASE_KEY.match(key):
            continue
        fields[key.lower()] = _unquote_shell(value.strip())
    return fields


def _unquote_shell(value: str) -> str:
    """Undo os-release quoting: "a \\"b\\"" -> a "b", 'c d' -> c d."""
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            out.append(next(chars, ""))
        else:
            out.append(char)
    return "".join(out)


def normalise_os(release: Mapping[str, str]) -> OSInfo:
    """Build an ``OSInfo`` from os-release fields (keys in any case).

    Known IDs go through the table; any other ID keeps its own NAME and VERSION_ID and
    gets its family from ID_LIKE, so a derivative is still grouped with its parent.
    """
    fields = {
        key.lower(): value.strip()
        for key, value in release.items()
        if isinstance(key, str) and isinstance(value, str)
    }
    os_id = fields.get("id", "").lower()
    pretty = fields.get("pretty_name", "")
    os_name = fields.get("name", "")
    version_id = fields.get("version_id", "")
    version_text = fields.get("version", "")
    cpe = fields.get("cpe_name", "")
    codename = fields.get("version_codename", "")
    paren_match = _PAREN_SUFFIX.match(version_text)
    paren = paren_match.group("paren").strip() if paren_match else ""

    rows = _BY_ID.get(os_id, ())
    if not rows:
        family = "unknown"
        for word in fields.get("id_like", "").lower().split():
            if word in FAMILY_BY_ID_LIKE:
                family = FAMILY_BY_ID_LIKE[word]
                break
        label = os_name or pretty or os_id or "unknown"
        return OSInfo(
            family=family,
            id=os_id,
            name=f"{label} {version_id}" if version_id else label,
            version=version_id,
            codename=codename,
            cpe=cpe,
        )

    distro = rows[0]
    if len(rows) > 1:  # CentOS Linux and CentOS Stream share ID=centos
        for row in rows:
            if row.pattern.match(os_name) or row.pattern.match(pretty):
                distro = row
                break

    version = version_id
    if distro.style == _MAJOR_MINOR and version_text.startswith(version_id + "."):
        # Ubuntu: VERSION="24.04.1 LTS (Noble Numbat)" carries the point release.
        point = _NUMERIC_VERSION.match(version_text)
        version = point.group(0) if point else version_id
    if distro.codenames is DEBIAN_CODENAMES and not version_id:
        # testing/unstable: no VERSION_ID; PRETTY_NAME says "Debian GNU/Linux trixie/sid".
        words = pretty.split()
        version = words[-1] if words and "/" in words[-1] else codename
    return _build(
        distro,
        os_id=os_id,
        version=version,
        sp="",
        codename=codename,
        paren=paren,
        cpe=cpe,
        lts="LTS" in version_text or "LTS" in pretty,
    )


def parse_patchman_os(text: str) -> OSInfo:
    """Build an ``OSInfo`` from a Patchman client's OS string.

    The string is ``<description>[ (<codename>)][ [<CPE_NAME>]]`` as the client builds
    it from os-release or a release file (reference 2.2, 3.3). Unknown descriptions keep
    the whole text as their name, family "unknown", rather than failing the report.
    """
    rest = " ".join(text.split())
    cpe = ""
    match = _CPE_SUFFIX.match(rest)
    if match:
        rest, cpe = match.group("rest"), match.group("cpe").strip()
    paren = ""
    match = _PAREN_SUFFIX.match(rest)
    if match:
        rest, paren = match.group("rest"), match.group("paren").strip()
    for distro in DISTROS:
        found = distro.pattern.match(rest)
        if found is None:
            continue
        groups = found.groupdict()
        return _build(
            distro,
            os_id=distro.ids[0],
            version=groups.get("version") or "",
            sp=groups.get("sp") or "",
            codename="",
            paren=paren,
            cpe=cpe,
            lts=" LTS" in rest,
        )
    version_match = re.search(r"(?<![\w.])\d+(?:\.\d+)*(?![\w.])", rest)
    return OSInfo(
        family="unknown",
        id="",
        name=rest or "unknown",
        version=version_match.group(0) if version_match else "",
        codename=paren,
        cpe=cpe,
    )


def _debian_devel(distro: _Distro, os_id: str, shown: str, codename: str, cpe: str) -> OSInfo:
    """Debian testing or unstable: no number, the codename (``shown``) is the identity."""
    label = "sid" if shown == "sid" else f"{shown}/sid"
    return OSInfo(
        family=distro.family,
        id=os_id,
        name=f"{distro.label} {label}",
        version="",
        codename=codename,
        cpe=cpe,
    )


def _build(
    distro: _Distro,
    *,
    os_id: str,
    version: str,
    sp: str,
    codename: str,
    paren: str,
    cpe: str,
    lts: bool,
) -> OSInfo:
    """Apply one table row: stable name, codename and CPE from the version."""
    if distro.codenames is DEBIAN_CODENAMES and version:
        devel = _DEBIAN_DEVEL.match(version)
        if devel and not version[0].isdigit():
            # Debian testing or unstable: no number, the codename is the identity.
            name_codename = devel.group("codename")
            return _debian_devel(distro, os_id, name_codename, codename or name_codename, cpe)
    if distro.codenames is DEBIAN_CODENAMES and not version and codename:
        return _debian_devel(distro, os_id, codename, codename, cpe)

    numeric = _NUMERIC_VERSION.match(version)
    version = numeric.group(0) if numeric else ""
    parts = version.split(".") if version else []
    if sp and parts:
        parts = [parts[0], sp]
        version = ".".join(parts)

    if not parts or distro.style == _ROLLING:
        name_version = ""
    elif distro.style == _MAJOR_MINOR:
        name_version = ".".join(parts[:2])
    elif distro.style == _SERVICE_PACK:
        minor = parts[1] if len(parts) > 1 else "0"
        name_version = parts[0] if minor.lstrip("0") == "" else f"{parts[0]} SP{int(minor)}"
    else:
        name_version = distro.aliases.get(parts[0], parts[0])
    name = f"{distro.label} {name_version}" if name_version else distro.label

    if not codename and name_version:
        codename = distro.codenames.get(name_version, "")
    if not codename and distro.paren_is_codename:
        codename = paren
    if not cpe and distro.cpe and name_version:
        cpe = distro.cpe.format(
            major=parts[0], name_version=name_version, edition="lts" if lts else "*"
        )
    return OSInfo(
        family=distro.family,
        id=os_id,
        name=name,
        version=version,
        codename=codename,
        cpe=cpe,
    )
