"""The updates patchwatch computes equal what apt and dnf themselves say.

1. This Debian machine: apt refreshes its own (private) lists from the machine's
   sources, patchwatch refreshes the same mirrors and computes updates for this host's
   report (from the agent). Both must agree on ``apt list --upgradable`` (names, archs,
   candidate versions), and patchwatch's security updates must be exactly those whose
   candidate apt finds in a ``-security`` suite. The same comparison runs again on a copy
   of the dpkg status where some packages are lowered to older versions the mirror
   still carries, so it is never vacuous on an up-to-date machine. This needs the
   mirror: when it cannot be reached the test FAILS saying so.
2. Holds: the same lowered dpkg status in a throw-away root, with packages put on hold
   by ``dpkg --set-selections`` (what ``apt-mark hold`` does); the agent reads the root.
   patchwatch's pending (not held) updates must equal ``apt list --upgradable`` minus
   what ``apt-get -s dist-upgrade`` holds back, its held updates exactly those, and
   their count that of apt's holds among the upgradable packages (``apt-mark
   showhold``, node_exporter's ``apt_upgrades_held``).
3. rpm-md: a dnf ``--installroot`` with old versions installed from the repository
   scripts/make_rpm_repo.sh builds; patchwatch's updates equal ``dnf check-update`` and
   its security updates equal ``dnf updateinfo list --security``.

Missing tools skip with the reason, or fail under ``PATCHWATCH_TEST_REQUIRE_ORACLES=1``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from debian.debian_support import Version as DebVersion

from patchwatch.domain.records import Package as PackageRecord
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.apt import parse_deb_version
from patchwatch.domain.repodata.apt import parse_release
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.refresh.run import refresh_all
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import Repository
from tests.support.mirrors import LOOPBACK_POLICY
from tests.support.mirrors import MirrorServer
from tests.support.paths import ROOT
from tests.support.tools import require_or_skip

#: The test repository is served on 127.0.0.1: read it without approval, reach it.
LOOPBACK_SETTINGS = Settings(
    mirror_url_patterns=("http://127.0.0.1:*",), mirror_allowed_networks=("127.0.0.1/32",)
)

ORACLES_ENV = "PATCHWATCH_TEST_REQUIRE_ORACLES"
ENV = {**os.environ, "LANG": "C", "LC_ALL": "C"}
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

Update = tuple[str, str, str]  # (name, arch, candidate version as the tool prints it)


def require_tools(*names: str, install: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        require_or_skip(ORACLES_ENV, f"{', '.join(missing)} not installed ({install})")


def run(cmd: list[str], ok: tuple[int, ...] = (0,), timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if proc.returncode not in ok:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def patchwatch_updates(host_name: str, held: bool | None = None) -> tuple[set[Update], set[Update]]:
    """(all, security) pending updates of a host, as (name, arch, candidate evr); with
    ``held``, only those of packages the host holds (True) or does not (False)."""
    host = Host.get(Host.name == host_name)
    inst, avail = Package.alias(), Package.alias()
    rows = (
        HostUpdate.select(inst.name, inst.arch, avail.kind, avail.epoch, avail.version,
                          avail.release, HostUpdate.security)
        .join(inst, on=(HostUpdate.installed == inst.id))
        .switch(HostUpdate)
        .join(avail, on=(HostUpdate.available == avail.id))
        .where(HostUpdate.host == host)
    )  # fmt: skip
    if held is not None:
        rows = rows.where(HostUpdate.held == held)
    every: set[Update] = set()
    security: set[Update] = set()
    for name, arch, kind, epoch, version, release, is_security in rows.tuples():
        evr = PackageRecord(name, epoch, version, release, arch, PackageKind(kind)).evr
        every.add((name, arch, evr))
        if is_security:
            security.add((name, arch, evr))
    return every, security


# -------------------------------------------------------------------------- apt


class PrivateApt:
    """apt with its own lists and caches: the machine's sources, none of its state."""

    def __init__(self, base: Path) -> None:
        self.lists = base / "lists"
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.options = [
            "-o", f"Dir::State::Lists={self.lists}", "-o", f"Dir::Cache={base / 'cache'}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
        ]  # fmt: skip
        if os.geteuid() == 0:  # _apt cannot enter pytest's private tmp folder
            self.options += ["-o", "APT::Sandbox::User=root"]

    def with_status(self, status: Path) -> PrivateApt:
        other = PrivateApt.__new__(PrivateApt)
        other.lists = self.lists
        other.options = [*self.options, "-o", f"Dir::State::status={status}"]
        return other

    def update(self) -> None:
        proc = subprocess.run(
            ["apt-get", "update", "-q", *self.options],
            capture_output=True, text=True, env=ENV, timeout=300,
        )  # fmt: skip
        problems = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines()
                    if ln.startswith(("E:", "W:", "Err:"))]  # fmt: skip
        if proc.returncode != 0 or any(not p.startswith("W:") for p in problems):
            pytest.fail(
                "the Debian mirror of this machine's apt sources cannot be reached, so "
                "patchwatch cannot be compared with apt: " + " | ".join(problems)[-1500:]
            )

    def upgradable(self) -> tuple[set[Update], set[Update]]:
        """(all, security) from ``apt list --upgradable``."""
        out = run(["apt", "list", "--upgradable", *self.options])
        every: set[Update] = set()
        security: set[Update] = set()
        pattern = re.compile(r"^(\S+?)/(\S+) (\S+) (\S+) \[upgradable from: [^]]+\]$")
        for line in out.splitlines():
            m = pattern.match(line)
            if not m:
                continue
            name, suites, version, arch = m.groups()
            every.add((name.split(":")[0], arch, version))
            if any(s.endswith("-security") for s in suites.split(",")):
                security.add((name.split(":")[0], arch, version))
        return every, security

    def installs(self) -> set[str]:
        """Names ``apt-get -s dist-upgrade`` would install: what it does not hold back."""
        out = run(["apt-get", "-s", "dist-upgrade", *self.options])
        return {m.group(1).split(":")[0] for m in re.finditer(r"^Inst (\S+) ", out, re.M)}

    def holds(self) -> set[str]:
        """``apt-mark showhold``: the packages on hold in this status."""
        return {line.split(":")[0] for line in run(["apt-mark", "showhold", *self.options]).split()}

    def madison(self, names: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Every version the lists hold per package: name -> [(version, index line)]."""
        out = run(["apt-cache", "madison", *self.options, *names])
        found: dict[str, list[tuple[str, str]]] = {}
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2].endswith("Packages"):
                found.setdefault(parts[0], []).append((parts[1], parts[2]))
        return found

    def packages_sha256(self, url: str, suite: str) -> str:
        """The SHA256 apt's InRelease gives main/binary-amd64's index (to spot a race)."""
        name = re.sub(r"^https?://", "", url).replace("/", "_") + f"_dists_{suite}_InRelease"
        release = parse_release((self.lists / name).read_text(encoding="utf-8"))
        entry = release.index_for("main", "amd64")
        assert entry is not None
        return entry.digest


def agent_report() -> dict:
    """This machine's native report, as the agent would send it."""
    out = run([sys.executable, str(ROOT / "agent" / "patchwatch_agent.py"), "--dry-run"])
    return json.loads(out)


def debian_machine_report(*tools: str, install: str) -> dict:
    """This machine's report, once it is a Debian machine with ``tools`` (else a skip, or
    a failure under the oracle requirement) and the agent found its apt repositories."""
    if not Path("/var/lib/dpkg/status").is_file():
        require_or_skip(ORACLES_ENV, "not a Debian machine (no /var/lib/dpkg/status)")
    require_tools(*tools, install=install)
    report = agent_report()
    assert report["repositories"], "the agent found no apt repositories on this machine"
    return report


def downgrade(
    report: dict, apt: PrivateApt, status_in: Path, status_out: Path, limit: int = 12
) -> dict[str, str]:
    """Lower some installed packages to older versions the mirror still has.

    Chooses, in name order, up to ``limit`` packages whose newest version is in a
    security suite, up to ``limit`` others, and every package that can be put below a
    security version that a newer point-release version superseded (apt's candidate is
    then not from the security suite, though it contains the fix). Writes the dpkg
    status with their versions replaced; returns name -> version.
    """
    installed = {p["name"]: p for p in report["packages"] if p["type"] == "deb"}
    found = apt.madison(sorted(installed))
    security_picks: dict[str, str] = {}
    other_picks: dict[str, str] = {}
    between_picks: dict[str, str] = {}
    for name in sorted(found):
        p = installed[name]
        current = (f"{p['epoch']}:" if p["epoch"] else "") + p["version"]
        current += f"-{p['release']}" if p["release"] else ""
        versions = sorted(found[name], key=lambda item: DebVersion(item[0]))
        older = [v for v, _ in versions if DebVersion(v) < DebVersion(current)]
        if not older:
            continue
        lowest = min(older, key=DebVersion)
        newest_line = versions[-1][1]
        security = [v for v, line in versions if "-security" in line]
        if "-security" not in newest_line and security:
            below = [v for v, _ in versions if DebVersion(v) < DebVersion(security[-1])]
            if below and DebVersion(below[-1]) < DebVersion(current):
                between_picks[name] = below[-1]
                continue
        picks = security_picks if "-security" in newest_line else other_picks
        if len(picks) < limit:
            picks[name] = lowest
    chosen = {**security_picks, **other_picks, **between_picks}
    stanzas = status_in.read_text(encoding="utf-8").split("\n\n")
    out = []
    for stanza in stanzas:
        m = re.search(r"^Package: (\S+)$", stanza, re.M)
        if m and m.group(1) in chosen:
            stanza = re.sub(r"^Version: .*$", f"Version: {chosen[m.group(1)]}", stanza, flags=re.M)
        out.append(stanza)
    status_out.write_text("\n\n".join(out), encoding="utf-8")
    for name, version in chosen.items():
        epoch, upstream, revision = parse_deb_version(version)
        installed[name].update(epoch=epoch, version=upstream, release=revision)
    return chosen


def machine_mirror_settings(report: dict) -> Settings:
    """Settings that let the server reach the mirrors this machine's apt reaches.

    A mirror behind a non-public address (a site cache, a test farm's proxy) is what
    ``mirror_allowed_networks`` is for: the addresses the sources' hosts resolve to
    here are listed when they are not public, exactly those and nothing more.
    """
    policy = Settings().mirror_policy
    networks: set[str] = set()
    for repo in report["repositories"]:
        for url in repo.get("urls", []):
            host = urlsplit(url).hostname
            if not host:
                continue
            for *_rest, address in socket.getaddrinfo(host, 80, proto=socket.IPPROTO_TCP):
                if policy.address_refusal(str(address[0])) is not None:
                    networks.add(str(address[0]))
    return Settings(mirror_allowed_networks=tuple(sorted(networks)))


def same_mirror_data(apt: PrivateApt) -> bool:
    """Whether patchwatch read the very Packages indexes apt read (no publish between)."""
    return all(
        m.metadata_checksum.endswith(
            apt.packages_sha256(m.url, Repository.get_by_id(m.repository_id).suite)
        )
        for m in Mirror.select()
    )


def refresh_and_compute(now: float, settings: Settings) -> None:
    with HttpFetcher.from_settings(settings) as fetcher:
        results = refresh_all(fetcher, now, settings)
    failed = [f"{r.url}: {r.detail}" for r in results if not r.ok]
    if failed:
        pytest.fail("patchwatch could not refresh the Debian mirror: " + "; ".join(failed))
    refresh_host_updates(now)


@sqlite_only
@pytest.mark.network
@pytest.mark.slow
def test_apt_updates_of_this_machine_agree_with_apt(db: object, tmp_path: Path) -> None:
    report = debian_machine_report(
        "apt", "apt-get", "apt-cache", "gpgv", install="apt-get install -y apt gpgv"
    )
    apt = PrivateApt(tmp_path / "apt")
    real_host = report["host"] = "this-machine.test"

    for attempt in range(2):  # the mirror may publish between apt's update and ours
        apt.update()
        status = tmp_path / "status"
        lowered = json.loads(json.dumps(report))
        lowered["host"] = "downgraded.test"
        chosen = downgrade(lowered, apt, Path("/var/lib/dpkg/status"), status)
        now = time.time()
        for doc in (report, lowered):
            store_report(doc["host"], "patchwatch/1", doc, now)
        assert process_pending(now) == {"processed": 2}
        refresh_and_compute(now, machine_mirror_settings(report))
        if same_mirror_data(apt):
            break
        assert attempt == 0, "the mirror changed twice during the test"

    assert len(chosen) >= 4, f"too few packages could be lowered: {chosen}"
    problems = []
    for host, oracle in ((real_host, apt), ("downgraded.test", apt.with_status(status))):
        want_all, want_security = oracle.upgradable()
        got_all, got_security = patchwatch_updates(host)
        if got_all != want_all:
            problems.append(
                f"{host}: updates only patchwatch has: {sorted(got_all - want_all)}; "
                f"only apt has: {sorted(want_all - got_all)}"
            )
        if got_security != want_security:
            problems.append(
                f"{host}: security updates only patchwatch has: "
                f"{sorted(got_security - want_security)}; only apt has (candidate in a "
                f"-security suite): {sorted(want_security - got_security)}"
            )
    assert not problems, "\n".join(problems)
    # The lowered host must really exercise both kinds.
    lowered_all, lowered_security = patchwatch_updates("downgraded.test")
    assert {n for n, _a, _v in lowered_all} >= set(chosen)
    assert lowered_security and lowered_all - lowered_security


def lower_sources(apt: PrivateApt, status_in: Path, status_out: Path,
                  want: tuple[int, int] = (3, 5)) -> dict[str, str]:  # fmt: skip
    """Lower whole source packages to an older version the mirror has, consistently.

    ``downgrade`` edits versions one binary at a time, which ``apt list --upgradable``
    does not mind but leaves dependencies unmet (libssl-dev needs libssl3 of its own
    version), and then ``apt-get dist-upgrade`` refuses to plan anything. Here every
    installed binary of a source goes down together, to the newest older version the
    mirror has for all of them, with the exact dependencies among them rewritten, as an
    older system would have them; a source whose lowering still breaks a dependency
    (``apt-get check``) is left alone. ``want``: how many sources whose newest version
    is a security update, and how many others. Returns package name -> version.
    """
    stanzas = status_in.read_text(encoding="utf-8").split("\n\n")
    groups: dict[tuple[str, str], list[int]] = {}
    names: dict[int, str] = {}
    for i, stanza in enumerate(stanzas):
        fields = dict(re.findall(r"^(Package|Version|Source|Status): (.*)$", stanza, re.M))
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            source = fields.get("Source", fields["Package"]).split(" ")[0]
            groups.setdefault((source, fields["Version"]), []).append(i)
            names[i] = fields["Package"]
    found = apt.madison(sorted(set(names.values())))
    security: list[tuple[tuple[str, str], str]] = []
    other: list[tuple[tuple[str, str], str]] = []
    for (source, version), members in sorted(groups.items()):
        older = None
        for i in members:
            versions = {v for v, _line in found.get(names[i], [])
                        if DebVersion(v) < DebVersion(version)}  # fmt: skip
            older = versions if older is None else older & versions
        if not older:
            continue
        newest_line = max(found[names[members[0]]], key=lambda item: DebVersion(item[0]))[1]
        picks = security if "-security" in newest_line else other
        picks.append(((source, version), max(older, key=DebVersion)))
    chosen = dict(security[: want[0]] + other[: want[1]])
    for _round in range(5):
        out = list(stanzas)
        for (_source, old), new in chosen.items():
            for i in groups[(_source, old)]:
                text = re.sub(r"^Version: .*$", f"Version: {new}", out[i], flags=re.M)
                out[i] = text.replace(f"(= {old})", f"(= {new})")
        status_out.write_text("\n\n".join(out), encoding="utf-8")
        proc = subprocess.run(["apt-get", "-s", "check", *apt.with_status(status_out).options],
                              capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
        if proc.returncode == 0:
            return {names[i]: new for key, new in chosen.items() for i in groups[key]}
        broken = set(re.findall(r"^ ?(\S+) : |Depends: (\S+)", proc.stdout, re.M))
        broken_names = {name for pair in broken for name in pair if name}
        chosen = {key: new for key, new in chosen.items()
                  if not broken_names & {names[i] for i in groups[key]}}  # fmt: skip
    raise AssertionError(f"could not lower sources consistently: {proc.stdout[-1500:]}")


def set_selections(admindir: Path, selections: dict[str, str]) -> None:
    """``dpkg --set-selections`` in a throw-away admin directory: hold or install."""
    text = "".join(f"{name} {want}\n" for name, want in selections.items())
    proc = subprocess.run(
        ["dpkg", f"--admindir={admindir}", "--set-selections"],
        input=text, capture_output=True, text=True, env=ENV, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def choose_holds(apt: PrivateApt, admindir: Path, upgradable: set[Update],
                 security: set[Update], want: int = 3) -> list[str]:  # fmt: skip
    """Put up to ``want`` upgradable packages on hold, a security update among them.

    A hold is kept only if apt then holds back exactly the held packages: holding
    curl also keeps libcurl4 back (it needs curl's version), which is a dependency
    apt resolves and patchwatch does not, so such a package is released again.
    """
    names = sorted({n for n, _a, _v in upgradable})
    first = sorted({n for n, _a, _v in security})[:1]
    held: list[str] = []
    for name in [*first, *(n for n in names if n not in first)]:
        set_selections(admindir, {name: "hold"})
        if names_set(upgradable) - apt.installs() == {*held, name}:
            held.append(name)
            if len(held) == want:
                break
        else:
            set_selections(admindir, {name: "install"})
    return held


def names_set(updates: set[Update]) -> set[str]:
    return {n for n, _a, _v in updates}


@sqlite_only
@pytest.mark.network
@pytest.mark.slow
def test_apt_holds_agree_with_apt(db: object, tmp_path: Path) -> None:
    machine = debian_machine_report("apt", "apt-get", "apt-cache", "apt-mark", "dpkg", "gpgv",
                                    install="apt-get install -y apt dpkg gpgv")  # fmt: skip
    root = tmp_path / "root"
    admindir = root / "var" / "lib" / "dpkg"
    for sub in ("updates", "info"):
        (admindir / sub).mkdir(parents=True)
    (admindir / "available").write_text("")
    (root / "etc").mkdir()
    shutil.copy("/etc/os-release", root / "etc" / "os-release")
    apt = PrivateApt(tmp_path / "apt")
    oracle = apt.with_status(admindir / "status")

    for attempt in range(2):  # the mirror may publish between apt's update and ours
        apt.update()
        lowered = lower_sources(apt, Path("/var/lib/dpkg/status"), admindir / "status")
        assert len(lowered) >= 4, f"too few packages could be lowered: {lowered}"
        upgradable, security = oracle.upgradable()
        assert names_set(upgradable) == oracle.installs(), "apt holds back packages unheld"
        held = choose_holds(oracle, admindir, upgradable, security)
        assert len(held) == 3 and held[0] in names_set(security), held
        quiet = sorted(
            p["name"] for p in machine["packages"]
            if p["type"] == "deb" and p["name"] not in names_set(upgradable)
        )[0]  # fmt: skip
        set_selections(admindir, {quiet: "hold"})  # held, with no update to hold back

        proc = subprocess.run(
            [sys.executable, str(ROOT / "agent" / "patchwatch_agent.py"), "--root", str(root),
             "--hostname", "held.test", "--dry-run"],
            capture_output=True, text=True, env=ENV, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert {h["name"] for h in report["held"]} == {*held, quiet} == oracle.holds()
        report["repositories"] = machine["repositories"]  # the root has no apt sources
        now = time.time()
        store_report("held.test", "patchwatch/1", report, now)
        assert process_pending(now) == {"processed": 1}
        refresh_and_compute(now, machine_mirror_settings(report))
        if same_mirror_data(apt):
            break
        assert attempt == 0, "the mirror changed twice during the test"

    installs = oracle.installs()
    want_pending = {u for u in upgradable if u[0] in installs}
    want_held = upgradable - want_pending
    got_pending, got_pending_security = patchwatch_updates("held.test", held=False)
    got_held, got_held_security = patchwatch_updates("held.test", held=True)
    assert got_pending == want_pending, (
        f"pending only patchwatch has: {sorted(got_pending - want_pending)}; "
        f"only apt would install: {sorted(want_pending - got_pending)}"
    )
    assert got_held == want_held and names_set(got_held) == set(held)
    assert len(got_held) == len(oracle.holds() & names_set(upgradable))  # apt_upgrades_held
    assert got_pending_security == security & want_pending
    assert got_held_security == security & want_held and got_held_security  # still security


# -------------------------------------------------------------------------- dnf

OLD_VERSIONS = [
    "hello-1.0-1", "widget-2:3.0-1.el9", "legacy-0.9-1", "libdemo-1.0-1",
    "gadget-1.0-1.module_pw1",
]  # fmt: skip


@pytest.fixture
def rpm_repo(tmp_path: Path) -> Iterator[MirrorServer]:
    require_tools(
        "rpmbuild", "createrepo_c", "modifyrepo_c", "dnf", "rpm",
        install="apt-get install -y rpm createrepo-c dnf",
    )  # fmt: skip
    out = tmp_path / "repo"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "make_rpm_repo.sh"), str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if proc.returncode == 2:
        require_or_skip(ORACLES_ENV, proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    server = MirrorServer(out).start()
    yield server
    server.stop()


@sqlite_only
@pytest.mark.slow
def test_rpm_updates_agree_with_dnf(db: object, tmp_path: Path, rpm_repo: MirrorServer) -> None:
    root = tmp_path / "installroot"
    dnf = [
        "dnf", "-q", f"--installroot={root}", "--releasever=1",
        "--setopt=reposdir=/dev/null", f"--setopt=cachedir={tmp_path / 'dnfcache'}",
        f"--repofrompath=t,{rpm_repo.url()}", "--repo=t", "--nogpgcheck",
    ]  # fmt: skip
    run([*dnf, "install", "-y", *OLD_VERSIONS])
    rpm_qa = run(["rpm", "-qa", "--root", str(root),
                  "--qf", "%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\n"])  # fmt: skip
    packages = []
    for line in rpm_qa.splitlines():
        name, epoch, version, release, arch = line.split("\t")
        packages.append({
            "name": name, "epoch": "" if epoch == "(none)" else epoch, "version": version,
            "release": release, "arch": arch, "type": "rpm",
        })  # fmt: skip
    assert len(packages) == len(OLD_VERSIONS)
    report = {
        "version": 1, "host": "dnfroot.test", "kernel": "5.14.0-427.el9.x86_64",
        "arch": "x86_64", "os": {"id": "rocky", "version_id": "9.4", "name": "Rocky Linux"},
        "packages": packages,
        "repositories": [{"type": "rpm", "id": "t", "name": "t", "urls": [rpm_repo.url()],
                          "priority": -99}],
    }  # fmt: skip
    now = time.time()
    store_report("dnfroot.test", "patchwatch/1", report, now)
    assert process_pending(now) == {"processed": 1}
    with HttpFetcher(timeout=10, retries=0, policy=LOOPBACK_POLICY) as fetcher:
        (result,) = refresh_all(fetcher, now, LOOPBACK_SETTINGS)
    assert result.outcome == "changed", result.detail
    refresh_host_updates(now)
    got_all, got_security = patchwatch_updates("dnfroot.test")

    want_all: set[Update] = set()
    for line in run([*dnf, "check-update"], ok=(0, 100)).splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == "t":
            name, _, arch = fields[0].rpartition(".")
            want_all.add((name, arch, fields[1]))
    assert got_all == want_all
    assert len(want_all) == 5  # every old version has a newer one, legacy by its epoch

    nevra: dict[str, Update] = {f"{n}-{v}.{a}": (n, a, v) for n, a, v in got_all}
    want_security = set()
    for line in run([*dnf, "updateinfo", "list", "--security"]).splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith("PWTEST-"):
            assert fields[2] in nevra, f"dnf's security update {fields[2]} is not pending"
            want_security.add(nevra[fields[2]])
    assert got_security == want_security == {("hello", "noarch", "1.1-1")}
