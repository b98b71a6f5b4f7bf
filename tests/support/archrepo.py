"""Builders of pacman databases and APKINDEX.tar.gz archives for the parser tests.

Written with the stdlib's tarfile and gzip, independent of the parsers under test. The
APKINDEX layout is the reference here, since no apk tool runs on Debian: as Alpine's
documentation of the format and ``abuild-sign`` describe it, a gzip member holding a tar
segment (the signature file's header and data, the end-of-archive blocks cut off),
followed by a gzip member holding the tar of ``DESCRIPTION`` and ``APKINDEX``; the
signature (RSA PKCS#1 v1.5, made by the real ``openssl dgst -sign`` where the tests use
one) covers the second member's compressed bytes.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path


def tar_bytes(members: Iterable[tuple[str, bytes] | tarfile.TarInfo]) -> bytes:
    """A tar archive (ustar, end-of-archive blocks included) of ``(name, data)`` files.

    A TarInfo given as is adds a member with no data (a link, a device, a directory).
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1767225600
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    """A tar member that is a symbolic link (or, by ``kind``, a hard link or device)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def tar_segment(name: str, data: bytes) -> bytes:
    """One file as a tar segment: its header and padded data, no end-of-archive blocks."""
    whole = tar_bytes([(name, data)])
    return whole[: 512 + -(-len(data) // 512) * 512]


def gz(data: bytes) -> bytes:
    """gzip as abuild does it: a single member, no file name, mtime 0."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def index_member(apkindex: bytes, description: bytes = b"v3.20.3\n") -> bytes:
    """The second gzip member of APKINDEX.tar.gz: DESCRIPTION and APKINDEX in a tar."""
    return gz(tar_bytes([("DESCRIPTION", description), ("APKINDEX", apkindex)]))


def openssl_sign(key: Path, data: bytes, digest: str) -> bytes:
    """Sign ``data`` with the real openssl, as abuild-sign does (PKCS#1 v1.5)."""
    done = subprocess.run(
        ["openssl", "dgst", f"-{digest}", "-sign", str(key)],
        input=data,
        capture_output=True,
        check=True,
    )
    return done.stdout


def signed_index(
    index: bytes, signature: bytes, key_name: str, prefix: str = ".SIGN.RSA."
) -> bytes:
    """APKINDEX.tar.gz: the signature segment's gzip member, then the index member."""
    return gz(tar_segment(prefix + key_name, signature)) + index


def pacman_desc(
    name: str, version: str, arch: str = "x86_64", base: str = "", **extra: str
) -> bytes:
    """A ``desc`` in repo-add's layout (field order and blank lines as it writes them)."""
    fields = [("FILENAME", f"{name}-{version}-{arch}.pkg.tar.zst"), ("NAME", name)]
    fields.append(("BASE", base or name))
    fields += [("VERSION", version), ("DESC", f"{name} (test)"), ("CSIZE", "1234")]
    fields += [("ISIZE", "4096"), ("SHA256SUM", "ab" * 32), ("ARCH", arch)]
    fields += [(key, value) for key, value in extra.items()]
    return "".join(f"%{key}%\n{value}\n\n" for key, value in fields).encode()


def pacman_db(entries: Iterable[tuple[str, bytes] | tarfile.TarInfo]) -> bytes:
    """A gzip-compressed pacman database of the given members."""
    return gzip.compress(tar_bytes(entries), mtime=0)
