"""EPSS daily CSV: the comment line, gzip, bad rows skipped, a CVE filter; checked against csv."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.vulns.epss import parse_epss
from tests.support.vulns import FIXTURES
from tests.support.vulns import assert_feed_refused

RAW = (FIXTURES / "epss_scores-2025-08-25.csv.gz").read_bytes()
TEXT = gzip.decompress(RAW).decode()


def reference(text: str) -> dict[str, tuple[float, float]]:
    """The stdlib's csv reading of the same file (comment line dropped)."""
    rows = csv.DictReader(io.StringIO("\n".join(text.splitlines()[1:])))
    return {r["cve"]: (float(r["epss"]), float(r["percentile"])) for r in rows}


def test_fixture_is_read_as_csv_reads_it() -> None:
    scores = parse_epss(RAW)
    assert {k: (v.epss, v.percentile) for k, v in scores.scores.items()} == reference(TEXT)
    assert scores.model_version == "v2025.03.14"
    assert scores.score_date == dt.datetime(2025, 8, 25, 12, 55, tzinfo=dt.UTC).timestamp()
    assert scores.stats.skipped_total == 0 and scores.stats.read == len(reference(TEXT))


def test_plain_text_and_the_colon_offset_read_the_same() -> None:
    plain = TEXT.replace("+0000", "Z").encode()
    assert parse_epss(plain).scores == parse_epss(RAW).scores
    assert parse_epss(plain).score_date == parse_epss(RAW).score_date


def test_only_keeps_the_cves_asked_for() -> None:
    scores = parse_epss(RAW, only={"CVE-2023-4911", "CVE-2099-0001"})
    assert list(scores.scores) == ["CVE-2023-4911"]
    assert scores.stats.ignored == scores.stats.read - 1


def test_bad_rows_are_skipped_and_counted() -> None:
    bad = [
        "CVE-2023-0001,0.5",  # two fields
        "CVE-2023-0002,0.5,0.5,extra",
        "GHSA-xxxx,0.1,0.2",  # not a CVE
        "CVE-2023-0003,1.5,0.2",  # above 1
        "CVE-2023-0004,nan,0.2",
        "CVE-2023-0005,inf,0.2",
        "CVE-2023-0006,-0.1,0.2",
        "CVE-2023-0007,abc,0.2",
    ]
    text = TEXT + "\n".join(bad) + "\nCVE-2023-4911,0.9,0.99\n\n"
    scores = parse_epss(text.encode())
    assert scores.stats.skipped == {"schema": len(bad)}
    assert scores.stats.duplicates == 1
    assert scores.scores["CVE-2023-4911"].epss == reference(TEXT)["CVE-2023-4911"][0]


def test_a_file_that_is_not_epss_is_refused() -> None:
    not_epss = (b"", b"#model_version:v1\n", b"id,score\nCVE-2023-1,0.1\n", b"\xff\xfe\x00")
    assert_feed_refused(parse_epss, not_epss, RAW, grown=1)  # larger once decompressed


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet=st.sampled_from("CVE-0123456789.,e+#\n x"), max_size=40), max_size=20)
)
def test_fuzzed_rows_never_raise(lines: list[str]) -> None:
    text = "cve,epss,percentile\n" + "\n".join(lines)
    scores = parse_epss(text.encode())
    assert (
        len(scores.scores) + scores.stats.skipped_total + scores.stats.duplicates
        == scores.stats.read
    )
    for value in scores.scores.values():
        assert 0.0 <= value.epss <= 1.0 and 0.0 <= value.percentile <= 1.0
