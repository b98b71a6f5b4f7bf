"""The digest that names a set: SHA-256 of its members' sorted key lines.

A package set's digest covers what its packages *are* (kind, name, epoch, version,
release and architecture of each build, one line per distinct build), not their row
ids: it is computed from a parsed report before the store is touched, so that the
receiver and processing find a set already stored with one indexed lookup, and two
stores holding the same packages give a set the same digest. A repository set's
digest is made the same way from its members' key lines. A *listing* digest
(:func:`listing_digest`, :func:`patchman1_listing_digest`,
:func:`patchman2_listing_digest`) hashes a report's package list as sent instead, before
it is parsed: processing keeps which set each listing made. Pure: no storage here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import orjson

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


#: the rules by which a native report's ``packages`` and ``sources`` become records,
#: hashed into every listing digest: change it with any change to how
#: ``patchwatch.domain.reports.native`` reads those two arrays, so that no listing
#: stored under the old rules is taken for what the new ones would make of it
LISTING_RULES = b"patchwatch native packages+sources 1\n"


def listing_digest(packages: object, sources: object) -> str | None:
    """SHA-256 (hex) of a native report's package list and sources as sent; None when
    they cannot be written back as JSON (a lone surrogate).

    Why: processing maps this digest to the package set the lists made
    (``patchwatch.store.package_sets.sets_of_listings``), so that a report whose lists
    equal an earlier one's, every unchanged re-report and every host that did not
    drift from its image, skips turning 1,500 package objects into records and
    naming their set. Writing the decoded arrays back with orjson (about 0.07 ms for
    1,500 packages) and hashing them (0.08 ms) costs a tenth of building the
    records. Equal digests mean equal decoded arrays (object keys in the order sent:
    another order is another listing, a miss and nothing worse), and those give
    equal records, because parsing a package or a source reads nothing else of the
    report. ``sources`` is in it because the sources a report names are stored with
    its packages' records. ``None`` (absent) and JSON null hash alike: a null
    ``sources`` fails the parse, and a listing is only ever stored for a report that
    parsed; so do the values orjson writes other than as read (an integer past 64
    bits, read as a float), none of which a package or source field accepts.
    """
    try:
        raw = orjson.dumps([packages, sources])
    except orjson.JSONEncodeError:
        return None
    return hashlib.sha256(LISTING_RULES + raw).hexdigest()


#: the rules by which Patchman reports' package lists become records (protocol 1: the
#: ``packages`` form field's quoted lines, ``patchwatch.domain.reports.protocol1``;
#: protocol 2: the ``packages`` array, ``protocol2``; both through
#: ``patchwatch.domain.reports.patchman.make_package``): change the version with any
#: change to how either reads its packages. Each tag is a line of its own, unlike every
#: other's up to its newline, so that no listing of one protocol or one version of its
#: rules can equal another's, whatever the bytes that follow.
PATCHMAN1_LISTING_RULES = b"patchwatch patchman/1 packages 1\n"
PATCHMAN2_LISTING_RULES = b"patchwatch patchman/2 packages 1\n"


def patchman1_listing_digest(packages: object) -> str | None:
    """SHA-256 (hex) of a Patchman protocol 1 report's ``packages`` field, the text as
    stored; None when it is not text.

    Why: as :func:`listing_digest` for native reports, so that an unchanged re-report
    of a Patchman client names its set without its 1,500 quoted lines being split and
    turned into records. The text is all the package records are made of (each line
    read alone, nothing else of the form consulted). The holds a deb line may carry
    (a seventh field) come from the same text and belong to the host, not the set:
    processing reads them again (``parse_protocol1(skip_packages=True)``). A lone
    surrogate is hashed as written (``surrogatepass``): such a field fails the parse,
    and a listing is only stored for a report that parsed.
    """
    if not isinstance(packages, str):
        return None
    return hashlib.sha256(
        PATCHMAN1_LISTING_RULES + packages.encode("utf-8", "surrogatepass")
    ).hexdigest()


def patchman2_listing_digest(packages: object) -> str | None:
    """SHA-256 (hex) of a Patchman protocol 2 report's ``packages`` array as sent (as
    orjson writes the decoded value back); None when it cannot be written back.

    Why and what equal digests mean: as :func:`listing_digest` (protocol 2 has no
    sources, and its packages carry no holds).
    """
    try:
        raw = orjson.dumps(packages)
    except orjson.JSONEncodeError:
        return None
    return hashlib.sha256(PATCHMAN2_LISTING_RULES + raw).hexdigest()
