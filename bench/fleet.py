#!/usr/bin/env python3
"""A reproducible fleet of Debian 12 hosts, built from the real bookworm indexes.

Why: benchmarks of the whole pipeline are only worth something when the reports look
like a real fleet's. Real fleets are a few dozen to a few hundred *images* (golden
images, configuration-management roles) that drift apart a little on each host, and the
cost of processing, update computation and scraping depends on exactly that shape (how
many distinct package sets, how many pending updates). Random names or made-up versions
would make every host unique and every update fake; this module draws everything from
the real bookworm, bookworm-updates, bookworm-security and bookworm-backports amd64
indexes of the mirror in this machine's apt sources, so that ``patchwatch refresh``
reads the very repositories the hosts report and the pending updates are the real ones.

Shape (all drawn from one seeded ``random.Random``, so a seed gives the same fleet):

- a common *core* (what every bookworm install has: packages that security and stable
  updates touch often, plus others) and, per image, role packages up to about
  ``--packages`` packages;
- each image has an *age*: the share of its updatable packages already at the newest
  version the indexes carry (the rest at the bookworm release version, or an older
  security version when the security suite keeps several);
- per host drift: a few packages older (the version in bookworm main of a package the
  image has from security or updates: a version the index really carries), a few newer
  (a backports version, only on hosts with backports), a few extra (role packages the
  image does not have, and now and then a locally built package that no repository
  carries);
- repositories: bookworm main, updates and security on every host, backports on most
  (absent on about a third of the images and on a few more hosts), all pointing at the
  mirror of ``/etc/apt/sources.list.d/debian.sources``;
- tags: role, environment, data centre.

Usage as a script prints a summary and, with ``--write DIR``, the reports as JSON files:

    .venv/bin/python bench/fleet.py --hosts 1000 --cache-dir /tmp/pw-indexes
    .venv/bin/python bench/fleet.py --hosts 20 --write /tmp/fleet   # look at a few

As a module: ``Fleet.build(indexes, hosts=..., images=..., seed=...)`` then
``fleet.report_json(i)`` (bytes, the native report-v1 format) for each host.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patchwatch.domain.repodata.apt import parse_packages  # noqa: E402
from patchwatch.domain.repodata.compression import open_decompressed  # noqa: E402
from patchwatch.domain.versions import deb_sort_key  # noqa: E402

SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
ARCHES = ("amd64", "all")
MAIN, UPDATES, SECURITY, BACKPORTS = (
    "bookworm",
    "bookworm-updates",
    "bookworm-security",
    "bookworm-backports",
)
SUITES = (MAIN, UPDATES, SECURITY, BACKPORTS)
ROLES = ("web", "db", "cache", "app", "ci", "mail", "dns", "lb", "k8s", "batch", "log", "vpn")
ENVS = (("prod", 0.6), ("staging", 0.25), ("dev", 0.15))
DCS = ("dc:ams1", "dc:fra2", "dc:par1", "dc:lon3")
LOCAL_PACKAGES = (
    ("acme-monitoring-agent", "2.3.1", "1"),
    ("acme-backup", "0.9.4", "2"),
    ("corp-ca-certificates", "2024.06", "1"),
    ("site-tools", "1.12", "3+corp1"),
)
KERNEL_RE = re.compile(r"^linux-image-(6\.1\.0-\d+)-amd64$")
OS_RELEASE = {
    "id": "debian",
    "version_id": "12",
    "version_codename": "bookworm",
    "name": "Debian GNU/Linux",
    "pretty_name": "Debian GNU/Linux 12 (bookworm)",
    "version": "12 (bookworm)",
    "home_url": "https://www.debian.org/",
}


# ---------------------------------------------------------------- mirror indexes


def mirror_uris(sources: Path = SOURCES) -> dict[str, str]:
    """Map each suite of the deb822 sources file to its archive URI.

    The hosts' repositories must name the very URLs the server refreshes from, so the
    fleet and the benchmark both take them from this one file.
    """
    uris: dict[str, str] = {}
    for stanza in re.split(r"\n\s*\n", sources.read_text(encoding="utf-8")):
        suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
        uri = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
        if suites and uri:
            for suite in suites.group(1).split():
                uris.setdefault(suite, uri.group(1).rstrip("/"))
    if MAIN not in uris or SECURITY not in uris:
        raise SystemExit(f"{sources} names no bookworm and bookworm-security URIs")
    uris.setdefault(UPDATES, uris[MAIN])
    uris.setdefault(BACKPORTS, uris[MAIN])  # backports live in the main archive
    return uris


def fetch_indexes(cache_dir: Path, uris: dict[str, str] | None = None) -> dict[str, Path]:
    """Download each suite's main amd64 Packages.xz once into ``cache_dir``.

    A file already in the cache is reused, so repeated runs (and a run without network
    after the first) build the same fleet; delete the folder to take newer indexes.
    """
    uris = uris or mirror_uris()
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for suite in SUITES:
        target = cache_dir / f"{suite}_main_amd64_Packages.xz"
        if not target.exists():
            url = f"{uris[suite]}/dists/{suite}/main/binary-amd64/Packages.xz"
            tmp = target.with_suffix(".part")
            with urllib.request.urlopen(url, timeout=120) as resp, tmp.open("wb") as out:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            tmp.rename(target)
        paths[suite] = target
    return paths


@dataclass(frozen=True)
class Pkg:
    """One installable build: the fields a report carries for a deb package."""

    name: str
    epoch: str
    version: str
    release: str
    arch: str

    @property
    def evr(self) -> str:
        head = f"{self.epoch}:{self.version}" if self.epoch else self.version
        return f"{head}-{self.release}" if self.release else head

    def json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "epoch": self.epoch,
                "version": self.version,
                "release": self.release,
                "arch": self.arch,
                "type": "deb",
            },
            separators=(",", ":"),
        )


def load_indexes(paths: dict[str, Path]) -> dict[str, list[Pkg]]:
    """Parse each suite's index (amd64 and all only) with patchwatch's own parser."""
    out: dict[str, list[Pkg]] = {}
    for suite, path in paths.items():
        with path.open("rb") as raw, open_decompressed(raw, "xz", 1 << 30) as lines:
            out[suite] = [
                Pkg(p.name, p.epoch, p.version, p.release, p.arch)
                for p in (a.package for a in parse_packages(lines))
                if p.arch in ARCHES
            ]
    return out


# ---------------------------------------------------------------- the fleet


@dataclass
class Catalogue:
    """Every version the indexes carry for each (name, arch), oldest first.

    ``stable`` holds the versions of main, updates and security (what a host without
    backports can have); ``backports`` the backports version when there is one.
    """

    stable: dict[tuple[str, str], list[Pkg]] = field(default_factory=dict)
    backports: dict[tuple[str, str], Pkg] = field(default_factory=dict)
    main: dict[tuple[str, str], Pkg] = field(default_factory=dict)

    @classmethod
    def from_indexes(cls, indexes: dict[str, list[Pkg]]) -> Catalogue:
        cat = cls()
        versions: dict[tuple[str, str], dict[str, Pkg]] = {}
        for suite in (MAIN, UPDATES, SECURITY):
            for p in indexes[suite]:
                versions.setdefault((p.name, p.arch), {})[p.evr] = p
                if suite == MAIN:
                    cat.main.setdefault((p.name, p.arch), p)
        for key, by_evr in versions.items():
            cat.stable[key] = sorted(by_evr.values(), key=lambda p: deb_sort_key(p.evr))
        for p in indexes.get(BACKPORTS, []):
            key = (p.name, p.arch)
            if key in cat.main and deb_sort_key(p.evr) > deb_sort_key(cat.stable[key][-1].evr):
                best = cat.backports.get(key)
                if best is None or deb_sort_key(p.evr) > deb_sort_key(best.evr):
                    cat.backports[key] = p
        return cat

    @property
    def updated(self) -> list[tuple[str, str]]:
        """Packages of main that updates or security carry a newer version of."""
        return sorted(k for k, v in self.stable.items() if len(v) > 1 and k in self.main)


@dataclass
class Image:
    """A golden image / role: its packages and the repositories its hosts use."""

    role: str
    packages: dict[tuple[str, str], Pkg]
    backports: bool
    kernel: str


@dataclass
class Host:
    """One host: its image, its drift and its labels."""

    name: str
    image: int
    older: list[Pkg]
    newer: list[Pkg]
    extra: list[Pkg]
    backports: bool
    tags: list[str]
    reboot: bool


@dataclass
class Fleet:
    """A seeded fleet; reports are rendered on demand so 10,000 hosts stay cheap."""

    uris: dict[str, str]
    images: list[Image]
    hosts: list[Host]
    _json: dict[Pkg, str] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        indexes: dict[str, list[Pkg]],
        hosts: int = 1000,
        images: int = 100,
        packages: int = 1500,
        seed: int = 20260711,
        uris: dict[str, str] | None = None,
        drift: float = 0.7,
    ) -> Fleet:
        rng = random.Random(seed)
        cat = Catalogue.from_indexes(indexes)
        kernels = sorted(
            {m.group(1) for k in cat.stable if (m := KERNEL_RE.match(k[0]))},
            key=lambda v: int(v.rsplit("-", 1)[1]),
        )
        updated = cat.updated
        others = sorted(k for k in cat.main if k not in set(updated))
        # The core: most updatable packages are base libraries every install has.
        core = rng.sample(updated, min(len(updated), max(50, packages // 6)))
        core += rng.sample(others, packages // 4)
        built = [
            _make_image(rng, cat, core, updated, others, packages, kernels, i)
            for i in range(images)
        ]
        fleet_hosts = [_make_host(rng, cat, built, i, drift) for i in range(hosts)]
        return cls(uris or mirror_uris(), built, fleet_hosts)

    def packages(self, index: int) -> Iterator[Pkg]:
        """The packages host ``index`` has installed: image, then its drift."""
        host = self.hosts[index]
        image = self.images[host.image]
        changed = {(p.name, p.arch): p for p in host.older + host.newer}
        for key, pkg in image.packages.items():
            yield changed.get(key, pkg)
        yield from host.extra

    def repositories(self, index: int) -> list[dict[str, object]]:
        """The host's apt sources as the agent reports them (same URLs the server reads)."""
        suites = [MAIN, UPDATES, SECURITY] + ([BACKPORTS] if self.hosts[index].backports else [])
        out: list[dict[str, object]] = []
        for suite in suites:
            uri = self.uris[suite]
            out.append(
                {
                    "type": "deb",
                    "id": f"{uri} {suite} main",
                    "name": f"Debian {suite} main",
                    "urls": [uri],
                    "suite": suite,
                    "component": "main",
                    "arch": "amd64",
                    "signed_by": "/usr/share/keyrings/debian-archive-keyring.gpg",
                    "priority": 100 if suite == BACKPORTS else 500,
                    "enabled": True,
                }
            )
        return out

    def report(self, index: int) -> dict[str, object]:
        """The native report (report-v1) of host ``index`` as a dict."""
        result: dict[str, object] = json.loads(self.report_json(index))
        return result

    def report_json(self, index: int, collected_at: float = 1.78e9) -> bytes:
        """The native report of host ``index`` as JSON bytes, as the agent sends it.

        Package fragments are serialised once per distinct build and joined, which is
        what makes rendering 10,000 reports of 1,500 packages take seconds, not minutes.
        """
        host = self.hosts[index]
        image = self.images[host.image]
        pkgs = []
        for p in self.packages(index):
            text = self._json.get(p)
            if text is None:
                text = self._json[p] = p.json()
            pkgs.append(text)
        head = {
            "version": 1,
            "host": host.name,
            "os": OS_RELEASE,
            "kernel": image.kernel,
            "arch": "x86_64",
            "tags": host.tags,
            "reboot_required": host.reboot,
        }
        tail = {
            "repositories": self.repositories(index),
            "agent": {
                "name": "patchwatch-agent",
                "version": "0.1.0",
                "collected_at": collected_at,
                "warnings": [],
            },
        }
        text = (
            json.dumps(head, separators=(",", ":"))[:-1]
            + ',"packages":['
            + ",".join(pkgs)
            + "],"
            + json.dumps(tail, separators=(",", ":"))[1:]
        )
        return text.encode()

    def summary(self) -> dict[str, float]:
        """Counts that say what kind of fleet this is (for the benchmark's doc)."""
        sizes = [len(im.packages) for im in self.images]
        drift = [len(h.older) + len(h.newer) + len(h.extra) for h in self.hosts]
        return {
            "hosts": len(self.hosts),
            "images": len(self.images),
            "packages_per_image_mean": sum(sizes) / len(sizes),
            "drift_per_host_mean": sum(drift) / max(len(drift), 1),
            "hosts_without_drift": sum(1 for d in drift if d == 0),
            "hosts_with_backports": sum(1 for h in self.hosts if h.backports),
            "distinct_builds": len({p for im in self.images for p in im.packages.values()}),
        }


def _pick_version(rng: random.Random, versions: list[Pkg], age: float) -> Pkg:
    """Newest with probability ``age``; else the release version or an older update."""
    if len(versions) == 1 or rng.random() < age:
        return versions[-1]
    return versions[0] if len(versions) == 2 or rng.random() < 0.7 else rng.choice(versions[:-1])


def _make_image(
    rng: random.Random,
    cat: Catalogue,
    core: list[tuple[str, str]],
    updated: list[tuple[str, str]],
    others: list[tuple[str, str]],
    size: int,
    kernels: list[str],
    index: int,
) -> Image:
    role = ROLES[index % len(ROLES)]
    target = int(size * rng.uniform(0.8, 1.2))
    keys = list(core)
    have = set(keys)
    extra_updated = rng.sample(updated, min(len(updated), size // 20))
    for key in extra_updated + rng.sample(others, target):
        if len(keys) >= target:
            break
        if key not in have:
            have.add(key)
            keys.append(key)
    age = rng.choice((0.2, 0.5, 0.8, 0.95, 1.0))
    kernel = kernels[-1] if rng.random() < age or len(kernels) < 2 else rng.choice(kernels[:-1])
    pkgs = {k: _pick_version(rng, cat.stable[k], age) for k in keys}
    key = (f"linux-image-{kernel}-amd64", "amd64")  # the running kernel's package
    if key in cat.stable:
        pkgs[key] = cat.stable[key][-1]
    return Image(role, pkgs, backports=rng.random() < 0.67, kernel=f"{kernel}-amd64")


def _make_host(
    rng: random.Random, cat: Catalogue, images: list[Image], index: int, drift: float
) -> Host:
    img_index = rng.randrange(len(images))
    image = images[img_index]
    backports = image.backports and rng.random() < 0.95
    older: list[Pkg] = []
    newer: list[Pkg] = []
    extra: list[Pkg] = []
    if rng.random() < drift:  # most hosts drift a little
        at_newest = [
            k for k, p in image.packages.items() if len(cat.stable[k]) > 1 and p != cat.stable[k][0]
        ]
        for key in rng.sample(at_newest, min(len(at_newest), rng.randint(0, 3))):
            older.append(cat.stable[key][0])  # held back at the version bookworm shipped
        if backports:
            candidates = [k for k in image.packages if k in cat.backports]
            for key in rng.sample(candidates, min(len(candidates), rng.randint(0, 2))):
                newer.append(cat.backports[key])
        for _ in range(rng.randint(0, 3)):
            key = rng.choice(list(cat.main))
            if key not in image.packages:
                extra.append(cat.stable[key][-1])
        if rng.random() < 0.2:
            name, version, release = rng.choice(LOCAL_PACKAGES)
            extra.append(Pkg(name, "", version, release, "amd64"))
    env = rng.choices([e for e, _ in ENVS], [w for _, w in ENVS])[0]
    dc = rng.choice(DCS)
    name = f"{image.role}-{index:05d}.{dc[3:]}.bench.example"
    return Host(
        name=name,
        image=img_index,
        older=older,
        newer=newer,
        extra=extra,
        backports=backports,
        tags=sorted([image.role, env, dc, f"image:{img_index:03d}"]),
        reboot=rng.random() < 0.03,
    )


def build_fleet(
    cache_dir: Path,
    hosts: int,
    images: int = 100,
    packages: int = 1500,
    seed: int = 20260711,
    drift: float = 0.7,
) -> Fleet:
    """Fetch (or reuse) the indexes and build the fleet: the one call benchmarks need."""
    uris = mirror_uris()
    indexes = load_indexes(fetch_indexes(cache_dir, uris))
    return Fleet.build(indexes, hosts, images, packages, seed, uris, drift)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--packages", type=int, default=1500, help="packages per image, about")
    parser.add_argument("--seed", type=int, default=20260711)
    parser.add_argument("--drift", type=float, default=0.7, help="share of hosts that drift")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/patchwatch-bench-indexes"))
    parser.add_argument("--write", type=Path, help="write each report as DIR/<host>.json")
    args = parser.parse_args()
    started = time.perf_counter()
    fleet = build_fleet(
        args.cache_dir, args.hosts, args.images, args.packages, args.seed, args.drift
    )
    built = time.perf_counter() - started
    started = time.perf_counter()
    total = 0
    for i in range(len(fleet.hosts)):
        body = fleet.report_json(i)
        total += len(body)
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / f"{fleet.hosts[i].name}.json").write_bytes(body)
    rendered = time.perf_counter() - started
    print(json.dumps(fleet.summary(), indent=1))
    print(
        f"built in {built:.1f} s; rendered {len(fleet.hosts):,} reports "
        f"({total / len(fleet.hosts) / 1024:.0f} KiB each) in {rendered:.1f} s"
    )


if __name__ == "__main__":
    main()
