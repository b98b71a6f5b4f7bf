"""Alpine mirror refresh: a signed APKINDEX.tar.gz served on loopback.

No apk tool installs on Debian, so the index is built here in the exact format (see
tests/support/archrepo.py: the signature's gzip member, then the index's) from
tests/fixtures/apk/APKINDEX, Alpine-shaped stanzas, and signed by the real ``openssl``
as abuild-sign does, with a key made for the test. Python's http.server serves it with
Last-Modified, as a mirror does. Every fault must fail the refresh with a clear reason,
keep the last good data and count the failure.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from patchwatch.domain.settings import Settings
from patchwatch.pipeline.fetch import HttpFetcher
from patchwatch.pipeline.refresh.run import refresh_mirror
from patchwatch.store.models import Mirror
from patchwatch.store.models import Repository
from tests.support.archrepo import index_member
from tests.support.archrepo import openssl_sign
from tests.support.archrepo import signed_index
from tests.support.mirrors import served_folder
from tests.support.paths import FIXTURES
from tests.support.repositories import loopback_settings
from tests.support.repositories import reload
from tests.support.repositories import stored

APK = FIXTURES / "apk"
APKINDEX = (APK / "APKINDEX").read_bytes()
DESCRIPTION = (APK / "DESCRIPTION").read_bytes()
KEY_NAME = "patchwatch-test-61e2c0de.rsa.pub"
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp()
LATER = NOW + 3600
REPO_PATH = "alpine/v3.20/main"


@pytest.fixture
def www(static_www: tuple[Path, str]) -> tuple[Path, str]:
    """(the folder APKINDEX.tar.gz goes in, the repository URL of /etc/apk/repositories)."""
    return served_folder(static_www, f"{REPO_PATH}/x86_64", REPO_PATH)


@pytest.fixture
def fetcher(single_try_fetcher: HttpFetcher) -> HttpFetcher:
    return single_try_fetcher


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the signing key, a folder holding its public key as /etc/apk/keys does, another key)."""
    top = tmp_path_factory.mktemp("apkkeys")
    private, other = top / "key.pem", top / "other.pem"
    for path in (private, other):
        subprocess.run(["openssl", "genrsa", "-out", str(path), "2048"], check=True,
                       capture_output=True)  # fmt: skip
    folder = top / "etc-apk-keys"
    folder.mkdir()
    subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-out", str(folder / KEY_NAME)],
        check=True, capture_output=True,
    )  # fmt: skip
    return private, folder, other


def build(
    key: Path, digest: str = "sha1", key_name: str = KEY_NAME, body: bytes = APKINDEX
) -> bytes:
    index = index_member(body, DESCRIPTION)
    prefix = ".SIGN.RSA256." if digest == "sha256" else ".SIGN.RSA."
    return signed_index(index, openssl_sign(key, index, digest), key_name, prefix)


def add_mirror(url: str, arch: str = "x86_64") -> Mirror:
    repo = Repository.create(kind="apk", key=f"apk {url} {arch} {url}", repo_id=url, arch=arch,
                             created_at=NOW)  # fmt: skip
    return Mirror.create(repository=repo, url=url, kind="baseurl")


def publish(www: tuple[Path, str], index: bytes) -> tuple[Path, Mirror]:
    """Put ``index`` on the static mirror as APKINDEX.tar.gz; (the served file, its mirror)."""
    folder, url = www
    (folder / "APKINDEX.tar.gz").write_bytes(index)
    return folder / "APKINDEX.tar.gz", add_mirror(url)


def read_once(
    www: tuple[Path, str], fetcher: HttpFetcher, keys: tuple[Path, Path, Path]
) -> tuple[Path, Mirror, Settings]:
    """:func:`publish` an index signed with the test key and refresh it once, successfully,
    with settings that trust that key; (the served file, its mirror, those settings)."""
    private, folder, _other = keys
    settings = loopback_settings(apk_keys=(str(folder),))
    served, mirror = publish(www, build(private))
    res = refresh_mirror(mirror, fetcher, NOW, settings)
    assert res.outcome == "changed", res.detail
    return served, mirror, settings


def expected() -> set[tuple[str, str, str, str, str, str]]:
    """P, V and A of each stanza, read with str.split: independent of the parser."""
    out = set()
    for stanza in APKINDEX.decode().strip("\n").split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.split("\n"))
        out.add(("apk", fields["P"], "", fields["V"], "", fields["A"]))
    return out


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
def test_signed_index_is_verified_and_stored(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, keys: tuple[Path, Path, Path],
    digest: str,
) -> None:  # fmt: skip
    private, folder, _other = keys
    _served, mirror = publish(www, build(private, digest))
    res = refresh_mirror(mirror, fetcher, NOW, loopback_settings(apk_keys=(str(folder),)))
    assert res.outcome == "changed", res.detail
    assert f"signed by {KEY_NAME}" in res.detail
    assert stored(mirror) == expected()
    # a key file named directly works as the folder does
    key_file = str(folder / KEY_NAME)
    res = refresh_mirror(reload(mirror), fetcher, LATER, loopback_settings(apk_keys=(key_file,)),
                         force=True)  # fmt: skip
    assert res.ok, res.detail


def test_unchanged_index_is_not_read_again(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, keys: tuple[Path, Path, Path]
) -> None:
    _served, mirror, settings = read_once(www, fetcher, keys)
    res = refresh_mirror(reload(mirror), fetcher, LATER, settings)
    assert res.outcome == "unchanged" and "not modified" in res.detail


def test_without_keys_the_refresh_fails_unless_verification_is_off(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, keys: tuple[Path, Path, Path]
) -> None:
    private, _folder, _other = keys
    _served, mirror = publish(www, build(private))
    res = refresh_mirror(mirror, fetcher, NOW, loopback_settings())
    assert res.outcome == "failed" and "apk_keys" in res.detail
    assert reload(mirror).package_set_id is None
    res = refresh_mirror(
        reload(mirror), fetcher, LATER, loopback_settings(apk_verify_signatures=False)
    )
    assert res.outcome == "changed" and "not checked" in res.detail
    assert stored(mirror) == expected()


def test_bad_signatures_fail_and_keep_the_last_good_data(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, keys: tuple[Path, Path, Path]
) -> None:
    private, _folder, other = keys
    index_file, mirror, settings = read_once(www, fetcher, keys)
    good = stored(mirror)
    # signed with another key under the trusted key's name: does not verify
    index_file.write_bytes(build(other))
    res = refresh_mirror(reload(mirror), fetcher, LATER, settings, force=True)
    assert res.outcome == "failed" and "does not verify" in res.detail
    # signed by a key apk_keys does not hold
    index_file.write_bytes(build(other, key_name="someone-else.rsa.pub"))
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, settings, force=True)
    assert res.outcome == "failed" and "not among the trusted keys" in res.detail
    # a package added after signing: the signature covers the index member, byte for byte
    signed = build(private)
    signature_member = signed[: len(signed) - len(index_member(APKINDEX, DESCRIPTION))]
    evil = APKINDEX.rstrip(b"\n") + b"\n\nP:evil\nV:9.9-r0\nA:x86_64\n"
    index_file.write_bytes(signature_member + index_member(evil, DESCRIPTION))
    res = refresh_mirror(reload(mirror), fetcher, LATER + 120, settings, force=True)
    assert res.outcome == "failed" and "does not verify" in res.detail
    # unsigned
    index_file.write_bytes(index_member(APKINDEX, DESCRIPTION))
    res = refresh_mirror(reload(mirror), fetcher, LATER + 180, settings, force=True)
    assert res.outcome == "failed" and "not signed" in res.detail
    after = reload(mirror)
    assert after.consecutive_failures == 4 and stored(mirror) == good


def test_repository_without_an_architecture_is_skipped(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher
) -> None:
    _target, url = www
    res = refresh_mirror(add_mirror(url, arch=""), fetcher, NOW, loopback_settings())
    assert res.outcome == "skipped"


def test_a_new_secdb_reclassifies_without_a_new_index(
    db: object, www: tuple[Path, str], fetcher: HttpFetcher, keys: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    from patchwatch.store.models import Advisory

    _private, folder, _other = keys
    _served, mirror, _settings = read_once(www, fetcher, keys)
    assert Advisory.select().count() == 0
    secdb = tmp_path / "main.json"
    secdb.write_text(
        '{"distroversion": "v3.20", "reponame": "main", "packages": ['
        '{"pkg": {"name": "musl", "secfixes": {"1.2.5-r0": ["CVE-2025-26519"]}}},'
        '{"pkg": {"name": "not-in-the-index", "secfixes": {"1.0-r0": ["CVE-2025-1"]}}}]}'
    )
    with_secdb = loopback_settings(apk_keys=(str(folder),), apk_secdb=(str(secdb),))
    res = refresh_mirror(reload(mirror), fetcher, LATER, with_secdb)
    assert res.outcome == "changed", res.detail  # the same index, a new feed
    assert [(a.advisory_id, a.type, a.cves) for a in Advisory.select()] == [
        ("alpine-secdb:v3.20/main:musl-1.2.5-r0", "security", "CVE-2025-26519")
    ]
    res = refresh_mirror(reload(mirror), fetcher, LATER + 60, with_secdb)
    assert res.outcome == "unchanged" and "not modified" in res.detail
    # a secdb of another branch does not apply to this mirror
    secdb.write_text(secdb.read_text().replace("v3.20", "v3.19"))
    res = refresh_mirror(reload(mirror), fetcher, LATER + 120, with_secdb)
    assert res.outcome == "changed" and Advisory.select().count() == 0
    # an unreadable feed fails the refresh and keeps what was stored
    secdb.write_text("{not json")
    res = refresh_mirror(reload(mirror), fetcher, LATER + 180, with_secdb)
    assert res.outcome == "failed" and "secdb" in res.detail
