"""Severity of a vulnerability: CVSS vectors scored, and the distribution's own rating.

Why this module exists: feeds say how bad a vulnerability is in two unrelated ways. CVSS
vectors (v2, v3.0/3.1, v4.0) are a formula over metrics; scoring them by hand is where
calculators go wrong, so the maintained ``cvss`` package (the one the issue names, which
implements all three versions from the FIRST specifications) does it. Distributions also
publish their own judgement, in their own words: Debian's tracker *urgency*, Ubuntu's
*priority*, Red Hat's *impact* ("Important: openssl security update", which AlmaLinux and
Rocky Linux copy), a vendor's ``database_specific.severity``. That rating is often what
the operator's security team reads, and it is the only one AlmaLinux records carry, so it
is kept beside the CVSS score, never folded into it.

Both end up on one scale, :class:`Level`, so that counts by severity have a small, fixed
label set: ``critical``, ``high``, ``medium``, ``low``, ``negligible`` and ``unknown``
(no score and no rating: said as unknown, never guessed). Which one a count uses is
decided by :func:`effective_level`: the CVSS level when a vector was scored, else the
distribution's rating, else ``unknown``. CVSS levels are the specification's bands as the
``cvss`` package names them (v2 has no critical band; CVSS "None", a 0.0 score, is
``negligible``).

Pure: no I/O; vectors that do not score raise :class:`~patchwatch.domain.errors.ParseError`.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cvss import CVSS2
from cvss import CVSS3
from cvss import CVSS4
from cvss import CVSSError

from patchwatch.domain.errors import ParseError

__all__ = [
    "CVSS_TYPES",
    "Cvss",
    "Level",
    "Rating",
    "effective_level",
    "preferred_cvss",
    "rating",
    "score_vector",
]


class Level(enum.StrEnum):
    """One severity scale for every source (metric label values, so a fixed set)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    NEGLIGIBLE = "negligible"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        """Order for "worst of": unknown lowest, critical highest."""
        return _RANK[self]


_RANK = {
    Level.UNKNOWN: 0,
    Level.NEGLIGIBLE: 1,
    Level.LOW: 2,
    Level.MEDIUM: 3,
    Level.HIGH: 4,
    Level.CRITICAL: 5,
}

#: OSV ``severity[].type`` values that are CVSS vectors, with their CVSS major version.
CVSS_TYPES = {"CVSS_V2": 2, "CVSS_V3": 3, "CVSS_V4": 4}

_CVSS_LEVELS = {
    "none": Level.NEGLIGIBLE,
    "low": Level.LOW,
    "medium": Level.MEDIUM,
    "high": Level.HIGH,
    "critical": Level.CRITICAL,
}

# A bound on what is handed to the calculator: the longest real v4 vector with every
# environmental metric is under 200 characters.
_MAX_VECTOR = 512


@dataclass(frozen=True, slots=True)
class Cvss:
    """A scored CVSS vector: ``version`` is "2.0", "3.0", "3.1" or "4.0"."""

    version: str
    vector: str
    score: float
    level: Level


@dataclass(frozen=True, slots=True)
class Rating:
    """A distribution's own rating, as published (``text``) and on the common scale.

    ``scheme`` names whose words these are: ``debian-urgency``, ``ubuntu-priority``,
    ``redhat-impact`` (Red Hat, AlmaLinux, Rocky Linux summaries) or ``vendor`` (a
    feed's ``database_specific``/``ecosystem_specific`` ``severity``).
    """

    scheme: str
    text: str
    level: Level


@functools.lru_cache(maxsize=1 << 14)
def score_vector(kind: str, vector: str) -> Cvss:
    """Score one OSV ``severity`` entry of CVSS type ``kind`` (``CVSS_V2`` ... ``CVSS_V4``).

    Cached: a feed repeats the same few thousand vectors across tens of thousands of
    records. Raises ``ParseError`` for an unknown type or a vector that does not score.
    """
    version = CVSS_TYPES.get(kind)
    if version is None:
        raise ParseError(f"not a CVSS severity type: {kind!r}", "severity.type")
    if not isinstance(vector, str) or not vector or len(vector) > _MAX_VECTOR:
        raise ParseError("CVSS vector is empty or too long", "severity.score")
    try:
        if version == 2:
            # NVD sometimes writes v2 vectors in parentheses or with a "CVSS:2.0/" prefix.
            body = vector.strip().strip("()")
            body = body.removeprefix("CVSS:2.0/")
            c2 = CVSS2(body)
            score = float(c2.base_score)
            name = c2.severities()[0]
            return Cvss("2.0", vector, score, _CVSS_LEVELS.get(name.lower(), Level.UNKNOWN))
        if version == 3:
            c3 = CVSS3(vector)
            minor = "3.1" if vector.startswith("CVSS:3.1/") else "3.0"
            name = c3.severities()[0]
            return Cvss(minor, vector, float(c3.base_score), _level_of(name))
        c4 = CVSS4(vector)
        return Cvss("4.0", vector, float(c4.base_score), _level_of(c4.severity))
    except (CVSSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParseError(f"CVSS vector does not score: {exc}", "severity.score") from None


def _level_of(name: str) -> Level:
    return _CVSS_LEVELS.get(name.strip().lower(), Level.UNKNOWN)


def preferred_cvss(scores: Iterable[Cvss]) -> Cvss | None:
    """Pick the one CVSS score a count uses: the newest CVSS version, then the highest score.

    Newest version first because feeds that publish several (Ubuntu: v4 and NVD's v3.1)
    give the newer one as their current assessment; within one version the highest score
    wins, so two sources that disagree are never averaged into a milder number.
    """
    best: Cvss | None = None
    for c in scores:
        if best is None or (c.version, c.score) > (best.version, best.score):
            best = c
    return best


# --- distributions' own ratings ---------------------------------------------------------

_REDHAT = {
    "critical": Level.CRITICAL,
    "important": Level.HIGH,
    "moderate": Level.MEDIUM,
    "low": Level.LOW,
}
_DEBIAN = {
    "high": Level.HIGH,
    "medium": Level.MEDIUM,
    "low": Level.LOW,
    "unimportant": Level.NEGLIGIBLE,
    # "not yet assigned" and "end-of-life" say nothing about severity: unknown.
}
_UBUNTU = {
    "critical": Level.CRITICAL,
    "high": Level.HIGH,
    "medium": Level.MEDIUM,
    "low": Level.LOW,
    "negligible": Level.NEGLIGIBLE,
    # "untriaged": unknown.
}
_VENDOR = _REDHAT | _UBUNTU | {"moderate": Level.MEDIUM, "unimportant": Level.NEGLIGIBLE}
_SCHEMES = {
    "redhat-impact": _REDHAT,
    "debian-urgency": _DEBIAN,
    "ubuntu-priority": _UBUNTU,
    "vendor": _VENDOR,
}
_MAX_RATING = 64
_SPACES = re.compile(r"\s+")


def rating(scheme: str, text: object) -> Rating | None:
    """Read a distribution's rating word; None when there is no word to keep.

    Words outside the scheme's vocabulary are kept as published with level ``unknown``
    (an operator still sees them). Debian's tracker marks some urgencies with ``*`` or
    ``**`` (set automatically, not yet reviewed); the stars are kept in ``text`` and
    ignored for the level.
    """
    if not isinstance(text, str):
        return None
    return _rating(scheme, text[: _MAX_RATING * 4])  # bounded before it is cached


@functools.lru_cache(maxsize=1 << 12)
def _rating(scheme: str, text: str) -> Rating | None:
    """Shared ``Rating`` objects: a feed repeats a handful of words on every entry."""
    table = _SCHEMES[scheme]
    shown = _SPACES.sub(" ", text).strip()[:_MAX_RATING]
    if not shown:
        return None
    word = shown.rstrip("*").strip().lower()
    return Rating(scheme, shown, table.get(word, Level.UNKNOWN))


def effective_level(cvss: Cvss | None, own: Rating | None) -> Level:
    """The level a count by severity uses: CVSS when scored, else the distribution's rating.

    CVSS first because it is the one scale every distribution's records can share; the
    rating is what is left for records without a vector (every AlmaLinux record).
    """
    if cvss is not None and cvss.level is not Level.UNKNOWN:
        return cvss.level
    if own is not None:
        return own.level
    return Level.UNKNOWN
