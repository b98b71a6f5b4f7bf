"""FIRST's EPSS daily scores (CSV) read into a CVE -> (probability, percentile) table.

Why this module exists: EPSS says how likely a CVE is to be exploited in the next 30
days; beside KEV (exploited now) it ranks the rest. FIRST publishes one gzip-compressed
CSV a day::

    #model_version:v2025.03.14,score_date:2025-08-25T12:55:00Z
    cve,epss,percentile
    CVE-1999-0001,0.01309,0.79477

Quirks handled: the first line is a comment naming the model and the score date (older
files write the offset as ``+0000``); the header follows it; the file covers every
published CVE (about 300,000 rows), so ``only`` restricts what is kept to the CVEs the
fleet's feeds name. A row whose id is not a CVE, whose numbers are not finite values in
[0, 1], or which has the wrong number of fields is skipped and counted; a file with no
``cve,epss,percentile`` header is refused whole (``ParseError``): it is not EPSS.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Container
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from patchwatch.domain.errors import ParseError
from patchwatch.domain.vulns.feed import feed_bytes
from patchwatch.domain.vulns.model import FeedStats

__all__ = ["MAX_EPSS_BYTES", "EpssScore", "EpssScores", "parse_epss"]

#: Largest file accepted after decompression (2025's full file is about 12 MB).
MAX_EPSS_BYTES = 256 << 20

_CVE = re.compile(r"^CVE-[0-9]{4}-[0-9]{4,19}$")
_HEADER = ["cve", "epss", "percentile"]


@dataclass(frozen=True, slots=True)
class EpssScore:
    """Probability of exploitation in the next 30 days, and its percentile (both 0..1)."""

    epss: float
    percentile: float


@dataclass(frozen=True, slots=True)
class EpssScores:
    """One day's scores, with the model version and score time from the comment line."""

    model_version: str
    score_date: float | None
    scores: Mapping[str, EpssScore]
    stats: FeedStats = field(default_factory=FeedStats)


def _comment(line: str) -> tuple[str, float | None]:
    fields = dict(part.partition(":")[::2] for part in line.lstrip("#").split(",") if ":" in part)
    version = fields.get("model_version", "").strip()[:64]
    when = fields.get("score_date", "").strip()
    moment: float | None = None
    if when:
        when = re.sub(r"([+-][0-9]{2})([0-9]{2})$", r"\1:\2", when.replace("Z", "+00:00"))
        try:
            parsed = dt.datetime.fromisoformat(when)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.UTC)
            moment = parsed.timestamp()
        except ValueError:
            moment = None
    return version, moment


def _probability(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None
    return value


def parse_epss(
    data: bytes,
    *,
    only: Container[str] | None = None,
    max_bytes: int = MAX_EPSS_BYTES,
) -> EpssScores:
    """Read an EPSS CSV (gzip or plain); keep only CVEs in ``only`` when it is given."""
    raw = feed_bytes(data, "EPSS file", max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("EPSS file is not UTF-8 text") from None
    lines = text.splitlines()
    model, when = "", None
    start = 0
    while start < len(lines) and (lines[start].startswith("#") or not lines[start].strip()):
        if lines[start].startswith("#"):
            model, when = _comment(lines[start])
        start += 1
    if start >= len(lines) or [h.strip().lower() for h in lines[start].split(",")] != _HEADER:
        raise ParseError("EPSS file has no 'cve,epss,percentile' header", "line 1")
    stats = FeedStats()
    scores: dict[str, EpssScore] = {}
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if not line.strip():
            continue
        stats.read += 1
        parts = line.split(",")
        if len(parts) != 3:
            stats.skip("schema", f"line {number}: {len(parts)} fields, not 3")
            continue
        cve = parts[0].strip()
        if not _CVE.match(cve):
            stats.skip("schema", f"line {number}: {cve[:40]!r} is not a CVE id")
            continue
        epss, percentile = _probability(parts[1]), _probability(parts[2])
        if epss is None or percentile is None:
            stats.skip("schema", f"line {number}: scores must be numbers in [0, 1]")
            continue
        if cve in scores:
            stats.duplicates += 1
            continue
        if only is not None and cve not in only:
            stats.ignored += 1
            continue
        scores[cve] = EpssScore(epss, percentile)
    stats.kept = len(scores)
    return EpssScores(model, when, scores, stats)
