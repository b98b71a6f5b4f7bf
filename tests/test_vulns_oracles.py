"""Matching judged by the package managers themselves, on real version strings.

rpm: hosts' package versions are built from every fixed version of the 5,680 real
AlmaLinux advisories (the fix itself, versions just older and just newer in the
release and in the version, pre-releases with ``~``, post-releases with ``^``, epochs
dropped, lowered and raised), and each (host version, advisory) pair is judged twice:
by ``patchwatch.domain.vulns.match`` on the records ``osv`` parsed, and by an independent
evaluation that reads the raw JSON with the standard library and asks ``rpm.vercmp``
(one ``rpm --eval`` Lua process) for every comparison. Several ranges (with
``last_affected`` and ``versions`` lists) are built from each package's own fixed
versions, put in order by rpm, and judged the same way.

dpkg: the same for Debian's format, with the Debian OSV fixtures and with ranges built
from 6,000 real bookworm version strings, every comparison asked of
``dpkg --compare-versions``.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict

from patchwatch.domain.vulns import archive
from patchwatch.domain.vulns import osv
from patchwatch.domain.vulns.ecosystems import Ordering
from patchwatch.domain.vulns.ecosystems import version_key
from patchwatch.domain.vulns.match import entry_affects
from patchwatch.domain.vulns.model import Affected
from patchwatch.domain.vulns.model import Event
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.model import Range
from tests.support.vulns import FIXTURES
from tests.support.vulns import almalinux
from tests.support.vulns import almalinux_raw
from tests.support.vulns import dpkg_less
from tests.support.vulns import rpm_vercmp

BOOKWORM = FIXTURES.parent / "versions" / "bookworm-versions.txt"
_LAST_NUMBER = re.compile(r"([0-9]+)(?=[^0-9]*$)")


def _bump(part: str, delta: int) -> str | None:
    """``part`` with its last number moved by ``delta`` (None when it would go negative)."""
    m = _LAST_NUMBER.search(part)
    if m is None:
        return None
    n = int(m.group(1)) + delta
    if n < 0:
        return None
    return part[: m.start()] + str(n) + part[m.end() :]


def rpm_variants(fixed: str, rnd: random.Random) -> list[str]:
    """Versions around a fix: the fix, and just older / newer in every part."""
    epoch, _, rest = fixed.rpartition(":") if ":" in fixed else ("", "", fixed)
    version, _, release = rest.rpartition("-") if "-" in rest else (rest, "", "")
    prefix = f"{epoch}:" if epoch else ""
    out = {fixed}
    for d in (-1, 1):
        if (r := _bump(release, d)) is not None:
            out.add(f"{prefix}{version}-{r}")
        if (v := _bump(version, d)) is not None:
            out.add(f"{prefix}{v}-{release}" if release else f"{prefix}{v}")
    if release:
        out.add(f"{prefix}{version}~rc1-{release}")
        out.add(f"{prefix}{version}^20260101-{release}")
        out.add(f"{prefix}{version}-{release}.1")
        if rnd.random() < 0.2:  # epochs: dropped, lowered, raised
            if epoch:
                out.add(rest)
                if int(epoch) > 0:
                    out.add(f"{int(epoch) - 1}:{version}-{release}")
            out.add(f"{int(epoch or 0) + 1}:0.1-1.el9")
    return sorted(out)


def test_almalinux_advisories_match_as_rpm_compares() -> None:
    records, _ = almalinux()
    parsed = {r.id: r for r in records}
    rnd = random.Random(2026)
    # the raw JSON, read without patchwatch: (ecosystem, package) -> advisory -> [fixed]
    fixes: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for docs in almalinux_raw().values():
        for doc in docs:
            for a in doc["affected"]:
                (rng,) = a["ranges"]
                assert rng["type"] == "ECOSYSTEM"
                (intro, fix) = rng["events"]  # every AlmaLinux range is [0, fixed)
                assert intro == {"introduced": "0"} and list(fix) == ["fixed"]
                key = (a["package"]["ecosystem"], a["package"]["name"])
                if fix["fixed"] not in fixes[key][doc["id"]]:
                    fixes[key][doc["id"]].append(fix["fixed"])
    questions: list[tuple[str, str, str, str]] = []  # (ecosystem, package, host version, advisory)
    for (eco, name), by_advisory in sorted(fixes.items()):
        advisories = sorted(by_advisory)
        for advisory in advisories:
            others = [a for a in advisories if a != advisory]
            partner = [rnd.choice(others)] if others and rnd.random() < 0.3 else []
            for fixed in by_advisory[advisory]:
                for host_version in rpm_variants(fixed, rnd):
                    questions += [(eco, name, host_version, p) for p in (advisory, *partner)]
    questions = sorted(set(questions))
    pairs = sorted({(v, f) for eco, name, v, adv in questions for f in fixes[eco, name][adv]})
    answer = dict(zip(pairs, rpm_vercmp(pairs), strict=True))

    entries: dict[tuple[str, str, str], list] = defaultdict(list)
    for rec in parsed.values():
        for a in rec.affected:
            entries[rec.id, a.ecosystem, a.name].append(a)
    disagreements = []
    affected = 0
    for eco, name, version, advisory in questions:
        theirs = any(answer[version, f] < 0 for f in fixes[eco, name][advisory])
        key = version_key(Ordering.RPM, version)
        ours = any(entry_affects(Ordering.RPM, key, e) for e in entries[advisory, eco, name])
        affected += theirs
        if ours != theirs:
            disagreements.append((eco, name, version, advisory, theirs))
    assert len(questions) > 500_000 and len(pairs) > 200_000
    assert 0.2 < affected / len(questions) < 0.8  # both verdicts are well represented
    assert disagreements == []


def _ordered(groups: list[list[str]], less) -> list[list[str]]:
    """Each group sorted by the tool's own answers (every pair asked), duplicates dropped."""
    pairs = sorted({(a, b) for g in groups for a, b in itertools.permutations(g, 2)})
    lt = dict(zip(pairs, less(pairs), strict=True))
    out = []
    for g in groups:
        g = sorted(set(g))
        ranked = sorted(g, key=lambda v: sum(lt[w, v] for w in g if w != v))  # how many are below
        if all(lt[a, b] for a, b in itertools.pairwise(ranked)):  # a strict order, no ties
            out.append(ranked)
    return out


def _multi_range_entry(eco: str, a: str, b: str, c: str, d: str, listed: str, rnd) -> Affected:
    """[a, b) and [c, d] plus one listed version, events shuffled as a feed may write them."""
    first = [Event("introduced", a), Event("fixed", b)]
    second = [Event("last_affected", d), Event("introduced", c)]
    rnd.shuffle(first)
    return Affected(eco, "p", (Range("ECOSYSTEM", tuple(first)), Range("ECOSYSTEM", tuple(second))),
                    (listed,))  # fmt: skip


def _judge_multi_range(groups, variants, less, ordering: Ordering, eco: str) -> list:
    """Our verdict and the tool's for every variant of every group; returns disagreements."""
    rnd = random.Random(11)
    questions = []
    for g in groups:
        a, b, c, d, listed = g[0], g[1], g[2], g[3], g[-1]
        e = _multi_range_entry(eco, a, b, c, d, listed, rnd)
        for v in sorted({x for anchor in g for x in variants(anchor, rnd)}):
            questions.append((g, e, v))

    def asked(g: list[str], v: str) -> list[tuple[str, str]]:
        a, b, c, d, listed = g[0], g[1], g[2], g[3], g[-1]
        return [(v, a), (v, b), (v, c), (d, v), (v, listed), (listed, v)]

    pairs = sorted({p for g, _, v in questions for p in asked(g, v)})
    lt = dict(zip(pairs, less(pairs), strict=True))
    bad = []
    for g, e, v in questions:
        a, b, c, d, listed = g[0], g[1], g[2], g[3], g[-1]
        in_first = not lt[v, a] and lt[v, b]
        in_second = not lt[v, c] and not lt[d, v]
        is_listed = not lt[v, listed] and not lt[listed, v]
        theirs = in_first or in_second or is_listed
        ours = entry_affects(ordering, version_key(ordering, v), e)
        if ours != theirs:
            bad.append((g, v, theirs))
    assert len(questions) > 10 * len(groups)
    return bad


def _rpm_less(pairs: list[tuple[str, str]]) -> list[bool]:
    return [x < 0 for x in rpm_vercmp(pairs)]


def test_several_ranges_of_real_rpm_versions_match_as_rpm_compares() -> None:
    rnd = random.Random(5)
    per_package: dict[tuple[str, str], set[str]] = defaultdict(set)
    for docs in almalinux_raw().values():
        for doc in docs:
            for a in doc["affected"]:
                per_package[a["package"]["ecosystem"], a["package"]["name"]].add(
                    a["ranges"][0]["events"][1]["fixed"]
                )
    candidates = sorted(k for k, v in per_package.items() if len(v) >= 5)
    groups = [rnd.sample(sorted(per_package[k]), 5) for k in rnd.sample(candidates, 400)]
    ordered = _ordered(groups, _rpm_less)
    assert len(ordered) > 300
    bad = _judge_multi_range(ordered, rpm_variants, _rpm_less, Ordering.RPM, "AlmaLinux:9")
    assert bad == []


def deb_variants(fixed: str, rnd: random.Random) -> list[str]:
    """Versions around a Debian fix: binNMU, ~ pre-release, revision and epoch changes."""
    epoch, _, rest = fixed.partition(":") if ":" in fixed else ("", "", fixed)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    prefix = f"{epoch}:" if epoch else ""
    out = {fixed, f"{fixed}+b1", f"{fixed}~1"}
    if revision:
        for d in (-1, 1):
            if (r := _bump(revision, d)) is not None:
                out.add(f"{prefix}{upstream}-{r}")
    if epoch and rnd.random() < 0.5:
        out.add(rest)
    elif rnd.random() < 0.1:
        out.add(f"1:{rest}")
    return sorted(out)


def _deb_less(pairs: list[tuple[str, str]]) -> list[bool]:
    return dpkg_less(pairs)


def test_debian_fixtures_match_as_dpkg_compares() -> None:
    stats = FeedStats()
    records = osv.load_records(archive.iter_folder(FIXTURES / "debian", stats), stats)
    rnd = random.Random(3)
    questions = []
    for rec in records:
        for e in rec.affected:
            anchors = [ev.version for r in e.ranges for ev in r.events if ev.version != "0"]
            around = {x for anchor in [*anchors, *e.versions] for x in deb_variants(anchor, rnd)}
            questions += [(e, v) for v in sorted(around)]
    pairs = sorted({(v, ev.version) for e, v in questions for r in e.ranges for ev in r.events
                    if ev.version != "0"} | {(v, x) for e, v in questions for x in e.versions}
                   | {(x, v) for e, v in questions for x in e.versions})  # fmt: skip
    lt = dict(zip(pairs, dpkg_less(pairs), strict=True))
    for e, v in questions:
        # every Debian fixture range is [0, fixed) or [0, open)
        fixed = [ev.version for r in e.ranges for ev in r.events if ev.kind == "fixed"]
        open_range = any(all(ev.kind == "introduced" for ev in r.events) for r in e.ranges)
        listed = any(not lt[v, x] and not lt[x, v] for x in e.versions)
        theirs = open_range or listed or any(lt[v, f] for f in fixed)
        assert entry_affects(Ordering.DPKG, version_key(Ordering.DPKG, v), e) == theirs, (e, v)
    assert len(questions) > 50


def test_several_ranges_of_real_debian_versions_match_as_dpkg_compares() -> None:
    lines = BOOKWORM.read_text().splitlines()
    versions = [line for line in lines if line and not line.startswith("#")]
    rnd = random.Random(17)
    groups = [rnd.sample(versions, 5) for _ in range(40)]
    ordered = _ordered(groups, _deb_less)
    assert len(ordered) > 35
    bad = _judge_multi_range(ordered, deb_variants, _deb_less, Ordering.DPKG, "Debian:12")
    assert bad == []
