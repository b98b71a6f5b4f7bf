"""Archives of records: zip, tarball and folder give the same feed; hostile members are refused.

The AlmaLinux snapshot is repacked as osv.dev ships feeds (a zip) and unpacked as a
checkout (a folder), and all three must give the same records. Hostile archives are
built with the standard library's own writers, then bent where needed (a lying size).
"""

from __future__ import annotations

import io
import lzma
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.vulns import archive
from patchwatch.domain.vulns.archive import ArchiveLimits
from patchwatch.domain.vulns.model import FeedStats
from tests.support.vulns import ALMALINUX
from tests.support.vulns import FIXTURES

RECORD = (FIXTURES / "debian" / "DSA-5514-1.json").read_bytes()


DEFAULT = ArchiveLimits()


def members(source: Path, limits: ArchiveLimits = DEFAULT) -> tuple[list, FeedStats]:
    stats = FeedStats()
    return list(archive.iter_members(source, stats, limits)), stats


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def make_tar(
    path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w"
) -> Path:
    with tarfile.open(path, mode) as t:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                t.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


def test_zip_tarball_and_folder_of_one_feed_agree(tmp_path: Path) -> None:
    """The real feed repacked as osv.dev ships it (zip) and as a checkout (folder)."""
    folder = tmp_path / "checkout"
    zipped = tmp_path / "all.zip"
    with (
        tarfile.open(ALMALINUX, "r|xz") as t,
        zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z,
    ):
        for info in t:
            f = t.extractfile(info) if info.isfile() else None
            if f is None:
                continue
            data = f.read()
            z.writestr(info.name, data)
            (folder / info.name).parent.mkdir(parents=True, exist_ok=True)
            (folder / info.name).write_bytes(data)
    seen = {}
    for source in (ALMALINUX, zipped, folder):
        got, stats = members(source)
        seen[source] = sorted(got)
        assert stats.skipped_total == 0 and stats.ignored == 1
    assert seen[ALMALINUX] == seen[zipped] == seen[folder]
    assert len(seen[folder]) == 5680


def test_plain_and_gzip_tarballs_are_read(tmp_path: Path) -> None:
    for mode, name in (("w", "feed.tar"), ("w:gz", "feed.tar.gz"), ("w:bz2", "feed.tbz")):
        got, _ = members(make_tar(tmp_path / name, [("a/DSA-5514-1.json", RECORD)], mode))
        assert got == [("a/DSA-5514-1.json", RECORD)], name


TRAVERSAL = ["../evil.json", "/etc/evil.json", "a/../../evil.json", "a\\..\\evil.json",
             "C:/evil.json", "a/\x1bevil.json"]  # fmt: skip


def test_zip_paths_that_escape_are_skipped(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("link.json")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = [(n, RECORD) for n in TRAVERSAL]
    entries += [(link, b"/etc/passwd"), ("ok/DSA-5514-1.json", RECORD), ("README", b"hi")]
    got, stats = members(make_zip(tmp_path / "x.zip", entries))
    assert [name for name, _ in got] == ["ok/DSA-5514-1.json"]
    assert stats.skipped == {"path": len(TRAVERSAL) + 1}
    assert stats.ignored == 1


def test_tar_links_devices_and_escapes_are_skipped(tmp_path: Path) -> None:
    specials = []
    for name, kind in (("sym.json", tarfile.SYMTYPE), ("hard.json", tarfile.LNKTYPE),
                       ("dev.json", tarfile.CHRTYPE), ("fifo.json", tarfile.FIFOTYPE)):  # fmt: skip
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = "/etc/passwd"
        specials.append(info)
    entries = [*specials, *((n, RECORD) for n in TRAVERSAL), ("ok.json", RECORD)]
    got, stats = members(make_tar(tmp_path / "x.tar", entries))
    assert [name for name, _ in got] == ["ok.json"]
    assert stats.skipped == {"path": len(specials) + len(TRAVERSAL)}


def test_folder_symlinks_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(RECORD)
    feed = tmp_path / "feed"
    (feed / "sub").mkdir(parents=True)
    (feed / "sub" / "DSA-5514-1.json").write_bytes(RECORD)
    (feed / "link.json").symlink_to(outside / "secret.json")
    (feed / "linkdir").symlink_to(outside, target_is_directory=True)
    (feed / ".git").mkdir()
    (feed / ".git" / "x.json").write_bytes(RECORD)
    got, stats = members(feed)
    assert [name for name, _ in got] == ["sub/DSA-5514-1.json"]
    assert stats.skipped == {"path": 2}  # the file link and the folder link, not entered


def test_a_member_above_its_limit_is_skipped_without_decompressing_it(tmp_path: Path) -> None:
    bomb = b"0" * (8 << 20)  # 8 MB that deflate packs into about 8 kB
    source = make_zip(tmp_path / "b.zip", [("bomb.json", bomb), ("ok.json", RECORD)])
    assert source.stat().st_size < 50_000
    got, stats = members(source, ArchiveLimits(max_member_bytes=1 << 20))
    assert [name for name, _ in got] == ["ok.json"]
    assert stats.skipped == {"size": 1}
    tar = make_tar(tmp_path / "b.tar.xz", [("bomb.json", bomb), ("ok.json", RECORD)], "w:xz")
    got, stats = members(tar, ArchiveLimits(max_member_bytes=1 << 20))
    assert [name for name, _ in got] == ["ok.json"]
    assert stats.skipped == {"size": 1}


def _patch_sizes(data: bytes, size: int) -> bytes:
    """Make every zip header claim ``size`` uncompressed bytes (a lying archive)."""
    out = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = out.find(sig)
        while at >= 0:
            out[at + offset : at + offset + 4] = struct.pack("<I", size)
            at = out.find(sig, at + 4)
    return bytes(out)


def test_a_zip_that_lies_about_sizes_is_not_trusted(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "lie.zip", [("bomb.json", b"0" * (5 << 20))])
    source.write_bytes(_patch_sizes(source.read_bytes(), 100))
    got, stats = members(source)
    assert got == []
    assert stats.skipped == {"corrupt": 1}


@pytest.mark.parametrize("kind", ["zip", "tar.xz", "folder"])
def test_an_archive_above_its_total_is_refused_whole(kind: str, tmp_path: Path) -> None:
    entries = [(f"r{n}.json", RECORD) for n in range(10)]
    if kind == "zip":
        source = make_zip(tmp_path / "a.zip", entries)
    elif kind == "tar.xz":
        source = make_tar(tmp_path / "a.tar.xz", entries, "w:xz")
    else:
        source = tmp_path / "feed"
        source.mkdir()
        for name, data in entries:
            (source / name).write_bytes(data)
    with pytest.raises(TooLargeError):
        members(source, ArchiveLimits(max_total_bytes=5 * len(RECORD)))
    with pytest.raises(TooLargeError):
        members(source, ArchiveLimits(max_members=9))
    got, _ = members(
        source, ArchiveLimits(max_members=10, max_total_bytes=10 * len(RECORD) + 65_536)
    )
    assert len(got) == 10


def test_a_tar_bomb_stops_at_the_total(tmp_path: Path) -> None:
    """Decompression stops at the limit: the bomb is never expanded in full."""
    info = tarfile.TarInfo("huge.bin")
    info.size = 64 << 20
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        t.addfile(info, io.BytesIO(bytes(info.size)))
    source = tmp_path / "bomb.tar.xz"
    source.write_bytes(lzma.compress(raw.getvalue(), preset=0))
    assert source.stat().st_size < 1 << 20
    with pytest.raises(TooLargeError):
        members(source, ArchiveLimits(max_total_bytes=8 << 20))


def test_what_is_no_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "feed.json").write_bytes(RECORD)
    with pytest.raises(ParseError):
        members(tmp_path / "feed.json")
    (tmp_path / "cut.tar.xz").write_bytes(ALMALINUX.read_bytes()[:300_000])
    with pytest.raises(ParseError):
        members(tmp_path / "cut.tar.xz")
    with pytest.raises(FileNotFoundError):
        members(tmp_path / "missing-folder" / "x")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=2000), st.sampled_from(["zip", "tar"]))
def test_random_bytes_give_a_clear_error_or_nothing(data: bytes, kind: str) -> None:
    stats = FeedStats()
    prefix = b"PK\x03\x04" if kind == "zip" else b""
    reader = archive.iter_zip if kind == "zip" else archive.iter_tar
    try:
        list(reader(io.BytesIO(prefix + data), stats))
    except (ParseError, TooLargeError):
        pass


def _packed(kind: str) -> bytes:
    entries = [(f"a{n}.json", RECORD) for n in range(3)]
    out = io.BytesIO()
    if kind.startswith("zip"):
        method = {"zip": zipfile.ZIP_DEFLATED, "zip-bz2": zipfile.ZIP_BZIP2,
                  "zip-lzma": zipfile.ZIP_LZMA, "zip-stored": zipfile.ZIP_STORED}[kind]  # fmt: skip
        with zipfile.ZipFile(out, "w", method) as z:
            for name, data in entries:
                z.writestr(name, data)
    else:
        with tarfile.open(fileobj=out, mode=kind) as t:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


PACKED = {k: _packed(k) for k in ("zip", "zip-bz2", "zip-lzma", "zip-stored", "w", "w:gz", "w:xz")}


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(PACKED)),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1,
             max_size=5),
)  # fmt: skip
def test_damaged_archives_give_a_clear_error_or_skip_members(kind: str, flips: list) -> None:
    """Bytes flipped anywhere in a real archive: ParseError, TooLargeError, or members skipped.

    This found zipfile raising zlib.error, NotImplementedError (a version field) and
    RuntimeError (an "encrypted" flag) on damaged members.
    """
    data = bytearray(PACKED[kind])
    for where, value in flips:
        data[int(where * len(data))] = value
    stats = FeedStats()
    reader = archive.iter_zip if kind.startswith("zip") else archive.iter_tar
    try:
        got = list(reader(io.BytesIO(bytes(data)), stats))
    except (ParseError, TooLargeError):
        return
    assert len(got) + stats.skipped_total + stats.ignored <= 3


def test_folder_members_are_sorted(tmp_path: Path) -> None:
    for name in ("b.json", "a.json", "c/a.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(RECORD)
    got, _ = members(tmp_path)
    assert [n for n, _ in got] == ["a.json", "b.json", "c/a.json"]
