"""apk version ordering: apk-tools' own 788 test vectors and property tests.

No ``apk`` binary can be installed here (Debian does not ship apk-tools), so the reference
is apk-tools' own test data, ``tests/fixtures/versions/apk-version.data`` (apk-tools 3.0.6
``test/unit/version.data``, unchanged), read line by line exactly as apk-tools'
``test/unit/version_test.c`` reads it: every line must pass. The hypothesis tests then
explore strings the vectors never contain and require that sort keys, ``compare_apk`` and
``match_apk`` agree with each other (antisymmetry, keys in compare's order, operators as
compare says).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.versions_apk import apk_sort_key
from patchwatch.domain.versions_apk import compare_apk
from patchwatch.domain.versions_apk import match_apk
from patchwatch.domain.versions_apk import valid_apk
from tests.support.oracles import assert_orders
from tests.support.oracles import key_cmp

VECTORS = Path(__file__).resolve().parent / "fixtures" / "versions" / "apk-version.data"


# --- apk-tools' own vectors, read as version_test.c reads them ------------------------------


@dataclass(frozen=True)
class Vector:
    line: str
    a: str
    op: str  # "" for a validity line
    b: str
    invert: bool


def load_vectors() -> list[Vector]:
    """Every non-empty line: comment cut at "#", trimmed, split at the first two spaces."""
    vectors = []
    for raw in VECTORS.read_text().split("\n"):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        first, space, rest = line.partition(" ")
        op, space2, second = rest.partition(" ")
        if space and space2:
            invert = op.startswith("!")
            vectors.append(Vector(line, first, op.removeprefix("!"), second, invert))
        else:
            invert = line.startswith("!")
            vectors.append(Vector(line, line.removeprefix("!"), "", "", invert))
    return vectors


ALL = load_vectors()


def test_vectors_are_apk_tools_788_lines() -> None:
    assert len(VECTORS.read_text().splitlines()) == 788
    ops = [v.op for v in ALL if v.op]
    assert len(ALL) == 785 and len(ops) == 754
    assert {"<", "=", ">", "~", "<~", ">~"} == set(ops)
    assert sum(v.invert for v in ALL if v.op) == 8  # the "!~" lines
    assert sum(not v.op for v in ALL) == 31  # 6 valid, 25 invalid


def passes(v: Vector) -> bool:
    ok = match_apk(v.a, v.op, v.b) if v.op else valid_apk(v.a)
    return ok != v.invert


def test_every_vector_passes() -> None:
    assert [v.line for v in ALL if not passes(v)] == []


def test_keys_and_compare_agree_on_every_ordering_vector() -> None:
    """The <, =, > lines hold for compare, its mirror, and the keys."""
    want = {"<": -1, "=": 0, ">": 1}
    wrong = []
    for v in ALL:
        if v.op in want and not v.invert:
            expected = want[v.op]
            by_key = key_cmp(apk_sort_key(v.a), apk_sort_key(v.b))
            if not compare_apk(v.a, v.b) == -compare_apk(v.b, v.a) == by_key == expected:
                wrong.append(v.line)
    assert wrong == []


# --- hand table: what the module docstring states ---------------------------------------------

TABLE = [
    ("1.2.3-r0", "1.2.3-r1", -1),
    ("1.2.3", "1.2.3-r0", -1),  # a revision, even r0, is more than none
    ("1.2.3_rc1-r5", "1.2.3-r0", -1),  # pre-releases below the release
    ("1.2.3_alpha", "1.2.3_beta", -1),
    ("1.2.3_beta9", "1.2.3_pre1", -1),
    ("1.2.3_pre", "1.2.3_rc", -1),
    ("1.2.3", "1.2.3_cvs", -1),  # post-releases above it
    ("1.2.3_cvs", "1.2.3_svn", -1),
    ("1.2.3_svn", "1.2.3_git", -1),
    ("1.2.3_git", "1.2.3_hg", -1),
    ("1.2.3_hg", "1.2.3_p", -1),
    ("1.2.3_p1", "1.2.3_p2", -1),
    ("1.2.3_p1", "1.2.3a", -1),
    ("1.2.3a", "1.2.3.0", -1),
    ("0_git20230101", "0_git20240101", -1),
    ("1.0~abc1", "1.0~abc10", -1),  # hashes compare as strings
    ("1.0~a", "1.0~1", 1),
    ("1.0", "1.00", -1),  # zero-led parts compare as strings
    ("1.09", "1.1", -1),
    ("1.10", "1.9", 1),
    ("01.0", "1.0", 0),  # the first number is always a number
    ("1.0bc", "1.0bd", 0),  # everything after an invalid token is ignored
    ("1.0", "1.0bc", -1),  # invalid < end
    ("1.0_rc1", "1.0bc", -1),  # pre-release suffix < invalid
    ("a", "b", 0),  # not starting with a digit: all equal,
    ("", "x", 0),
    ("x", "0", -1),  # and below every version
    ("18446744073709551616", "0", 0),  # numbers are apk's uint64: modulo 2**64
    ("18446744073709551617-r1", "1-r18446744073709551617", 0),
    ("1." + "9" * 64, "1." + "9" * 65, 0),  # (last 64 digits decide: 10**64 % 2**64 == 0)
    ("1.2.3-r" + "1" * 30, "1.2.3-r2", 1),
]


@pytest.mark.parametrize(("a", "b", "expected"), TABLE, ids=[f"{a} {b}"[:60] for a, b, _ in TABLE])
def test_table(a: str, b: str, expected: int) -> None:
    assert_orders(compare_apk, apk_sort_key, a, b, expected)


@pytest.mark.parametrize(
    ("a", "op", "b", "expected"),
    [
        ("3.6.9", "~", "3.6", True),
        ("3.6", "~", "3.6.9", False),
        ("3.6.9-r2", "~", "3.6.9", True),
        ("3.6.9-r2", "~", "3.6.9-r2", True),
        ("3.6.9_rc1", "~", "3.6.9", True),
        ("3.7", "<~", "3.6", False),
        ("3.6.1", "<~", "3.6", True),
        ("3.5", "<~", "3.6", True),
        ("2.0", "<", "2", False),
        ("1.9", "<", "2", True),
        ("2", "<=", "2", True),
        ("2.0", ">=", "2", True),
        ("2.0", ">", "2", True),
        ("1.0bc", "~", "1.0bd", True),  # equal as apk reads them
        ("1.0bc", "~", "1.0b", True),
        ("1.0b", "~", "1.0bc", False),  # an invalid version matches no longer version
    ],
)
def test_match(a: str, op: str, b: str, expected: bool) -> None:
    assert match_apk(a, op, b) is expected


def test_match_refuses_unknown_operators() -> None:
    for op in ("", "==", "<>", "><", "!~", "=~"):
        with pytest.raises(ValueError, match="unknown apk version operator"):
            match_apk("1", op, "1")


def test_valid() -> None:
    for v in ("1", "1.2.3", "1.2.3a_rc1_p2~0a1-r9", "0_git20240101-r0"):
        assert valid_apk(v), v
    for v in ("", "1.2.3A", "1.2.3-r", "1.2.3_x", "1..2", "v1.0", " 1.0", "1.0 "):
        assert not valid_apk(v), v


# --- properties: keys, compare and match agree with each other ------------------------------

_PIECES = [
    "0", "1", "2", "9", "00", "01", "10", "18446744073709551615", "18446744073709551616",
    ".", ".", ".0", ".1", ".01", ".10", "a", "b", "z", "A",
    "_alpha", "_beta", "_pre", "_rc", "_cvs", "_svn", "_git", "_hg", "_p", "_post", "_",
    "~", "~0a", "~ab", "~f", "-r", "-r0", "-r1", "-r10", "-", "x", " ",
]  # fmt: skip


def apk_versions() -> st.SearchStrategy[str]:
    """Strings built from apk's grammar pieces, in and out of order (valid and invalid)."""
    return st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@settings(max_examples=2000, deadline=None)
@given(apk_versions(), apk_versions())
def test_keys_order_as_compare_says(a: str, b: str) -> None:
    assert_orders(compare_apk, apk_sort_key, a, b, compare_apk(a, b))


@settings(max_examples=1000, deadline=None)
@given(apk_versions(), apk_versions())
def test_match_follows_compare(a: str, b: str) -> None:
    c = compare_apk(a, b)
    assert match_apk(a, "<", b) == (c < 0)
    assert match_apk(a, "=", b) == (c == 0)
    assert match_apk(a, ">", b) == (c > 0)
    assert match_apk(a, "<=", b) == (c <= 0)
    assert match_apk(a, ">=", b) == (c >= 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(apk_versions(), min_size=3, max_size=12))
def test_sorted_by_key_is_sorted_by_compare(vs: list[str]) -> None:
    ordered = sorted(vs, key=apk_sort_key)
    for a, b in itertools.combinations(ordered, 2):
        assert compare_apk(a, b) <= 0, (a, b)
