"""patchwatch's updates for an Alpine root equal what apk-tools' own version vectors say.

No ``apk`` binary installs on Debian, so the reference here is apk-tools' test data,
``tests/fixtures/versions/apk-version.data`` (``A op B`` lines of apk's
``version_test.c``), not patchwatch's code: every ``A < B``, ``A = B`` or ``A > B``
vector with two valid versions becomes one package, installed at A (in an
``/lib/apk/db/installed`` of the exact format apk writes) and offered at B (in an
``APKINDEX.tar.gz`` of the exact format, signed with openssl as abuild-sign does,
served on loopback). apk upgrades a package exactly when the repository's version
is greater, so the expected updates are the ``<`` vectors' packages, each to its B;
a second repository offering an older build must change nothing (apk takes the
newest). A secdb document (Alpine's format) fixes a third of the packages at the
offered version and a third at the installed one: the security updates must be
exactly the updates of the first third. The whole path runs: the agent reads the
root, processing stores the report, the refresh verifies and reads the index and the
secdb, the update computation decides.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from patchwatch.agent import patchwatch_agent as agent
from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.settings import Settings
from patchwatch.domain.versions_apk import valid_apk
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.hostupdates import refresh_host_updates
from patchwatch.pipeline.processing import process_pending
from patchwatch.pipeline.processing import store_report
from patchwatch.pipeline.refresh.run import refresh_all
from patchwatch.store.models import Host
from patchwatch.store.models import HostUpdate
from patchwatch.store.models import Package
from tests.support.archrepo import index_member
from tests.support.archrepo import openssl_sign
from tests.support.archrepo import signed_index
from tests.support.paths import FIXTURES

VECTORS = FIXTURES / "versions" / "apk-version.data"
KEY_NAME = "patchwatch-test-7a11ce00.rsa.pub"
POLICY = MirrorPolicy.build(["http://127.0.0.1:*"], ["127.0.0.1/32"])
HOST = "alpineroot.test"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def ordered_vectors() -> list[tuple[str, str, str]]:
    """(A, op, B) of every plain ordering vector whose two versions apk accepts."""
    out = []
    for raw in VECTORS.read_text().split("\n"):
        words = raw.partition("#")[0].split()
        if len(words) == 3 and words[1] in ("<", "=", ">"):
            a, op, b = words
            if valid_apk(a) and valid_apk(b):
                out.append((a, op, b))
    return out


def stanza(name: str, version: str, arch: str = "x86_64") -> str:
    """One package as apk writes it, in the installed database and in APKINDEX alike."""
    checksum = base64.b64encode(hashlib.sha1(f"{name}-{version}".encode()).digest()).decode()
    return (
        f"C:Q1{checksum}\nP:{name}\nV:{version}\nA:{arch}\nS:4096\nI:8192\n"
        f"T:{name} test package\nU:https://patchwatch.invalid\nL:MIT\no:{name}\n"
        f"m:patchwatch <fixture@patchwatch.invalid>\nt:1767225600\n\n"
    )


def make_keys(tmp_path: Path) -> tuple[Path, Path]:
    """(an RSA signing key made by openssl, a folder with its public key as /etc/apk/keys)."""
    key = tmp_path / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)  # fmt: skip
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(keys / KEY_NAME)],
                   check=True, capture_output=True)  # fmt: skip
    return key, keys


def publish(repo: Path, stanzas: list[str], key: Path) -> None:
    """Write repo/x86_64/APKINDEX.tar.gz of these stanzas, signed as abuild-sign does."""
    folder = repo / "x86_64"
    folder.mkdir(parents=True)
    index = index_member("".join(stanzas).encode(), b"v3.20.3-pwtest\n")
    signed = signed_index(index, openssl_sign(key, index, "sha256"), KEY_NAME, ".SIGN.RSA256.")
    (folder / "APKINDEX.tar.gz").write_bytes(signed)


def alpine_root(tmp_path: Path, installed: list[str], repositories: str, world: str = "") -> Path:
    """An Alpine root as apk leaves it: os-release, arch, repositories, world, installed."""
    root = tmp_path / "root"
    (root / "etc/apk").mkdir(parents=True)
    (root / "lib/apk/db").mkdir(parents=True)
    (root / "etc/os-release").write_text(
        'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n'
    )
    (root / "etc/apk/arch").write_text("x86_64\n")
    (root / "etc/apk/repositories").write_text(repositories)
    (root / "etc/apk/world").write_text(world)
    (root / "lib/apk/db/installed").write_text("".join(installed))
    return root


def report_root(root: Path, packages: int) -> dict:
    """The agent's report of the root, stored and processed as the receiver does."""
    ctx = agent.Context(str(root), lambda _argv: None, "6.6.58-0-lts", "x86_64", live=False)
    report = agent.collect_report(ctx, HOST, (), now=1.0)
    assert report["agent"]["warnings"] == []
    assert len(report["packages"]) == packages
    now = time.time()
    store_report(HOST, "patchwatch/1", report, now)
    assert process_pending(now) == {"processed": 1}
    return report


def host_updates() -> list[tuple[str, str, bool]]:
    """(name, offered version, security) of the host's pending updates."""
    host = Host.get(Host.name == HOST)
    inst, avail = Package.alias(), Package.alias()
    return list(
        HostUpdate.select(inst.name, avail.version, HostUpdate.security)
        .join(inst, on=(HostUpdate.installed == inst.id))
        .switch(HostUpdate)
        .join(avail, on=(HostUpdate.available == avail.id))
        .where(HostUpdate.host == host)
        .tuples()
    )


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    top = tmp_path / "www"
    top.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(top)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield top, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_alpine_updates_agree_with_apk_tools_vectors(
    db: object, tmp_path: Path, mirror: tuple[Path, str]
) -> None:
    vectors = ordered_vectors()
    assert len(vectors) > 400  # most of apk-tools' 754 ordering lines
    www, base = mirror
    key, keys = make_keys(tmp_path)

    installed, main, community = [], [], []
    want = set()
    want_security = set()
    secfixes = []
    for i, (a, op, b) in enumerate(vectors):
        name = f"v{i:03d}"
        installed.append(stanza(name, a))
        main.append(stanza(name, b))
        community.append(stanza(name, a))  # the installed build, offered again: no effect
        if op == "<":
            want.add((name, b))
        # secdb: a third of the packages fixed at the offered version (a security update
        # when it is one), a third at the installed version (already fixed: not one)
        if i % 3 == 0:
            secfixes.append({"pkg": {"name": name, "secfixes": {b: [f"CVE-2026-{i + 1000}"]}}})
            if op == "<":
                want_security.add((name, b))
        elif i % 3 == 1:
            secfixes.append({"pkg": {"name": name, "secfixes": {a: [f"CVE-2026-{i + 1000}"]}}})
    secdb = tmp_path / "main.json"
    secdb.write_text(json.dumps({
        "apkurl": "{{urlprefix}}/{{distroversion}}/{{reponame}}/{{arch}}/"
                  "{{pkg.name}}-{{pkg.ver}}.apk",
        "archs": ["x86_64"], "reponame": "main", "urlprefix": base + "/alpine",
        "distroversion": "v3.20", "packages": secfixes,
    }))  # fmt: skip
    for repo, stanzas in (("main", main), ("community", community)):
        publish(www / "alpine" / "v3.20" / repo, stanzas, key)
    root = alpine_root(tmp_path, installed, f"{base}/alpine/v3.20/main\n"
                       f"{base}/alpine/v3.20/community\n")  # fmt: skip
    report_root(root, len(vectors))
    now = time.time()
    settings = Settings(
        mirror_url_patterns=("http://127.0.0.1:*",),
        mirror_allowed_networks=("127.0.0.1/32",),
        apk_keys=(str(keys),),
        apk_secdb=(str(secdb),),
    )
    with HttpFetcher(timeout=10, retries=0, policy=POLICY) as fetcher:
        results = refresh_all(fetcher, now, settings)
    assert [r.outcome for r in results] == ["changed", "changed"], [r.detail for r in results]
    refresh_host_updates(now)

    rows = host_updates()
    assert {(name, version) for name, version, _s in rows} == want
    assert len(want) > 150  # both sides: many updates, many packages without one
    assert {(name, version) for name, version, sec in rows if sec} == want_security
    assert 40 < len(want_security) < len(want)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tagged_repository_offers_only_the_names_pinned_to_its_tag(
    db: object, tmp_path: Path, mirror: tuple[Path, str]
) -> None:
    """apk's rule for ``@edge URL`` in /etc/apk/repositories: its packages are allowed
    only to the names the world file pins to the tag (``name@edge``), which may also
    take any untagged repository's; among the allowed, the newest version (the vectors)
    wins. Every ``<`` vector makes three packages, installed at A: pinned with A in main
    and B in edge (an update to B), unpinned with the same offers (no update: edge is
    not theirs), unpinned with B in main and A in edge (an update to B)."""
    vectors = [(a, b) for a, op, b in ordered_vectors() if op == "<"]
    assert len(vectors) > 150
    www, base = mirror
    key, keys = make_keys(tmp_path)
    installed, main, edge, world = [], [], [], ["alpine-base"]
    want = set()
    for i, (a, b) in enumerate(vectors):
        pinned, unpinned, from_main = f"p{i:03d}", f"u{i:03d}", f"m{i:03d}"
        installed += [stanza(pinned, a), stanza(unpinned, a), stanza(from_main, a)]
        main += [stanza(pinned, a), stanza(unpinned, a), stanza(from_main, b)]
        edge += [stanza(pinned, b), stanza(unpinned, b), stanza(from_main, a)]
        world.append(f"{pinned}@edge")
        want |= {(pinned, b), (from_main, b)}
    publish(www / "alpine" / "v3.20" / "main", main, key)
    publish(www / "alpine" / "edge" / "main", edge, key)
    root = alpine_root(
        tmp_path, installed, f"{base}/alpine/v3.20/main\n@edge {base}/alpine/edge/main\n",
        world="\n".join(world) + "\n",
    )  # fmt: skip
    report = report_root(root, 3 * len(vectors))
    tagged = [r for r in report["repositories"] if r.get("tag")]
    assert [(r["tag"], len(r["pinned"])) for r in tagged] == [("edge", len(vectors))]
    settings = Settings(
        mirror_url_patterns=("http://127.0.0.1:*",),
        mirror_allowed_networks=("127.0.0.1/32",),
        apk_keys=(str(keys),),
    )
    now = time.time()
    with HttpFetcher(timeout=10, retries=0, policy=POLICY) as fetcher:
        results = refresh_all(fetcher, now, settings)
    assert [r.outcome for r in results] == ["changed", "changed"], [r.detail for r in results]
    refresh_host_updates(now)
    assert {(name, version) for name, version, _s in host_updates()} == want
