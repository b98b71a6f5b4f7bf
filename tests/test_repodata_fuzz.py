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
from pathlib import Path

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.errors import ParseError
from patchwatch.errors import TooLargeError
from patchwatch.repodata.apt import extract_signed_text
from patchwatch.repodata.apt import parse_packages
from patchwatch.repodata.apt import parse_release
from patchwatch.repodata.compression import decompress
from patchwatch.repodata.rpmmd import parse_metalink
from patchwatch.repodata.rpmmd import parse_mirrorlist
from patchwatch.repodata.rpmmd import parse_primary
from patchwatch.repodata.rpmmd import parse_repomd
from patchwatch.repodata.rpmmd import parse_updateinfo

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


@st.composite
def mutated(draw: st.DrawFn, sample: bytes) -> bytes:
    """A sample with a few bytes replaced, inserted or deleted, or cut short."""
    data = bytearray(sample)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif action == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b":", b"\n", b" ", b"\n\n", b"<", b"&", b"\xff", b"-", b"\r"])
            )
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        else:
            del data[pos:]
    return bytes(data)


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
