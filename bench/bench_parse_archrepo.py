"""Benchmark: parse realistic generated Arch and Alpine repository indexes.

Usage:
    python bench/bench_parse_archrepo.py [--arch N] [--alpine N] [--repeat R]

Generates, in memory, a pacman database of N packages (default 15,000: Arch's core +
extra for x86_64) as repo-add writes it (one ``NAME-VERSION/`` directory member and a
``desc`` of the usual sections, descriptions, dependencies and checksums included, in
gzip and in zstd), and an APKINDEX.tar.gz of N stanzas (default 25,000: Alpine main +
community for x86_64) with all the fields Alpine writes, signed-shaped (a signature
member, then the index member). Each is parsed R times (default 3) and the best time is
printed, with the compressed size and the package count. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backports.zstd import compress as zstd_compress  # noqa: E402

from patchwatch.domain.repodata.alpm import parse_alpm_db  # noqa: E402
from patchwatch.domain.repodata.apkindex import parse_apkindex  # noqa: E402

LIMIT = 512 << 20


def _tar(members: list[tuple[str, bytes | None]], cut: bool = False) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1767225600
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    raw = out.getvalue()
    if cut:  # a tar segment: header and data only
        size = len(members[0][1] or b"")
        raw = raw[: 512 + -(-size // 512) * 512]
    return raw


def arch_db(count: int) -> bytes:
    """An uncompressed pacman database of ``count`` packages (a tar)."""
    members: list[tuple[str, bytes | None]] = []
    for i in range(count):
        name = f"pkg{i:05d}-{['lib', 'python', 'perl', 'tools'][i % 4]}"
        epoch = "1:" if i % 17 == 0 else ""
        version = f"{epoch}{i % 9}.{i % 31}.{i % 7}-{1 + i % 3}"
        arch = "any" if i % 5 == 0 else "x86_64"
        base = name if i % 6 else f"pkgbase{i // 6}"
        digest = hashlib.sha256(name.encode()).hexdigest()
        deps = "\n".join(f"dep{(i * 7 + j) % 3000}>=1.{j}" for j in range(i % 12))
        fields = [
            ("FILENAME", f"{name}-{version}-{arch}.pkg.tar.zst"),
            ("NAME", name),
            ("BASE", base),
            ("VERSION", version),
            ("DESC", f"A realistic description of package number {i} for the benchmark"),
            ("GROUPS", "base-devel") if i % 40 == 0 else ("CSIZE", str(100_000 + i)),
            ("CSIZE", str(100_000 + i)) if i % 40 == 0 else ("ISIZE", str(400_000 + i)),
            ("MD5SUM", hashlib.md5(name.encode()).hexdigest()),
            ("SHA256SUM", digest),
            ("PGPSIG", base64.b64encode(hashlib.sha512(name.encode()).digest() * 5).decode()),
            ("URL", f"https://example.invalid/{name}"),
            ("LICENSE", "GPL-3.0-or-later"),
            ("ARCH", arch),
            ("BUILDDATE", str(1767225600 + i)),
            ("PACKAGER", "Arch Packager <packager@example.invalid>"),
        ]
        if deps:
            fields.append(("DEPENDS", deps))
        desc = "".join(f"%{k}%\n{v}\n\n" for k, v in fields).encode()
        directory = f"{name}-{version}"
        members += [(directory, None), (f"{directory}/desc", desc)]
    return _tar(members)


def apkindex(count: int) -> bytes:
    """A signed-shaped APKINDEX.tar.gz of ``count`` stanzas."""
    stanzas = []
    for i in range(count):
        name = f"apk{i:05d}-{['dev', 'doc', 'libs', 'openrc', 'pyc'][i % 5]}"
        checksum = "Q1" + base64.b64encode(hashlib.sha1(name.encode()).digest()).decode()
        deps = " ".join(f"so:libdep{(i + j) % 900}.so.{j}" for j in range(i % 8))
        stanza = (
            f"C:{checksum}\nP:{name}\nV:{i % 9}.{i % 23}.{i % 5}-r{i % 4}\nA:x86_64\n"
            f"S:{50_000 + i}\nI:{200_000 + i}\nT:Description of the package number {i}\n"
            f"U:https://example.invalid/{name}\nL:MIT\no:origin{i // 3}\n"
            f"m:Maintainer <m@example.invalid>\nt:{1767225600 + i}\n"
            f"c:{hashlib.sha1(str(i).encode()).hexdigest()}\n"
        )
        if deps:
            stanza += f"D:{deps}\n"
        stanza += f"p:so:lib{name}.so.1=1 cmd:{name}={i % 9}\n"
        stanzas.append(stanza)
    index_tar = _tar([("DESCRIPTION", b"v3.21.0-1000-gabcdef\n"),
                      ("APKINDEX", "\n".join(stanzas).encode() + b"\n")])  # fmt: skip
    signature = gzip.compress(_tar([(".SIGN.RSA.bench.rsa.pub", b"s" * 512)], cut=True), mtime=0)
    return signature + gzip.compress(index_tar, compresslevel=9, mtime=0)


def _best(repeat: int, call: object) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = call()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", type=int, default=15_000)
    parser.add_argument("--alpine", type=int, default=25_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tar = arch_db(args.arch)
    for kind, blob in (("gz", gzip.compress(tar, mtime=0)), ("zst", zstd_compress(tar))):
        seconds, count = _best(
            args.repeat, lambda blob=blob: sum(1 for _ in parse_alpm_db(io.BytesIO(blob), LIMIT))
        )
        print(f"pacman db ({kind}): {count} packages, {len(blob):,} B compressed,"
              f" {len(tar):,} B tar: {seconds:.3f} s")  # fmt: skip
    blob = apkindex(args.alpine)
    seconds, count = _best(args.repeat, lambda: len(parse_apkindex(blob, LIMIT).packages))
    print(f"APKINDEX.tar.gz: {count} packages, {len(blob):,} B: {seconds:.3f} s")


if __name__ == "__main__":
    main()
