"""The handoff to processing: stored reports made ready to apply, parsed at most once.

The receiver stores a report's body after checking only its routing fields; processing
(behind the receiver, the scheduler or ``patchwatch process``) reads it from the queue
and parses the stored body into a :class:`Prepared` report: the record (or why it does
not parse) and, once known, the stored package set of its packages, in which case the
package list may not have been read at all (``patchwatch.pipeline.processing``): a
report's list is named by its digest as sent (its *listing*) before it is parsed, and
a listing seen before names its set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

import orjson

from patchwatch.domain.errors import ParseError
from patchwatch.domain.protocols import NATIVE
from patchwatch.domain.protocols import PATCHMAN1
from patchwatch.domain.protocols import PATCHMAN2
from patchwatch.domain.records import HostReport
from patchwatch.domain.records import Package
from patchwatch.domain.reports import parse_native
from patchwatch.domain.reports import parse_protocol1
from patchwatch.domain.reports import parse_protocol2
from patchwatch.domain.set_digest import listing_digest
from patchwatch.domain.set_digest import patchman1_listing_digest
from patchwatch.domain.set_digest import patchman2_listing_digest
from patchwatch.store.models import Report
from patchwatch.store.report_queue import stored_text


@dataclass(slots=True)
class Prepared:
    """One stored report ready to apply.

    ``record`` is None when the body does not parse; ``error`` then says why (kept as
    the report's failure reason). ``package_set_id`` is the stored set of the
    report's packages once it is known; ``packages_read`` is False when the record
    was parsed without its package list because that set was known beforehand.
    ``listing``: the digest of the package list as sent (:func:`listing_of`; None for
    bodies that do not decode and lists that cannot be hashed).
    """

    row: Report
    record: HostReport | None
    error: str = ""
    package_set_id: int | None = None
    packages_read: bool = True
    listing: str | None = None

    def whole(self) -> HostReport:
        """The record with its packages: parsed again from the body only when the
        package list was skipped (the stored set it stood for proved stale).

        :raises ParseError: when the body does not parse.
        """
        if self.record is not None and self.packages_read:
            return self.record
        return decode_report(self.row.protocol, self.row.body)


def prepare(row: Report, package_set_id: int | None = None) -> Prepared:
    """Parse a stored report; without its package list when ``package_set_id``, the
    stored set of its packages, is known."""
    try:
        doc = decode_body(row.body)
    except ParseError as exc:
        return Prepared(row, None, str(exc))
    return prepare_decoded(row, doc, package_set_id)


def prepare_decoded(
    row: Report,
    doc: object,
    package_set_id: int | None = None,
    listing: str | None = None,
    packages: tuple[Package, ...] | None = None,
) -> Prepared:
    """Parse a decoded body (:func:`decode_body`) into a :class:`Prepared` report.

    ``package_set_id``: the stored set of its packages, when known: the list is not
    read. ``packages``: the records another report of the batch made of the same
    list as sent (the same ``listing``): the list is not read either, and these
    stand for it. ``doc`` may be changed (a native report's list emptied) when either
    is given.
    """
    skip = package_set_id is not None or packages is not None
    try:
        record = parse_document(row.protocol, doc, skip_packages=skip)
    except ParseError as exc:
        return Prepared(row, None, str(exc), listing=listing)
    if packages is not None and package_set_id is None:
        return Prepared(row, replace(record, packages=packages), listing=listing)
    return Prepared(
        row, record, package_set_id=package_set_id, packages_read=not skip, listing=listing
    )


def listing_of(protocol: str, doc: object) -> str | None:
    """The listing digest of a decoded body's package list, or None (no list, or one
    that cannot be hashed).

    Native: the ``packages`` and ``sources`` arrays; Patchman protocol 1: the
    ``packages`` form field's text; protocol 2: the ``packages`` array. Each under a
    tag of its protocol and parser rules (``patchwatch.domain.set_digest``), so that the
    same packages sent by two protocols never share a listing.
    """
    if not isinstance(doc, dict) or "packages" not in doc:
        return None
    if protocol == NATIVE:
        return listing_digest(doc["packages"], doc.get("sources"))
    if protocol == PATCHMAN1:
        return patchman1_listing_digest(doc["packages"])
    if protocol == PATCHMAN2:
        return patchman2_listing_digest(doc["packages"])
    return None


def decode_report(protocol: str, body: bytes, skip_packages: bool = False) -> HostReport:
    """Parse a stored body with the parser of its protocol.

    ``skip_packages`` leaves the package list out (not its holds): the caller knows
    its set already (see :func:`prepare`).

    :raises ParseError: when the body does not parse (kept as the failure reason).
    """
    return parse_document(protocol, decode_body(body), skip_packages)


def decode_body(body: bytes) -> Any:
    """The JSON value a stored body holds (each parser checks its shape).

    :raises ParseError: when it does not decompress or decode.
    """
    try:
        # zstd (the receiver's), zlib (encode_body) or gzip (a body kept as sent)
        text = stored_text(body)
        try:
            return orjson.loads(text)  # half the time of json.loads on a 150 KB report
        except orjson.JSONDecodeError:
            # what json.dumps wrote but orjson refuses: a lone surrogate (kept by
            # surrogatepass, for the parser to name), a number beyond a double's range.
            # (An integer past 64 bits orjson reads as a float: every such field is
            # range-checked, and out of range either way.)
            return json.loads(text)
    except ValueError as exc:
        raise ParseError(f"stored report is unreadable: {exc}") from None


def parse_document(protocol: str, doc: Any, skip_packages: bool = False) -> HostReport:
    """Parse a decoded body with the parser of its protocol (``skip_packages``: see
    :func:`decode_report`; a native document's list is emptied).

    :raises ParseError: when the document does not parse.
    """
    if protocol == NATIVE:
        if skip_packages and isinstance(doc, dict) and "packages" in doc:
            doc["packages"] = []
        return parse_native(doc)
    if protocol == PATCHMAN1:
        return parse_protocol1(doc, skip_packages)
    if protocol == PATCHMAN2:
        return parse_protocol2(doc, skip_packages)
    raise ParseError(f"unknown protocol {protocol!r}")
