"""Frozen records for repository metadata (apt Release files, rpm-md repomd.xml).

They sit beside ``patchwatch.domain.records`` rather than in it because only the mirror
refresh needs them: they say *where* the package list is and how to check it, while the
records say what is in it. All of them are plain values so that a refresh can compare
the newly fetched one with the stored one to skip work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from types import MappingProxyType
from typing import Any

from patchwatch.domain.repodata.compression import compute_kind

#: Release checksum fields, weakest first; apt accepts the strongest one present.
RELEASE_HASHES = ("MD5Sum", "SHA1", "SHA256", "SHA512")

#: The hashlib name of each Release checksum field.
HASHLIB_NAMES = {"MD5Sum": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


# The Packages files a Release may list, by the name of their format.
PACKAGES_FORMATS = {"gz": ".gz", "xz": ".xz", "bz2": ".bz2", "lzma": ".lzma", "plain": ""}
# Which one to download when a Release lists several. gzip first: it is about a third
# more bytes than xz but decompresses in a third of the time (docs/performance.md);
# see the apt_index_formats setting.
DEFAULT_PACKAGES_ORDER = ("gz", "xz", "bz2", "lzma", "plain")


@dataclass(frozen=True, slots=True)
class ReleaseFileEntry:
    """One file a Release file lists: its size and every hash given for it."""

    path: str
    size: int
    hashes: Mapping[str, str] = field(default_factory=_empty, hash=False)  # field name -> hex

    @property
    def strongest(self) -> tuple[str, str]:
        """Return (field name, hex digest) of the strongest hash listed for the file."""
        for name in reversed(RELEASE_HASHES):
            if name in self.hashes:
                return name, self.hashes[name]
        raise LookupError(f"{self.path}: no hash")  # parse_release never builds this


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """The Packages file to download for one (component, arch), and how to verify it.

    ``path`` is relative to the directory of the Release file (``dists/<suite>/``, or the
    repository directory of a flat repository). ``by_hash_path`` is set when the Release
    says ``Acquire-By-Hash: yes``: downloading that path instead avoids the race where the
    mirror updates between fetching InRelease and the index.
    """

    path: str
    size: int
    hash_name: str  # Release field name: "SHA256", "SHA512", ...
    digest: str  # lower-case hex
    compression: str  # "xz", "gz", "bz2", "lzma" or "plain"
    by_hash_path: str = ""

    @property
    def hashlib_name(self) -> str:
        """Return the algorithm name ``hashlib.new`` understands."""
        return HASHLIB_NAMES[self.hash_name]


@dataclass(frozen=True, slots=True)
class ReleaseFile:
    """A parsed apt ``Release`` file (or the signed text of an ``InRelease``).

    Absent fields are "" / () / None; ``fields`` keeps every single-line field as given
    (for fields this record has no attribute for, such as ``Description``).
    """

    origin: str = ""
    label: str = ""
    suite: str = ""
    codename: str = ""
    version: str = ""
    date: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    architectures: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    acquire_by_hash: bool = False
    files: Mapping[str, ReleaseFileEntry] = field(default_factory=_empty, hash=False)
    fields: Mapping[str, str] = field(default_factory=_empty, hash=False)

    @property
    def is_flat(self) -> bool:
        """Return True for a flat repository: no components, indexes beside the Release."""
        return not self.components

    def index_for(
        self, component: str, arch: str, order: Sequence[str] = DEFAULT_PACKAGES_ORDER
    ) -> IndexEntry | None:
        """Return the preferred ``Packages`` variant for (component, arch), or None if absent.

        ``order`` names formats of :data:`PACKAGES_FORMATS`, preferred first; one the
        Release lists but ``order`` leaves out comes after them, so that a repository
        publishing only that format is still read. The hash is the strongest the
        Release gives. Pass
        ``component=""`` for a flat repository. A component with a directory prefix, as
        Debian security's ``updates/main``, also matches the index filed under its last
        part, which is where that archive puts it.
        """
        candidates = [component]
        if "/" in component:
            candidates.append(component.rsplit("/", 1)[1])
        for comp in candidates:
            directory = f"{comp}/binary-{arch}/" if comp else ""
            preferred = [PACKAGES_FORMATS[name] for name in order]
            for suffix in dict.fromkeys([*preferred, *PACKAGES_FORMATS.values()]):
                entry = self.files.get(f"{directory}Packages{suffix}")
                if entry is None:
                    continue
                hash_name, digest = entry.strongest
                by_hash = f"{directory}by-hash/{hash_name}/{digest}" if self.acquire_by_hash else ""
                return IndexEntry(
                    path=entry.path,
                    size=entry.size,
                    hash_name=hash_name,
                    digest=digest,
                    compression=compute_kind(entry.path),
                    by_hash_path=by_hash,
                )
        return None

    def is_valid_at(self, now: dt.datetime) -> bool:
        """Return False when ``Valid-Until`` has passed (a replayed, stale Release)."""
        return self.valid_until is None or now <= self.valid_until


@dataclass(frozen=True, slots=True)
class RepoMdEntry:
    """One ``<data>`` entry of repomd.xml: a metadata file and how to verify it."""

    type: str  # "primary", "updateinfo", "modules", "filelists", ...
    location: str  # href, relative to the repository base URL
    checksum_type: str  # as written: "sha256", "sha" (= sha1), "sha512", ...
    checksum: str  # of the file as downloaded (compressed), lower-case hex
    open_checksum_type: str = ""
    open_checksum: str = ""  # of the decompressed content
    size: int | None = None
    open_size: int | None = None
    timestamp: int | None = None
    location_base: str = ""  # xml:base of <location>, if the repo points elsewhere

    @property
    def hashlib_name(self) -> str:
        """Return the algorithm name ``hashlib.new`` understands ("sha" means sha1)."""
        name = self.checksum_type.lower()
        return "sha1" if name == "sha" else name

    @property
    def compression(self) -> str:
        """Return the compression kind the file name says (see compression.compute_kind)."""
        return compute_kind(self.location)


@dataclass(frozen=True, slots=True)
class RepoMd:
    """A parsed repomd.xml: the revision and the metadata files by type."""

    revision: str = ""
    entries: Mapping[str, RepoMdEntry] = field(default_factory=_empty, hash=False)

    def get(self, type_: str) -> RepoMdEntry | None:
        """Return the entry of one type ("primary", "updateinfo", ...), or None."""
        return self.entries.get(type_)
