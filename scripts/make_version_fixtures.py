#!/usr/bin/env python3
"""Regenerate tests/fixtures/versions/bookworm-versions.txt from real Debian indexes.

Why: the dpkg oracle test needs version strings that Debian really ships, with the hard
cases (``~``, ``+``, epochs, binNMUs, point-release and security bumps of one package) over-
represented, in a file small enough to commit and to check with one ``dpkg`` call per pair
in a few seconds. The selection is deterministic for a given set of indexes (ordered by a
hash of the string, not by a random generator), so re-running it on the same snapshot
gives the same file.

Usage: ``scripts/make_version_fixtures.py [--sources FILE] [--max-count N] [--max-bytes N]
[--out FILE] [PACKAGES_FILE ...]``. Without index paths the script reads the mirror URIs of
the bookworm suites from the apt sources (deb822) and fetches each suite's
``main/binary-amd64/Packages.xz``. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import re
import sys
import urllib.request
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "versions" / "bookworm-versions.txt"
DEFAULT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
SUITE_PREFIX = "bookworm"

_FIELD = re.compile(rb"^(Package|Version|Source): *(.*?)\s*$")
_SOURCE = re.compile(r"^(\S+)(?: \((\S+)\))?$")


def index_urls(sources: Path) -> list[str]:
    """Return the Packages.xz URL of every bookworm* suite in a deb822 sources file."""
    urls: list[str] = []
    for stanza in sources.read_text().split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
        if "deb" not in fields.get("Types", "").split():
            continue
        uris = fields.get("URIs", "").split()
        if not uris:
            continue
        for suite in fields.get("Suites", "").split():
            if suite.startswith(SUITE_PREFIX):
                base = uris[0].rstrip("/")
                urls.append(f"{base}/dists/{suite}/main/binary-amd64/Packages.xz")
    return urls


def read_index(where: str) -> bytes:
    """Read a Packages index from a URL or path, decompressing .xz."""
    if "://" in where:
        with urllib.request.urlopen(where, timeout=120) as response:
            data: bytes = response.read()
    else:
        data = Path(where).read_bytes()
    return lzma.decompress(data) if data[:6] == b"\xfd7zXZ\x00" else data


def stanzas(data: bytes) -> Iterator[dict[str, str]]:
    """Yield the Package, Version and Source fields of each stanza."""
    current: dict[str, str] = {}
    for line in data.splitlines():
        if not line.strip():
            if current:
                yield current
            current = {}
            continue
        m = _FIELD.match(line)
        if m:
            current[m.group(1).decode()] = m.group(2).decode()
    if current:
        yield current


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def select(
    indexes: Iterable[bytes], max_count: int, max_bytes: int
) -> tuple[list[str], dict[str, int]]:
    """Pick the fixture's versions; return them sorted and the count taken per category.

    Order of priority: versions of one package that differ between suites (a stable
    release and its -updates/-security bump) and binNMU neighbours (binary version vs its
    Source version) up to a quarter of the budget, then every version with ``:``, then with
    ``~``, then with ``+``, then the rest. Within a category strings are taken in hash order
    until the category's share of the budget is spent.
    """
    by_package: dict[str, set[str]] = {}
    everything: set[str] = set()
    for data in indexes:
        for fields in stanzas(data):
            version = fields.get("Version")
            if not version:
                continue
            everything.add(version)
            family = by_package.setdefault(fields.get("Package", ""), set())
            family.add(version)
            m = _SOURCE.match(fields.get("Source", ""))
            if m and m.group(2) and m.group(2) != version:
                family.add(m.group(2))
                everything.add(m.group(2))
    neighbours: list[str] = []
    for name in sorted(by_package, key=_hash):
        if len(by_package[name]) > 1:
            neighbours.extend(sorted(by_package[name]))
    rest = sorted(everything, key=_hash)
    # (candidates, how many strings the fixture may hold once this category is added):
    # neighbours would fill everything (most binNMU'd packages have one), and a tenth is
    # kept for plain versions so the common case is sampled too.
    categories = {
        "neighbours": (neighbours, max_count // 4),
        "colon": ([v for v in rest if ":" in v], max_count),
        "tilde": ([v for v in rest if "~" in v], max_count),
        "plus": ([v for v in rest if "+" in v], max_count - max_count // 10),
        "other": (rest, max_count),
    }
    chosen: set[str] = set()
    size = 0
    taken: dict[str, int] = {}
    for category, (candidates, limit) in categories.items():
        taken[category] = 0
        for v in candidates:
            if v in chosen:
                continue
            if len(chosen) >= limit or size + len(v) + 1 > max_bytes:
                break
            chosen.add(v)
            size += len(v) + 1
            taken[category] += 1
    return sorted(chosen), taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("indexes", nargs="*", help="Packages files or URLs (default: mirror)")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--max-count", type=int, default=6000)
    parser.add_argument("--max-bytes", type=int, default=150_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    where = args.indexes or index_urls(args.sources)
    if not where:
        print(f"no {SUITE_PREFIX} suites in {args.sources}", file=sys.stderr)
        return 1
    data = [read_index(w) for w in where]
    versions, taken = select(data, args.max_count, args.max_bytes)
    header = [
        "# Real Debian version strings for the dpkg oracle test (tests/test_versions.py).",
        "# Generated by scripts/make_version_fixtures.py from:",
        *(f"#   {w}" for w in where),
        f"# {len(versions)} versions; taken per category: "
        + ", ".join(f"{k}={v}" for k, v in taken.items()),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([*header, *versions]) + "\n")
    print(f"wrote {len(versions)} versions ({args.out.stat().st_size} bytes) to {args.out}")
    print(", ".join(f"{k}={v}" for k, v in taken.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
