"""Where an operator reads an advisory or a CVE: a link per record id (pure).

Why this module exists: a pending update lists the advisories it fixes (DSA, DLA,
USN, ALSA, RHSA, RLSA ids and the CVEs they carry), and an id alone sends the operator
searching. Records often carry their own ADVISORY reference (kept in
``Vulnerability.urls``), which wins when one names the id; otherwise each
distribution's public page is built from the id, as the distributions publish them.
An id of no known form gets no link (``None``), never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["advisory_url", "is_advisory"]

_DEBIAN = re.compile(r"^(?:DSA|DLA|DTSA)-[0-9]+(?:-[0-9]+)?$")
_UBUNTU = re.compile(r"^USN-[0-9]+-[0-9]+$")
_ERRATUM = re.compile(r"^(?P<kind>AL|RH|RL)[SBE]A-[0-9]{4}:[0-9]+$")
_CVE = re.compile(r"^CVE-[0-9]{4}-[0-9]{4,}$")
_PREFIXED_CVE = re.compile(r"^(?P<db>DEBIAN|UBUNTU|ALPINE)-(?P<cve>CVE-[0-9]{4}-[0-9]{4,})$")
_ALMA_RELEASE = re.compile(r"^AlmaLinux:(?P<release>[0-9]+)")


def is_advisory(record_id: str) -> bool:
    """Whether a record id is a distribution's advisory (DSA, USN, ALSA, RHSA, ...),
    as opposed to a per-CVE record (``DEBIAN-CVE-…``, ``CVE-…``)."""
    return bool(_DEBIAN.match(record_id) or _UBUNTU.match(record_id) or _ERRATUM.match(record_id))


def advisory_url(record_id: str, ecosystem: str = "", known: Iterable[str] = ()) -> str | None:
    """A link to read ``record_id`` (an advisory or a CVE) at, or None.

    ``known``: links the feeds gave for the vulnerability; one naming the id (``:`` may
    be written ``-``, as AlmaLinux's errata pages do) is the record's own and wins.
    ``ecosystem``: the host's (``AlmaLinux:9``), for the pages filed per release.
    """
    spellings = {record_id, record_id.replace(":", "-")}
    for url in known:
        if any(s in url for s in spellings):
            return url
    if _DEBIAN.match(record_id):
        return f"https://security-tracker.debian.org/tracker/{record_id}"
    if _UBUNTU.match(record_id):
        return f"https://ubuntu.com/security/notices/{record_id}"
    m = _ERRATUM.match(record_id)
    if m:
        if m["kind"] == "RH":
            return f"https://access.redhat.com/errata/{record_id}"
        if m["kind"] == "RL":
            return f"https://errata.rockylinux.org/{record_id}"
        alma = _ALMA_RELEASE.match(ecosystem)
        if alma:
            return (
                f"https://errata.almalinux.org/{alma['release']}/{record_id.replace(':', '-')}.html"
            )
        return None
    m = _PREFIXED_CVE.match(record_id)
    if m:
        cve = m["cve"]
        if m["db"] == "DEBIAN":
            return f"https://security-tracker.debian.org/tracker/{cve}"
        if m["db"] == "UBUNTU":
            return f"https://ubuntu.com/security/{cve}"
        return f"https://security.alpinelinux.org/vuln/{cve}"
    if _CVE.match(record_id):
        return f"https://www.cve.org/CVERecord?id={record_id}"
    return None
