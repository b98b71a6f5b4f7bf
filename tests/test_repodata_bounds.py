"""Mirror data is bounded as reports are: every field, every entry, every document.

A repository any enrolled host reports can serve a package whose name is 50 MB (from a
50 KB gzip); stored, it made every insert near it read 50 MB under the write lock. The
parsers now leave such an entry out and count it, with the same limits reports have
(``patchwatch.domain.limits``), and parse with memory that does not grow with the document:
apt reads lines of at most 64 KiB, rpm-md drops each entry once read and refuses an
entry of more than 16 MiB. Each test below fails on the parsers before the bounds.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchwatch.domain import limits
from patchwatch.domain.errors import ParseError
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata import rpmmd
from patchwatch.domain.repodata.apt import MAX_LINE
from patchwatch.domain.repodata.apt import parse_packages
from patchwatch.domain.repodata.apt import parse_release
from patchwatch.domain.repodata.apt import read_lines
from patchwatch.domain.repodata.bounds import MAX_EXAMPLES
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.rpmmd import parse_metalink
from patchwatch.domain.repodata.rpmmd import parse_mirrorlist
from patchwatch.domain.repodata.rpmmd import parse_primary
from patchwatch.domain.repodata.rpmmd import parse_repomd
from patchwatch.domain.repodata.rpmmd import parse_updateinfo
from tests.support.fuzzing import ChunkStream
from tests.support.fuzzing import peak_memory

FIXTURES = Path(__file__).parent / "fixtures"
COMMON = "http://linux.duke.edu/metadata/common"
RPM_NS = "http://linux.duke.edu/metadata/rpm"
MIB = 1 << 20


# ------------------------------------------------------------------------------ apt


def stanza(name: str = "ok", version: str = "1.0-1", arch: str = "amd64", **extra: str) -> str:
    fields = {"Package": name, "Version": version, "Architecture": arch, **extra}
    return "".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n"


def apt_parse(text: str) -> tuple[list[Package], Skipped]:
    skipped = Skipped()
    data = text.encode()
    packages = [a.package for a in parse_packages(read_lines(io.BytesIO(data)), skipped)]
    return packages, skipped


APT_OVERSIZED = {
    "name": stanza(name="a" * (limits.MAX_PACKAGE_NAME + 1)),
    "version": stanza(version="1." + "0" * limits.MAX_VERSION),
    "release": stanza(version="1.0-" + "1" * (limits.MAX_RELEASE + 1)),
    "whole version": stanza(version="1" * 600),
    "architecture": stanza(arch="x" * (limits.MAX_ARCH + 1)),
    "source": stanza(Source="s" * (limits.MAX_SOURCE + 1)),
    "file name": stanza(Filename="pool/" + "f" * limits.MAX_URL),
    "NUL": stanza(name="bad\x00name"),
    "one endless line": stanza(name="n" * (3 * MAX_LINE)),
}


@pytest.mark.parametrize("field", sorted(APT_OVERSIZED))
def test_apt_stanza_with_an_oversized_field_is_skipped_and_counted(field: str) -> None:
    text = stanza("before") + APT_OVERSIZED[field] + stanza("after")
    packages, skipped = apt_parse(text)
    assert [p.name for p in packages] == ["before", "after"]
    assert skipped.count == 1
    assert skipped.examples[0].startswith("stanza at line 5")
    assert len(skipped.summary()) < 300  # the reason names the entry, never copies it


def test_apt_fields_exactly_at_their_bounds_are_kept() -> None:
    name = "a" * limits.MAX_PACKAGE_NAME
    version = "2" * 9 + ":" + "1" * limits.MAX_VERSION + "-" + "2" * limits.MAX_RELEASE
    text = stanza(name, version, "x" * limits.MAX_ARCH, Filename="f" * limits.MAX_URL)
    (package,), skipped = apt_parse(text)
    assert skipped.count == 0
    assert package == Package(
        name, "2" * 9, "1" * limits.MAX_VERSION, "2" * limits.MAX_RELEASE,
        "x" * limits.MAX_ARCH, PackageKind.DEB,
    )  # fmt: skip


def test_skipped_keeps_a_few_examples_and_the_whole_count() -> None:
    text = "".join(stanza(name=f"{i}" + "a" * 300) for i in range(10))
    packages, skipped = apt_parse(text + stanza("kept"))
    assert [p.name for p in packages] == ["kept"]
    assert (skipped.count, len(skipped.examples)) == (10, MAX_EXAMPLES)
    assert skipped.summary().startswith("skipped 10 entries (stanza at line 1 (Package 0aaa")
    assert skipped.summary().endswith("name longer than 256 characters ...)")


class Endless(ChunkStream):
    """A stream that makes its bytes as they are read: head, size bytes of fill, tail."""

    def __init__(self, head: bytes, fill: bytes, size: int, tail: bytes) -> None:
        super().__init__(self._parts(head, fill, size, tail))

    @staticmethod
    def _parts(head: bytes, fill: bytes, size: int, tail: bytes) -> Iterator[bytes]:
        yield head
        block = fill * (64 * 1024 // len(fill))
        for _ in range(size // len(block)):
            yield block
        yield tail


def test_an_endless_apt_line_costs_no_more_memory_than_a_short_one() -> None:
    """64 MB of one line in a Packages file: before, iterating the reader held it whole."""
    head = stanza("before").encode() + b"Package: "
    tail = b"\nVersion: 1\nArchitecture: all\n\n" + stanza("after").encode()

    def parse() -> None:
        stream = io.BufferedReader(Endless(head, b"n", 64 * MIB, tail))
        skipped = Skipped()
        packages = [a.package.name for a in parse_packages(read_lines(stream), skipped)]
        assert (packages, skipped.count) == (["before", "after"], 1)

    assert peak_memory(parse) < 2 * MIB


def test_read_lines_cuts_long_lines_and_keeps_the_next_ones_whole() -> None:
    data = b"short\n" + b"x" * 25 + b"\n" + b"y" * 10 + b"\nlast"
    assert list(read_lines(io.BytesIO(data), 8)) == [b"short\n", b"x" * 8, b"y" * 8, b"last"]


@pytest.mark.parametrize(
    ("release", "message"),
    [
        ("Origin: Debian\nDescription: " + "d" * 9000 + "\n", "Description longer than 8192"),
        ("Origin: Debian\nDescription: a\n" + " more words\n" * 900, "Description longer than"),
        (
            "Origin: Debian\nSHA256:\n " + "0" * 64 + " 1 " + "p" * 3000 + "\n",
            "SHA256 path longer than 2048",
        ),
    ],
)
def test_release_fields_over_their_bound_fail_the_release(release: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_release(release)


def test_release_listing_too_many_files_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from patchwatch.domain.repodata import apt

    monkeypatch.setattr(apt, "MAX_RELEASE_FILES", 3)
    lines = "".join(f" {i:064x} 1 main/file{i}\n" for i in range(4))
    with pytest.raises(ParseError, match="SHA256 lists more than 3 files"):
        parse_release("Origin: x\nSHA256:\n" + lines)
    parse_release("Origin: x\nSHA256:\n" + lines.split("\n", 1)[1])  # three are fine


# ----------------------------------------------------------------------------- rpm-md


def rpm_package(
    name: str = "ok", ver: str = "1.0", rel: str = "1", arch: str = "x86_64", epoch: str = "0",
    href: str = "p.rpm", sourcerpm: str = "p.src.rpm", inner: str = "",
) -> str:  # fmt: skip
    return (
        f'<package type="rpm"><name>{name}</name><arch>{arch}</arch>'
        f'<version epoch="{epoch}" ver="{ver}" rel="{rel}"/><location href="{href}"/>'
        f"<format><rpm:sourcerpm>{sourcerpm}</rpm:sourcerpm>{inner}</format></package>\n"
    )


def primary(*packages: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<metadata xmlns="{COMMON}" xmlns:rpm="{RPM_NS}">\n'
        + "".join(packages)
        + "</metadata>\n"
    ).encode()


def rpm_parse(data: bytes) -> tuple[list[str], Skipped]:
    skipped = Skipped()
    names = [a.package.name for a in parse_primary(io.BytesIO(data), skipped)]
    return names, skipped


RPM_OVERSIZED = {
    "name": rpm_package(name="a" * (limits.MAX_PACKAGE_NAME + 1)),
    "name of a megabyte": rpm_package(name="a" * MIB),
    "epoch": rpm_package(epoch="1" * (limits.MAX_EPOCH + 1)),
    "version": rpm_package(ver="1" * (limits.MAX_VERSION + 1)),
    "release": rpm_package(rel="1" * (limits.MAX_RELEASE + 1)),
    "architecture": rpm_package(arch="x" * (limits.MAX_ARCH + 1)),
    "location": rpm_package(href="p" * (limits.MAX_URL + 1)),
    "source rpm": rpm_package(sourcerpm="s" * (limits.MAX_SOURCE + 1)),
}


@pytest.mark.parametrize("field", sorted(RPM_OVERSIZED))
def test_rpm_package_with_an_oversized_field_is_skipped_and_counted(field: str) -> None:
    names, skipped = rpm_parse(primary(rpm_package("before"), RPM_OVERSIZED[field],
                                       rpm_package("after")))  # fmt: skip
    assert names == ["before", "after"]
    assert skipped.count == 1
    assert skipped.examples[0].startswith("primary.xml package #2")
    assert len(skipped.summary()) < 300


def test_rpm_fields_exactly_at_their_bounds_are_kept() -> None:
    data = primary(
        rpm_package(
            "a" * limits.MAX_PACKAGE_NAME, "1" * limits.MAX_VERSION, "2" * limits.MAX_RELEASE,
            "x" * limits.MAX_ARCH, "9" * limits.MAX_EPOCH, "p" * limits.MAX_URL,
            "s" * limits.MAX_SOURCE,
        )
    )  # fmt: skip
    names, skipped = rpm_parse(data)
    assert (names, skipped.count) == (["a" * limits.MAX_PACKAGE_NAME], 0)


def test_an_rpm_entry_over_the_byte_bound_fails_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpmmd, "MAX_ENTRY_BYTES", 256 * 1024)
    small = primary(rpm_package(name="a" * 100_000), rpm_package("after"))
    assert rpm_parse(small)[0] == ["after"]  # over the name bound: skipped
    big = primary(rpm_package("before"), rpm_package(name="a" * 400_000))
    with pytest.raises(ParseError, match="an entry longer than 262144 bytes"):
        rpm_parse(big)


def test_an_rpm_entry_of_too_many_elements_fails_the_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpmmd, "MAX_ENTRY_ELEMENTS", 1000)
    provides = "<rpm:provides>" + '<rpm:entry name="x"/>' * 900 + "</rpm:provides>"
    assert rpm_parse(primary(rpm_package(inner=provides)))[0] == ["ok"]
    provides = "<rpm:provides>" + '<rpm:entry name="x"/>' * 1100 + "</rpm:provides>"
    with pytest.raises(ParseError, match="more than 1000 elements in one entry"):
        rpm_parse(primary(rpm_package(inner=provides)))


def test_rpm_parsing_memory_does_not_grow_with_the_package_count() -> None:
    """Before, each package left an empty element in the root: 85 MB for a million."""

    def peak(count: int) -> int:
        data = primary(*(rpm_package(f"p{i}") for i in range(count)))
        return peak_memory(lambda: sum(1 for _ in parse_primary(io.BytesIO(data))))

    # before: 1.0 MB more for the 12,000 packages more
    assert peak(16_000) - peak(4_000) < 256 * 1024


def test_a_megabyte_name_costs_a_few_megabytes_while_parsed() -> None:
    data = gzip.compress(primary(rpm_package(name="a" * (4 * MIB)), rpm_package("after")))

    def parse() -> None:
        with gzip.open(io.BytesIO(data)) as stream:
            skipped = Skipped()
            assert [a.package.name for a in parse_primary(stream, skipped)] == ["after"]
            assert skipped.count == 1

    assert peak_memory(parse) < 24 * MIB


def update(
    advisory_id: str = "ADV-1", title: str = "t", severity: str = "Important",
    issued: str = "2026-01-01", cves: tuple[str, ...] = ("CVE-2026-1",),
    packages: tuple[tuple[str, str], ...] = (("p", "1.0"),), type_: str = "security",
) -> str:  # fmt: skip
    refs = "".join(f'<reference type="cve" id="{c}"/>' for c in cves)
    pkgs = "".join(
        f'<package name="{n}" version="{v}" release="1" epoch="0" arch="noarch"/>'
        for n, v in packages
    )
    return (
        f'<update type="{type_}"><id>{advisory_id}</id><title>{title}</title>'
        f'<severity>{severity}</severity><issued date="{issued}"/>'
        f"<references>{refs}</references><pkglist><collection>{pkgs}</collection></pkglist>"
        "</update>"
    )


UPDATE_OVERSIZED = {
    "id": update(advisory_id="A" * (limits.MAX_ADVISORY_ID + 1)),
    "type": update(type_="t" * (limits.MAX_ADVISORY_TYPE + 1)),
    "severity": update(severity="s" * (limits.MAX_ADVISORY_SEVERITY + 1)),
    "title": update(title="t" * (limits.MAX_ADVISORY_TITLE + 1)),
    "issued": update(issued="2" * (limits.MAX_ADVISORY_ISSUED + 1)),
    "CVE id": update(cves=("CVE-" + "9" * limits.MAX_CVE,)),
    "package name": update(packages=(("n" * (limits.MAX_PACKAGE_NAME + 1), "1"),)),
    "package version": update(packages=(("p", "1" * (limits.MAX_VERSION + 1)),)),
}


@pytest.mark.parametrize("field", sorted(UPDATE_OVERSIZED))
def test_advisory_with_an_oversized_field_is_skipped_and_counted(field: str) -> None:
    data = f"<updates>{update('BEFORE')}{UPDATE_OVERSIZED[field]}{update('AFTER')}</updates>"
    skipped = Skipped()
    ids = [a.id for a in parse_updateinfo(io.BytesIO(data.encode()), skipped)]
    assert ids == ["BEFORE", "AFTER"]
    assert skipped.count == 1
    assert skipped.examples[0].startswith("updateinfo.xml update #2")


def test_advisory_with_too_many_cves_or_packages_is_skipped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpmmd, "MAX_ADVISORY_CVES", 3)
    monkeypatch.setattr(rpmmd, "MAX_ADVISORY_PACKAGES", 3)
    cves = tuple(f"CVE-2026-{i}" for i in range(4))
    packages = tuple((f"p{i}", "1") for i in range(4))
    data = (
        f"<updates>{update('CVES', cves=cves)}{update('PKGS', packages=packages)}"
        f"{update('FINE', cves=cves[:3], packages=packages[:3])}</updates>"
    )
    skipped = Skipped()
    assert [a.id for a in parse_updateinfo(io.BytesIO(data.encode()), skipped)] == ["FINE"]
    assert skipped.count == 2
    assert "more than 3 CVEs" in skipped.examples[0]
    assert "more than 3 packages" in skipped.examples[1]


def test_repomd_and_mirror_lists_refuse_oversized_urls() -> None:
    repomd = (FIXTURES / "rpmmd" / "repo" / "repodata" / "repomd.xml").read_bytes()
    long_href = b'href="repodata/' + b"x" * limits.MAX_URL
    with pytest.raises(ParseError, match="<location href> longer than 2048"):
        parse_repomd(repomd.replace(b'href="repodata/', long_href, 1))
    long_url = "http://mirror.invalid/" + "x" * limits.MAX_URL
    with pytest.raises(ParseError, match="not a mirror URL"):
        parse_mirrorlist(f"http://mirror.invalid/a\n{long_url}\n")
    metalink = (
        '<metalink xmlns="http://www.metalinker.org/"><files><file name="repomd.xml">'
        f"<resources><url>{long_url}</url><url>http://mirror.invalid/b</url></resources>"
        "</file></files></metalink>"
    )
    assert parse_metalink(metalink.encode()) == ["http://mirror.invalid/b"]
