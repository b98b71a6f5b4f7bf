"""OSV records: the real AlmaLinux feed read whole, Debian/Ubuntu quirks, bad records, fuzzing.

The parsed AlmaLinux records are checked field by field against the same archive read
by the standard library alone (``tarfile`` + ``json``); the bad-record fixtures are
also checked against the OSV JSON Schema (``jsonschema``), so the parser's refusals are
the format's, not ours.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import re
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.vulns import archive
from patchwatch.domain.vulns import osv
from patchwatch.domain.vulns.identity import merge
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.osv import RecordError
from patchwatch.domain.vulns.severity import Level
from tests.support.vulns import FIXTURES
from tests.support.vulns import OSV_SCHEMA
from tests.support.vulns import almalinux
from tests.support.vulns import almalinux_raw

SCHEMA = jsonschema.Draft202012Validator(json.loads(OSV_SCHEMA.read_text()))
CVE = re.compile(r"^CVE-\d{4}-\d+$")


def read_folder(path: Path) -> tuple[dict, FeedStats]:
    stats = FeedStats()
    records = osv.load_records(archive.iter_folder(path, stats), stats)
    return {r.id: r for r in records}, stats


# --- the real AlmaLinux feed ---------------------------------------------------------------


def test_almalinux_feed_is_read_whole_and_nothing_is_skipped() -> None:
    records, stats = almalinux()
    raw = almalinux_raw()
    files = sum(len(v) for v in raw.values())
    ids = {doc["id"] for docs in raw.values() for doc in docs}
    assert files == 5680
    assert stats.read == files
    assert stats.skipped_total == 0, stats.examples
    assert stats.withdrawn == 0
    assert stats.kept == len(records) == len(ids)
    # AlmaLinux files a multi-release advisory under each release's folder, identically
    assert stats.duplicates == files - len(ids) > 0
    assert stats.ignored == 1  # the LICENSE


def test_almalinux_records_keep_every_package_and_fixed_version() -> None:
    records, _ = almalinux()
    by_id = {r.id: r for r in records}
    for docs in almalinux_raw().values():
        for doc in docs:
            rec = by_id[doc["id"]]
            want = sorted(
                (a["package"]["ecosystem"], a["package"]["name"],
                 tuple((k, v) for ev in r["events"] for k, v in ev.items()))
                for a in doc["affected"] for r in a["ranges"]
            )  # fmt: skip
            got = sorted(
                (a.ecosystem, a.name, tuple((e.kind, e.version) for e in r.events))
                for a in rec.affected
                for r in a.ranges
            )
            assert got == want, doc["id"]
            assert rec.related == tuple(doc["related"])
            assert rec.summary == doc["summary"][:500]


def test_almalinux_identities_are_the_cves_an_advisory_fixes() -> None:
    records, _ = almalinux()
    seen = {"cves": 0, "own": 0, "none": 0}
    for rec in records:
        cves = sorted({c for c in rec.related if CVE.match(c)})
        if cves:
            assert rec.identities == tuple(cves)
            seen["cves"] += 1
        elif rec.id.startswith(("ALBA-", "ALEA-")):
            assert rec.identities == ()  # bug-fix and enhancement errata are no vulnerability
            seen["none"] += 1
        else:
            assert rec.identities == (rec.id,)  # a security advisory that names no CVE
            seen["own"] += 1
    assert all(seen.values()), seen


def test_almalinux_summaries_give_red_hat_impact_ratings() -> None:
    records, _ = almalinux()
    levels = {"Critical": Level.CRITICAL, "Important": Level.HIGH, "Moderate": Level.MEDIUM,
              "Low": Level.LOW}  # fmt: skip
    counted = dict.fromkeys(levels, 0)
    for rec in records:
        word = rec.summary.partition(":")[0]
        if word in levels:
            assert rec.rating is not None and rec.rating.scheme == "redhat-impact"
            assert rec.rating.level is levels[word]
            counted[word] += 1
        else:
            assert rec.rating is None, rec.id
    assert all(counted.values()), counted


def test_almalinux_records_agree_with_the_osv_schema() -> None:
    """A sample of the real records is valid for jsonschema, and we kept every one."""
    raw = [doc for docs in almalinux_raw().values() for doc in docs]
    for doc in random.Random(25).sample(raw, 300):
        SCHEMA.validate(doc)


def test_one_glibc_cve_merges_across_almalinux_releases() -> None:
    records, _ = almalinux()
    vulns = merge(records)
    glibc = vulns["CVE-2023-4911"]
    assert glibc.records == ("ALSA-2023:5453", "ALSA-2023:5455")
    assert glibc.rating is not None and glibc.rating.level is Level.HIGH
    assert glibc.cvss is None  # AlmaLinux records carry no vectors


# --- Debian and Ubuntu shapes ---------------------------------------------------------------


def test_debian_records_and_their_quirks() -> None:
    recs, stats = read_folder(FIXTURES / "debian")
    assert stats.withdrawn == 1 and "DEBIAN-CVE-2023-99990" not in recs
    assert stats.skipped_total == 0
    # year 1 means "no time": not withdrawn, no publication date
    zero = recs["DEBIAN-CVE-2014-9586"]
    assert zero.published is None
    assert zero.affected[0].rating is not None
    assert (zero.affected[0].rating.text, zero.affected[0].rating.level) == ("low**", Level.LOW)
    open_one = recs["DEBIAN-CVE-2024-58382"]
    assert [a.ecosystem for a in open_one.affected] == ["Debian:12", "Debian:13"]
    # an open range already covers every version: its versions list is not kept
    assert open_one.affected[0].versions == ()
    assert recs["DSA-5514-1"].affected[0].versions == (
        "2.36-8", "2.36-9", "2.36-9+deb12u1", "2.36-9+deb12u2")  # fmt: skip
    assert open_one.cvss[0].version == "4.0"
    moment = dt.datetime(2026, 9, 12, 11, 0, 5, tzinfo=dt.UTC).timestamp() + 0.986201214
    assert open_one.modified == pytest.approx(moment, abs=1e-6)
    assert recs["DSA-5514-1"].identities == ("CVE-2023-4527", "CVE-2023-4911")
    assert recs["DSA-5514-1"].advisory_urls == ("https://www.debian.org/security/2023/dsa-5514",)
    urgency = recs["DEBIAN-CVE-2023-45853"].affected[0].rating
    assert urgency is not None and urgency.level is Level.NEGLIGIBLE


def test_dsa_and_debian_cve_count_once() -> None:
    recs, _ = read_folder(FIXTURES / "debian")
    ubuntu, _ = read_folder(FIXTURES / "ubuntu")
    vulns = merge([*recs.values(), *ubuntu.values()])
    assert vulns["CVE-2023-4911"].records == (
        "DEBIAN-CVE-2023-4911",
        "DSA-5514-1",
        "UBUNTU-CVE-2023-4911",
        "USN-6409-1",
    )
    assert "DEBIAN-CVE-2023-4911" not in vulns and "DSA-5514-1" not in vulns
    # the earliest publication of any record, the newest CVSS, the worst own rating
    assert vulns["CVE-2023-4911"].published == recs["DSA-5514-1"].published
    assert vulns["CVE-2023-4911"].cvss is not None
    assert vulns["CVE-2023-4911"].cvss.score == 7.8
    assert vulns["CVE-2023-4911"].rating is not None
    assert vulns["CVE-2023-4911"].rating.scheme == "ubuntu-priority"


def test_ubuntu_priority_and_pro_ecosystem_are_read() -> None:
    recs, _ = read_folder(FIXTURES / "ubuntu")
    cve = recs["UBUNTU-CVE-2023-4911"]
    assert cve.rating is not None and (cve.rating.scheme, cve.rating.level) == (
        "ubuntu-priority",
        Level.HIGH,
    )
    assert {a.ecosystem for a in cve.affected} == {"Ubuntu:22.04:LTS", "Ubuntu:Pro:20.04:LTS"}
    assert recs["USN-6409-1"].identities == ("CVE-2023-4527", "CVE-2023-4806", "CVE-2023-4911")


# --- bad records ----------------------------------------------------------------------------

BAD = {
    "not-json.json": "json",
    "not-an-object.json": "json",
    "no-modified.json": "schema",
    "modified-not-rfc3339.json": "schema",
    "published-unreadable.json": "schema",
    "impossible-date.json": "schema",
    "id-with-space.json": "schema",
    "aliases-not-a-list.json": "schema",
    "upstream-not-strings.json": "schema",
    "event-with-two-bounds.json": "schema",
    "event-with-no-bound.json": "schema",
    "range-without-introduced.json": "schema",
    "fixed-and-last-affected.json": "schema",
    "unknown-range-type.json": "schema",
    "git-range-without-repo.json": "schema",
    "package-not-an-object.json": "schema",
    "package-without-ecosystem.json": "schema",
    "versions-not-strings.json": "schema",
    "dpkg-refuses-version.json": "version",
    "dpkg-refuses-listed-version.json": "version",
    "rpm-refuses-version.json": "version",
}
# Valid for the schema but not for the ordering (or for the calendar, which jsonschema's
# pattern does not check): the other bad records are the schema's own refusals.
SCHEMA_ALLOWS = {
    "impossible-date.json",
    "dpkg-refuses-version.json",
    "dpkg-refuses-listed-version.json",
    "rpm-refuses-version.json",
}


def test_every_bad_fixture_is_named() -> None:
    assert {p.name for p in (FIXTURES / "bad").iterdir()} == set(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_record_is_skipped_for_its_reason(name: str) -> None:
    data = (FIXTURES / "bad" / name).read_bytes()
    with pytest.raises(RecordError) as caught:
        osv.parse_record_bytes(data)
    assert caught.value.reason == BAD[name]
    try:
        doc = json.loads(data)
    except json.JSONDecodeError:
        return
    schema_errors = list(SCHEMA.iter_errors(doc))
    assert bool(schema_errors) == (name not in SCHEMA_ALLOWS), schema_errors[:2]


def test_bad_records_never_stop_a_feed() -> None:
    good = sorted((FIXTURES / "debian").glob("*.json"))
    bad = sorted((FIXTURES / "bad").glob("*.json"))
    members = [(p.name, p.read_bytes()) for p in good + bad]
    random.Random(7).shuffle(members)
    stats = FeedStats()
    records = osv.load_records(members, stats)
    assert len(records) == len(good) - 1  # one withdrawn
    assert stats.skipped_total == len(bad)
    assert stats.skipped == {r: list(BAD.values()).count(r) for r in set(BAD.values())}
    assert len(stats.examples) == min(20, len(bad))


def test_a_vector_that_does_not_score_is_dropped_not_the_record() -> None:
    doc = json.loads((FIXTURES / "debian" / "DEBIAN-CVE-2023-4911.json").read_text())
    doc["severity"] = [
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:X"},
        {"type": "CVSS_V5", "score": "CVSS:5.0/AV:N"},
        {"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:P/A:P"},
    ]
    stats = FeedStats()
    record, withdrawn = osv.parse_record(doc, stats)
    assert not withdrawn
    assert [c.version for c in record.cvss] == ["2.0"]
    assert stats.unscored == 2


def test_oversized_record_is_skipped() -> None:
    doc = json.loads((FIXTURES / "debian" / "DSA-5514-1.json").read_text())
    data = orjson.dumps(doc)
    with pytest.raises(RecordError) as caught:
        osv.parse_record_bytes(data, max_bytes=len(data) - 1)
    assert caught.value.reason == "size"
    doc["affected"][0]["versions"] = [f"2.36-{n}" for n in range(10_001)]
    with pytest.raises(RecordError) as caught:
        osv.parse_record(doc)
    assert caught.value.reason == "size"


def test_a_repeated_id_keeps_the_newest() -> None:
    doc = json.loads((FIXTURES / "debian" / "DSA-5514-1.json").read_text())
    newer = copy.deepcopy(doc)
    newer["modified"] = "2025-01-01T00:00:00Z"
    newer["summary"] = "newer"
    stats = FeedStats()
    for order in ([doc, newer], [newer, doc]):
        stats = FeedStats()
        records = osv.load_records([("a", orjson.dumps(d)) for d in order], stats)
        assert [r.summary for r in records] == ["newer"]
        assert stats.duplicates == 1


# --- fuzzing --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
PATHS_OF_INTEREST = ["id", "modified", "published", "withdrawn", "aliases", "upstream",
                     "related", "summary", "severity", "affected", "database_specific"]  # fmt: skip


def _mutate(doc: object, rnd: random.Random, value: object) -> object:
    """Replace, delete or add one value somewhere inside a decoded record."""
    doc = copy.deepcopy(doc)
    containers = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            containers.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            containers.append(node)
            for v in node:
                walk(v)

    walk(doc)
    target = rnd.choice(containers)
    action = rnd.randrange(3)
    if isinstance(target, dict):
        keys = list(target) or [rnd.choice(PATHS_OF_INTEREST)]
        key = rnd.choice(keys)
        if action == 0:
            target.pop(key, None)
        else:
            target[key] = value
    elif target:
        i = rnd.randrange(len(target))
        if action == 0:
            del target[i]
        else:
            target[i] = value
    else:
        target.append(value)
    return doc


SEEDS = [json.loads(p.read_text()) for p in sorted((FIXTURES / "debian").glob("*.json"))] + [
    json.loads(p.read_text()) for p in sorted((FIXTURES / "ubuntu").glob("*.json"))
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), JSON, st.integers(min_value=1, max_value=4))
def test_fuzzed_records_are_kept_or_skipped_never_raise(
    rnd: random.Random, value: object, rounds: int
) -> None:
    doc: object = rnd.choice(SEEDS)
    for _ in range(rounds):
        doc = _mutate(doc, rnd, value)
    stats = FeedStats()
    records = osv.load_records([("fuzz.json", json.dumps(doc).encode())], stats)
    assert stats.read == 1
    assert len(records) + stats.skipped_total + stats.withdrawn == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_are_skipped_and_counted(data: bytes) -> None:
    stats = FeedStats()
    osv.load_records([("x.json", data)], stats)
    assert stats.read == 1 and stats.kept + stats.skipped_total + stats.withdrawn == 1


# Schema-valid records for the Debian ecosystem: whatever the schema and dpkg accept, the
# parser must keep.
DEB_VERSION = st.from_regex(r"\A([1-9]:)?[0-9][0-9a-z.+~]{0,8}(-[0-9a-z.+~]{1,6})?\Z")
TIMESTAMP = st.datetimes(
    min_value=dt.datetime(1971, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "Z")
EVENT = st.one_of(
    DEB_VERSION.map(lambda v: {"fixed": v}),
    DEB_VERSION.map(lambda v: {"introduced": v}),
    DEB_VERSION.map(lambda v: {"limit": v}),
)
RANGE = st.builds(
    lambda first, rest: {"type": "ECOSYSTEM", "events": [{"introduced": first}, *rest]},
    st.just("0") | DEB_VERSION,
    st.lists(EVENT, max_size=4),
)
AFFECTED = st.fixed_dictionaries(
    {
        "package": st.fixed_dictionaries(
            {
                "ecosystem": st.sampled_from(["Debian:11", "Debian:12", "Ubuntu:22.04:LTS"]),
                "name": st.from_regex(r"\A[a-z0-9][a-z0-9+.-]{1,20}\Z"),
            }
        )
    },
    optional={
        "ranges": st.lists(RANGE, max_size=3),
        "versions": st.lists(DEB_VERSION, max_size=5),
        "ecosystem_specific": st.fixed_dictionaries(
            {"urgency": st.sampled_from(["low", "medium", "high", "not yet assigned"])}
        ),
    },
)
VALID = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"\A(DSA-[0-9]{4}-[1-9]|DEBIAN-CVE-20[0-9]{2}-[0-9]{4,6})\Z"),
        "modified": TIMESTAMP,
    },
    optional={
        "published": TIMESTAMP,
        "aliases": st.lists(st.from_regex(r"\ACVE-20[0-9]{2}-[0-9]{4,6}\Z"), max_size=3),
        "upstream": st.lists(st.from_regex(r"\ACVE-20[0-9]{2}-[0-9]{4,6}\Z"), max_size=3),
        "summary": st.text(max_size=50),
        "details": st.text(max_size=50),
        "affected": st.lists(AFFECTED, max_size=4),
        "severity": st.lists(
            st.fixed_dictionaries(
                {"type": st.just("Ubuntu"), "score": st.sampled_from(["low", "medium", "high"])}
            ),
            max_size=1,
        ),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALID)
def test_every_schema_valid_record_is_kept(doc: dict) -> None:
    SCHEMA.validate(doc)  # the strategy is right about the schema
    record, withdrawn = osv.parse_record(doc)
    assert not withdrawn
    assert record.id == doc["id"]
    assert len(record.affected) == len(doc.get("affected", []))
