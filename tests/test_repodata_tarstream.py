"""The bounded tar reader against Python's tarfile and the real bsdtar.

Archives are written by tarfile (GNU, pax and ustar formats) and by bsdtar (what
repo-add uses), with what mirrors' archives hold and what hostile ones could: long names
(GNU ``L`` records, pax ``path``, the ustar prefix), directories, symbolic and hard
links, devices, FIFOs, non-ASCII names, empty files and a file of exactly one block.
Python's tarfile, reading the same bytes as a stream, is the reference for every
member's name, kind, size and bytes; corrupt and truncated archives must fail with
ParseError.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import ParseError
from patchwatch.domain.repodata.tarstream import iter_members

LONG = "pkg-" + "x" * 120 + "-1.0-1/desc"
PREFIXED = "a" * 90 + "/" + "b" * 60 + "/desc"  # fits ustar's prefix + name


def reference(data: bytes, max_member: int = 1 << 20) -> list[tuple[str, str, int, bytes | None]]:
    """What tarfile reads, under the reader's policy (regular files only, bounded)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
        for info in archive:
            if info.isreg():
                if info.size > max_member:
                    out.append((info.name, "oversized", info.size, None))
                    continue
                handle = archive.extractfile(info)
                assert handle is not None
                out.append((info.name, "file", info.size, handle.read()))
            else:
                kind = (
                    "directory" if info.isdir() else "symlink" if info.issym()
                    else "link" if info.islnk() else "device" if info.ischr() or info.isblk()
                    else "fifo" if info.isfifo() else "other"
                )  # fmt: skip
                out.append((info.name, kind, 0, None))
    return out


def ours(data: bytes, max_member: int = 1 << 20) -> list[tuple[str, str, int, bytes | None]]:
    return [
        (m.name, m.kind, m.size, m.data)
        for m in iter_members(io.BytesIO(data), None, max_member, "test")
    ]


def build(fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:

        def add(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE,
                link: str = "") -> None:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mtime = 1767225600
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)

        add("hello-1.1-1", kind=tarfile.DIRTYPE)
        add("hello-1.1-1/desc", b"%NAME%\nhello\n\n")
        add("empty-1-1/desc", b"")
        add("block-1-1/desc", b"b" * 512)
        add("big-1-1/desc", b"c" * 5000)
        add("evil-1-1/desc", kind=tarfile.SYMTYPE, link="/etc/shadow")
        add("hard-1-1/desc", kind=tarfile.LNKTYPE, link="hello-1.1-1/desc")
        add("dev-1-1/desc", kind=tarfile.CHRTYPE)
        add("fifo-1-1/desc", kind=tarfile.FIFOTYPE)
        add(PREFIXED, b"prefixed")
        if fmt != tarfile.USTAR_FORMAT:  # ustar cannot say these
            add(LONG, b"long")
            add("caf\u00e9-1-1/desc", b"unicode")
    return out.getvalue()


@pytest.mark.parametrize(
    "fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT],
    ids=["gnu", "pax", "ustar"],
)  # fmt: skip
def test_members_equal_what_tarfile_reads(fmt: int) -> None:
    data = build(fmt)
    assert ours(data) == reference(data)
    assert ours(data, max_member=1000) == reference(data, max_member=1000)


@pytest.mark.parametrize("fmt", ["ustar", "pax", "gnutar"])
def test_members_of_bsdtar_archives_equal_what_tarfile_reads(tmp_path: Path, fmt: str) -> None:
    if shutil.which("bsdtar") is None:
        if os.environ.get("PATCHWATCH_TEST_REQUIRE_ORACLES") == "1":
            pytest.fail("bsdtar not installed (apt-get install libarchive-tools)")
        pytest.skip("bsdtar not installed (apt-get install libarchive-tools)")
    top = tmp_path / "db"
    (top / "hello-1.1-1").mkdir(parents=True)
    (top / "hello-1.1-1" / "desc").write_bytes(b"%NAME%\nhello\n\n%VERSION%\n1.1-1\n\n")
    (top / ("n" * 110 + "-1-1")).mkdir()
    (top / ("n" * 110 + "-1-1") / "desc").write_bytes(b"%NAME%\nlong\n\n")
    (top / "link-1-1").symlink_to("hello-1.1-1")
    archive = tmp_path / "db.tar"
    subprocess.run(["bsdtar", "--format", fmt, "-cf", str(archive), "-C", str(top), "."],
                   check=True, capture_output=True)  # fmt: skip
    data = archive.read_bytes()
    assert ours(data) == reference(data)
    assert any(name.endswith("desc") and len(name) > 100 for name, *_ in ours(data))


def test_a_segment_without_end_blocks_ends_at_a_header_boundary() -> None:
    whole = build(tarfile.GNU_FORMAT)
    first = ours(whole)[:2]
    segment = whole[: 512 + 512 + 512]  # the directory's header, the desc's header and data
    assert ours(segment) == first


@pytest.mark.parametrize(
    "cut", [100, 512 + 100, 512 + 512 + 10], ids=["header", "next-header", "data"]
)
def test_truncated_archives_fail(cut: int) -> None:
    data = build(tarfile.GNU_FORMAT)[:cut]
    with pytest.raises(ParseError):
        ours(data)


def test_bad_checksum_and_not_a_tar_fail() -> None:
    data = bytearray(build(tarfile.GNU_FORMAT))
    data[10] ^= 0x01  # the first name, under its checksum
    with pytest.raises(ParseError, match="not a tar archive"):
        ours(bytes(data))
    with pytest.raises(ParseError, match="not a tar archive"):
        ours(b"this is not a tar archive" * 40)


def test_oversized_extension_header_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("x" * 70_000)
        archive.addfile(info, io.BytesIO(b""))
    with pytest.raises(ParseError, match="extension header"):
        ours(out.getvalue())


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=4000), st.integers(0, 6000))
def test_random_damage_fails_only_with_parse_error(noise: bytes, at: int) -> None:
    data = bytearray(build(tarfile.PAX_FORMAT))
    at = min(at, len(data))
    data[at : at + len(noise)] = noise
    try:
        ours(bytes(data))
    except ParseError:
        pass
