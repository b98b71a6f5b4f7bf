"""The APKINDEX.tar.gz parser: real-shaped signed indexes, and hostile ones.

No apk tool is installable on Debian, so the reference is the format itself as Alpine
documents it (see tests/support/archrepo.py): tests/fixtures/apk/APKINDEX holds stanzas
in the shape and field order of Alpine's own index (main, x86_64, plus a noarch, an
aarch64 and a Q2 checksum), packed here into the two gzip members, and signed by the
real ``openssl dgst -sign`` as abuild-sign does. openssl then verifies, with the public
key, that the bytes the parser kept as "signed" are what was signed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.repodata.apkindex import ApkPackage
from patchwatch.domain.repodata.apkindex import parse_apkindex
from patchwatch.domain.repodata.bounds import Skipped
from tests.support.archrepo import gz
from tests.support.archrepo import index_member
from tests.support.archrepo import link
from tests.support.archrepo import openssl_sign
from tests.support.archrepo import signed_index
from tests.support.archrepo import tar_bytes
from tests.support.archrepo import tar_segment

APK = Path(__file__).parent / "fixtures" / "apk"
APKINDEX = (APK / "APKINDEX").read_bytes()
DESCRIPTION = (APK / "DESCRIPTION").read_bytes()
MIB = 1 << 20
KEY_NAME = "patchwatch-test-5f0e3b1a.rsa.pub"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("apkkey") / "key.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(path), "2048"], check=True, capture_output=True
    )
    return path


def _expected() -> list[tuple[str, str, str, str]]:
    """(P, V, A, o or P) of each stanza, read with str.split: independent of the parser."""
    out = []
    for stanza in APKINDEX.decode().strip("\n").split("\n\n"):
        fields = dict(line.split(":", 1) for line in stanza.split("\n"))
        out.append((fields["P"], fields["V"], fields["A"], fields.get("o", fields["P"])))
    return out


@pytest.mark.parametrize(
    ("prefix", "digest"), [(".SIGN.RSA.", "sha1"), (".SIGN.RSA256.", "sha256")]
)
def test_signed_index_parses_and_keeps_what_openssl_verifies(
    key: Path, tmp_path: Path, prefix: str, digest: str
) -> None:
    index = index_member(APKINDEX, DESCRIPTION)
    data = signed_index(index, openssl_sign(key, index, digest), KEY_NAME, prefix)
    parsed = parse_apkindex(data, MIB)
    assert parsed.description == DESCRIPTION.decode().strip()
    assert [(p.name, p.version, p.arch, p.origin) for p in parsed.packages] == _expected()
    (signature,) = parsed.signatures
    assert (signature.member, signature.key_name, signature.digest) == (
        prefix + KEY_NAME,
        KEY_NAME,
        digest,
    )
    assert signature.signed == index
    pub = tmp_path / KEY_NAME
    subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
        check=True,
        capture_output=True,
    )
    (tmp_path / "sig").write_bytes(signature.signature)
    verified = subprocess.run(
        ["openssl", "dgst", f"-{digest}", "-verify", str(pub), "-signature", str(tmp_path / "sig")],
        input=signature.signed,
        capture_output=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_fields_of_one_stanza() -> None:
    parsed = parse_apkindex(index_member(APKINDEX, DESCRIPTION), MIB)
    assert parsed.signatures == ()
    musl_utils = parsed.packages[1]
    assert musl_utils == ApkPackage(
        "musl-utils", "1.2.5-r0", "x86_64", "musl", "Q1LnWGiDEN0X4ISanUYfrCROT2uko=", 36640
    )
    assert musl_utils.filename == "musl-utils-1.2.5-r0.apk"
    assert parsed.packages[-1].checksum.startswith("Q2")


def test_stanza_without_origin_or_size_says_unknown_not_zero() -> None:
    parsed = parse_apkindex(index_member(b"P:a\nV:1.0-r0\nA:x86_64\n"), MIB)
    assert parsed.packages == (ApkPackage("a", "1.0-r0", "x86_64", "a", "", None),)


def test_oversized_field_skips_and_counts_that_stanza_only() -> None:
    text = b"P:ok\nV:1-r0\nA:x86\n\nP:" + b"n" * (MAX_PACKAGE_NAME + 1) + b"\nV:1-r0\nA:x86\n\n"
    text += b"P:big\nV:1-r0\nA:x86\nT:" + b"t" * 200_000 + b"\n\nP:z\nV:2-r0\nA:x86\n"
    skipped = Skipped()
    parsed = parse_apkindex(index_member(text), MIB, skipped=skipped)
    assert [p.name for p in parsed.packages] == ["ok", "big", "z"]  # T: is not read
    assert skipped.count == 1 and "name longer than 256" in skipped.examples[0]


def test_symlink_apkindex_is_not_followed() -> None:
    data = gz(tar_bytes([("DESCRIPTION", b"x\n"), link("APKINDEX", "/etc/passwd")]))
    with pytest.raises(ParseError, match="APKINDEX is a symlink"):
        parse_apkindex(data, MIB)


def test_tar_bomb_is_refused_at_the_limit() -> None:
    bomb = gz(tar_bytes([("padding", bytes(64 * MIB)), ("APKINDEX", APKINDEX)]))
    with pytest.raises(TooLargeError, match="more than the limit"):
        parse_apkindex(bomb, 8 * MIB)


def test_signature_member_bomb_is_refused() -> None:
    bomb = gz(tar_segment(".SIGN.RSA." + KEY_NAME, bytes(8 * MIB)))
    with pytest.raises(ParseError, match="signature member decompresses to more than"):
        parse_apkindex(bomb + index_member(APKINDEX), MIB)


@pytest.mark.parametrize("where", ["signature", "index", "trailer"])
def test_truncated_gzip_is_refused(key: Path, where: str) -> None:
    index = index_member(APKINDEX, DESCRIPTION)
    data = signed_index(index, openssl_sign(key, index, "sha1"), KEY_NAME)
    cut = {"signature": 30, "index": len(data) - len(index) // 2, "trailer": len(data) - 3}[where]
    with pytest.raises(ParseError, match=r"truncated|corrupt|no index"):
        parse_apkindex(data[:cut], MIB)


def test_entry_limit() -> None:
    data = index_member(APKINDEX)
    assert len(parse_apkindex(data, MIB, max_entries=12).packages) == 12
    with pytest.raises(TooLargeError, match="more than 11 packages"):
        parse_apkindex(data, MIB, max_entries=11)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"P:a\nA:x86\n", "no V:"),
        (b"V:1-r0\nA:x86\n", "no P:"),
        (b"P:a\nV:1-r0\n", "no A:"),
        (b"P:a\nV:1-r0\nV:2-r0\nA:x86\n", "given twice"),
        (b"P:a\nV:not-a-version\nA:x86\n", "not an apk version"),
        (b"P:a\nV:1-r0\nA:x86\nC:Q1short\n", "not a Q1"),
        (b"P:a\nV:1-r0\nA:x86\nC:MD5abcdef\n", "not a Q1"),
        (b"P:a\nV:1-r0\nA:x86\nS:12k\n", "not a size"),
        (b"P:a\nV:1-r0\nA:x86\nno colon here\n", "not a 'letter:value' line"),
        (b"P:\xff\nV:1-r0\nA:x86\n", "not UTF-8"),
    ],
)
def test_malformed_stanza_fails_the_index(text: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_apkindex(index_member(text), MIB)


def test_archive_without_apkindex_or_with_stray_signature_member() -> None:
    with pytest.raises(ParseError, match="no APKINDEX member"):
        parse_apkindex(gz(tar_bytes([("DESCRIPTION", b"x\n")])), MIB)
    odd = gz(tar_segment(".SIGN.RSA." + KEY_NAME, b"sig") + tar_segment("extra", b"x"))
    with pytest.raises(ParseError, match="unexpected member"):
        parse_apkindex(odd + index_member(APKINDEX), MIB)


def test_signature_check_needs_a_trusted_key_that_verifies(key: Path, tmp_path: Path) -> None:
    from patchwatch.domain.repodata.apksign import load_keys
    from patchwatch.domain.repodata.apksign import verify_apk_signature

    index = index_member(APKINDEX, DESCRIPTION)
    parsed = parse_apkindex(signed_index(index, openssl_sign(key, index, "sha256"), KEY_NAME,
                                         ".SIGN.RSA256."), MIB)  # fmt: skip
    pub = tmp_path / KEY_NAME
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)  # fmt: skip
    (tmp_path / "not-a-key.pub").write_text("hello")
    from patchwatch.domain.repodata.apkindex import read_signatures

    data = signed_index(index, openssl_sign(key, index, "sha256"), KEY_NAME, ".SIGN.RSA256.")
    assert read_signatures(data) == parsed.signatures  # without reading the index
    assert read_signatures(index) == ()  # unsigned
    keys = load_keys([str(tmp_path)])
    assert set(keys) == {KEY_NAME, "not-a-key.pub"}
    assert verify_apk_signature(parsed.signatures, keys) == KEY_NAME
    with pytest.raises(ParseError, match="not a PEM public key"):
        verify_apk_signature(parsed.signatures, {KEY_NAME: b"hello"})
    with pytest.raises(ParseError, match="not among the trusted keys"):
        verify_apk_signature(parsed.signatures, {"other.rsa.pub": keys[KEY_NAME]})
    with pytest.raises(ParseError, match="not signed"):
        verify_apk_signature((), keys)
