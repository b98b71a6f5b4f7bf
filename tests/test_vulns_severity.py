"""Severity: CVSS vectors scored by the cvss package and put on the specification's bands.

Published scores are the oracle for a few well-known vectors (NVD's and FIRST's
calculators); for random vectors the level must be the specification's band of the
score the library computed, which checks how we read the library, not the library.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import ParseError
from patchwatch.domain.vulns.severity import Cvss
from patchwatch.domain.vulns.severity import Level
from patchwatch.domain.vulns.severity import effective_level
from patchwatch.domain.vulns.severity import preferred_cvss
from patchwatch.domain.vulns.severity import rating
from patchwatch.domain.vulns.severity import score_vector


@pytest.mark.parametrize(
    ("kind", "vector", "version", "score", "level"),
    [
        # CVE-2023-4911 (NVD, v3.1)
        ("CVSS_V3", "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", "3.1", 7.8, Level.HIGH),
        # CVE-2021-44228 (NVD, v3.1)
        ("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", "3.1", 10.0, Level.CRITICAL),
        # CVE-2014-0160 (NVD, v3.0 and v2)
        ("CVSS_V3", "CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", "3.0", 7.5, Level.HIGH),
        ("CVSS_V2", "AV:N/AC:L/Au:N/C:P/I:N/A:N", "2.0", 5.0, Level.MEDIUM),
        ("CVSS_V2", "(AV:N/AC:L/Au:N/C:C/I:C/A:C)", "2.0", 10.0, Level.HIGH),  # v2 has no critical
        # FIRST's CVSS v4.0 calculator
        (
            "CVSS_V4",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "4.0",
            9.3,
            Level.CRITICAL,
        ),
        (
            "CVSS_V4",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N",
            "4.0",
            0.0,
            Level.NEGLIGIBLE,
        ),
    ],
)
def test_published_scores(kind: str, vector: str, version: str, score: float, level: Level) -> None:
    c = score_vector(kind, vector)
    assert (c.version, c.vector, c.score, c.level) == (version, vector, score, level)


@pytest.mark.parametrize(
    ("kind", "vector"),
    [
        ("CVSS_V3", "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),  # no prefix
        ("CVSS_V3", "CVSS:3.1/AV:X/AC:L"),
        ("CVSS_V3", ""),
        ("CVSS_V3", "CVSS:3.1/" + "AV:N/" * 200),
        ("CVSS_V4", "CVSS:4.0/AV:N"),
        ("CVSS_V2", "AV:Q/AC:L/Au:N/C:P/I:P/A:P"),
        ("CVSS_V5", "CVSS:5.0/AV:N"),
        ("Ubuntu", "high"),
    ],
)
def test_vectors_that_do_not_score_raise(kind: str, vector: str) -> None:
    with pytest.raises(ParseError):
        score_vector(kind, vector)


def band3(score: float) -> Level:
    """CVSS v3.x / v4.0 qualitative rating scale (specification, section 5)."""
    if score == 0.0:
        return Level.NEGLIGIBLE
    if score < 4.0:
        return Level.LOW
    if score < 7.0:
        return Level.MEDIUM
    if score < 9.0:
        return Level.HIGH
    return Level.CRITICAL


def band2(score: float) -> Level:
    """NVD's CVSS v2 bands."""
    return Level.LOW if score < 4.0 else Level.MEDIUM if score < 7.0 else Level.HIGH


V3 = st.builds(
    lambda minor, *m: f"CVSS:3.{minor}/" + "AV:{}/AC:{}/PR:{}/UI:{}/S:{}/C:{}/I:{}/A:{}".format(*m),
    st.sampled_from("01"), st.sampled_from("NALP"), st.sampled_from("LH"), st.sampled_from("NLH"),
    st.sampled_from("NR"), st.sampled_from("UC"), *[st.sampled_from("NLH")] * 3,
)  # fmt: skip
V4 = st.builds(
    lambda *m: "CVSS:4.0/"
    + "AV:{}/AC:{}/AT:{}/PR:{}/UI:{}/VC:{}/VI:{}/VA:{}/SC:{}/SI:{}/SA:{}".format(*m),
    st.sampled_from("NALP"), st.sampled_from("LH"), st.sampled_from("NP"), st.sampled_from("NLH"),
    st.sampled_from("NPA"), *[st.sampled_from("HLN")] * 6,
)  # fmt: skip
V2 = st.builds(
    lambda *m: "AV:{}/AC:{}/Au:{}/C:{}/I:{}/A:{}".format(*m),
    st.sampled_from("NAL"), st.sampled_from("LMH"), st.sampled_from("MSN"),
    *[st.sampled_from("NPC")] * 3,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(V3, V4, V2)
def test_levels_are_the_specification_bands(v3: str, v4: str, v2: str) -> None:
    for kind, vector, band in (
        ("CVSS_V3", v3, band3),
        ("CVSS_V4", v4, band3),
        ("CVSS_V2", v2, band2),
    ):
        c = score_vector(kind, vector)
        assert 0.0 <= c.score <= 10.0
        assert c.level is band(c.score), (vector, c.score)


def test_ratings_of_each_scheme() -> None:
    assert rating("redhat-impact", "Important") == rating("redhat-impact", " Important ")
    cases = {
        ("redhat-impact", "Important"): Level.HIGH,
        ("redhat-impact", "Moderate"): Level.MEDIUM,
        ("debian-urgency", "unimportant"): Level.NEGLIGIBLE,
        ("debian-urgency", "medium**"): Level.MEDIUM,
        ("debian-urgency", "not yet assigned"): Level.UNKNOWN,
        ("debian-urgency", "end-of-life"): Level.UNKNOWN,
        ("ubuntu-priority", "negligible"): Level.NEGLIGIBLE,
        ("ubuntu-priority", "untriaged"): Level.UNKNOWN,
        ("vendor", "MODERATE"): Level.MEDIUM,
        ("vendor", "CRITICAL"): Level.CRITICAL,
        ("vendor", "whatever"): Level.UNKNOWN,
    }
    for (scheme, text), level in cases.items():
        found = rating(scheme, text)
        assert found is not None and found.level is level, (scheme, text)
        assert found.text == text.strip()
    for nothing in (None, "", "   ", 3, ["high"]):
        assert rating("vendor", nothing) is None
    assert len(rating("vendor", "x" * 1000).text) == 64  # type: ignore[union-attr]


def test_preferred_cvss_is_newest_version_then_highest() -> None:
    v3_low = Cvss("3.1", "a", 3.0, Level.LOW)
    v3_high = Cvss("3.1", "b", 8.0, Level.HIGH)
    v4 = Cvss("4.0", "c", 5.0, Level.MEDIUM)
    v2 = Cvss("2.0", "d", 10.0, Level.HIGH)
    assert preferred_cvss([v3_low, v2, v3_high]) is v3_high
    assert preferred_cvss([v3_high, v4, v2]) is v4
    assert preferred_cvss([]) is None


def test_effective_level_prefers_cvss_then_the_rating_then_unknown() -> None:
    own = rating("redhat-impact", "Low")
    c = Cvss("3.1", "a", 9.8, Level.CRITICAL)
    assert effective_level(c, own) is Level.CRITICAL
    assert effective_level(None, own) is Level.LOW
    assert effective_level(None, None) is Level.UNKNOWN
    assert effective_level(Cvss("3.1", "a", 1.0, Level.UNKNOWN), own) is Level.LOW
