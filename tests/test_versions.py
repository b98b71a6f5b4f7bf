"""dpkg and rpm version ordering: hand tables, the real tools as oracles, property tests.

The oracles are the real programs: ``dpkg --compare-versions`` on a committed sample of
real bookworm version strings, and rpm's own ``rpm.vercmp`` (labelCompare order) through
``rpm --eval`` with a Lua loop, so thousands of pairs cost one rpm process. When a tool is
missing the test is skipped with the reason, unless ``PATCHWATCH_TEST_REQUIRE_ORACLES=1``
(CI), where that is a failure. The hypothesis tests check the sort keys against literal
ports of dpkg's ``verrevcmp`` and rpm's ``rpmvercmp`` kept in this file, which lets them
explore strings (odd characters, huge numbers) that the fixture never contains.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import re
import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import VersionError
from patchwatch.domain.records import PackageKind
from patchwatch.domain.versions import compare
from patchwatch.domain.versions import compare_deb
from patchwatch.domain.versions import compare_evr
from patchwatch.domain.versions import compare_rpm
from patchwatch.domain.versions import deb_sort_key
from patchwatch.domain.versions import rpm_sort_key
from patchwatch.domain.versions import sort_key
from patchwatch.domain.versions import split_deb
from patchwatch.domain.versions import split_rpm
from tests.support.fuzzing import accepts
from tests.support.oracles import assert_orders
from tests.support.oracles import key_cmp
from tests.support.oracles import require_oracle

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "versions"
OP = {-1: "lt", 0: "eq", 1: "gt"}


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


# --- literal ports of the C reference code (slow, for property tests only) ----------------

_ASCII_DIGITS = frozenset(string.digits)
_ASCII_ALPHA = frozenset(string.ascii_letters)


def _at(s: str, i: int) -> str:
    return s[i] if i < len(s) else ""


def _dpkg_order(c: str) -> int:
    """dpkg lib/dpkg/version.c ``order()``; "" is the NUL byte."""
    if c == "" or c in _ASCII_DIGITS:
        return 0
    if c in _ASCII_ALPHA:
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def ref_verrevcmp(a: str, b: str) -> int:
    """dpkg ``verrevcmp``, statement by statement."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (_at(a, i) and _at(a, i) not in _ASCII_DIGITS) or (
            _at(b, j) and _at(b, j) not in _ASCII_DIGITS
        ):
            ac = _dpkg_order(_at(a, i))
            bc = _dpkg_order(_at(b, j))
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while _at(a, i) == "0":
            i += 1
        while _at(b, j) == "0":
            j += 1
        while _at(a, i) in _ASCII_DIGITS and _at(b, j) in _ASCII_DIGITS and _at(a, i):
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if _at(a, i) and _at(a, i) in _ASCII_DIGITS:
            return 1
        if _at(b, j) and _at(b, j) in _ASCII_DIGITS:
            return -1
        if first_diff:
            return first_diff
    return 0


def ref_parse_deb(s: str) -> tuple[int, str, str]:
    """dpkg ``parseversion`` for strings already known to be valid."""
    s = s.strip(" \t")
    colon = s.find(":")
    epoch = int(s[:colon]) if colon >= 0 else 0
    rest = s[colon + 1 :]
    hyphen = rest.rfind("-")
    if hyphen < 0:
        return epoch, rest, ""
    return epoch, rest[:hyphen], rest[hyphen + 1 :]


def ref_compare_deb(a: str, b: str) -> int:
    """dpkg ``dpkg_version_compare``."""
    ea, ua, ra = ref_parse_deb(a)
    eb, ub, rb = ref_parse_deb(b)
    if ea != eb:
        return sign(ea - eb)
    return sign(ref_verrevcmp(ua, ub) or ref_verrevcmp(ra, rb))


def _rpm_alnum(c: str) -> bool:
    return c in _ASCII_DIGITS or c in _ASCII_ALPHA


def ref_rpmvercmp(a: str, b: str) -> int:
    """rpm rpmio/rpmvercmp.c ``rpmvercmp`` (4.18), statement by statement."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and not _rpm_alnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < len(b) and not _rpm_alnum(b[j]) and b[j] not in "~^":
            j += 1
        ca, cb = _at(a, i), _at(b, j)
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (ca and cb):
            break
        kind = _ASCII_DIGITS if ca in _ASCII_DIGITS else _ASCII_ALPHA
        i2, j2 = i, j
        while i2 < len(a) and a[i2] in kind:
            i2 += 1
        while j2 < len(b) and b[j2] in kind:
            j2 += 1
        if j == j2:
            return 1 if kind is _ASCII_DIGITS else -1
        sa, sb = a[i:i2], b[j:j2]
        if kind is _ASCII_DIGITS:
            sa, sb = sa.lstrip("0"), sb.lstrip("0")
            if len(sa) != len(sb):
                return 1 if len(sa) > len(sb) else -1
        if sa != sb:
            return -1 if sa < sb else 1
        i, j = i2, j2
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def ref_parse_evr(s: str) -> tuple[str, str, str | None]:
    """rpm ``parseEVR``."""
    k = 0
    while k < len(s) and s[k] in _ASCII_DIGITS:
        k += 1
    if k < len(s) and s[k] == ":":
        epoch, rest = (s[:k] or "0"), s[k + 1 :]
    else:
        epoch, rest = "0", s
    hyphen = rest.rfind("-")
    if hyphen < 0:
        return epoch, rest, None
    return epoch, rest[:hyphen], rest[hyphen + 1 :]


def ref_label_compare(a: str, b: str) -> int:
    """python-rpm ``labelCompare`` on parsed EVRs: a missing release is lowest."""
    ea, va, ra = ref_parse_evr(a)
    eb, vb, rb = ref_parse_evr(b)
    rc = ref_rpmvercmp(ea, eb) or ref_rpmvercmp(va, vb)
    if rc:
        return rc
    if ra is None or rb is None:
        return (ra is not None) - (rb is not None)
    return ref_rpmvercmp(ra, rb)


# --- hand tables ----------------------------------------------------------------------------

BIG = "1" + "0" * 1500  # past the long-number encoding threshold (207 digits)

DEB_CASES: list[tuple[str, str, int]] = [
    ("1.0", "1.0", 0),
    ("1.0", "1.1", -1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~~a", "1.0~", -1),
    ("1.0~~", "1.0~~a", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~beta", "1.0~rc", -1),
    ("1.0~", "1.0~0", 0),
    ("1:1.0", "2.0", 1),
    ("0:1.0", "1.0", 0),
    ("00:1.0", "1.0", 0),
    ("0:0", "0", 0),
    ("1:0.1", "0:9.9", 1),
    ("1.0-0", "1.0", 0),
    ("1.0-1", "1.0", 1),
    ("1.0-0.1", "1.0", 1),
    ("1.0-0~", "1.0", -1),
    ("1.0-~", "1.0", -1),
    ("2.36-9+deb12u1", "2.36-9", 1),
    ("2.36-9+deb12u9", "2.36-9+deb12u10", -1),
    ("2.36-9+deb12u1", "2.36-9.1", -1),
    ("1.2.3-1~bpo11+1", "1.2.3-1", -1),
    ("1.2.3-1~bpo12+1", "1.2.3-1~bpo11+1", 1),
    ("1.2.3-1~deb12u1", "1.2.3-1", -1),
    ("1.2-3+b1", "1.2-3", 1),
    ("1.2-3+b1", "1.2-3.1", -1),
    ("1.2-3+b2", "1.2-3+b10", -1),
    ("4.0+really3.9-1", "4.0-1", 1),
    ("3.9+really4.0", "4.0", -1),
    ("1.0+dfsg-1", "1.0-1", 1),
    ("1.0+dfsg", "1.0.1", -1),
    ("1.0a", "1.0+", -1),
    ("1.0a", "1.0", 1),
    ("1.0A", "1.0a", -1),
    ("1.0z", "1.0+", -1),
    ("1.0", "1.0.0", -1),
    ("1.0", "1.0a", -1),
    ("1.0-1", "1.0-a", -1),
    ("1:2:3-4", "1:2:3-4", 0),
    ("1:2:3-4", "1:2.3-4", 1),
    ("1:1.0-2-3", "1:1.0-2", 1),
    ("1.0-2-3", "1.0-3", 1),
    ("001", "1", 0),
    ("1.001", "1.1", 0),
    ("10", "9", 1),
    ("1.10", "1.9", 1),
    ("99999999999999999999999", "99999999999999999999998", 1),
    ("1." + BIG, "1." + "9" * 1499, 1),
    ("1." + "0" * 7 + BIG, "1." + BIG, 0),
    ("1." + "1" * 1000, "1." + "9" * 999, 1),
    (" 1.0\t", "1.0", 0),
    # dpkg only warns about these and still orders them:
    ("a", "1", 1),
    ("~", "0", -1),
    ("1.0_1", "1.0.1", 1),
    ("1.0_1", "1.0+1", 1),
    ("a1.0", "1.0", 1),
]

RPM_CASES: list[tuple[str, str, int]] = [
    ("1.0", "1.0", 0),
    ("1.0", "1.1", -1),
    ("1.0^", "1.0", 1),
    ("1.0^1", "1.0.1", -1),
    ("1.0^git1", "1.0a", -1),
    ("1.0^1", "1.0_1", -1),
    ("1.0~1", "1.0^~1", -1),
    ("1.0^1", "1.0^2", -1),
    ("1.0^20230101", "1.0", 1),
    ("1.0^20230101", "1.0.0", -1),
    ("1.0~rc1^git1", "1.0~rc1", 1),
    ("1.0~rc1^git1", "1.0", -1),
    ("1.0^", "1.0^~", 1),
    ("1.0~^", "1.0~", 1),
    ("1.0^a", "1.0^1", -1),
    ("1.0~", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1:1.0-1", "0:2.0-1", 1),
    ("2:1.0", "10.0", 1),
    ("1:0.9", "1.0", 1),
    ("1.0", "0:1.0", 0),
    ("01:1.0", "1:1.0", 0),
    (":1.0", "1.0", 0),
    ("a:1.0", "1.0", -1),
    ("1.0-1.el7", "1.0-1.el7_9", -1),
    ("1.0-1.el7_9", "1.0-1.el7.1", 1),
    ("1.0-1.el7", "1.0-1.el7.1", -1),
    ("2.02-142.el8", "2.02-142.el8_9.1", -1),
    ("5.14.0-362.el9", "5.14.0-70.el9", 1),
    ("1.0-0.rc1.fc38", "1.0-1.fc38", -1),
    ("1.0-1.fc38", "1.0-1.fc39", -1),
    ("1.0-FC5", "1.0-fc4", -1),
    ("FC5", "fc4", -1),
    ("6.0.rc1", "6.0", 1),
    ("6.0rc1", "6.0", 1),
    ("6.0~rc1", "6.0", -1),
    ("1.0", "1.0-1", -1),
    ("1.0-0", "1.0", 1),
    ("1.0-~", "1.0", 1),
    ("1.0-1-2", "1.0-1", 1),
    ("1.0a", "1.0.1", -1),
    ("1.0a", "1.0", 1),
    ("1.a", "1.1", -1),
    ("1.0", "1.0a", -1),
    ("a", "b", -1),
    ("abc", "ab", 1),
    ("a.b", "ab", -1),
    ("1.0", "1_0", 0),
    ("1.0", "1..0", 0),
    ("1.0.", "1.0", 0),
    ("1.0+1", "1.0_1", 0),
    ("1.0 b", "1.0.b", 0),
    ("1.0\u00e91", "1.0.1", 0),
    ("1a", "1.a", 0),
    ("001", "1", 0),
    ("1.01", "1.1", 0),
    ("1.10", "1.9", 1),
    ("10", "9", 1),
    ("12345678901234567890", "12345678901234567891", -1),
    ("1." + BIG, "1." + "9" * 1499, 1),
    ("1." + "0" * 7 + BIG, "1." + BIG, 0),
    ("1." + "1" * 1000, "1." + "9" * 999, 1),
]


def _case_id(case: tuple[str, str, int]) -> str:
    a, b, _ = case
    return f"{a[:24]}|{b[:24]}"


@pytest.mark.parametrize("case", DEB_CASES, ids=_case_id)
def test_deb_table(case: tuple[str, str, int]) -> None:
    a, b, expected = case
    assert_orders(compare_deb, deb_sort_key, a, b, expected)
    assert compare(PackageKind.DEB, a, b) == expected
    assert (deb_sort_key(a) == deb_sort_key(b)) == (expected == 0)
    assert compare_evr(PackageKind.DEB, split_deb(a), split_deb(b)) == expected
    assert ref_compare_deb(a, b) == expected  # the port agrees, so the hypothesis tests mean it


def rpm_key(version: str) -> object:
    """The sort key of an rpm ``[epoch:]version[-release]`` string."""
    return rpm_sort_key(*split_rpm(version))


@pytest.mark.parametrize("case", RPM_CASES, ids=_case_id)
def test_rpm_table(case: tuple[str, str, int]) -> None:
    a, b, expected = case
    assert_orders(compare_rpm, rpm_key, a, b, expected)
    assert compare(PackageKind.RPM, a, b) == expected
    assert (rpm_key(a) == rpm_key(b)) == (expected == 0)
    assert compare_evr(PackageKind.RPM, split_rpm(a), split_rpm(b)) == expected
    assert ref_label_compare(a, b) == expected


@pytest.mark.parametrize(
    ("version", "parts"),
    [
        ("1:2.3-4", ("1", "2.3", "4")),
        ("2.3", ("", "2.3", "")),
        ("1:2:3-4-5", ("1", "2:3-4", "5")),
        (" 1.0\t", ("", "1.0", "")),
        ("0:1.0-0", ("0", "1.0", "0")),
        ("2.36-9+deb12u1", ("", "2.36", "9+deb12u1")),
        ("1:2:", ("1", "2:", "")),
    ],
)
def test_split_deb(version: str, parts: tuple[str, str, str]) -> None:
    assert split_deb(version) == parts


@pytest.mark.parametrize(
    ("version", "parts"),
    [
        ("1:2.3-4.el9", ("1", "2.3", "4.el9")),
        ("2.3", ("", "2.3", "")),
        ("1.0-1-2", ("", "1.0-1", "2")),
        (":1.0", ("0", "1.0", "")),
        ("a:1.0", ("", "a:1.0", "")),
        ("12-3:4", ("", "12", "3:4")),
        ("0:1.0^git1-2.fc40", ("0", "1.0^git1", "2.fc40")),
    ],
)
def test_split_rpm(version: str, parts: tuple[str, str, str]) -> None:
    assert split_rpm(version) == parts


# Rejected by us and by dpkg (the oracle test below checks dpkg's side).
DEB_INVALID = [
    ("", "empty"),
    (" \t ", "empty"),
    ("1.0 beta", "embedded spaces"),
    ("a:1.0", "not number"),
    ("1.0:2", "not number"),
    (":1.0", "epoch in version is empty"),
    ("1:", "nothing after colon"),
    ("1.0-", "revision number is empty"),
    ("1:2-", "revision number is empty"),
    ("-1", "upstream version is empty"),
    ("1:-1", "upstream version is empty"),
    ("2147483648:1", "too big"),
    ("99999999999999999999:1", "too big"),
]
# Rejected by us although dpkg accepts them (see the patchwatch.domain.versions docstring).
DEB_REFUSED = [
    ("+1:1.0", "not number"),
    ("1.0\u00e9", "printable ASCII"),
    ("1.0\x7f", "printable ASCII"),
    ("1.0\r", "printable ASCII"),
    ("1.0\x0b1", "printable ASCII"),
]


@pytest.mark.parametrize(("version", "message"), DEB_INVALID + DEB_REFUSED)
def test_deb_invalid(version: str, message: str) -> None:
    with pytest.raises(VersionError, match=message):
        deb_sort_key(version)
    with pytest.raises(VersionError, match=message):
        compare_deb("1.0", version)
    with pytest.raises(VersionError, match=message):
        compare(PackageKind.DEB, version, "1.0")


def test_deb_accepts_its_largest_epoch() -> None:
    assert compare_deb("2147483647:0", "2147483646:9") == 1


@pytest.mark.parametrize("version", ["", "1.0-", "-1", "1:", "1:-1", "1.0\x00", "\x00"], ids=repr)
def test_rpm_invalid(version: str) -> None:
    with pytest.raises(VersionError, match="invalid rpm version"):
        compare_rpm(version, "1.0")
    with pytest.raises(VersionError, match="invalid rpm version"):
        split_rpm(version)


@pytest.mark.parametrize(
    "fields",
    [("", "1.0-2", ""), ("", "1:0", ""), ("x", "1.0", ""), ("", "", "1"), ("", "1.0", "-")],
    ids=repr,
)
def test_deb_fields_must_form_a_version(fields: tuple[str, str, str]) -> None:
    with pytest.raises(VersionError, match="invalid dpkg version"):
        sort_key(PackageKind.DEB, *fields)


@pytest.mark.parametrize(
    ("fields", "invalid"),
    [(("x", "1.0", "1"), "not a number"), (("", "", "1"), "version is empty")],
)
def test_rpm_fields_must_be_valid(fields: tuple[str, str, str], invalid: str) -> None:
    with pytest.raises(VersionError, match=invalid):
        sort_key(PackageKind.RPM, *fields)


def test_fields_keys_equal_string_keys() -> None:
    """The record path (fields) and the string path give the same key."""
    for a, b, _ in DEB_CASES:
        for v in (a, b):
            assert sort_key(PackageKind.DEB, *split_deb(v)) == deb_sort_key(v)
    for a, b, _ in RPM_CASES:
        for v in (a, b):
            e, ver, rel = split_rpm(v)
            assert sort_key(PackageKind.RPM, e, ver, rel) == rpm_sort_key(e, ver, rel)
    # "" epoch and "0" epoch are the same version in both families
    assert sort_key(PackageKind.DEB, "0", "1.0", "1") == sort_key(PackageKind.DEB, "", "1.0", "1")
    assert sort_key(PackageKind.RPM, "0", "1.0", "1") == sort_key(PackageKind.RPM, "", "1.0", "1")


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown package kind"):
        compare("nix", "1", "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown package kind"):
        sort_key("nix", "", "1", "")  # type: ignore[arg-type]


# --- oracles: the real tools ----------------------------------------------------------------


def dpkg_unconfirmed(
    triples: list[tuple[str, str, str]], tmp_path: Path, status: int = 0
) -> list[str]:
    """Ask dpkg about each ``(a, op, b)``; return those where it does not exit ``status``.

    One ``dpkg --compare-versions`` per triple, run by a shell loop per CPU so the Python
    side starts a handful of processes, not thousands. With status 0 the result is the
    triples dpkg does not confirm (it answered false, or exit 2 for a version it rejects);
    with status 2, the triples holding a version that dpkg did not reject.
    """
    dpkg = require_oracle("dpkg", "dpkg")
    for triple in triples:
        assert not any(c in v for v in triple for c in "\n\x00"), triple
    workers = max(2, os.cpu_count() or 1)
    script = (
        "while IFS= read -r a && IFS= read -r op && IFS= read -r b; do "
        f'{dpkg} --compare-versions "$a" "$op" "$b" 2>/dev/null; '
        f'[ $? -eq {status} ] || printf "%s %s %s\\n" "$a" "$op" "$b"; done'
    )
    procs = []
    for n in range(workers):
        chunk = tmp_path / f"dpkg-{n}.txt"
        chunk.write_text("".join(f"{a}\n{op}\n{b}\n" for a, op, b in triples[n::workers]))
        with chunk.open() as stdin:
            procs.append(
                subprocess.Popen(["sh", "-c", script], stdin=stdin, stdout=subprocess.PIPE)
            )
    failed: list[str] = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        failed.extend(out.decode().splitlines())
    return failed


def rpm_vercmp(pairs: list[tuple[str, str]], tmp_path: Path) -> list[int]:
    """Return ``rpm.vercmp(a, b)`` for every pair from ONE ``rpm --eval`` process."""
    rpm = require_oracle("rpm", "rpm")
    for a, b in pairs:
        assert not any(c in v for v in (a, b) for c in "\t\n\x00"), (a, b)
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    lua = tmp_path / "vercmp.lua"
    lua.write_text(
        "local out = {}\n"
        f"for line in io.lines({json.dumps(str(data))}) do\n"
        '  local a, b = line:match("^([^\\t]*)\\t([^\\t]*)$")\n'
        "  out[#out + 1] = tostring(rpm.vercmp(a, b))\n"
        "end\n"
        'io.write(table.concat(out, "\\n"), "\\n")\n'
    )
    proc = subprocess.run(
        [rpm, "--eval", f"%{{lua: dofile({json.dumps(str(lua))})}}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = [int(line) for line in proc.stdout.split()]
    assert len(results) == len(pairs), proc.stderr
    return results


def load_fixture() -> list[str]:
    lines = (FIXTURES / "bookworm-versions.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_fixture_is_real_and_covers_the_hard_cases() -> None:
    versions = load_fixture()
    assert len(versions) == len(set(versions)) >= 3000
    assert (FIXTURES / "bookworm-versions.txt").stat().st_size < 200_000
    for marker in ("~", "+", ":", "+b", "+deb12u", "~deb12u", "~rc", "+dfsg", "+really", "~~"):
        assert sum(marker in v for v in versions) >= 3, marker


@pytest.mark.slow
def test_dpkg_oracle_on_real_bookworm_versions(tmp_path: Path) -> None:
    """Sort the real versions by key; dpkg must confirm every adjacent pair and random pairs.

    The adjacent pairs prove the whole sorted order by transitivity; the random pairs also
    compare versions far apart (epochs against no epochs, and so on).
    """
    versions = load_fixture()
    ordered = sorted(versions, key=deb_sort_key)
    rng = random.Random(20250520)
    pairs = list(itertools.pairwise(ordered))
    pairs += [(rng.choice(versions), rng.choice(versions)) for _ in range(1000)]
    triples = [(a, OP[compare_deb(a, b)], b) for a, b in pairs]
    assert {op for _, op, _ in triples[: len(ordered) - 1]} <= {"lt", "eq"}
    assert dpkg_unconfirmed(triples, tmp_path) == []


def valid_deb(v: str) -> bool:
    return accepts(split_deb, v, VersionError)


def test_dpkg_oracle_on_random_strings(tmp_path: Path) -> None:
    """Random strings over dpkg's awkward characters: order, acceptance and rejection.

    Strings we accept are sorted by key and dpkg must confirm the neighbours and random
    pairs; strings we reject must make dpkg fail, except our one documented refusal of a
    signed epoch, which dpkg must accept. Strings starting with "-" are left out: dpkg's
    command line would take them for options.
    """
    rng = random.Random(1121)
    chars = "012345678900a~+.:-_Z"
    words = {"".join(rng.choice(chars) for _ in range(rng.randint(1, 8))) for _ in range(1200)}
    accepted, rejected, signed = [], [], []
    for w in sorted(words):
        if w.startswith("-"):
            continue
        if valid_deb(w):
            accepted.append(w)
        elif re.fullmatch(r"\+[0-9]+", w.partition(":")[0]) and valid_deb(w[1:]):
            signed.append(w)
        else:
            rejected.append(w)
    assert len(accepted) > 300 and len(rejected) > 100 and signed
    ordered = sorted(accepted, key=deb_sort_key)
    pairs = list(itertools.pairwise(ordered))
    pairs += [(rng.choice(accepted), rng.choice(accepted)) for _ in range(300)]
    triples = [(a, OP[compare_deb(a, b)], b) for a, b in pairs]
    triples += [(w, "eq", w) for w in signed]
    assert dpkg_unconfirmed(triples, tmp_path) == []
    assert dpkg_unconfirmed([(w, "eq", "1") for w in rejected], tmp_path, status=2) == []


def test_dpkg_oracle_on_hand_table(tmp_path: Path) -> None:
    triples = [(a, OP[expected], b) for a, b, expected in DEB_CASES if len(a) + len(b) < 5000]
    triples = [(a.strip(" \t"), op, b.strip(" \t")) for a, op, b in triples]
    assert dpkg_unconfirmed(triples, tmp_path) == []


def test_dpkg_rejects_what_we_reject(tmp_path: Path) -> None:
    """Every invalid string dpkg's command line can take makes dpkg fail as well."""
    dpkg = require_oracle("dpkg", "dpkg")
    checked = 0
    for version, _ in DEB_INVALID:
        if not version.strip() or version.startswith("-"):
            continue  # "" means "no version" to the CLI, "-1" would be an option
        proc = subprocess.run(
            [dpkg, "--compare-versions", version, "eq", "1"], capture_output=True, check=False
        )
        assert proc.returncode == 2, (version, proc.stderr)
        checked += 1
    assert checked >= 9


def test_dpkg_accepts_what_we_refuse_on_purpose() -> None:
    """Keeps the docstring honest: these refusals are ours, dpkg compares them."""
    dpkg = require_oracle("dpkg", "dpkg")
    for version, _ in DEB_REFUSED:
        proc = subprocess.run(
            [dpkg, "--compare-versions", version, "gt", "0"], capture_output=True, check=False
        )
        assert proc.returncode == 0, (version, proc.stderr)


def rpm_corpus(rng: random.Random) -> list[str]:
    """Fedora/RHEL-style EVRs plus random strings over rpm's interesting characters."""
    versions = [
        "1.0", "1.0.1", "1.0a", "1.0_1", "2.02", "2.02.1", "6.0", "6.0.rc1", "6.0~rc1",
        "6.0~rc1^git2", "1.0^20230101git1234abc", "1.0^git1", "1.0^", "1.0~", "1.0~~",
        "10", "9.9", "0.1.0", "3.10", "3.9", "007", "7", "4.18.0", "5.14.0", "2.4.57^1",
    ]  # fmt: skip
    releases = [
        "", "1", "0", "1.el7", "1.el7_9", "1.el7.1", "142.el8", "142.el8_9.1", "1.fc38",
        "1.fc39", "0.rc1.fc38", "2.FC5", "1.fc4", "1.module+el8.4.0+1234+abcd1234",
        "362.el9_2.alma", "3.1~beta1", "1^post", "1.el9~", "70.13.1.el9_0",
    ]  # fmt: skip
    epochs = ["", "0:", "1:", "2:", "01:"]
    corpus = [
        f"{e}{v}-{r}" if r else f"{e}{v}"
        for e, v, r in itertools.product(epochs, versions, releases)
    ]
    alphabet = "0123456789ab.~^_+Z"

    def word() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))

    for _ in range(3000):
        v = word()
        if rng.random() < 0.3:
            v = f"{rng.choice(['', '0', '1', '2', '00'])}:{v}"
        if rng.random() < 0.3:
            v = f"{v}-{word()}"
        corpus.append(v)
    return corpus


def test_rpm_oracle_corpus_and_random(tmp_path: Path) -> None:
    """rpm.vercmp agrees with compare_rpm and with the key order on every pair.

    Pairs: neighbours in key order (which proves the whole sort), random pairs, and pairs
    of short random strings where tilde/caret/end interactions are dense.
    """
    rng = random.Random(415)
    corpus = rpm_corpus(rng)
    ordered = sorted(corpus, key=lambda v: rpm_sort_key(*split_rpm(v)))
    pairs = list(itertools.pairwise(ordered))
    pairs += [(rng.choice(corpus), rng.choice(corpus)) for _ in range(20000)]
    pairs += [(a, b) for a, b, _ in RPM_CASES]
    oracle = rpm_vercmp(pairs, tmp_path)
    wrong = []
    for (a, b), expected in zip(pairs, oracle, strict=True):
        ours = compare_rpm(a, b)
        by_key = key_cmp(rpm_sort_key(*split_rpm(a)), rpm_sort_key(*split_rpm(b)))
        if not ours == by_key == expected:
            wrong.append((a, b, expected, ours, by_key))
    assert wrong == []
    assert {-1, 0, 1} <= set(oracle)


def test_rpm_oracle_rejects_empty(tmp_path: Path) -> None:
    """rpm refuses "" too, so that refusal is not ours alone."""
    rpm = require_oracle("rpm", "rpm")
    proc = subprocess.run(
        [rpm, "--eval", '%{lua: print(rpm.vercmp("", "1"))}'],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "invalid version" in proc.stderr


# --- properties against the literal ports ---------------------------------------------------

_DEB_CHARS = list("01234567890019abzAZ~~+.._#")


@st.composite
def deb_versions(draw: st.DrawFn) -> str:
    """Valid dpkg versions, including what dpkg only warns about."""
    epoch = draw(st.sampled_from(["", "", "", "0", "1", "2", "00", "10"]))
    revision = draw(st.sampled_from(["", ""]) | st.text(st.sampled_from(_DEB_CHARS), max_size=6))
    upstream_chars = _DEB_CHARS + ([":"] if epoch else []) + (["-"] if revision else [])
    upstream = draw(st.text(st.sampled_from(upstream_chars), min_size=1, max_size=10))
    v = f"{epoch}:{upstream}" if epoch else upstream
    return f"{v}-{revision}" if revision else v


_RPM_CHARS = list("01234567890019abzAZ~~^^.._+- :\u00e9")


def rpm_versions() -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(_RPM_CHARS), min_size=1, max_size=12).filter(
        lambda v: accepts(split_rpm, v, VersionError)
    )


@settings(max_examples=800, deadline=None)
@given(deb_versions(), deb_versions())
def test_deb_keys_match_dpkg_port(a: str, b: str) -> None:
    assert_orders(compare_deb, deb_sort_key, a, b, ref_compare_deb(a, b))


@settings(max_examples=1500, deadline=None)
@given(rpm_versions(), rpm_versions())
def test_rpm_keys_match_rpm_port(a: str, b: str) -> None:
    assert_orders(compare_rpm, rpm_key, a, b, ref_label_compare(a, b))


@settings(max_examples=150, deadline=None)
@given(st.lists(deb_versions(), min_size=3, max_size=12))
def test_deb_sorted_by_key_is_sorted_for_dpkg(vs: list[str]) -> None:
    """Transitivity on samples: the key sort is a valid sort under dpkg's comparison."""
    ordered = sorted(vs, key=deb_sort_key)
    for x, y in itertools.pairwise(ordered):
        assert ref_compare_deb(x, y) <= 0
    assert ordered == sorted(vs, key=functools.cmp_to_key(compare_deb))


@settings(max_examples=200, deadline=None)
@given(st.lists(rpm_versions(), min_size=3, max_size=12))
def test_rpm_sorted_by_key_is_sorted_for_rpm(vs: list[str]) -> None:
    ordered = sorted(vs, key=lambda v: rpm_sort_key(*split_rpm(v)))
    for x, y in itertools.pairwise(ordered):
        assert ref_label_compare(x, y) <= 0
    assert ordered == sorted(vs, key=functools.cmp_to_key(compare_rpm))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**1200),
    st.integers(min_value=0, max_value=10**1200),
    st.integers(min_value=0, max_value=5),
)
def test_numbers_order_numerically_at_any_length(x: int, y: int, zeros: int) -> None:
    """Leading zeros vanish and lengths past the 207-digit threshold still order."""
    expected = sign(x - y)
    padded = "0" * zeros + str(x)
    assert compare_deb(f"1.{padded}", f"1.{y}") == expected
    assert compare_rpm(f"1.{padded}", f"1.{y}") == expected
    assume(x != y)
    assert deb_sort_key(f"{x}") != deb_sort_key(f"{y}")


@pytest.mark.parametrize(
    ("long", "short"),
    [(206, 205), (207, 206), (208, 207), (1_000, 999), (10_001, 2_000), (100_000, 99_999)],
)
def test_numbers_beyond_ten_thousand_digits(long: int, short: int) -> None:
    """Lengths are themselves encoded in an order-preserving way, with no upper bound.

    (206, 207, 208) straddle the switch to the long-number marker.
    """
    a, b = "1." + "1" * long, "1." + "9" * short
    for cmp, ref in ((compare_deb, ref_compare_deb), (compare_rpm, ref_label_compare)):
        assert cmp(a, b) == ref(a, b) == 1
        assert cmp(b, a) == ref(b, a) == -1
