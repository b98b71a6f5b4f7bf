"""The digest that names a set: SHA-256 of its members' sorted key lines.

A package set's digest covers what its packages *are* (kind, name, epoch, version,
release and architecture of each build, one line per distinct build), not their row
ids: it is computed from a parsed report before the store is touched, so that the
receiver and processing find a set already stored with one indexed lookup, and two
stores holding the same packages give a set the same digest. A repository set's
digest is made the same way from its members' key lines. Pure: no storage here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from patchwatch.domain.records import Package


def digest_of(lines: Iterable[str]) -> str:
    """SHA-256 (hex) of the distinct ``lines`` sorted, each followed by a newline."""
    # the same bytes as hashing each sorted line followed by a newline, in one call
    text = "\n".join(sorted(lines))
    return hashlib.sha256(f"{text}\n".encode("utf-8", "surrogatepass") if text else b"").hexdigest()


def set_digest(packages: Iterable[Package]) -> tuple[str, int]:
    """(digest, number of distinct packages): one pass over strings hashed in C."""
    lines = {p.digest_line for p in packages}
    return digest_of(lines), len(lines)


def package_set_digest(packages: Iterable[Package]) -> str:
    """The digest of the set of these packages (``Package.digest_line`` of each)."""
    return set_digest(packages)[0]
