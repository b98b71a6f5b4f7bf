"""Sorting and paging of listings (patchwatch.domain.paging), shared by the API and console."""

from __future__ import annotations

import pytest

from patchwatch.domain.errors import ParseError
from patchwatch.domain.paging import page_of
from patchwatch.domain.paging import parse_sort
from patchwatch.domain.paging import sort_rows

ROWS = [
    {"name": "web2", "security": 3, "tags": ["b"]},
    {"name": "DB1", "security": None, "tags": []},
    {"name": "web1", "security": 0, "tags": ["a", "z"]},
    {"name": "app", "security": 3, "tags": ["c"]},
]


def names(rows):
    return [r["name"] for r in rows]


def test_sort_numbers_with_unknown_last_either_way() -> None:
    assert names(sort_rows(ROWS, ("security", False))) == ["web1", "web2", "app", "DB1"]
    assert names(sort_rows(ROWS, ("security", True))) == ["web2", "app", "web1", "DB1"]


def test_sort_text_without_regard_to_case_and_lists_as_text() -> None:
    assert names(sort_rows(ROWS, ("name", False))) == ["app", "DB1", "web1", "web2"]
    assert names(sort_rows(ROWS, ("tags", False))) == ["DB1", "web1", "web2", "app"]
    assert sort_rows(ROWS, None) is ROWS


def test_parse_sort() -> None:
    assert parse_sort("-security", ("security",)) == ("security", True)
    assert parse_sort("", ("security",)) is None
    with pytest.raises(ParseError):
        parse_sort("secret", ("security",))


def test_pages() -> None:
    rows = [{"n": i} for i in range(7)]
    page = page_of(rows, 3, 3)
    assert page.items == [{"n": 6}] and (page.first, page.last, page.pages) == (7, 7, 3)
    assert page_of([], 1, 50).pages == 1 and page_of([], 1, 50).first == 0
