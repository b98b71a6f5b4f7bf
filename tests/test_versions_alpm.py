"""pacman version ordering: pacman's own vectors, the real ``vercmp`` as oracle, properties.

The oracle is pacman's ``vercmp`` (Debian package ``makepkg``, built from pacman 6.0), a
thin wrapper around libalpm's ``alpm_pkg_vercmp``: thousands of pairs are fed to it through
one shell loop per worker, so the Python side starts a handful of processes. When it is
missing the oracle tests are skipped with the reason, unless
``PATCHWATCH_TEST_REQUIRE_ORACLES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import itertools
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import VersionError
from patchwatch.domain.versions_alpm import alpm_sort_key
from patchwatch.domain.versions_alpm import compare_alpm
from patchwatch.domain.versions_alpm import split_alpm
from tests.support.oracles import assert_orders
from tests.support.oracles import key_cmp
from tests.support.oracles import vercmp

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "versions"


def has_pkgrel(v: str) -> bool:
    return split_alpm(v)[2] is not None


def expected_key_order(a: str, b: str, vercmp_answer: int) -> bool:
    """Keys agree with vercmp, except the documented pkgver-only pair vercmp calls equal."""
    by_key = key_cmp(alpm_sort_key(a), alpm_sort_key(b))
    if by_key == vercmp_answer:
        return True
    return vercmp_answer == 0 and has_pkgrel(a) != has_pkgrel(b)


def disagreements(
    pairs: list[tuple[str, str]], answers: list[int]
) -> list[tuple[str, str, int, int]]:
    """Pairs where compare_alpm or the keys differ from vercmp's answer."""
    return [
        (a, b, answer, compare_alpm(a, b))
        for (a, b), answer in zip(pairs, answers, strict=True)
        if compare_alpm(a, b) != answer or not expected_key_order(a, b, answer)
    ]


# --- pacman's own vectors -----------------------------------------------------------------


def load_vectors() -> list[tuple[str, str, int]]:
    lines = (FIXTURES / "alpm-vercmptest.txt").read_text().splitlines()
    rows = [line.split() for line in lines if line and not line.startswith("#")]
    return [(a, b, int(expected)) for a, b, expected in rows]


VECTORS = load_vectors()


def test_vectors_are_pacmans_46() -> None:
    assert len(VECTORS) == 46 and {e for _, _, e in VECTORS} == {-1, 0, 1}


@pytest.mark.parametrize(("a", "b", "expected"), VECTORS, ids=[f"{a} {b}" for a, b, _ in VECTORS])
def test_pacman_vectors(a: str, b: str, expected: int) -> None:
    assert compare_alpm(a, b) == expected
    assert compare_alpm(b, a) == -expected


def test_real_vercmp_confirms_the_vectors(tmp_path: Path) -> None:
    pairs = [(a, b) for a, b, _ in VECTORS] + [(b, a) for a, b, _ in VECTORS]
    expected = [e for _, _, e in VECTORS] + [-e for _, _, e in VECTORS]
    assert vercmp(pairs, tmp_path) == expected


# --- hand table: the rules the module docstring states ------------------------------------

TABLE = [
    ("1.0", "1..0", -1),  # the number of separators counts
    ("1.0", "1_0", 0),
    ("1.0a", "1.0", -1),  # letters right after the last segment: older
    ("1.0", "1.0.a", -1),  # a separator and letters: newer
    ("1.0.a", "1.0.0", -1),
    ("1.0rc1", "1.0", -1),
    ("1.0", "1.0.0", -1),
    ("1.01", "1.1", 0),  # numbers are numbers
    ("1.0010", "1.9", 1),
    ("1." + "9" * 300, "1.1" + "0" * 300, -1),  # any length
    ("1.a", "1.1", -1),  # a number beats letters at the same place
    ("1.A", "1.a", -1),  # letters by ASCII
    ("1.ab", "1.a", 1),
    ("1.0-1", "1.0-1.1", -1),  # pkgrel minors
    ("1.0-1.1", "1.0-2", -1),
    ("1.0-1", "1.0-1.0", -1),
    ("1:1.0", "9.9", 1),  # epochs first
    ("01:1.0", "1:1.0", 0),
    (":1.0", "1.0", 0),  # an empty epoch is 0
    ("0:1.0-1", "1.0-1", 0),
    ("1.0:2", "1.0.2", 0),  # without leading digits a colon is a separator
    ("1.0-2-3", "1.0.2-3", 0),  # the pkgrel follows the last hyphen
    ("6.9.7.arch1-1", "6.9.7.arch2-1", -1),
    ("6.9.7.arch1-1", "6.9.10.arch1-1", -1),
    ("1.2.3.r45.gabcdef0-1", "1.2.3.r7.g0123456-1", 1),
    ("1.2.3.r45.gabcdef0-1", "1.2.3-1", 1),
    ("1.2.3+r45+gabcdef0-1", "1.2.3-1", 1),
    ("1.2.3+r45+gabcdef0-1", "1.2.3.r45.gabcdef0-1", 0),
    ("r16.48baf96-1", "r17.0aaaaaa-1", -1),
    ("2024.06.01-1", "2024.6.1-2", -1),
    ("5.2.037-1", "5.2.37-1", 0),
    ("1 0", "1.0", 0),  # a space is a separator like any other
]


@pytest.mark.parametrize(("a", "b", "expected"), TABLE, ids=[f"{a} {b}" for a, b, _ in TABLE])
def test_table(a: str, b: str, expected: int) -> None:
    assert_orders(compare_alpm, alpm_sort_key, a, b, expected)


def test_real_vercmp_confirms_the_table(tmp_path: Path) -> None:
    assert vercmp([(a, b) for a, b, _ in TABLE], tmp_path) == [e for _, _, e in TABLE]


def test_missing_pkgrel_equals_every_pkgrel_but_its_key_sorts_below() -> None:
    for release in ("1", "2", "1.1", "0"):
        assert compare_alpm("1.5", f"1.5-{release}") == 0
        assert alpm_sort_key("1.5") < alpm_sort_key(f"1.5-{release}")
    assert compare_alpm("1.5-1", "1.5-2") == -1
    assert alpm_sort_key("1.5a-9") < alpm_sort_key("1.5") < alpm_sort_key("1.5.1-1")


@pytest.mark.parametrize(
    ("version", "parts"),
    [
        ("1.0", ("0", "1.0", None)),
        ("1.0-1", ("0", "1.0", "1")),
        ("2:1.0-1.1", ("2", "1.0", "1.1")),
        (":1.0", ("0", "1.0", None)),
        ("1.0:2-3", ("0", "1.0:2", "3")),
        ("1:2:3-4-5", ("1", "2:3-4", "5")),
    ],
)
def test_split(version: str, parts: tuple[str, str, str | None]) -> None:
    assert split_alpm(version) == parts


# --- refusals -----------------------------------------------------------------------------

REFUSED = [
    ("1.0.", "pkgver ends with a separator"),
    ("1.0_", "pkgver ends with a separator"),
    ("1.0+-1", "pkgver ends with a separator"),
    ("...", "pkgver ends with a separator"),
    ("1.0-1.", "pkgrel ends with a separator"),
    ("1.0-", "pkgrel is empty"),
    ("1:", "pkgver is empty"),
    ("-1", "pkgver is empty"),
    ("1:-1", "pkgver is empty"),
    ("1.0é", "printable ASCII"),
    ("1.0\t1", "printable ASCII"),
]


@pytest.mark.parametrize(("version", "message"), [*REFUSED, ("", "empty")], ids=repr)
def test_refused(version: str, message: str) -> None:
    for call in (
        lambda: compare_alpm(version, "1.0"),
        lambda: compare_alpm("1.0", version),
        lambda: alpm_sort_key(version),
    ):
        with pytest.raises(VersionError, match=message):
            call()


def test_long_epoch_refused() -> None:
    with pytest.raises(VersionError, match="epoch has too many digits"):
        alpm_sort_key("1" * 5000 + ":1.0")


def test_real_vercmp_answers_what_we_refuse(tmp_path: Path) -> None:
    """The refusals are ours: vercmp compares every one of them (exit 0, a number)."""
    versions = [v for v, _ in REFUSED]
    answers = vercmp([(v, "1.0") for v in versions], tmp_path)
    assert len(answers) == len(versions)


def test_real_vercmp_orders_trailing_separators_in_a_cycle(tmp_path: Path) -> None:
    """Why trailing separators are refused: vercmp says 1.1 < 1..a < 1. < 1.1."""
    cycle = ["1.1", "1..a", "1.", "1.1"]
    assert vercmp(list(itertools.pairwise(cycle)), tmp_path) == [-1, -1, -1]


# --- the real vercmp on thousands of pairs -------------------------------------------------


def arch_corpus(rng: random.Random) -> list[str]:
    """Version strings in the shapes Arch's repositories hold (and a few odd ones)."""
    pkgvers = [
        "1.0", "1.0.1", "1.0.0", "1.1", "1.10", "1.9", "2.39.3", "5.2.037", "5.2.37", "9.1.0496",
        "124.0", "124.0.1", "25.2.2", "0.13", "1.07", "059", "41", "3.4.1", "595.71.05",
        "6.9.7.arch1", "6.9.7.arch2", "6.9.10.arch1", "6.6.30.lts1", "7.0.10.zen1",
        "2024.06.01", "2024.6.1", "20240610", "20240610.1", "1.0rc1", "1.0rc2", "1.0beta2",
        "1.0alpha", "1.0a", "1.0b", "1.0pre", "1.0.rc1", "1.0_rc1", "1.0+rc1", "1.0.a",
        "0.4.r21.ga973d53", "0.4.r3.g0123456", "0.4.r21.gb000000", "r16.48baf96", "r9.deadbee",
        "1.2.3.r45.gabcdef0", "1.2.3+r45+gabcdef0", "1.2.3+45+gabcdef0", "2.44+r69+g5f7ba0b4",
        "0.9.8+git20230101", "0.9.8.git20230101", "0.9.8+20230101.abc", "1.0+dfsg", "1.0+1",
        "1.2.3_4", "1.2.3_p1", "3.12.4", "3.12.10", "3.9.19", "1..0", "1_0", "1.00", "1.01",
        "0", "00", "1", "A1", "a", "Z.9",
    ]  # fmt: skip
    pkgrels = ["1", "2", "10", "1.1", "1.2", "2.1", "21", "0", "1.01"]
    epochs = ["", "", "", "1:", "2:", "17:", "0:", "01:"]
    corpus = {f"{rng.choice(epochs)}{v}-{rng.choice(pkgrels)}" for v in pkgvers for _ in range(8)}
    corpus |= {f"{rng.choice(epochs)}{v}" for v in pkgvers}  # dependency-style, no pkgrel
    return sorted(corpus)


def random_strings(rng: random.Random, count: int) -> list[str]:
    """Short random strings over the characters where alpm's rules meet."""
    alphabet = "0012345899aabzAZ.._+~:-"
    accepted = set()
    while len(accepted) < count:
        v = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9)))
        try:
            split_alpm(v)
        except VersionError:
            continue
        if not v.startswith("-"):
            accepted.add(v)
    return sorted(accepted)


@pytest.mark.slow
def test_real_vercmp_on_real_shaped_versions(tmp_path: Path) -> None:
    """Sort real-shaped versions by key; vercmp must agree on neighbours and random pairs.

    The neighbours prove the sorted order (by transitivity, for the versions with a
    pkgrel), the random pairs also set epochs, pkgrel-less versions and far-apart versions
    against each other. About 4,500 pairs.
    """
    rng = random.Random(26)
    corpus = arch_corpus(rng)
    assert len(corpus) > 400
    ordered = sorted(corpus, key=alpm_sort_key)
    pairs = list(itertools.pairwise(ordered))
    pairs += [(rng.choice(corpus), rng.choice(corpus)) for _ in range(4000)]
    answers = vercmp(pairs, tmp_path)
    assert disagreements(pairs, answers) == []
    assert {-1, 0, 1} <= set(answers)
    with_pkgrel = [v for v in ordered if has_pkgrel(v)]
    assert all(compare_alpm(a, b) <= 0 for a, b in itertools.pairwise(with_pkgrel))


def test_real_vercmp_on_random_strings(tmp_path: Path) -> None:
    """Dense tilde/colon/hyphen/separator mixes: about 2,000 pairs."""
    rng = random.Random(2026)
    words = random_strings(rng, 600)
    ordered = sorted(words, key=alpm_sort_key)
    pairs = list(itertools.pairwise(ordered))
    pairs += [(rng.choice(words), rng.choice(words)) for _ in range(1400)]
    assert disagreements(pairs, vercmp(pairs, tmp_path)) == []


# --- properties ---------------------------------------------------------------------------

_CHARS = "0012345899aabzAZ..._+~"
_ALNUM = "0123456789abzAZ"


def _part(max_size: int) -> st.SearchStrategy[str]:
    """A pkgver or pkgrel: any of the characters, ending in a letter or digit."""
    body = st.text(st.sampled_from(_CHARS + ":"), max_size=max_size - 1)
    return st.builds(str.__add__, body, st.sampled_from(_ALNUM))


def alpm_versions() -> st.SearchStrategy[str]:
    """Versions as pacman accepts them (the refusals left out), pkgrel usually present."""
    epoch = st.sampled_from(["", "", "", "0:", "1:", "2:", "01:", ":"])
    pkgrel = st.sampled_from(["-1", "-2", "-1.1", "-10"]) | _part(4).map("-".__add__)
    return st.builds(str.__add__, epoch, _part(9)) | st.builds(
        lambda e, v, r: e + v + r, epoch, _part(9), pkgrel
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(alpm_versions(), alpm_versions()), min_size=25, max_size=25))
def test_property_real_vercmp_agrees(pairs: list[tuple[str, str]]) -> None:
    """Hypothesis draws pairs; the real vercmp must give compare_alpm's answer for each.

    Twenty-five pairs per example cost one shell loop (1,500 pairs in all).
    """
    with tempfile.TemporaryDirectory() as tmp:
        assert disagreements(pairs, vercmp(pairs, Path(tmp), workers=1)) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(alpm_versions(), min_size=3, max_size=12))
def test_property_keys_order_as_compare(vs: list[str]) -> None:
    """Sorted by key, no version is newer than a later one; with pkgrels, keys equal compare."""
    ordered = sorted(vs, key=alpm_sort_key)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            assert compare_alpm(a, b) <= 0, (a, b)
            if has_pkgrel(a) == has_pkgrel(b):
                assert key_cmp(alpm_sort_key(a), alpm_sort_key(b)) == compare_alpm(a, b)
