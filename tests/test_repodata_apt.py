"""apt metadata parsers against real Debian data (and hand-written Ubuntu/flat ones).

The InRelease files and the bookworm-updates Packages.xz were downloaded from the
machine's Debian mirror and are kept intact (their signatures still verify); the
bookworm Packages file is trimmed to 235 real stanzas. python-debian, already a
dependency, is the oracle for field values; gpgv is the oracle for the signed text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import lzma
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from debian.deb822 import Packages as DebPackages
from debian.deb822 import Release as DebRelease
from debian.debian_support import Version as DebVersion

from patchwatch.domain.errors import ParseError
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.apt import compute_gpgv_command
from patchwatch.domain.repodata.apt import extract_signed_text
from patchwatch.domain.repodata.apt import is_security_release
from patchwatch.domain.repodata.apt import parse_deb_version
from patchwatch.domain.repodata.apt import parse_gpgv_status
from patchwatch.domain.repodata.apt import parse_packages
from patchwatch.domain.repodata.apt import parse_release
from patchwatch.domain.repodata.compression import decompress
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.versions import split_deb

APT = Path(__file__).parent / "fixtures" / "apt"
UTC = dt.UTC
MIB = 1 << 20


def _text(name: str) -> str:
    return (APT / name).read_text(encoding="utf-8")


def _require_tool(name: str, install: str) -> str:
    """Return the tool's path; skip (saying why) or, in CI with oracles required, fail."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (apt-get install -y {install})"
        if os.environ.get("PATCHWATCH_TEST_REQUIRE_ORACLES") == "1":
            pytest.fail(f"{reason}; PATCHWATCH_TEST_REQUIRE_ORACLES=1 requires it")
        pytest.skip(reason)
    return path


# ----------------------------------------------------------------- real Release files


def test_bookworm_inrelease_fields() -> None:
    release = parse_release(_text("InRelease-bookworm"))
    assert (release.origin, release.label, release.suite, release.codename) == (
        "Debian",
        "Debian",
        "oldstable",
        "bookworm",
    )
    assert release.version == "12.15"
    assert release.date == dt.datetime(2026, 7, 11, 10, 16, 37, tzinfo=UTC)
    assert release.valid_until is None
    assert release.architectures == (
        *("all", "amd64", "arm64", "armel", "armhf"),
        *("i386", "mips64el", "mipsel", "ppc64el", "s390x"),
    )
    assert release.components == ("main", "contrib", "non-free-firmware", "non-free")
    assert release.acquire_by_hash is True
    assert release.fields["Description"] == "Debian 12.15 Released 11 July 2026"
    assert not release.is_flat
    assert is_security_release(release) is False


def test_bookworm_index_entry_prefers_gz_then_follows_the_order_given() -> None:
    release = parse_release(_text("InRelease-bookworm"))
    default = release.index_for("main", "amd64")
    assert default is not None
    assert (default.path, default.compression) == ("main/binary-amd64/Packages.gz", "gz")
    assert default.size == 12_084_798
    plain = release.index_for("main", "amd64", ("plain", "xz"))
    assert plain is not None and (plain.path, plain.compression) == (
        "main/binary-amd64/Packages",
        "plain",
    )
    # formats the order leaves out still count, after it: bookworm lists no .bz2
    fallback = release.index_for("main", "amd64", ("bz2",))
    assert fallback is not None and fallback.compression == "gz"


def test_bookworm_index_entry_is_the_xz_with_sha256_and_by_hash_path() -> None:
    entry = parse_release(_text("InRelease-bookworm")).index_for("main", "amd64", ("xz",))
    assert entry is not None
    digest = "9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5"
    assert entry.path == "main/binary-amd64/Packages.xz"
    assert entry.size == 8_790_396  # this-machine.md §3 measured the same download
    assert (entry.hash_name, entry.hashlib_name, entry.digest) == ("SHA256", "sha256", digest)
    assert entry.compression == "xz"
    assert entry.by_hash_path == f"main/binary-amd64/by-hash/SHA256/{digest}"


def test_release_tables_agree_with_python_debian() -> None:
    text = _text("InRelease-bookworm")
    ours = parse_release(text)
    oracle = DebRelease(text)
    assert len(ours.files) == len(oracle["SHA256"]) == 772
    for row in oracle["SHA256"]:
        entry = ours.files[row["name"]]
        assert entry.size == int(row["size"])
        assert entry.hashes["SHA256"] == row["sha256"]
    for row in oracle["MD5Sum"]:
        assert ours.files[row["name"]].hashes["MD5Sum"] == row["md5sum"]
    assert set(ours.files["main/binary-amd64/Packages.xz"].hashes) == {"MD5Sum", "SHA256"}


def test_security_suite_is_recognised_and_expires() -> None:
    release = parse_release(_text("InRelease-bookworm-security"))
    assert (release.label, release.suite, release.codename) == (
        "Debian-Security",
        "oldstable-security",
        "bookworm-security",
    )
    assert is_security_release(release) is True
    assert release.valid_until == dt.datetime(2026, 11, 28, 0, 53, 2, tzinfo=UTC)
    assert release.is_valid_at(dt.datetime(2026, 11, 27, tzinfo=UTC))
    assert not release.is_valid_at(dt.datetime(2026, 11, 29, tzinfo=UTC))
    # Components say "updates/main" but the index is filed under "main/".
    assert release.components[0] == "updates/main"
    by_component = release.index_for("updates/main", "amd64", ("xz",))
    assert by_component == release.index_for("main", "amd64", ("xz",))
    assert by_component is not None
    assert (by_component.path, by_component.size) == ("main/binary-amd64/Packages.xz", 378_100)


def test_bookworm_updates_chain_release_hash_decompress_parse() -> None:
    """What a refresh does: take size and hash from InRelease, check, decompress, parse."""
    release = parse_release(_text("InRelease-bookworm-updates"))
    assert is_security_release(release) is False
    entry = release.index_for("main", "amd64", ("xz",))
    assert entry is not None
    blob = (APT / "Packages.xz-bookworm-updates-main-amd64").read_bytes()
    assert len(blob) == entry.size == 6924
    assert hashlib.new(entry.hashlib_name, blob).hexdigest() == entry.digest
    packages = list(parse_packages(decompress(blob, entry.compression, 10 * MIB).splitlines(True)))
    assert len(packages) == 38
    assert packages == list(_oracle_packages(lzma.decompress(blob)))


def test_missing_index_is_none() -> None:
    release = parse_release(_text("InRelease-bookworm"))
    assert release.index_for("main", "riscv64") is None
    assert release.index_for("universe", "amd64") is None
    assert release.index_for("", "amd64") is None  # not a flat repository


# ---------------------------------------------------------------- signed text and gpgv


def test_extracted_text_is_what_gpgv_verified(tmp_path: Path) -> None:
    gpgv = _require_tool("gpgv", "gpgv")
    keyring = str(APT / "debian-archive-keyring.gpg")
    signed = APT / "InRelease-bookworm"
    out = tmp_path / "Release"
    cmd = compute_gpgv_command(str(signed), [keyring], output=str(out), gpgv=gpgv)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    status = parse_gpgv_status(done.stdout)
    assert status.is_ok()
    # Debian signs with the archive key of this release and the next, plus the stable
    # release key; the primary fingerprint of the bookworm stable release key:
    assert "4D64FEC119C2029067D6E791F8D2585B8783D481" in status.good
    assert status.is_ok(["4D64 FEC1 19C2 0290 67D6  E791 F8D2 585B 8783 D481"])
    assert not status.is_ok(["0000000000000000000000000000000000000000"])
    extracted = extract_signed_text(signed.read_text(encoding="utf-8"))
    assert extracted.encode() == out.read_bytes()


def test_extracted_text_verifies_against_the_detached_release_gpg(tmp_path: Path) -> None:
    gpgv = _require_tool("gpgv", "gpgv")
    keyring = str(APT / "debian-archive-keyring.gpg")
    release = tmp_path / "Release"
    release.write_bytes(extract_signed_text(_text("InRelease-bookworm")).encode())
    sig = str(APT / "Release.gpg-bookworm")
    cmd = compute_gpgv_command(sig, [keyring], data=str(release), gpgv=gpgv)
    good = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert good.returncode == 0 and parse_gpgv_status(good.stdout).is_ok(), good.stderr
    release.write_bytes(release.read_bytes().replace(b"Version: 12.15", b"Version: 12.16"))
    bad = subprocess.run(cmd, capture_output=True, text=True, check=False)
    status = parse_gpgv_status(bad.stdout)
    assert bad.returncode != 0 and status.bad and not status.good and not status.is_ok()


def test_unknown_key_is_not_ok(tmp_path: Path) -> None:
    gpgv = _require_tool("gpgv", "gpgv")
    empty = tmp_path / "empty.gpg"
    empty.write_bytes(b"")
    cmd = compute_gpgv_command(str(APT / "InRelease-bookworm-security"), [str(empty)], gpgv=gpgv)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    status = parse_gpgv_status(done.stdout)
    assert done.returncode != 0
    assert status.missing_keys and not status.good and not status.is_ok()


def test_parse_gpgv_status_lines() -> None:
    status = parse_gpgv_status(
        "[GNUPG:] NEWSIG\n"
        "[GNUPG:] GOODSIG 6ED0E7B82643E131 Debian Archive Automatic Signing Key\n"
        "[GNUPG:] VALIDSIG 4CB50190207B4758A3F73A796ED0E7B82643E131 2026-07-11 1783765031 0 4 0"
        " 1 8 01 B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8\n"
        "[GNUPG:] ERRSIG 0E98404D386FA1D9 1 10 00 1783765031 9 -\n"
        "[GNUPG:] NO_PUBKEY 0E98404D386FA1D9\n"
        "[GNUPG:] EXPKEYSIG 1111111111111111 Old Key\n"
        "gpgv: some human text\n"
    )
    assert status.good == ("B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8",)
    assert status.missing_keys == ("0E98404D386FA1D9",)
    assert status.expired == ("1111111111111111",)
    assert status.is_ok()
    assert not parse_gpgv_status("[GNUPG:] BADSIG 6ED0E7B82643E131 x\n" * 2).is_ok()


def test_compute_gpgv_command() -> None:
    assert compute_gpgv_command("InRelease", ["/k/debian.gpg", "local.gpg"]) == [
        "gpgv",
        "--status-fd",
        "1",
        "--keyring",
        "/k/debian.gpg",
        "--keyring",
        "./local.gpg",  # a bare name would be looked up in ~/.gnupg
        "InRelease",
    ]
    assert compute_gpgv_command("Release.gpg", ["/k"], data="Release", output="out")[-4:] == [
        "--output",
        "out",
        "Release.gpg",
        "Release",
    ]
    with pytest.raises(ValueError, match="keyring"):
        compute_gpgv_command("InRelease", [])
    with pytest.raises(ValueError, match="stdout"):
        compute_gpgv_command("InRelease", ["/k"], output="-")


SIGNED = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

Origin: Test
- -dash: escaped
Suite: test
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEE
=AfjX
-----END PGP SIGNATURE-----
"""


def test_extract_signed_text_unescapes_dashes() -> None:
    assert extract_signed_text(SIGNED) == "Origin: Test\n-dash: escaped\nSuite: test\n"
    assert extract_signed_text("\n\n" + SIGNED.replace("\n", "\r\n") + "\n\n") == (
        "Origin: Test\n-dash: escaped\nSuite: test\n"
    )


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("Origin: Evil\n" + SIGNED, "does not start with", 1),
        (SIGNED + "Origin: Evil\n", "text after the end of the signature", 12),
        (SIGNED + SIGNED, "text after the end of the signature", 12),
        (SIGNED.replace("- -dash", "-dash"), "not dash-escaped", 5),
        (SIGNED.split("-----BEGIN PGP SIGNATURE")[0], "no '-----BEGIN PGP SIGNATURE-----'", 7),
        (SIGNED.replace("-----END PGP SIGNATURE-----\n", ""), "no '-----END PGP SIGNATURE", 11),
        (SIGNED.replace("Hash: SHA256", "Hash SHA256"), "malformed armour header", 2),
        (
            SIGNED.replace("=AfjX", "-----BEGIN PGP SIGNED MESSAGE-----"),
            "unexpected armour line",
            10,
        ),
    ],
)
def test_extract_signed_text_refuses_text_outside_the_signature(
    text: str, message: str, line: int
) -> None:
    with pytest.raises(ParseError, match=message) as info:
        extract_signed_text(text)
    assert info.value.where == f"line {line}"


def test_parse_release_reads_only_the_signed_part() -> None:
    release = parse_release(SIGNED)
    assert (release.origin, release.suite) == ("Test", "test")
    assert release.fields["-dash"] == "escaped"
    with pytest.raises(ParseError, match="armour inside an unsigned"):
        parse_release("Origin: Evil\n" + SIGNED)
    with pytest.raises(ParseError, match="armour inside an unsigned"):
        parse_release("Origin: x\n-----BEGIN PGP SIGNATURE-----\n")


# ------------------------------------------------------------- Ubuntu, flat, security


def test_ubuntu_security_release() -> None:
    release = parse_release(_text("Release-ubuntu-noble-security-handwritten"))
    assert (release.label, release.suite, release.codename) == ("Ubuntu", "noble-security", "noble")
    assert release.date == dt.datetime(2026, 11, 23, 9, 12, 44, tzinfo=UTC)
    assert is_security_release(release) is True
    entry = release.index_for("main", "amd64")
    assert entry is not None
    assert (entry.path, entry.size, entry.hash_name) == (
        "main/binary-amd64/Packages.gz",
        1_166_313,
        "SHA256",
    )
    assert entry.digest == hashlib.sha256(b"main/binary-amd64/Packages.gz").hexdigest()
    assert entry.by_hash_path == f"main/binary-amd64/by-hash/SHA256/{entry.digest}"
    assert set(release.files[entry.path].hashes) == {"MD5Sum", "SHA1", "SHA256"}
    assert release.index_for("restricted", "amd64") is None


@pytest.mark.parametrize(
    ("fields", "security"),
    [
        ("Label: Ubuntu\nSuite: noble-updates\nCodename: noble\n", False),
        ("Label: Ubuntu\nSuite: noble-backports\nCodename: noble\n", False),
        ("Label: Ubuntu\nSuite: noble\nCodename: noble\n", False),
        ("Label: Ubuntu\nSuite: jammy-apps-security\nCodename: jammy\n", True),
        ("Label: Debian-Security\nSuite: stable\nCodename: buster\n", True),  # pre-bullseye
        ("Label: Debian\nSuite: bookworm-updates\nCodename: bookworm-updates\n", False),
        ("Label: Devuan\nSuite: daedalus-security\nCodename: daedalus-security\n", True),
        ("Label: Debian Backports\nSuite: bookworm-backports\n", False),
    ],
)
def test_is_security_release_cases(fields: str, security: bool) -> None:
    assert is_security_release(parse_release(fields)) is security


def test_flat_repository_chain() -> None:
    release = parse_release(_text("flat/Release"))
    assert release.is_flat and release.suite == "./"
    assert release.date == dt.datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    entry = release.index_for("", "amd64")
    assert entry is not None
    assert (entry.path, entry.compression, entry.hash_name, entry.by_hash_path) == (
        "Packages.gz",
        "gz",
        "SHA256",
        "",  # no Acquire-By-Hash
    )
    blob = (APT / "flat" / entry.path).read_bytes()
    assert (len(blob), hashlib.sha256(blob).hexdigest()) == (entry.size, entry.digest)
    with (
        (APT / "flat" / entry.path).open("rb") as raw,
        open_decompressed(raw, entry.path, MIB) as lines,
    ):
        packages = list(parse_packages(lines))
    assert packages == [
        AvailablePackage(
            Package("example-agent", "2", "1.4.0", "1", "amd64", PackageKind.DEB),
            source="example-agent",
            filename="./example-agent_1.4.0-1_amd64.deb",
        ),
        AvailablePackage(
            Package("example-agent-doc", "", "1.4.0", "1", "all", PackageKind.DEB),
            source="example-agent",
            filename="./example-agent-doc_1.4.0-1_all.deb",
        ),
        AvailablePackage(
            Package("example-tool", "", "0.9~rc1", "", "amd64", PackageKind.DEB),
            source="example-tools",
            filename="./example-tool_0.9~rc1_amd64.deb",
        ),
    ]
    assert packages[0].package.evr == "2:1.4.0-1"


@pytest.mark.parametrize(
    ("listed", "chosen"),
    [
        (["Packages", "Packages.gz", "Packages.bz2", "Packages.xz"], "Packages.gz"),
        (["Packages", "Packages.bz2", "Packages.xz"], "Packages.xz"),
        (["Packages", "Packages.bz2"], "Packages.bz2"),
        (["Packages"], "Packages"),
        (["Packages.diff/Index", "Sources.xz"], None),
    ],
)
def test_index_preference(listed: list[str], chosen: str | None) -> None:
    digest = "ab" * 32
    lines = "".join(f" {digest} {10 + i} main/binary-arm64/{n}\n" for i, n in enumerate(listed))
    release = parse_release(f"Suite: x\nComponents: main\nSHA256:\n{lines}")
    entry = release.index_for("main", "arm64")
    assert (entry.path if entry else None) == (f"main/binary-arm64/{chosen}" if chosen else None)
    if entry is not None:
        assert entry.compression == ("plain" if chosen == "Packages" else chosen.split(".")[1])
        assert entry.by_hash_path == ""


def test_strongest_hash_wins() -> None:
    release = parse_release(
        "Components: main\nAcquire-By-Hash: yes\n"
        f"MD5Sum:\n {'1' * 32} 5 main/binary-amd64/Packages.gz\n"
        f"SHA512:\n {'3' * 128} 5 main/binary-amd64/Packages.gz\n"
        f"SHA1:\n {'2' * 40} 5 main/binary-amd64/Packages.gz\n"
    )
    entry = release.index_for("main", "amd64")
    assert entry is not None
    assert (entry.hash_name, entry.hashlib_name, entry.digest) == ("SHA512", "sha512", "3" * 128)
    assert entry.by_hash_path == f"main/binary-amd64/by-hash/SHA512/{'3' * 128}"


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("", "empty Release file", None),
        ("Origin: a\nOrigin: b\n", "duplicate field 'Origin'", "line 2"),
        ("Origin: a\nno colon here\n", "not a 'Field: value' line", "line 2"),
        (" continuation\n", "continuation line outside a field", "line 1"),
        ("SHA256:\n abc 12 main/Packages\n", "not valid hex", "line 2"),
        (f"SHA256:\n {'a' * 64} 12x main/Packages\n", "not a number", "line 2"),
        (f"SHA256:\n {'a' * 64} {'9' * 5000} main/Packages\n", "not a number", "line 2"),
        (f"SHA256:\n {'a' * 64} 12\n", "is not '<hash> <size> <path>'", "line 2"),
        ("SHA256: inline\n", "text after the field name", "line 1"),
        (f"SHA256:\n {'a' * 64} 1 p\n {'b' * 64} 1 p\n", "listed twice", "line 3"),
        (f"MD5Sum:\n {'a' * 32} 1 p\nSHA256:\n {'b' * 64} 2 p\n", "has size 2", "SHA256"),
        ("Date: yesterday\n", "not an RFC 2822 date", "date"),
        ("Valid-Until: Sat, 99 Foo 2026\n", "not an RFC 2822 date", "valid-until"),
        ("Origin: a\n\nSuite: b\n", "more than one paragraph", "line 3"),
    ],
)
def test_malformed_release(text: str, message: str, where: str | None) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_release(text)
    assert info.value.where == where


def test_release_field_names_are_case_insensitive_and_multiline_kept() -> None:
    release = parse_release(
        f"origin: Debian\nSUITE: stable\nDescription: first\n second line\n"
        f"sha256:\n {'C' * 64} 7 main/binary-amd64/Packages\n"
    )
    assert (release.origin, release.suite) == ("Debian", "stable")
    assert release.fields["Description"] == "first\nsecond line"
    entry = release.index_for("main", "amd64")
    assert entry is not None and entry.digest == "c" * 64


# --------------------------------------------------------------------------- Packages


def _oracle_packages(text: bytes) -> Iterator[AvailablePackage]:
    """The same records built from python-debian's deb822 parser and Version class."""
    for para in DebPackages.iter_paragraphs(text.decode().splitlines(True), use_apt_pkg=False):
        version = DebVersion(para["Version"])
        epoch = version.epoch or ""
        yield AvailablePackage(
            Package(
                para["Package"],
                "" if epoch in ("", "0") else epoch,
                version.upstream_version or "",
                version.debian_revision or "",
                para["Architecture"],
                PackageKind.DEB,
            ),
            source=para.get("Source", para["Package"]).split()[0],
            filename=para.get("Filename", ""),
        )


@pytest.fixture(scope="module")
def trimmed() -> bytes:
    return (APT / "Packages-bookworm-main-amd64-trimmed").read_bytes()


def test_trimmed_bookworm_packages_match_python_debian(trimmed: bytes) -> None:
    ours = list(parse_packages(trimmed.splitlines(keepends=True)))
    assert len(ours) == 235
    assert ours == list(_oracle_packages(trimmed))
    assert sum(1 for p in ours if p.package.epoch) == 89
    assert sum(1 for p in ours if p.package.arch == "all") == 64
    assert sum(1 for p in ours if p.source != p.package.name) >= 103  # Source: x (version)


def test_trimmed_bookworm_known_packages(trimmed: bytes) -> None:
    by_name = {p.package.name: p for p in parse_packages(trimmed.splitlines(keepends=True))}
    bash = by_name["bash"]
    assert bash.package == Package("bash", "", "5.2.15", "2+b13", "amd64", PackageKind.DEB)
    assert bash.source == "bash"  # from "Source: bash (5.2.15-2)"
    assert bash.filename.startswith("pool/main/b/bash/bash_5.2.15-2+b13_amd64.deb")
    assert by_name["libc6"].source == "glibc"
    assert by_name["libc6"].package.evr == "2.36-9+deb12u14"
    assert by_name["openssl"].package.release == "1~deb12u2"
    six = by_name["6tunnel"].package
    assert (six.epoch, six.version, six.release, six.evr) == ("1", "0.13", "2", "1:0.13-2")
    assert by_name["dpkg"].package.release == ""  # native package


def test_packages_parse_from_a_compressed_stream(trimmed: bytes) -> None:
    import io

    with open_decompressed(io.BytesIO(lzma.compress(trimmed)), "xz", MIB) as stream:
        assert len(list(parse_packages(stream))) == 235


def test_packages_line_endings_and_separators() -> None:
    text = (
        b"\n\nPackage: a\r\nVersion: 1.0-1\r\nArchitecture: amd64\r\n\r\n\r\n"
        b"Package: b\nVersion: 0:2\nArchitecture: all\nDescription: x\n .\n more"
    )  # no final newline, CRLF stanza, extra blank lines, explicit epoch 0
    got = [p.package for p in parse_packages(text.splitlines(keepends=True))]
    assert got == [
        Package("a", "", "1.0", "1", "amd64", PackageKind.DEB),
        Package("b", "", "2", "", "all", PackageKind.DEB),
    ]
    assert list(parse_packages([])) == []


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        (b"Package: a\nVersion: 1\n\n", "missing Architecture", "stanza at line 1 (Package a)"),
        (
            b"Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\nVersion: 1\n",
            "missing Architecture",
            "stanza at line 5 (Package b)",
        ),
        (b"Version: 1\nArchitecture: all\n", "missing Package", "stanza at line 1"),
        (b"Package: a\nArchitecture: all\n", "missing Version", "stanza at line 1 (Package a)"),
        (
            b"Package: a\nVersion: 1\nArchitecture: all\n\n continued\n",
            "continuation line outside a stanza",
            "line 5",
        ),
        (b"Package: a\nthis is not a field\n", "not a 'Field: value' line", "line 2"),
        (b"Package: a\nPackage: b\n", "duplicate field Package", "line 2"),
        (b"Package: a\nVersion: x:1\nArchitecture: all\n", "epoch", "stanza at line 1 (Package a)"),
        (b"Package: a\nVersion: 1-\nArchitecture: all\n", "empty revision", "stanza at line 1"),
        (b"Package: a\nVersion: 1:\nArchitecture: all\n", "empty upstream", "stanza at line 1"),
        (b"Package: a\nVersion: 1 2\nArchitecture: all\n", "invalid version", "stanza at line 1"),
        (b"Package: a\nVersion: 2147483648:1\nArchitecture: all\n", "too big", "stanza at line 1"),
        (b"Package: a\nVersion: " + b"9" * 500 + b":1\nArchitecture: all\n", "too big", None),
        (b"Package: \xff\nVersion: 1\nArchitecture: all\n", "not UTF-8", "stanza at line 1"),
        (
            b"Package: a\nVersion: 1\nArchitecture: all\nSource: b c\n",
            r"is not 'name \(version\)'",
            None,
        ),
    ],
)
def test_malformed_packages(text: bytes, message: str, where: str | None) -> None:
    with pytest.raises(ParseError, match=message) as info:
        list(parse_packages(text.splitlines(keepends=True)))
    if where is not None:
        assert info.value.where is not None and info.value.where.startswith(where)


@pytest.mark.parametrize(
    ("version", "parts"),
    [
        ("1.0", ("", "1.0", "")),
        ("1.0-1", ("", "1.0", "1")),
        ("1:1.0-1", ("1", "1.0", "1")),
        ("0:1.0-1", ("", "1.0", "1")),
        ("007:1.0", ("7", "1.0", "")),
        ("2:1.0-1-2", ("2", "1.0-1", "2")),  # revision after the last hyphen
        ("1:2:3-4", ("1", "2:3", "4")),  # colons allowed in upstream when an epoch exists
        ("5.2.15-2+b13", ("", "5.2.15", "2+b13")),
        ("1.0~rc1+dfsg-0ubuntu0.24.04.1", ("", "1.0~rc1+dfsg", "0ubuntu0.24.04.1")),
    ],
)
def test_parse_deb_version(version: str, parts: tuple[str, str, str]) -> None:
    assert parse_deb_version(version) == parts


def test_split_agrees_with_the_version_module(trimmed: bytes) -> None:
    """The records must split versions exactly as patchwatch.domain.versions orders them."""
    for para in DebPackages.iter_paragraphs(trimmed.decode().splitlines(True), use_apt_pkg=False):
        epoch, upstream, revision = split_deb(para["Version"])
        assert parse_deb_version(para["Version"]) == (epoch.lstrip("0"), upstream, revision)
