"""Debian's security tracker JSON: states, quirks, bad entries, and records that match like OSV."""

from __future__ import annotations

import copy
import json
import random

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.vulns import archive
from patchwatch.domain.vulns import osv
from patchwatch.domain.vulns.debian_tracker import parse_tracker
from patchwatch.domain.vulns.debian_tracker import tracker_records
from patchwatch.domain.vulns.ecosystems import Ordering
from patchwatch.domain.vulns.identity import merge
from patchwatch.domain.vulns.match import assess
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.severity import Level
from tests.support.vulns import FIXTURES

RAW = (FIXTURES / "debian-tracker.json").read_bytes()
DOC = json.loads(RAW)


def states() -> dict[tuple[str, str], dict[str, str]]:
    """Each (source, issue)'s state per release, as the parsed entries say."""
    by_issue: dict[tuple[str, str], dict[str, str]] = {}
    for e in parse_tracker(RAW).entries:
        by_issue.setdefault((e.source, e.issue), {})[e.release] = e.state
    return by_issue


def test_states_of_every_entry() -> None:
    assert states() == {
        ("glibc", "CVE-2023-4911"): {
            "bookworm": "fixed",
            "bullseye": "not-affected",
            "sid": "fixed",
            "trixie": "fixed",
        },
        ("glibc", "CVE-2010-4756"): {"bookworm": "unfixed", "trixie": "unfixed"},
        ("openssl", "CVE-2024-4741"): {"bookworm": "fixed", "bullseye": "unfixed"},
        ("openssl", "CVE-2026-90001"): {"bookworm": "undetermined"},
        ("curl", "TEMP-0000000-7A4C2B"): {"bookworm": "unfixed"},
        ("zlib", "CVE-2023-45853"): {"bookworm": "unfixed", "experimental": "fixed"},
    }


def test_bad_entries_are_skipped_and_counted() -> None:
    data = parse_tracker(RAW)
    # curl CVE-2026-90002: unknown status, resolved with no version, a version dpkg
    # refuses, a bad codename; a package name and an issue name that are neither
    assert data.stats.skipped == {"schema": 5, "version": 1}
    assert data.stats.kept == len(data.entries) == 12


def test_fields_and_quirks_are_kept() -> None:
    by_key = {(e.source, e.issue, e.release): e for e in parse_tracker(RAW).entries}
    postponed = by_key["openssl", "CVE-2024-4741", "bullseye"]
    assert (postponed.nodsa, postponed.nodsa_reason) == ("Minor issue", "postponed")
    assert postponed.fixed_version is None
    temp = by_key["curl", "TEMP-0000000-7A4C2B", "bookworm"]
    assert temp.urgency is not None and (temp.urgency.text, temp.urgency.level) == (
        "low**",
        Level.LOW,
    )
    glibc = by_key["glibc", "CVE-2023-4911", "bookworm"]
    assert (glibc.fixed_version, glibc.scope) == ("2.36-9+deb12u3", "local")
    assert glibc.urgency is not None and glibc.urgency.level is Level.HIGH
    nya = by_key["openssl", "CVE-2024-4741", "bookworm"].urgency
    assert nya is not None and nya.level is Level.UNKNOWN


def test_releases_restrict_the_parse() -> None:
    data = parse_tracker(RAW, releases={"bookworm"})
    assert {e.release for e in data.entries} == {"bookworm"}
    assert len(data.entries) == 6


def test_records_name_debian_ecosystems_and_ranges() -> None:
    records = {r.id: r for r in tracker_records(parse_tracker(RAW).entries)}
    assert set(records) == {"CVE-2023-4911", "CVE-2010-4756", "CVE-2024-4741",
                            "TEMP-0000000-7A4C2B", "CVE-2023-45853"}  # fmt: skip
    glibc = records["CVE-2023-4911"]
    assert sorted((a.ecosystem, a.ranges[0].events[-1].version) for a in glibc.affected) == [
        ("Debian:12", "2.36-9+deb12u3"),
        ("Debian:13", "2.37-12"),
    ]  # bullseye never affected, sid has no number
    assert [a.ecosystem for a in records["CVE-2023-45853"].affected] == ["Debian:12"]
    assert records["TEMP-0000000-7A4C2B"].identities == ("TEMP-0000000-7A4C2B",)
    assert records["CVE-2010-4756"].rating is not None
    assert records["CVE-2010-4756"].rating.level is Level.NEGLIGIBLE


def test_tracker_and_osv_records_judge_alike() -> None:
    """The tracker's view of CVE-2023-4911 and Debian's OSV records give the same answers."""
    stats = FeedStats()
    osv_records = osv.load_records(archive.iter_folder(FIXTURES / "debian", stats), stats)
    tracked = tracker_records(parse_tracker(RAW).entries)
    merged = merge([*osv_records, *tracked])
    assert "CVE-2023-4911" in merged["CVE-2023-4911"].records  # the tracker's record id
    osv_entries = [a for r in osv_records if "CVE-2023-4911" in r.identities for a in r.affected
                   if a.ecosystem == "Debian:12"]  # fmt: skip
    tracker_entries = [a for r in tracked if r.id == "CVE-2023-4911" for a in r.affected
                       if a.ecosystem == "Debian:12"]  # fmt: skip
    for version in ["2.36-8", "2.36-9", "2.36-9+deb12u2", "2.36-9+deb12u3", "2.36-9+deb12u14",
                    "2.36-9+deb12u2+b1", "2.36-9+deb12u3~pre1", "2.37-1"]:  # fmt: skip
        a = assess(Ordering.DPKG, version, osv_entries)
        b = assess(Ordering.DPKG, version, tracker_entries)
        assert (a is None) == (b is None), version
        if a is not None and b is not None:
            assert a.fixed_version == b.fixed_version == "2.36-9+deb12u3"


def test_what_is_not_a_tracker_document_is_refused() -> None:
    for data in (b"[]", b"not json", b'"x"'):
        with pytest.raises(ParseError):
            parse_tracker(data)
    with pytest.raises(TooLargeError):
        parse_tracker(RAW, max_bytes=len(RAW) - 1)


def _mutate(doc: dict, rnd: random.Random, value: object) -> dict:
    doc = copy.deepcopy(doc)
    source = rnd.choice(list(doc))
    issues = doc[source]
    if not isinstance(issues, dict) or not issues or rnd.random() < 0.2:
        doc[source] = value
        return doc
    issue = rnd.choice(list(issues))
    info = issues[issue]
    if not isinstance(info, dict) or rnd.random() < 0.2:
        issues[issue] = value
        return doc
    releases = info.get("releases")
    if not isinstance(releases, dict) or not releases or rnd.random() < 0.2:
        info[rnd.choice(["releases", "scope", "description"])] = value
        return doc
    codename = rnd.choice(list(releases))
    state = releases[codename]
    if isinstance(state, dict):
        state[rnd.choice(["status", "fixed_version", "urgency", "nodsa", "repositories"])] = value
    else:
        releases[codename] = value
    return doc


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(JSON, min_size=1, max_size=4))
def test_fuzzed_documents_never_raise(rnd: random.Random, values: list) -> None:
    doc = DOC
    for value in values:
        doc = _mutate(doc, rnd, value)
    data = parse_tracker(json.dumps(doc).encode())
    tracker_records(data.entries)
    assert data.stats.kept == len(data.entries)
