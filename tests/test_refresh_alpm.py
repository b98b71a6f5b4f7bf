"""pacman mirror refresh against a real repository database served on loopback.

The database is the one repo-add wrote (tests/fixtures/arch, scripts/make_arch_repo.sh);
Python's own http.server serves it, with Last-Modified and If-Modified-Since as a
mirror does. Signatures are made by the real gpg with a key made for the test, and
checked by the real gpgv. Every fault must fail the refresh with a clear reason, keep
the last good data and count the failure.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from patchwatch.domain.mirror_policy import MirrorPolicy
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.alpm import parse_alpm_db
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.refresh.alpm import alpm_record
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.store.models import Mirror
from patchwatch.store.models import Package
from patchwatch.store.models import PackageSetMember
from patchwatch.store.models import Repository
from tests.support.paths import FIXTURES
from tests.support.tools import require_or_skip

DB = FIXTURES / "arch" / "pwtest.db.tar.gz"
DB_ZST = FIXTURES / "arch" / "pwtest-zst.db.tar.zst"
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp()
LATER = NOW + 3600
POLICY = MirrorPolicy.build(["http://127.0.0.1:*"], ["127.0.0.1/32"])
SERVER_PATH = "archlinux/pwtest/os/x86_64"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def www(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static mirror: (its folder for this repository, the server URL pacman would use)."""
    root = tmp_path / "www"
    folder = root / SERVER_PATH
    folder.mkdir(parents=True)
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/{SERVER_PATH}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fetcher() -> Iterator[HttpFetcher]:
    with HttpFetcher(
        timeout=2.0, retries=0, backoff=0.0, sleep=lambda _s: None, policy=POLICY
    ) as f:
        yield f


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "http_timeout_seconds": 2.0,
        "http_retries": 0,
        "max_index_bytes": 1 << 20,
        "mirror_url_patterns": ("http://127.0.0.1:*",),
        "mirror_allowed_networks": ("127.0.0.1/32",),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def add_mirror(url: str, name: str = "pwtest") -> Mirror:
    repo = Repository.create(
        kind="arch", key=f"arch {name} x86_64 {url}", repo_id=name, arch="x86_64", created_at=NOW
    )
    return Mirror.create(repository=repo, url=url, kind="baseurl")


def reload(mirror: Mirror) -> Mirror:
    return Mirror.get_by_id(mirror.id)


def stored(mirror: Mirror) -> set[tuple[str, str, str, str, str, str]]:
    rows = (
        Package.select(Package.kind, Package.name, Package.epoch, Package.version,
                       Package.release, Package.arch)
        .join(PackageSetMember, on=PackageSetMember.package == Package.id)
        .where(PackageSetMember.package_set == reload(mirror).package_set_id)
        .tuples()
    )  # fmt: skip
    return set(rows)


def expected(path: Path) -> set[tuple[str, str, str, str, str, str]]:
    """What the parser reads from the same file: the records a refresh must store."""
    with path.open("rb") as raw:
        records = [alpm_record(p).package for p in parse_alpm_db(raw, 1 << 24)]
    return {(str(p.kind), p.name, p.epoch, p.version, p.release, p.arch) for p in records}


@pytest.mark.parametrize("source", [DB, DB_ZST], ids=["gzip", "zstd"])
def test_refresh_stores_the_database_as_arch_packages(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, source: Path
) -> None:
    folder, url = www
    shutil.copy(source, folder / "pwtest.db")
    mirror = add_mirror(url)
    res = refresh_mirror(mirror, fetcher, NOW, make_settings())
    assert res.outcome == "changed", res.detail
    assert res.packages == 7
    got = stored(mirror)
    assert got == expected(source)
    # pacman prints no "0:" epoch and neither do the records
    assert ("arch", "legacy", "1", "0.8", "1", "any") in got
    assert ("arch", "hello", "", "1.1", "1", "any") in got
    assert {row[0] for row in got} == {PackageKind.ARCH.value}
    assert "unsigned database" in res.detail  # no .db.sig, as on Arch's mirrors


def test_unchanged_database_is_not_read_again(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    folder, url = www
    shutil.copy(DB, folder / "pwtest.db")
    mirror = add_mirror(url)
    assert refresh_mirror(mirror, fetcher, NOW, make_settings()).outcome == "changed"
    first = reload(mirror)
    assert first.last_modified  # http.server sends Last-Modified; kept for the next GET
    res = refresh_mirror(first, fetcher, LATER, make_settings())
    assert res.outcome == "unchanged", res.detail
    assert "not modified" in res.detail  # a 304: nothing downloaded
    # the same bytes with a newer date: downloaded, found identical by digest, not parsed
    stamp = (folder / "pwtest.db").stat().st_mtime + 60
    os.utime(folder / "pwtest.db", (stamp, stamp))
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, make_settings())
    assert res.outcome == "unchanged", res.detail
    assert "database unchanged" in res.detail


def test_a_new_database_replaces_the_old_one(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    folder, url = www
    shutil.copy(DB, folder / "pwtest.db")
    mirror = add_mirror(url)
    assert refresh_mirror(mirror, fetcher, NOW, make_settings()).outcome == "changed"
    shutil.copy(DB_ZST, folder / "pwtest.db")  # the same packages, another file
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings(), force=True)
    assert res.outcome in ("changed", "unchanged"), res.detail
    assert stored(mirror) == expected(DB_ZST)


def test_broken_database_fails_and_keeps_the_last_good_data(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    folder, url = www
    shutil.copy(DB, folder / "pwtest.db")
    mirror = add_mirror(url)
    assert refresh_mirror(mirror, fetcher, NOW, make_settings()).outcome == "changed"
    good = stored(mirror)
    (folder / "pwtest.db").write_bytes(DB.read_bytes()[:300])  # truncated
    res = refresh_mirror(reload(mirror), fetcher, LATER, make_settings(), force=True)
    assert res.outcome == "failed"
    assert "pwtest.db" in res.detail
    after = reload(mirror)
    assert (after.consecutive_failures, after.failures_total) == (1, 1)
    assert stored(mirror) == good
    # a missing database is a failure too, and the next good refresh recovers
    (folder / "pwtest.db").unlink()
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, make_settings(), force=True)
    assert res.outcome == "failed" and "404" in res.detail
    shutil.copy(DB, folder / "pwtest.db")
    res = refresh_mirror(reload(mirror), fetcher, LATER + 120, make_settings(), force=True)
    assert res.ok and reload(mirror).consecutive_failures == 0


# --- signatures: a key made for the test, real gpg and gpgv ------------------------------


@pytest.fixture(scope="module")
def signer() -> Iterator[tuple[Path, Path]]:
    """(a gpg home holding a fresh signing key, a keyring file of its public key)."""
    if shutil.which("gpg") is None or shutil.which("gpgv") is None:
        require_or_skip("PATCHWATCH_TEST_REQUIRE_ORACLES", "gpg and gpgv not installed")
    home = Path(tempfile.mkdtemp(prefix="pw-gpg-", dir="/tmp"))  # short: gpg-agent's socket
    home.chmod(0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
           "--passphrase", ""]  # fmt: skip
    subprocess.run(
        [*gpg, "--quick-gen-key", "pwtest repository <repo@patchwatch.invalid>", "ed25519",
         "sign", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    keyring = home / "repo-keyring.gpg"
    exported = subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout
    keyring.write_bytes(exported)
    yield home, keyring
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    shutil.rmtree(home, ignore_errors=True)


def sign(home: Path, path: Path) -> None:
    subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", "--yes", "--detach-sign", "-o", f"{path}.sig", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip


def test_signed_database_is_verified_with_gpgv(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, signer: tuple[Path, Path]
) -> None:
    home, keyring = signer
    folder, url = www
    shutil.copy(DB, folder / "pwtest.db")
    sign(home, folder / "pwtest.db")
    mirror = add_mirror(url)
    settings = make_settings(alpm_keyrings=(str(keyring),), alpm_database_signatures="required")
    res = refresh_mirror(mirror, fetcher, NOW, settings)
    assert res.outcome == "changed", res.detail
    assert "signature verified" in res.detail


def test_signature_that_does_not_verify_fails_the_refresh(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, signer: tuple[Path, Path]
) -> None:
    home, keyring = signer
    folder, url = www
    shutil.copy(DB, folder / "pwtest.db")
    sign(home, folder / "pwtest.db")
    mirror = add_mirror(url)
    settings = make_settings(alpm_keyrings=(str(keyring),))
    assert refresh_mirror(mirror, fetcher, NOW, settings).outcome == "changed"
    good = stored(mirror)
    # the database replaced, the old signature left: optional mode still checks it
    shutil.copy(DB_ZST, folder / "pwtest.db")
    res = refresh_mirror(reload(mirror), fetcher, LATER, settings, force=True)
    assert res.outcome == "failed"
    assert "signature check failed" in res.detail and "alpm_keyrings" in res.detail
    assert stored(mirror) == good
    assert reload(mirror).consecutive_failures == 1
    # without the test key's keyring: refused (here no keyring at all, or Arch's, which
    # does not hold the test key)
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, make_settings(), force=True)
    assert res.outcome == "failed"


def test_required_signature_missing_fails(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    folder, url = www
    shutil.copy(DB, folder / "pwtest.db")
    mirror = add_mirror(url)
    res = refresh_mirror(mirror, fetcher, NOW, make_settings(alpm_database_signatures="required"))
    assert res.outcome == "failed"
    assert "no signature" in res.detail and "alpm_database_signatures" in res.detail
    res = refresh_mirror(
        reload(mirror), fetcher, LATER, make_settings(alpm_database_signatures="never")
    )
    assert res.outcome == "changed" and "not checked" in res.detail
