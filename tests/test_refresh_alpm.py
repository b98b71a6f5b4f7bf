"""pacman mirror refresh against a real repository database served on loopback.

The database is the one repo-add wrote (tests/fixtures/arch, scripts/make_arch_repo.sh);
Python's own http.server serves it, with Last-Modified and If-Modified-Since as a
mirror does. Signatures are made by the real gpg with a key made for the test, and
checked by the real gpgv. Every fault must fail the refresh with a clear reason, keep
the last good data and count the failure.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.alpm import parse_alpm_db
from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.refresh.alpm import alpm_record
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from tests.support.mirrors import served_folder
from tests.support.paths import FIXTURES
from tests.support.repositories import loopback_settings
from tests.support.repositories import reload
from tests.support.repositories import stored
from tests.support.tools import require_or_skip

DB = FIXTURES / "arch" / "pwtest.db.tar.gz"
DB_ZST = FIXTURES / "arch" / "pwtest-zst.db.tar.zst"
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp()
LATER = NOW + 3600
SERVER_PATH = "archlinux/pwtest/os/x86_64"


@pytest.fixture
def www(static_www: tuple[Path, str]) -> tuple[Path, str]:
    """A static mirror: (its folder for this repository, the server URL pacman would use)."""
    return served_folder(static_www, SERVER_PATH, SERVER_PATH)


@pytest.fixture
def fetcher(single_try_fetcher: HttpFetcher) -> HttpFetcher:
    return single_try_fetcher


def add_mirror(url: str, name: str = "pwtest") -> Mirror:
    repo = Repository.create(
        kind="arch", key=f"arch {name} x86_64 {url}", repo_id=name, arch="x86_64", created_at=NOW
    )
    return Mirror.create(repository=repo, url=url, kind="baseurl")


def publish(
    www: tuple[Path, str], source: Path = DB, signed_by: Path | None = None
) -> tuple[Path, Mirror]:
    """Put ``source`` on the static mirror as pwtest.db, with a detached signature by the
    key in the gpg home ``signed_by`` if given; (the served file, its mirror)."""
    folder, url = www
    shutil.copy(source, folder / "pwtest.db")
    if signed_by is not None:
        sign(signed_by, folder / "pwtest.db")
    return folder / "pwtest.db", add_mirror(url)


def read_once(
    www: tuple[Path, str], fetcher: HttpFetcher, settings: Settings | None = None
) -> tuple[Path, Mirror]:
    """:func:`publish` the database and refresh its mirror once, successfully."""
    served, mirror = publish(www)
    res = refresh_mirror(mirror, fetcher, NOW, settings or loopback_settings())
    assert res.outcome == "changed", res.detail
    return served, mirror


def expected(path: Path) -> set[tuple[str, str, str, str, str, str]]:
    """What the parser reads from the same file: the records a refresh must store."""
    with path.open("rb") as raw:
        records = [alpm_record(p).package for p in parse_alpm_db(raw, 1 << 24)]
    return {(str(p.kind), p.name, p.epoch, p.version, p.release, p.arch) for p in records}


@pytest.mark.parametrize("source", [DB, DB_ZST], ids=["gzip", "zstd"])
def test_refresh_stores_the_database_as_arch_packages(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, source: Path
) -> None:
    _served, mirror = publish(www, source)
    res = refresh_mirror(mirror, fetcher, NOW, loopback_settings())
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
    served, mirror = read_once(www, fetcher)
    first = reload(mirror)
    assert first.last_modified  # http.server sends Last-Modified; kept for the next GET
    res = refresh_mirror(first, fetcher, LATER, loopback_settings())
    assert res.outcome == "unchanged", res.detail
    assert "not modified" in res.detail  # a 304: nothing downloaded
    # the same bytes with a newer date: downloaded, found identical by digest, not parsed
    stamp = served.stat().st_mtime + 60
    os.utime(served, (stamp, stamp))
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, loopback_settings())
    assert res.outcome == "unchanged", res.detail
    assert "database unchanged" in res.detail


def test_a_new_database_replaces_the_old_one(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    served, mirror = read_once(www, fetcher)
    shutil.copy(DB_ZST, served)  # the same packages, another file
    res = refresh_mirror(reload(mirror), fetcher, LATER, loopback_settings(), force=True)
    assert res.outcome in ("changed", "unchanged"), res.detail
    assert stored(mirror) == expected(DB_ZST)


def test_broken_database_fails_and_keeps_the_last_good_data(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    served, mirror = read_once(www, fetcher)
    good = stored(mirror)
    served.write_bytes(DB.read_bytes()[:300])  # truncated
    res = refresh_mirror(reload(mirror), fetcher, LATER, loopback_settings(), force=True)
    assert res.outcome == "failed"
    assert "pwtest.db" in res.detail
    after = reload(mirror)
    assert (after.consecutive_failures, after.failures_total) == (1, 1)
    assert stored(mirror) == good
    # a missing database is a failure too, and the next good refresh recovers
    served.unlink()
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, loopback_settings(), force=True)
    assert res.outcome == "failed" and "404" in res.detail
    shutil.copy(DB, served)
    res = refresh_mirror(reload(mirror), fetcher, LATER + 120, loopback_settings(), force=True)
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
    _served, mirror = publish(www, signed_by=home)
    settings = loopback_settings(alpm_keyrings=(str(keyring),), alpm_database_signatures="required")
    res = refresh_mirror(mirror, fetcher, NOW, settings)
    assert res.outcome == "changed", res.detail
    assert "signature verified" in res.detail


def test_signature_that_does_not_verify_fails_the_refresh(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, signer: tuple[Path, Path]
) -> None:
    home, keyring = signer
    served, mirror = publish(www, signed_by=home)
    settings = loopback_settings(alpm_keyrings=(str(keyring),))
    assert refresh_mirror(mirror, fetcher, NOW, settings).outcome == "changed"
    good = stored(mirror)
    # the database replaced, the old signature left: optional mode still checks it
    shutil.copy(DB_ZST, served)
    res = refresh_mirror(reload(mirror), fetcher, LATER, settings, force=True)
    assert res.outcome == "failed"
    assert "signature check failed" in res.detail and "alpm_keyrings" in res.detail
    assert stored(mirror) == good
    assert reload(mirror).consecutive_failures == 1
    # without the test key's keyring: refused (here no keyring at all, or Arch's, which
    # does not hold the test key)
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, loopback_settings(), force=True)
    assert res.outcome == "failed"


def test_required_signature_missing_fails(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    _served, mirror = publish(www)
    res = refresh_mirror(
        mirror, fetcher, NOW, loopback_settings(alpm_database_signatures="required")
    )
    assert res.outcome == "failed"
    assert "no signature" in res.detail and "alpm_database_signatures" in res.detail
    res = refresh_mirror(
        reload(mirror), fetcher, LATER, loopback_settings(alpm_database_signatures="never")
    )
    assert res.outcome == "changed" and "not checked" in res.detail
