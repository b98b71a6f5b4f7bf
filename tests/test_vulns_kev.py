"""CISA KEV: the real 1,404-entry catalogue read whole, checked against the stdlib and the schema.

The catalogue's own JSON Schema (with jsonschema's date format checker) is the oracle
for entries: whatever it accepts, the parser keeps; a broken CVE id or date is refused by
both.
"""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import json
import lzma

import jsonschema
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.vulns.kev import parse_kev
from tests.support.vulns import FIXTURES
from tests.support.vulns import KEV
from tests.support.vulns import assert_feed_refused

RAW = KEV.read_bytes()
DOC = json.loads(lzma.decompress(RAW))
SCHEMA = json.loads((FIXTURES / "known_exploited_vulnerabilities_schema.json").read_text())
ENTRY = jsonschema.Draft7Validator(
    {**SCHEMA["$defs"]["vulnerability"], "$defs": SCHEMA["$defs"]},
    format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
)


def test_real_catalogue_is_read_whole() -> None:
    cat = parse_kev(RAW)
    assert cat.stats.read == len(DOC["vulnerabilities"]) == DOC["count"] == 1404
    assert cat.stats.skipped_total == 0 and cat.stats.duplicates == 0
    assert cat.version == "2025.08.25"
    assert cat.released == pytest.approx(
        dt.datetime(2025, 8, 25, 17, 4, 19, 979600, tzinfo=dt.UTC).timestamp()
    )
    for item in DOC["vulnerabilities"]:
        entry = cat.entries[item["cveID"]]
        assert entry.date_added == dt.date.fromisoformat(item["dateAdded"])
        assert entry.due_date == dt.date.fromisoformat(item["dueDate"])
        assert entry.ransomware is (True if item["knownRansomwareCampaignUse"] == "Known" else None)
        assert entry.vendor == item["vendorProject"].strip()[:200]
    known = sum(1 for e in cat.entries.values() if e.ransomware)
    assert known == sum(
        1 for i in DOC["vulnerabilities"] if i["knownRansomwareCampaignUse"] == "Known"
    )
    assert 0 < known < len(cat.entries)


def test_real_catalogue_agrees_with_its_schema() -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(DOC)
    assert all(ENTRY.is_valid(item) for item in DOC["vulnerabilities"])


def test_glibc_looney_tunables_is_known_exploited() -> None:
    entry = parse_kev(RAW).entries["CVE-2023-4911"]
    assert entry.date_added == dt.date(2023, 11, 21)
    assert entry.due_date == dt.date(2023, 12, 12)
    assert entry.ransomware is None  # "Unknown": not confirmed, which is not "no"


@pytest.mark.parametrize("pack", [lambda b: b, gzip.compress, lzma.compress])
def test_plain_and_compressed_catalogues_read_the_same(pack) -> None:
    plain = json.dumps(DOC).encode()
    assert parse_kev(pack(plain)).entries == parse_kev(RAW).entries


def test_bad_entries_are_skipped_and_counted() -> None:
    doc = copy.deepcopy(DOC)
    items = doc["vulnerabilities"]
    items[0]["cveID"] = "CVE-25-1"
    items[1]["dateAdded"] = "2025-13-01"
    items[2]["dueDate"] = "soon"
    items[3] = "CVE-2021-44228"
    items.append(copy.deepcopy(items[10]))
    cat = parse_kev(json.dumps(doc).encode())
    assert cat.stats.skipped == {"schema": 4}
    assert cat.stats.duplicates == 1
    assert len(cat.entries) == 1404 - 4
    for bad in items[:3]:
        assert not ENTRY.is_valid(bad)


def test_what_is_not_a_catalogue_is_refused() -> None:
    not_kev = (b"[]", b'{"count": 1}', b"<html>", b"\xfd7zXZ\x00broken")
    assert_feed_refused(parse_kev, not_kev, RAW, grown=10)  # the bound holds decompressed too


FIELDS = ["cveID", "dateAdded", "dueDate", "knownRansomwareCampaignUse", "vendorProject"]
VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=12),
    st.from_regex(r"\ACVE-[0-9]{4}-[0-9]{4,6}\Z"),
    st.dates().map(str),
    st.lists(st.integers(), max_size=2),
)


SLICE = 60


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, SLICE - 1), st.sampled_from(FIELDS), VALUES), max_size=6))
def test_mutated_entries_follow_the_schema(changes: list) -> None:
    """Whatever the schema accepts is kept; a bad id or date is refused; nothing raises."""
    doc = {**DOC, "vulnerabilities": [dict(i) for i in DOC["vulnerabilities"][:SLICE]]}
    for index, field, value in changes:
        doc["vulnerabilities"][index][field] = value
    cat = parse_kev(json.dumps(doc).encode())
    assert cat.stats.read == SLICE
    for item in doc["vulnerabilities"]:
        if ENTRY.is_valid(item):
            assert item["cveID"] in cat.entries
    assert len(cat.entries) + cat.stats.skipped_total + cat.stats.duplicates == SLICE
