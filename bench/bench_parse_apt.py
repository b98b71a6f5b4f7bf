"""Benchmark: decompress and parse a real Packages.xz with patchwatch and with python-debian.

Usage:
    python bench/bench_parse_apt.py [PATH/TO/Packages.xz] [--repeat N]

Without a path it downloads bookworm main amd64 Packages.xz (about 8.8 MB, 63,000
stanzas) from the first Debian mirror in /etc/apt/sources.list.d/debian.sources into a
temporary directory. Each measurement runs in a fresh child process so that its peak
RSS (``resource.getrusage``, ``ru_maxrss``) is its own; the time is wall-clock for
decompress + parse into a list only (imports and interpreter start excluded, their RSS
included, the cross-check of both results afterwards excluded).

Modes:
    lzma          read the whole .xz through ``lzma.open`` only (the decompression floor)
    patchwatch    ``open_decompressed`` + ``parse_packages`` -> AvailablePackage records
    python-debian ``deb822.Packages.iter_paragraphs(lzma.open(...), use_apt_pkg=False)``
                  -> (Package, Version, Architecture, Source) tuples
"""

from __future__ import annotations

import argparse
import json
import lzma
import re
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1 << 30  # 1 GiB of decompressed text


def mirror_uri() -> str:
    """Return the first URIs: value of a stanza listing the bookworm suite."""
    text = SOURCES.read_text(encoding="utf-8")
    for stanza in re.split(r"\n\s*\n", text):
        suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
        uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
        if suites and uris and "bookworm" in suites.group(1).split():
            return uris.group(1).rstrip("/")
    raise SystemExit(f"no bookworm stanza in {SOURCES}")


def download(directory: Path) -> Path:
    url = f"{mirror_uri()}/dists/bookworm/main/binary-amd64/Packages.xz"
    target = directory / "Packages.xz"
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    print(f"downloaded {url}: {target.stat().st_size:,} B in {time.perf_counter() - started:.2f} s")
    return target


def _maxrss() -> int:
    """Peak resident set size of this process so far, in KiB (Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_mode(mode: str, path: Path) -> dict[str, float]:
    """Measure one mode in this process (called in a child)."""
    sys.path.insert(0, str(ROOT))
    if mode == "patchwatch":
        from patchwatch.domain.repodata.apt import parse_packages
        from patchwatch.domain.repodata.compression import open_decompressed

        started = time.perf_counter()
        with path.open("rb") as raw, open_decompressed(raw, "xz", LIMIT) as lines:
            records = list(parse_packages(lines))
        elapsed, maxrss_kib = time.perf_counter() - started, _maxrss()
        count = len(records)
        key = sorted((r.package.name, r.package.evr, r.package.arch) for r in records)
    elif mode == "python-debian":
        from debian.deb822 import Packages

        started = time.perf_counter()
        with lzma.open(path, "rb") as fh:
            rows = [
                (p["Package"], p["Version"], p["Architecture"], p.get("Source", ""))
                for p in Packages.iter_paragraphs(fh, use_apt_pkg=False)
            ]
        elapsed, maxrss_kib = time.perf_counter() - started, _maxrss()
        count = len(rows)
        # patchwatch stores an explicit "0:" epoch as no epoch (woff-tools has one)
        key = sorted((name, v.removeprefix("0:"), arch) for name, v, arch, _ in rows)
    elif mode == "lzma":
        started = time.perf_counter()
        with lzma.open(path, "rb") as fh:
            count = sum(1 for _ in fh)  # lines, not stanzas
        elapsed, maxrss_kib = time.perf_counter() - started, _maxrss()
        key = []
    else:
        raise SystemExit(f"unknown mode {mode}")
    digest = hash(tuple(key)) if key else 0
    return {"seconds": elapsed, "maxrss_mb": maxrss_kib / 1024, "count": count, "key": digest}


def child(mode: str, path: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"},
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, help="a Packages.xz (default: download)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (best is kept)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child[0], Path(args.child[1]))))
        return
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        path = args.path or download(Path(tmp))
        size = path.stat().st_size
        print(f"input: {path} ({size:,} B compressed)")
        best: dict[str, dict[str, float]] = {}
        for mode in ("lzma", "patchwatch", "python-debian"):
            runs = [child(mode, path) for _ in range(args.repeat)]
            best[mode] = min(runs, key=lambda r: r["seconds"])
            r = best[mode]
            unit = "lines" if mode == "lzma" else "stanzas"
            rate = r["count"] / r["seconds"]
            times = ", ".join(f"{x['seconds']:.2f}" for x in runs)
            print(
                f"{mode:14s} {r['seconds']:6.2f} s  peak RSS {r['maxrss_mb']:6.1f} MB  "
                f"{int(r['count']):,} {unit}  {rate:,.0f} {unit}/s  "
                f"(best of {args.repeat}: {times})"
            )
        ours, theirs = best["patchwatch"], best["python-debian"]
        same = ours["count"] == theirs["count"] and ours["key"] == theirs["key"]
        print(
            f"python-debian / patchwatch time ratio: {theirs['seconds'] / ours['seconds']:.1f}x; "
            f"same (name, version, arch) set: {same}"
        )
        if not same:
            raise SystemExit("the two parsers disagree")


if __name__ == "__main__":
    main()
