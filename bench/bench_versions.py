#!/usr/bin/env python3
"""Benchmark patchwatch's version ordering: dpkg on a real index, pacman and apk on generated ones.

Why: the store precomputes sort keys so that sorting a distribution's ~63k package
versions and picking candidates stays cheap; this measures key building, sorting by key,
``compare_deb`` and raw key comparisons, and compares with python-debian's
``debian.debian_support.version_compare`` when it is installed (also counting
disagreements on the sampled pairs, which must be 0). For pacman (Arch core + extra, about
15,000 packages) and apk (Alpine main + community, about 25,000) it builds keys for a
generated list of that size in the shapes those repositories hold (seeded, so every run
sees the same list) and reports keys per second, sorting and comparisons.

Usage: ``bench/bench_versions.py [PACKAGES_OR_PACKAGES_XZ_OR_URL] [--pairs N]
[--sort-python-debian] [--families deb,arch,apk]``. Without a path it downloads bookworm's
main/binary-amd64 Packages.xz from the first mirror of the apt sources
(``/etc/apt/sources.list.d/debian.sources``), else from deb.debian.org; ``--families
arch,apk`` needs no download.
"""

from __future__ import annotations

import argparse
import functools
import lzma
import operator
import random
import re
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from patchwatch.domain.versions import compare_deb
from patchwatch.domain.versions import deb_sort_key
from patchwatch.domain.versions import split_deb
from patchwatch.domain.versions_alpm import _parts as alpm_parts
from patchwatch.domain.versions_alpm import alpm_sort_key
from patchwatch.domain.versions_alpm import compare_alpm
from patchwatch.domain.versions_alpm import split_alpm
from patchwatch.domain.versions_apk import _body as apk_body
from patchwatch.domain.versions_apk import apk_sort_key
from patchwatch.domain.versions_apk import compare_apk

SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
_VERSION = re.compile(rb"^Version: *(\S+)", re.MULTILINE)


def default_url() -> str:
    """Bookworm main Packages.xz on the first mirror that the apt sources list."""
    mirror = FALLBACK_MIRROR
    if SOURCES.exists():
        for line in SOURCES.read_text().splitlines():
            if line.startswith("URIs:") and line.split()[1:]:
                mirror = line.split()[1].rstrip("/")
                break
    return f"{mirror}/dists/bookworm/main/binary-amd64/Packages.xz"


def load_versions(where: str) -> list[str]:
    """Every Version field of the index, duplicates kept (as the store sees them)."""
    if "://" in where:
        with urllib.request.urlopen(where, timeout=120) as response:
            data: bytes = response.read()
    else:
        data = Path(where).read_bytes()
    if data[:6] == b"\xfd7zXZ\x00":
        data = lzma.decompress(data)
    return [m.decode() for m in _VERSION.findall(data)]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def arch_versions(n: int, rng: random.Random) -> list[str]:
    """``n`` pacman versions shaped like core + extra's: epochs, pkgrel minors, VCS forms."""

    def pkgver() -> str:
        dotted = ".".join(str(rng.choice([0, 1, 2, 3, 5, 12, 24, 124, 2024])) for _ in range(3))
        shape = rng.random()
        if shape < 0.55:
            return dotted
        if shape < 0.65:
            return f"{dotted}.r{rng.randint(1, 4000)}.g{rng.getrandbits(28):07x}"
        if shape < 0.72:
            return f"{dotted}+r{rng.randint(1, 400)}+g{rng.getrandbits(28):07x}"
        if shape < 0.80:
            return f"{dotted}{rng.choice(['rc', 'beta', 'alpha', 'a', 'b'])}{rng.randint(1, 5)}"
        if shape < 0.86:
            return f"{dotted}.arch{rng.randint(1, 3)}"
        if shape < 0.93:
            return f"20{rng.randint(10, 25)}{rng.randint(1, 12):02}{rng.randint(1, 28):02}"
        return f"{dotted}_{rng.randint(1, 9)}"

    out = []
    for _ in range(n):
        epoch = f"{rng.randint(1, 3)}:" if rng.random() < 0.08 else ""
        pkgrel = str(rng.randint(1, 12)) + (f".{rng.randint(1, 3)}" if rng.random() < 0.05 else "")
        out.append(f"{epoch}{pkgver()}-{pkgrel}")
    return out


def apk_versions(n: int, rng: random.Random) -> list[str]:
    """``n`` apk versions shaped like main + community's: suffixes, letters, -rN."""

    def version() -> str:
        parts = [
            str(rng.choice([0, 1, 2, 3, 5, 12, 24, 124, 2024])) for _ in range(rng.randint(1, 4))
        ]
        v = ".".join(parts)
        shape = rng.random()
        if shape < 0.06:
            v += rng.choice("abcdefgk")
        elif shape < 0.14:
            v += f"_{rng.choice(['alpha', 'beta', 'pre', 'rc'])}{rng.randint(1, 5)}"
        elif shape < 0.22:
            v += f"_git20{rng.randint(10, 25)}{rng.randint(1, 12):02}{rng.randint(1, 28):02}"
        elif shape < 0.26:
            v += f"_p{rng.randint(1, 30)}"
        return v

    return [f"{version()}-r{rng.randint(0, 12)}" for _ in range(n)]


def bench_family(
    name: str,
    versions: list[str],
    sort_key: Callable[[str], tuple[int, str]],
    compare: Callable[[str, str], int],
    clear: Callable[[], None],
    pairs: int,
) -> None:
    """Keys per second (cold caches), sort, compare and key-comparison rates."""
    unique = len(set(versions))
    clear()
    t_keys, built = timed(lambda: [sort_key(v) for v in versions])
    keys: list[tuple[int, str]] = built  # type: ignore[assignment]
    print(
        f"{name}: {len(versions)} generated versions ({unique} distinct): keys (cold) "
        f"{t_keys * 1000:.1f} ms, {len(versions) / t_keys / 1000:.0f}k keys/s "
        f"({t_keys / unique * 1e6:.1f} us per distinct version)"
    )
    t_sort, _ = timed(lambda: sorted(keys))
    print(f"{name}: sort {len(keys)} precomputed keys: {t_sort * 1000:.1f} ms")
    rng = random.Random(2)
    a_list = [rng.choice(versions) for _ in range(pairs)]
    b_list = [rng.choice(versions) for _ in range(pairs)]

    def loop_compare() -> None:
        for a, b in zip(a_list, b_list, strict=True):
            compare(a, b)

    t_cmp, _ = timed(loop_compare)
    ka_list = [sort_key(a) for a in a_list]
    kb_list = [sort_key(b) for b in b_list]
    t_map, _ = timed(lambda: sum(map(operator.lt, ka_list, kb_list)))
    print(
        f"{name}: compare (warm cache) {pairs / t_cmp / 1e6:.2f} M/s, "
        f"key comparison map(operator.lt) {pairs / t_map / 1e6:.2f} M/s"
    )


def clear_alpm() -> None:
    for fn in (alpm_sort_key, alpm_parts, split_alpm):
        fn.cache_clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", nargs="?", help="Packages or Packages.xz path or URL")
    parser.add_argument("--pairs", type=int, default=300_000, help="pairs for the rate tests")
    parser.add_argument(
        "--sort-python-debian",
        action="store_true",
        help="also sort everything with python-debian's comparison (about 20 s)",
    )
    parser.add_argument(
        "--families",
        default="deb,arch,apk",
        help="comma-separated: deb (real index), arch and apk (generated lists)",
    )
    args = parser.parse_args(argv)
    families = set(args.families.split(","))
    rng = random.Random(26)
    if "arch" in families:
        bench_family(
            "arch", arch_versions(15_000, rng), alpm_sort_key, compare_alpm, clear_alpm, args.pairs
        )
    if "apk" in families:
        bench_family(
            "apk", apk_versions(25_000, rng), apk_sort_key, compare_apk, apk_body.cache_clear,
            args.pairs,
        )  # fmt: skip
    if "deb" not in families:
        return 0

    where = args.index or default_url()
    t_load, loaded = timed(lambda: load_versions(where))
    versions: list[str] = loaded  # type: ignore[assignment]
    unique = len(set(versions))
    print(f"index: {where}")
    print(f"versions: {len(versions)} ({unique} distinct), loaded in {t_load:.2f} s")

    deb_sort_key.cache_clear()
    split_deb.cache_clear()
    t_keys, built = timed(lambda: [deb_sort_key(v) for v in versions])
    keys: list[tuple[int, str]] = built  # type: ignore[assignment]
    print(
        f"build keys (cold cache, {unique} parsed): {t_keys * 1000:.1f} ms "
        f"({t_keys / unique * 1e6:.1f} us per distinct version)"
    )
    t_warm, _ = timed(lambda: [deb_sort_key(v) for v in versions])
    print(f"build keys (warm cache): {t_warm * 1000:.1f} ms")

    t_sort, _ = timed(lambda: sorted(keys))
    print(f"sort {len(keys)} precomputed keys: {t_sort * 1000:.1f} ms")
    t_sort_v, _ = timed(lambda: sorted(versions, key=deb_sort_key))
    print(f"sort {len(versions)} strings with key=deb_sort_key (warm): {t_sort_v * 1000:.1f} ms")

    rng = random.Random(1)
    a_list = [rng.choice(versions) for _ in range(args.pairs)]
    b_list = [rng.choice(versions) for _ in range(args.pairs)]
    n = args.pairs

    def loop_compare() -> None:
        for a, b in zip(a_list, b_list, strict=True):
            compare_deb(a, b)

    t_cmp, _ = timed(loop_compare)
    print(f"compare_deb (warm cache): {n / t_cmp / 1e6:.2f} M comparisons/s")

    ka_list = [deb_sort_key(a) for a in a_list]
    kb_list = [deb_sort_key(b) for b in b_list]

    def loop_keys() -> None:
        for ka, kb in zip(ka_list, kb_list, strict=True):
            ka < kb  # noqa: B015

    t_key_loop, _ = timed(loop_keys)
    t_key_map, _ = timed(lambda: sum(map(operator.lt, ka_list, kb_list)))
    print(f"key comparison, Python for-loop: {n / t_key_loop / 1e6:.2f} M comparisons/s")
    print(f"key comparison, map(operator.lt): {n / t_key_map / 1e6:.2f} M comparisons/s")

    try:
        from debian.debian_support import version_compare
    except ImportError:
        print("python-debian not importable: no ratio")
        return 0
    m = min(n, 100_000)

    def loop_debian() -> None:
        for a, b in zip(a_list[:m], b_list[:m], strict=True):
            version_compare(a, b)

    t_deb, _ = timed(loop_debian)
    rate_deb = m / t_deb
    print(f"python-debian version_compare: {rate_deb / 1e6:.3f} M comparisons/s")
    print(f"ratio compare_deb / python-debian: {n / t_cmp / rate_deb:.1f}x")
    print(f"ratio key comparison (for-loop) / python-debian: {n / t_key_loop / rate_deb:.1f}x")
    if args.sort_python_debian:
        by_cmp = functools.cmp_to_key(version_compare)
        t_sort_debian, _ = timed(lambda: sorted(versions, key=by_cmp))
        cold = t_keys + t_sort
        print(
            f"sort all with python-debian cmp_to_key: {t_sort_debian:.2f} s "
            f"(vs {cold * 1000:.0f} ms for cold keys + sort: {t_sort_debian / cold:.0f}x)"
        )

    def sgn(x: int) -> int:
        return (x > 0) - (x < 0)

    disagreements = sum(
        compare_deb(a, b) != sgn(version_compare(a, b))
        for a, b in zip(a_list[:m], b_list[:m], strict=True)
    )
    print(f"disagreements with python-debian on {m} pairs: {disagreements}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
