"""Sorting and cutting listings into pages, the same way for the API and the console.

Pure: the rows are dicts as the inventory returns them. A sort key names a field;
``-field`` sorts it descending. Unknown values (``None``) sort last either way, so
that "most security updates first" does not open on hosts whose count is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from patchwatch.domain.errors import ParseError


def parse_sort(text: str | None, allowed: Sequence[str]) -> tuple[str, bool] | None:
    """``name`` or ``-name`` as (field, descending); None for no sort.

    :raises ParseError: for a field not in ``allowed``.
    """
    if not text:
        return None
    descending = text.startswith("-")
    name = text[1:] if descending else text
    if name not in allowed:
        raise ParseError(f"cannot sort by {name!r}; expected one of {', '.join(allowed)}", "sort")
    return name, descending


def _text_key(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value).lower()
    return str(value).lower()


def sort_rows(rows: list[dict[str, Any]], sort: tuple[str, bool] | None) -> list[dict[str, Any]]:
    """The rows in the order ``sort`` asks for (stable), unknown values last.

    Numbers and flags compare as they are, text without regard to case; a field is
    read as text when any of its known values is text. One key function for the whole
    listing: a type test per value cost as much as the query at 10,000 hosts.
    """
    if sort is None:
        return rows
    name, descending = sort
    known = [r for r in rows if r.get(name) is not None]
    unknown = [r for r in rows if r.get(name) is None]
    if any(isinstance(r[name], str | list | tuple) for r in known):
        known.sort(key=lambda r: _text_key(r[name]), reverse=descending)
    else:
        known.sort(key=lambda r: r[name], reverse=descending)
    return known + unknown


@dataclass(frozen=True)
class Page:
    """One page of a listing: its rows and where it stands among the others."""

    items: list[dict[str, Any]]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first(self) -> int:
        """1-based position of the page's first row (0 for an empty listing)."""
        return (self.page - 1) * self.per_page + 1 if self.items else 0

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1 if self.items else 0


def page_of(rows: Sequence[dict[str, Any]], page: int, per_page: int) -> Page:
    """Rows ``(page - 1) * per_page`` up to ``page * per_page`` of ``rows``."""
    page = max(1, page)
    per_page = max(1, per_page)
    return Page(list(rows[(page - 1) * per_page : page * per_page]), page, per_page, len(rows))
