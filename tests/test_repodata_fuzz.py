"""Fuzzing: whatever a mirror serves, the parsers raise ParseError or TooLargeError only.

A refresh maps exactly those two to "this mirror's data is bad"; anything else
(IndexError, UnicodeDecodeError, a bare ValueError) would surface as a crash. Inputs are
both arbitrary and mutations of the real fixtures, so that the mutations reach deep
into the parsers instead of failing on the first byte.
"""

from __future__ import annotations

import gzip
import io
import lzma
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain import limits
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package
from patchwatch.domain.repodata.apt import extract_signed_text
from patchwatch.domain.repodata.apt import parse_packages
from patchwatch.domain.repodata.apt import parse_release
from patchwatch.domain.repodata.apt import read_lines
from patchwatch.domain.repodata.bounds import Skipped
from patchwatch.domain.repodata.compression import decompress
from patchwatch.domain.repodata.rpmmd import parse_metalink
from patchwatch.domain.repodata.rpmmd import parse_mirrorlist
from patchwatch.domain.repodata.rpmmd import parse_primary
from patchwatch.domain.repodata.rpmmd import parse_repomd
from patchwatch.domain.repodata.rpmmd import parse_updateinfo
from tests.support.fuzzing import ChunkStream
from tests.support.fuzzing import mutated_bytes
from tests.support.fuzzing import peak_memory

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = (ParseError, TooLargeError)

# No example database: it would write .hypothesis/ into the work tree.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

RELEASE_SAMPLE = (FIXTURES / "apt" / "InRelease-bookworm-updates").read_bytes()[:3000]
SIGNED_SAMPLE = (FIXTURES / "apt" / "InRelease-bookworm-security").read_bytes()
PACKAGES_SAMPLE = (FIXTURES / "apt" / "flat" / "Packages").read_bytes()
REPOMD_SAMPLE = (FIXTURES / "rpmmd" / "repo" / "repodata" / "repomd.xml").read_bytes()
UPDATEINFO_SAMPLE = (FIXTURES / "rpmmd" / "updateinfo-suse.xml").read_bytes()
PRIMARY_SAMPLE = gzip.decompress(
    next((FIXTURES / "rpmmd" / "repo" / "repodata").glob("*-primary.xml.gz")).read_bytes()
)

FIELD_WORDS = [
    "Package",
    "Version",
    "Architecture",
    "Source",
    "Filename",
    "Suite",
    "Date",
    "Valid-Until",
    "SHA256",
    "MD5Sum",
    "Components",
    "Acquire-By-Hash",
]


def mutated(sample: bytes) -> st.SearchStrategy[bytes]:
    """A sample with a few bytes replaced, inserted or deleted, or cut short."""
    return mutated_bytes(sample, [b":", b"\n", b" ", b"\n\n", b"<", b"&", b"\xff", b"-", b"\r"])


deb822_lines = st.lists(
    st.one_of(
        st.builds(
            lambda k, v: f"{k}: {v}\n".encode(),
            st.sampled_from(FIELD_WORDS),
            st.text(max_size=30),
        ),
        st.sampled_from([b"\n", b" continued\n", b"\t.\n", b"junk\n", b" \n", b""]),
        st.binary(max_size=40),
    ),
    max_size=40,
)


def _only_expected(call: Callable[[], object]) -> None:
    try:
        call()
    except EXPECTED:
        pass


@FUZZ
@given(st.text(max_size=2000))
def test_parse_release_arbitrary_text(text: str) -> None:
    _only_expected(lambda: parse_release(text))


@FUZZ
@given(st.one_of(mutated(RELEASE_SAMPLE), mutated(SIGNED_SAMPLE), deb822_lines.map(b"".join)))
def test_parse_release_mutated(data: bytes) -> None:
    text = data.decode("latin-1")
    _only_expected(lambda: parse_release(text))
    _only_expected(lambda: extract_signed_text(text))


@FUZZ
@given(st.one_of(st.binary(max_size=2000), mutated(PACKAGES_SAMPLE)))
def test_parse_packages_arbitrary_bytes(data: bytes) -> None:
    _only_expected(lambda: list(parse_packages(data.splitlines(keepends=True))))


@FUZZ
@given(deb822_lines)
def test_parse_packages_structured(lines: list[bytes]) -> None:
    _only_expected(lambda: list(parse_packages(lines)))


@FUZZ
@given(st.one_of(st.binary(max_size=2000), mutated(REPOMD_SAMPLE)))
def test_parse_repomd_arbitrary_bytes(data: bytes) -> None:
    _only_expected(lambda: parse_repomd(data))
    _only_expected(lambda: parse_metalink(data))


@FUZZ
@given(st.one_of(mutated(PRIMARY_SAMPLE), mutated(UPDATEINFO_SAMPLE), st.binary(max_size=500)))
def test_parse_primary_and_updateinfo_mutated(data: bytes) -> None:
    _only_expected(lambda: list(parse_primary(io.BytesIO(data))))
    _only_expected(lambda: list(parse_updateinfo(io.BytesIO(data))))


@FUZZ
@given(st.text(max_size=500))
def test_parse_mirrorlist_arbitrary_text(text: str) -> None:
    _only_expected(lambda: parse_mirrorlist(text))


COMPRESSED = {
    "gz": gzip.compress(PACKAGES_SAMPLE, mtime=0),
    "xz": lzma.compress(PACKAGES_SAMPLE),
}


@FUZZ
@given(
    st.sampled_from(["gz", "xz", "bz2", "zst", "lzma", "plain", "auto"]),
    st.one_of(st.binary(max_size=300), mutated(COMPRESSED["gz"]), mutated(COMPRESSED["xz"])),
)
def test_decompress_arbitrary_bytes(kind: str, data: bytes) -> None:
    _only_expected(lambda: decompress(data, kind, 4096))


# --------------------------------------------------------------- hostile mirror entries
#
HOSTILE = settings(FUZZ, max_examples=150)

# A compromised mirror serves well-formed indexes whose fields are as long (or as odd)
# as it likes. Whatever it serves, what comes out is within patchwatch.domain.limits, every
# entry is either kept or counted as skipped, and the memory a parse takes does not
# follow the field sizes. Sizes are drawn around each bound.

SAFE = "ab1.+~"


def length_near(limit: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([1, limit - 1, limit, limit + 1, 2 * limit]), st.integers(1, 3 * limit)
    )


@st.composite
def field_value(draw: st.DrawFn, limit: int) -> str:
    text = draw(st.text(alphabet=SAFE, min_size=1, max_size=8)) * limit
    text = text[: draw(length_near(limit))]
    if draw(st.integers(0, 9)) == 0:  # now and then a character no database stores
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + "\x00" + text[pos:]
    return text


def within_limits(p: Package) -> bool:
    return (
        0 < len(p.name) <= limits.MAX_PACKAGE_NAME
        and len(p.epoch) <= limits.MAX_EPOCH
        and 0 < len(p.version) <= limits.MAX_VERSION
        and len(p.release) <= limits.MAX_RELEASE
        and 0 < len(p.arch) <= limits.MAX_ARCH
        and not any("\x00" in f for f in (p.name, p.version, p.release, p.arch))
    )


@st.composite
def hostile_stanza(draw: st.DrawFn) -> str:
    version = draw(field_value(limits.MAX_VERSION))
    if draw(st.booleans()):
        version += "-" + draw(field_value(limits.MAX_RELEASE))
    fields = {
        "Package": draw(field_value(limits.MAX_PACKAGE_NAME)),
        "Version": version,
        "Architecture": draw(field_value(limits.MAX_ARCH)),
    }
    if draw(st.booleans()):
        fields["Source"] = draw(field_value(limits.MAX_SOURCE))
    if draw(st.booleans()):
        fields["Filename"] = draw(field_value(limits.MAX_URL))
    return "".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n"


def kept_within_limits_or_counted(
    parse: Callable[[Skipped], Iterable[AvailablePackage]], entries: int
) -> None:
    """Every entry is kept within its bounds or counted as skipped (or the index refused)."""
    skipped = Skipped()
    try:
        packages = [a.package for a in parse(skipped)]
    except EXPECTED:
        return
    assert all(within_limits(p) for p in packages)
    assert len(packages) + skipped.count == entries


@HOSTILE
@given(st.lists(hostile_stanza(), min_size=1, max_size=8))
def test_hostile_packages_entries_are_kept_within_limits_or_counted(stanzas: list[str]) -> None:
    data = "".join(stanzas).encode()
    kept_within_limits_or_counted(
        lambda skipped: parse_packages(read_lines(io.BytesIO(data)), skipped), len(stanzas)
    )


@st.composite
def hostile_rpm_package(draw: st.DrawFn) -> str:
    def attr(limit: int) -> str:
        return draw(field_value(limit)).replace("\x00", "")  # XML cannot carry NUL

    epoch = draw(st.text(alphabet="0123456789", min_size=0, max_size=2 * limits.MAX_EPOCH))
    return (
        f'<package type="rpm"><name>{attr(limits.MAX_PACKAGE_NAME)}</name>'
        f"<arch>{attr(limits.MAX_ARCH)}</arch>"
        f'<version epoch="{epoch}" ver="{attr(limits.MAX_VERSION)}" '
        f'rel="{attr(limits.MAX_RELEASE)}"/><location href="{attr(limits.MAX_URL)}"/>'
        f"<format><rpm:sourcerpm>{attr(limits.MAX_SOURCE)}</rpm:sourcerpm></format></package>"
    )


@HOSTILE
@given(st.lists(hostile_rpm_package(), min_size=1, max_size=8))
def test_hostile_primary_entries_are_kept_within_limits_or_counted(entries: list[str]) -> None:
    data = (
        '<metadata xmlns="http://linux.duke.edu/metadata/common" '
        'xmlns:rpm="http://linux.duke.edu/metadata/rpm">' + "".join(entries) + "</metadata>"
    ).encode()
    kept_within_limits_or_counted(
        lambda skipped: parse_primary(io.BytesIO(data), skipped), len(entries)
    )


@st.composite
def hostile_update(draw: st.DrawFn) -> str:
    def text(limit: int) -> str:
        return draw(field_value(limit)).replace("\x00", "")

    cves = draw(st.integers(0, 3))
    refs = "".join(f'<reference type="cve" id="{text(limits.MAX_CVE)}"/>' for _ in range(cves))
    pkgs = "".join(
        f'<package name="{text(limits.MAX_PACKAGE_NAME)}" version="{text(limits.MAX_VERSION)}" '
        f'release="{text(limits.MAX_RELEASE)}" arch="{text(limits.MAX_ARCH)}"/>'
        for _ in range(draw(st.integers(0, 3)))
    )
    return (
        f'<update type="{text(limits.MAX_ADVISORY_TYPE)}"><id>{text(limits.MAX_ADVISORY_ID)}</id>'
        f"<title>{text(limits.MAX_ADVISORY_TITLE)}</title>"
        f"<severity>{text(limits.MAX_ADVISORY_SEVERITY)}</severity>"
        f'<issued date="{text(limits.MAX_ADVISORY_ISSUED)}"/><references>{refs}</references>'
        f"<pkglist><collection>{pkgs}</collection></pkglist></update>"
    )


@HOSTILE
@given(st.lists(hostile_update(), min_size=1, max_size=5))
def test_hostile_updateinfo_entries_are_kept_within_limits_or_counted(entries: list[str]) -> None:
    data = ("<updates>" + "".join(entries) + "</updates>").encode()
    skipped = Skipped()
    try:
        advisories = list(parse_updateinfo(io.BytesIO(data), skipped))
    except EXPECTED:
        return
    assert len(advisories) + skipped.count == len(entries)
    for adv in advisories:
        assert len(adv.id) <= limits.MAX_ADVISORY_ID and len(adv.type) <= limits.MAX_ADVISORY_TYPE
        assert len(adv.title) <= limits.MAX_ADVISORY_TITLE
        assert len(adv.severity) <= limits.MAX_ADVISORY_SEVERITY
        assert len(adv.issued) <= limits.MAX_ADVISORY_ISSUED
        assert all(len(c) <= limits.MAX_CVE for c in adv.cves)
        assert all(within_limits(p) for p in adv.packages)


@settings(max_examples=20, deadline=None, database=None)
@given(
    packages=st.integers(0, 3000),
    name_bytes=st.integers(1, 3 << 20),
    provides=st.integers(0, 3000),
    where=st.floats(0, 1),
)
def test_hostile_primary_parses_in_bounded_memory(
    packages: int, name_bytes: int, provides: int, where: float
) -> None:
    """Thousands of packages, one name of megabytes, one entry of thousands of elements.

    Memory is bounded by the largest entry, not by the document: a few times the
    hostile name at most, whatever the package count. The XML is made as it is read.
    """
    head = (
        b'<metadata xmlns="http://linux.duke.edu/metadata/common" '
        b'xmlns:rpm="http://linux.duke.edu/metadata/rpm">'
    )
    plain = (
        b'<package type="rpm"><name>p</name><arch>noarch</arch>'
        b'<version epoch="0" ver="1" rel="1"/></package>'
    )
    hostile = (
        b'<package type="rpm"><name>' + b"n" * name_bytes + b"</name><arch>noarch</arch>"
        b'<version epoch="0" ver="1" rel="1"/><format><rpm:provides>'
        + b'<rpm:entry name="x"/>' * provides
        + b"</rpm:provides></format></package>"
    )
    before = int(packages * where)

    def chunks() -> Iterator[bytes]:
        yield head
        yield plain * before
        yield hostile
        yield plain * (packages - before)
        yield b"</metadata>"

    def parse() -> None:
        skipped = Skipped()
        count = sum(1 for _ in parse_primary(ChunkStream(chunks()), skipped))
        assert count + skipped.count == packages + 1

    assert peak_memory(parse) < 4 * name_bytes + 4 * (1 << 20)
