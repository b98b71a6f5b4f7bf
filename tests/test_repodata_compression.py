"""Bounded decompression: every format round-trips, and bad input fails as a domain error.

The data is bookworm-updates' real Packages index (from the fixture .xz), so the
round-trips run on the kind of text the refresh really decompresses.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from backports.zstd import compress as zstd_compress

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.repodata.compression import compute_kind
from patchwatch.domain.repodata.compression import decompress
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.compression import sniff_kind

FIXTURES = Path(__file__).parent / "fixtures"
UPDATES_XZ = FIXTURES / "apt" / "Packages.xz-bookworm-updates-main-amd64"
MIB = 1 << 20

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gz": lambda b: gzip.compress(b, mtime=0),
    "xz": lzma.compress,
    "bz2": bz2.compress,
    "zst": zstd_compress,
    "lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
    "plain": lambda b: b,
}
STREAM_KINDS = ("gz", "xz", "bz2", "zst")  # formats with an end marker and multi-member support


@pytest.fixture(scope="module")
def packages_text() -> bytes:
    return lzma.decompress(UPDATES_XZ.read_bytes())


def test_fixture_is_the_real_index(packages_text: bytes) -> None:
    assert len(packages_text) == 32757  # as this-machine.md §3 measured for bookworm-updates
    assert packages_text.count(b"\nPackage: ") + packages_text.startswith(b"Package: ") == 38


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_round_trip_whole_and_streamed(kind: str, packages_text: bytes) -> None:
    blob = COMPRESSORS[kind](packages_text)
    assert decompress(blob, kind, len(packages_text)) == packages_text
    assert decompress(blob, f"dists/x/main/binary-amd64/Packages.{kind}", 10 * MIB) == (
        packages_text
    )
    with open_decompressed(io.BytesIO(blob), kind, 10 * MIB) as reader:
        lines = list(reader)
    assert b"".join(lines) == packages_text
    assert lines[0].startswith(b"Package: ")
    assert all(line.endswith(b"\n") for line in lines)


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zst", "plain"])
def test_auto_sniffs_magic_numbers(kind: str, packages_text: bytes) -> None:
    blob = COMPRESSORS[kind](packages_text)
    assert sniff_kind(blob[:6]) == kind
    assert decompress(blob, "auto", 10 * MIB) == packages_text
    with open_decompressed(io.BytesIO(blob), "auto", 10 * MIB) as reader:
        assert reader.read() == packages_text


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("xz", "xz"),
        ("GZIP", "gz"),
        ("zstd", "zst"),
        ("none", "plain"),
        ("", "plain"),
        ("main/binary-amd64/Packages.xz", "xz"),
        ("main/binary-amd64/Packages.bz2", "bz2"),
        ("main/binary-amd64/Packages", "plain"),
        ("repodata/0f3a-primary.xml.zst", "zst"),
        ("repodata/0f3a-primary.xml.gz", "gz"),
        ("repodata/repomd.xml", "plain"),
        ("https://m.example/repodata/x-updateinfo.xml.xz?token=1", "xz"),
        ("main/binary-amd64/by-hash/SHA256/9e0b5aab", "plain"),
        ("dists/x.y/Packages", "plain"),
    ],
)
def test_compute_kind(name: str, kind: str) -> None:
    assert compute_kind(name) == kind


def test_unsupported_suffix_is_refused() -> None:
    with pytest.raises(ParseError, match=r"unsupported compression '\.lz4'"):
        compute_kind("main/binary-amd64/Packages.lz4")


def test_exact_limit_is_allowed_one_byte_less_is_not(packages_text: bytes) -> None:
    blob = COMPRESSORS["xz"](packages_text)
    assert len(decompress(blob, "xz", len(packages_text))) == len(packages_text)
    with pytest.raises(TooLargeError, match=f"limit of {len(packages_text) - 1} bytes"):
        decompress(blob, "xz", len(packages_text) - 1)
    with pytest.raises(TooLargeError, match="plain data"):
        decompress(packages_text, "plain", 100)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_truncated_input_is_a_parse_error_naming_file_and_format(
    kind: str, packages_text: bytes
) -> None:
    blob = COMPRESSORS[kind](packages_text)
    for cut in (len(blob) // 2, len(blob) - 1):
        with pytest.raises(ParseError, match=f"truncated {kind} data") as info:
            decompress(blob[:cut], f"main/binary-amd64/Packages.{kind}", 10 * MIB)
        assert info.value.where == f"main/binary-amd64/Packages.{kind}"


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_corrupt_input_is_a_parse_error(kind: str, packages_text: bytes) -> None:
    blob = bytearray(COMPRESSORS[kind](packages_text))
    # Corrupt the magic number (zstd frames carry no checksum by default, so a flipped
    # payload byte may decode to other text; a bad header never does).
    blob[1] ^= 0xFF
    with pytest.raises(ParseError, match=f"(corrupt|truncated) {kind} data"):
        decompress(bytes(blob), kind, 10 * MIB)
    with pytest.raises(ParseError, match=f"corrupt {kind} data"):
        decompress(b"this is not compressed at all", kind, 10 * MIB)


def test_corrupt_gzip_payload_fails_its_crc(packages_text: bytes) -> None:
    blob = bytearray(COMPRESSORS["gz"](packages_text))
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(ParseError, match="corrupt gz data"):
        decompress(bytes(blob), "gz", 10 * MIB)


def _bomb(kind: str, size: int) -> bytes:
    """A stream of ``size`` zero bytes, built as concatenated 1 MiB members (cheap to make)."""
    member = COMPRESSORS[kind](b"\0" * MIB)
    return member * (size // MIB)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_bomb_stops_at_the_limit_without_allocating_the_output(kind: str) -> None:
    bomb = _bomb(kind, 1 << 30)  # 1 GiB of output
    assert len(bomb) < 2 * MIB
    source = io.BytesIO(bomb)
    tracemalloc.start()
    try:
        limit = f"more than the limit of {MIB} bytes"
        with pytest.raises(TooLargeError, match=limit), open_decompressed(source, kind, MIB) as r:
            while r.read(MIB):  # what decompress() does
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # stopped at the limit: most of the input was never even read, let alone expanded
    assert source.tell() < len(bomb) // 4, f"read {source.tell()} of {len(bomb)} bytes"
    # The limit, one read chunk, and the decoder's own state (xz: its 8 MiB dictionary);
    # nowhere near the 1 GiB the bomb expands to.
    assert peak < 16 * MIB, f"peak {peak} bytes for a 1 MiB limit"


def test_single_stream_xz_bomb_streamed_line_by_line() -> None:
    bomb = lzma.compress(b"\n" * (64 * MIB), preset=1)
    assert len(bomb) < MIB
    lines = 0
    with (
        pytest.raises(TooLargeError),
        open_decompressed(io.BytesIO(bomb), "xz", MIB) as reader,
    ):
        for _ in reader:
            lines += 1
    assert lines <= MIB


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_concatenated_members_are_read_in_full(kind: str) -> None:
    blob = COMPRESSORS[kind](b"first\n") + COMPRESSORS[kind](b"second\n")
    assert decompress(blob, kind, 100) == b"first\nsecond\n"


class _FailingSource(io.RawIOBase):
    """A file object that fails like a dropped connection after some bytes."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        self._data = io.BytesIO(data)
        self._left = fail_after

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            raise ConnectionResetError("connection reset by peer")
        chunk = self._data.read(min(size if size >= 0 else self._left, self._left))
        self._left -= len(chunk)
        return chunk


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zst", "plain"])
def test_errors_of_the_source_pass_through_unchanged(kind: str, packages_text: bytes) -> None:
    blob = COMPRESSORS[kind](packages_text)
    source = _FailingSource(blob, len(blob) // 3)
    with pytest.raises(ConnectionResetError), open_decompressed(source, kind, 10 * MIB) as reader:
        reader.read()


def test_closing_the_reader_leaves_the_callers_file_open(packages_text: bytes) -> None:
    fileobj = io.BytesIO(COMPRESSORS["gz"](packages_text))
    with open_decompressed(fileobj, "gz", 10 * MIB) as reader:
        reader.read(10)
    assert not fileobj.closed


def test_negative_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="limit"):
        open_decompressed(io.BytesIO(b""), "plain", -1)
