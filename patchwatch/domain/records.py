"""The shared vocabulary: plain frozen records passed between the pure core and the edges.

Parsers return these and the update computation consumes them; the modules that read
the database build them from rows (package sets in ``patchwatch.store.sets``, the update
computation in ``patchwatch.pipeline.hostupdates``, a few CLI verbs). None of them knows
about Flask or Peewee.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.protocols import NATIVE


class PackageKind(enum.StrEnum):
    """Package format; it decides which version ordering applies."""

    DEB = "deb"
    RPM = "rpm"
    ARCH = "arch"  # pacman (Arch Linux): epoch, pkgver, pkgrel
    APK = "apk"  # Alpine: the whole version ("1.2.3-r4") in ``version``, no epoch or release


class RepoKind(enum.StrEnum):
    """Repository metadata format."""

    DEB = "deb"  # apt: InRelease + Packages
    RPM = "rpm"  # rpm-md: repomd.xml + primary (yum, dnf)
    ZYPPER = "zypper"  # rpm-md read by zypper (SUSE); same metadata, different client
    ARCH = "arch"  # pacman: a sync database ($repo.db) per repository and architecture
    APK = "apk"  # Alpine: APKINDEX.tar.gz per repository and architecture


@dataclass(frozen=True, slots=True, order=True)
class Package:
    """One installable or installed package build.

    ``epoch`` is "" when absent (dpkg, pacman) and "0"-equivalent for rpm; ``release`` is
    the Debian revision, the rpm release or the pacman pkgrel ("" when absent). apk
    versions are kept whole in ``version`` (``1.2.3-r4``: the ``-r`` suffix is a token of
    apk's ordering, not a separate field), with ``epoch`` and ``release`` empty.
    """

    name: str
    epoch: str
    version: str
    release: str
    arch: str
    kind: PackageKind
    _hash: int = field(default=0, init=False, repr=False, compare=False)
    #: the fields joined by U+001F, kind first: this build's line in a package-set
    #: digest (``patchwatch.domain.set_digest``), made once per record rather than once per report
    digest_line: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Package records are hashed over and over (deduplication, set digests, id
        # caches): hash the fields once, not on every lookup.
        fields = (self.name, self.epoch, self.version, self.release, self.arch, self.kind)
        object.__setattr__(self, "_hash", hash(fields))
        line = "\x1f".join((str(self.kind), self.name, self.epoch, self.version, self.release,
                             self.arch))  # fmt: skip
        object.__setattr__(self, "digest_line", line)

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[object, ...]:
        # string hashes differ between processes: rebuild (and rehash) when unpickled
        return (Package, (self.name, self.epoch, self.version, self.release, self.arch, self.kind))

    @property
    def evr(self) -> str:
        """Return the full version string as the package manager prints it."""
        out = f"{self.epoch}:{self.version}" if self.epoch not in ("", "0") else self.version
        return f"{out}-{self.release}" if self.release else out

    @property
    def nevra(self) -> str:
        """Return a unique human-readable identifier (name-evr.arch)."""
        return (
            f"{self.name}_{self.evr}_{self.arch}"
            if self.kind == PackageKind.DEB
            else (f"{self.name}-{self.evr}.{self.arch}")
        )


@dataclass(frozen=True, slots=True)
class AvailablePackage:
    """A package offered by a repository index, with what the index says about it."""

    package: Package
    source: str = ""  # source package name (deb) or source rpm
    filename: str = ""


@dataclass(frozen=True, slots=True)
class Advisory:
    """An errata entry (rpm-md updateinfo, zypper patch) covering some packages."""

    id: str
    type: str  # "security", "bugfix", "enhancement", ...
    severity: str = ""
    title: str = ""
    issued: str = ""
    cves: tuple[str, ...] = ()
    packages: tuple[Package, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportedRepository:
    """A repository as a host reports it.

    For apt, one deb source line expands to one repository per (suite, component); for
    rpm, one repo id. ``urls`` are the mirrors (baseurls) in the host's order;
    ``mirrorlist``/``metalink`` are kept for the server to follow. ``priority`` is
    normalised so that a higher number always wins (apt pins as is, yum/zypper
    priorities negated).
    """

    kind: RepoKind
    id: str
    name: str
    urls: tuple[str, ...]
    priority: int = 0
    enabled: bool = True
    suite: str = ""
    component: str = ""
    arch: str = ""
    signed_by: str = ""
    mirrorlist: str = ""
    metalink: str = ""
    # apk's tagged repository (``@edge URL``): it offers only the names the world file
    # pins to its tag (``pkg@edge``), ``pinned``; "" for every other repository
    tag: str = ""
    pinned: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportedModule:
    """An enabled rpm module stream (dnf modularity)."""

    name: str
    stream: str
    version: str = ""
    context: str = ""
    arch: str = ""
    packages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportedUpdate:
    """An update the host's own package manager sees (for repositories we cannot read)."""

    name: str
    version: str  # full evr as printed by the package manager
    arch: str
    security: bool
    repository: str = ""


@dataclass(frozen=True, slots=True, order=True)
class HeldPackage:
    """A package the host's package manager will not upgrade (apt/dpkg hold, dnf
    versionlock, zypper lock): its updates are counted apart from the pending ones.

    ``arch`` "" means every architecture of the name.
    """

    name: str
    arch: str = ""


@dataclass(frozen=True, slots=True, order=True)
class ReportedSource:
    """The source package of an installed binary, as the host's package manager says
    (dpkg-query ``${source:Package}``/``${source:Version}``, rpm ``SOURCERPM``).

    Why: Debian's and Ubuntu's vulnerability records name source packages (libc6 is
    glibc's), and a binNMU's version (``+b1``) is not its source's. The binary is named
    by name, version, release and arch as in ``packages``; ``source_version`` "" means
    the binary's own version.
    """

    name: str
    version: str
    release: str
    arch: str
    source: str
    source_version: str = ""


@dataclass(frozen=True, slots=True)
class OSInfo:
    """What the host's os-release says, normalised (see ``patchwatch.domain.osinfo``)."""

    family: str  # "debian", "redhat", "suse", "arch", "alpine", "unknown"
    id: str  # os-release ID: debian, ubuntu, rocky, ...
    name: str  # human name: "Debian 12", "Rocky Linux 9.4"
    version: str = ""
    codename: str = ""
    cpe: str = ""


@dataclass(frozen=True, slots=True)
class HostReport:
    """A parsed report, whatever protocol it arrived in: what processing stores."""

    hostname: str
    os: OSInfo
    kernel: str
    arch: str
    packages: tuple[Package, ...]
    repositories: tuple[ReportedRepository, ...] | None  # None: not sent, keep existing
    tags: tuple[str, ...] = ()
    reboot_required: bool | None = None
    modules: tuple[ReportedModule, ...] = ()
    updates: tuple[ReportedUpdate, ...] | None = None
    held: tuple[HeldPackage, ...] = ()
    sources: tuple[ReportedSource, ...] = ()  # only where the source differs
    agent: str = ""
    protocol: str = NATIVE
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class PendingUpdate:
    """An update the server computed for a host (or a set shared by hosts)."""

    installed: Package
    available: Package
    security: bool
    repository: str = ""  # the repository id the candidate comes from
    advisories: tuple[str, ...] = ()
