"""rpm-md parsers against a real repository built by scripts/make_rpm_repo.sh.

tests/fixtures/rpmmd/repo/repodata is one build of that script (gz, the createrepo_c
default), so the parser tests run everywhere. The tests marked "built" run the script
again into tmp_path (rpmbuild + createrepo_c + modifyrepo_c) and recompress the result
into xz, bz2 and zst with repomd.xml rewritten, to read every compression the way the
refresh will: checksum of the download, then open-checksum of the decompressed text.
Without the tools they skip, saying why; with PATCHWATCH_TEST_REQUIRE_ORACLES=1 (CI
installs rpm and createrepo-c) they fail instead.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from backports.zstd import compress as zstd_compress

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.records import Advisory
from patchwatch.domain.records import AvailablePackage
from patchwatch.domain.records import Package
from patchwatch.domain.records import PackageKind
from patchwatch.domain.repodata.compression import decompress
from patchwatch.domain.repodata.compression import open_decompressed
from patchwatch.domain.repodata.model import RepoMd
from patchwatch.domain.repodata.rpmmd import parse_metalink
from patchwatch.domain.repodata.rpmmd import parse_mirrorlist
from patchwatch.domain.repodata.rpmmd import parse_primary
from patchwatch.domain.repodata.rpmmd import parse_repomd
from patchwatch.domain.repodata.rpmmd import parse_rpm_epoch
from patchwatch.domain.repodata.rpmmd import parse_updateinfo

ROOT = Path(__file__).resolve().parent.parent
RPMMD = Path(__file__).parent / "fixtures" / "rpmmd"
SCRIPT = ROOT / "scripts" / "make_rpm_repo.sh"
MIB = 1 << 20
RPM = PackageKind.RPM


def _pkg(name: str, epoch: str, version: str, release: str, arch: str = "noarch") -> Package:
    return Package(name, epoch, version, release, arch, RPM)


EXPECTED_PACKAGES = [
    _pkg("gadget", "0", "1.0", "1.module_pw1"),
    _pkg("gadget", "0", "1.1", "1.module_pw1"),
    _pkg("hello", "0", "1.0", "1"),
    _pkg("hello", "0", "1.1", "1"),
    _pkg("legacy", "1", "0.8", "1"),
    _pkg("legacy", "0", "0.9", "1"),
    _pkg("libdemo", "0", "1.0", "1", "x86_64"),
    _pkg("libdemo", "0", "1.0", "2", "x86_64"),
    _pkg("widget", "2", "3.0", "1.el9"),
    _pkg("widget", "2", "3.0", "2.el9"),
]
EXPECTED_ADVISORIES = [
    Advisory(
        id="PWTEST-2026:0001",
        type="security",
        severity="Important",
        title="Important: hello security update",
        issued="2026-01-01 00:00:00",
        cves=("CVE-2026-0001", "CVE-2026-0002"),
        packages=(_pkg("hello", "0", "1.1", "1"),),
    ),
    Advisory(
        id="PWTEST-2026:0002",
        type="bugfix",
        severity="None",
        title="widget bug fix update",
        issued="2026-01-03 00:00:00",
        packages=(_pkg("widget", "2", "3.0", "2.el9"),),
    ),
    Advisory(
        id="PWTEST-2026:0003",
        type="enhancement",
        title="libdemo enhancement update",
        issued="2026-01-04 00:00:00",
        packages=(_pkg("libdemo", "0", "1.0", "2", "x86_64"),),
    ),
]


def _read_verified(repo: Path, md: RepoMd, type_: str) -> bytes:
    """Fetch one metadata file the way the refresh will: verify, decompress, verify."""
    entry = md.get(type_)
    assert entry is not None, f"no {type_} in repomd.xml"
    blob = (repo / entry.location).read_bytes()
    assert entry.size == len(blob)
    assert hashlib.new(entry.hashlib_name, blob).hexdigest() == entry.checksum
    text = decompress(blob, entry.location, 10 * MIB)
    assert entry.open_size == len(text)
    assert hashlib.new(entry.open_checksum_type, text).hexdigest() == entry.open_checksum
    return blob


def _parse_repo(repo: Path) -> tuple[RepoMd, list[AvailablePackage], list[Advisory]]:
    md = parse_repomd((repo / "repodata" / "repomd.xml").read_bytes())
    results = []
    for type_, parse in (("primary", parse_primary), ("updateinfo", parse_updateinfo)):
        entry = md.get(type_)
        assert entry is not None
        blob = _read_verified(repo, md, type_)
        with open_decompressed(io.BytesIO(blob), entry.location, 10 * MIB) as stream:
            results.append(list(parse(stream)))  # type: ignore[operator]
    return md, results[0], results[1]


# ------------------------------------------------------------- the committed build


def test_repomd_of_the_committed_build() -> None:
    md = parse_repomd((RPMMD / "repo" / "repodata" / "repomd.xml").read_bytes())
    assert md.revision == "1767225600"
    assert set(md.entries) == {
        "primary",
        "filelists",
        "other",
        "primary_db",
        "filelists_db",
        "other_db",
        "modules",
        "updateinfo",
    }
    primary = md.get("primary")
    assert primary is not None
    assert re.fullmatch(r"repodata/[0-9a-f]{64}-primary\.xml\.gz", primary.location)
    assert primary.location == f"repodata/{primary.checksum}-primary.xml.gz"
    assert (primary.checksum_type, primary.open_checksum_type) == ("sha256", "sha256")
    assert primary.timestamp == 1767225600
    assert primary.compression == "gz"
    assert md.get("nonexistent") is None
    for type_ in ("primary", "updateinfo", "modules", "filelists", "other"):
        _read_verified(RPMMD / "repo", md, type_)


def test_primary_and_updateinfo_of_the_committed_build() -> None:
    _, packages, advisories = _parse_repo(RPMMD / "repo")
    assert [p.package for p in packages] == EXPECTED_PACKAGES
    legacy = packages[4]
    assert legacy.package.evr == "1:0.8-1"
    assert legacy.source == "legacy-0.8-1.src.rpm"
    assert legacy.filename == "Packages/legacy-0.8-1.noarch.rpm"
    assert packages[-1].package.nevra == "widget-2:3.0-2.el9.noarch"
    assert advisories == EXPECTED_ADVISORIES


# ---------------------------------------------------------- fresh builds of the script


def _require_rpm_tools() -> None:
    missing = [t for t in ("rpmbuild", "createrepo_c", "modifyrepo_c") if not shutil.which(t)]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install -y rpm createrepo-c)"
        if os.environ.get("PATCHWATCH_TEST_REQUIRE_ORACLES") == "1":
            pytest.fail(f"{reason}; PATCHWATCH_TEST_REQUIRE_ORACLES=1 requires them")
        pytest.skip(reason)


def _build(out: Path, *args: str) -> Path:
    _require_rpm_tools()
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out), *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return out


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "xz": lzma.compress,
    "bz2": bz2.compress,
    "zst": zstd_compress,
}


def _recompress(src: Path, dst: Path, kind: str) -> Path:
    """Copy a gz repository, recompressing every .gz metadata file and rewriting repomd.

    createrepo_c 0.17 (Debian 12) cannot write zstd; newer ones (Fedora) do, so this is
    how the zst variant is made. Written with plain text edits, independent of the
    parser under test.
    """
    shutil.copytree(src, dst)
    repomd_path = dst / "repodata" / "repomd.xml"
    repomd = repomd_path.read_text(encoding="utf-8")

    def rewrite(match: re.Match[str]) -> str:
        block = match.group(0)
        href = re.search(r'<location href="([^"]+\.gz)"', block)
        if href is None:
            return block
        old = dst / href.group(1)
        blob = COMPRESSORS[kind](gzip.decompress(old.read_bytes()))
        digest = hashlib.sha256(blob).hexdigest()
        base = old.name.split("-", 1)[1].removesuffix(".gz")
        new_href = f"repodata/{digest}-{base}.{kind}"
        (dst / new_href).write_bytes(blob)
        old.unlink()
        block = block.replace(href.group(1), new_href)
        block = re.sub(
            r'(<checksum type="sha256">)[0-9a-f]+(</checksum>)', rf"\g<1>{digest}\g<2>", block
        )
        return re.sub(r"<size>\d+</size>", f"<size>{len(blob)}</size>", block)

    repomd_path.write_text(
        re.sub(r"<data type=.*?</data>", rewrite, repomd, flags=re.S), encoding="utf-8"
    )
    return dst


@pytest.fixture(scope="module")
def built_gz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("rpmrepo") / "gz")


def test_script_build_is_reproducible_where_it_should_be(built_gz: Path) -> None:
    """Same packages as the committed build; primary.xml is even byte-identical."""
    md, packages, advisories = _parse_repo(built_gz)
    committed = parse_repomd((RPMMD / "repo" / "repodata" / "repomd.xml").read_bytes())
    assert [p.package for p in packages] == EXPECTED_PACKAGES
    assert advisories == EXPECTED_ADVISORIES
    assert md.get("primary") == committed.get("primary")
    assert sorted(p.name for p in (built_gz / "Packages").iterdir()) == sorted(
        f"{p.name}-{p.version}-{p.release}.{p.arch}.rpm" for p in EXPECTED_PACKAGES
    )


@pytest.mark.parametrize("kind", ["xz", "bz2", "zst"])
def test_recompressed_variants(built_gz: Path, tmp_path: Path, kind: str) -> None:
    repo = _recompress(built_gz, tmp_path / kind, kind)
    md, packages, advisories = _parse_repo(repo)
    for type_ in ("primary", "updateinfo", "modules", "filelists", "other"):
        entry = md.get(type_)
        assert entry is not None and entry.compression == kind
        _read_verified(repo, md, type_)
    assert [p.package for p in packages] == EXPECTED_PACKAGES
    assert advisories == EXPECTED_ADVISORIES


@pytest.mark.parametrize("kind", ["xz", "bz2"])
def test_native_createrepo_compression(tmp_path: Path, kind: str) -> None:
    repo = _build(tmp_path / kind, "--compress", kind, "--no-database")
    md, packages, advisories = _parse_repo(repo)
    primary = md.get("primary")
    assert primary is not None and primary.location.endswith(f"-primary.xml.{kind}")
    assert md.get("primary_db") is None
    assert [p.package for p in packages] == EXPECTED_PACKAGES
    assert advisories == EXPECTED_ADVISORIES


def test_script_rejects_zstd_and_unknown_options(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "x"), "--compress", "zst"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 64 and "unsupported --compress zst" in done.stderr


# ---------------------------------------------------------------- other formats


def test_suse_updateinfo() -> None:
    with (RPMMD / "updateinfo-suse.xml").open("rb") as stream:
        security, recommended = parse_updateinfo(stream)
    assert security.id == "openSUSE-SLE-15.6-2026-1234"
    assert (security.type, security.severity) == ("security", "important")
    assert security.issued == "2026-01-01 00:00:00"  # from a Unix timestamp
    assert security.cves == ("CVE-2026-1111", "CVE-2026-2222")  # deduplicated, title fallback
    assert security.packages == (
        _pkg("libopenssl3", "0", "3.1.4", "150600.5.15.1", "x86_64"),
        _pkg("openssl-3", "0", "3.1.4", "150600.5.15.1", "x86_64"),
    )
    assert (recommended.type, recommended.cves, recommended.issued) == (
        "recommended",
        (),
        "2026-01-02 00:00:00",
    )


def test_metalink_v3_best_first_http_only() -> None:
    urls = parse_metalink((RPMMD / "metalink-fedora.xml").read_bytes())
    path = "fedora/linux/updates/41/Everything/x86_64/repodata/repomd.xml"
    assert urls == [
        f"https://mirror-a.example.invalid/{path}",
        f"https://mirror-b.example.invalid/{path}",
        f"http://mirror-c.example.invalid/pub/{path}",
    ]


def test_metalink_v4_by_priority() -> None:
    assert parse_metalink((RPMMD / "metalink4.meta4").read_bytes()) == [
        "https://mirror-1.example.invalid/repo/repodata/repomd.xml",
        "https://mirror-2.example.invalid/repo/repodata/repomd.xml",
        "ftp://mirror-3.example.invalid/repo/repodata/repomd.xml",
    ]


def test_metalink_errors() -> None:
    with pytest.raises(ParseError, match="not <metalink>"):
        parse_metalink(b"<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(ParseError, match="malformed XML"):
        parse_metalink(b"502 Bad Gateway")
    assert parse_metalink(b'<metalink xmlns="http://www.metalinker.org/"/>') == []


def test_mirrorlist() -> None:
    urls = parse_mirrorlist((RPMMD / "mirrorlist.txt").read_text(encoding="utf-8"))
    assert urls == [
        "https://mirror-a.example.invalid/rocky/9.4/BaseOS/x86_64/os/",
        "http://mirror-b.example.invalid/pub/rocky/9.4/BaseOS/x86_64/os/",
        "ftp://mirror-c.example.invalid/rocky/9.4/BaseOS/x86_64/os/",
    ]
    assert parse_mirrorlist("# nothing here\n\n") == []
    with pytest.raises(ParseError, match="not a mirror URL") as info:
        parse_mirrorlist("http://ok.example/\n<html>\n")
    assert info.value.where == "mirrorlist line 2"
    with pytest.raises(ParseError, match="not a mirror URL"):
        parse_mirrorlist("rsync://mirror.example/repo/\n")


# ---------------------------------------------------------------- hostile XML

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ROOT><name>&lol9;</name><id>&lol9;</id><revision>&lol9;</revision></ROOT>
"""

PARSERS: dict[str, Callable[[bytes], object]] = {
    "repomd": parse_repomd,
    "primary": lambda data: list(parse_primary(io.BytesIO(data))),
    "updateinfo": lambda data: list(parse_updateinfo(io.BytesIO(data))),
    "metalink": parse_metalink,
}
ROOTS = {
    "repomd": b"repomd",
    "primary": b"metadata",
    "updateinfo": b"updates",
    "metalink": b"metalink",
}


@pytest.mark.parametrize("which", sorted(PARSERS))
def test_billion_laughs_is_refused_quickly(which: str) -> None:
    document = LAUGHS.replace(b"ROOT", ROOTS[which])
    tracemalloc.start()
    try:
        with pytest.raises(ParseError, match=r"refused unsafe XML.*internal subset"):
            PARSERS[which](document)  # at the internal subset: before any entity is used
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes: the entities were expanded"


@pytest.mark.parametrize("which", sorted(PARSERS))
def test_billion_laughs_in_utf16_is_refused(which: str) -> None:
    document = LAUGHS.replace(b"ROOT", ROOTS[which]).replace(
        b'"1.0"?>', b'"1.0" encoding="UTF-16"?>'
    )
    with pytest.raises(ParseError, match="refused unsafe XML"):
        PARSERS[which](document.decode().encode("utf-16"))


#: (file written, its content, the document naming it: ROOT and FILE filled in, refusal)
EXTERNAL = {
    "entity": (
        "secret.txt", "TOP-SECRET-CONTENT",
        '<?xml version="1.0"?>\n<!DOCTYPE ROOT [ <!ENTITY xxe SYSTEM "file://FILE"> ]>\n'
        "<ROOT><name>&xxe;</name><revision>&xxe;</revision></ROOT>\n",
        "refused unsafe XML",
    ),
    "dtd": (
        "evil.dtd", '<!ENTITY leak "TOP-SECRET-CONTENT">',
        '<?xml version="1.0"?><!DOCTYPE ROOT SYSTEM "file://FILE">'
        "<ROOT><revision>&leak;</revision></ROOT>",
        "external DTD",
    ),
}  # fmt: skip


@pytest.mark.parametrize("which", sorted(PARSERS))
@pytest.mark.parametrize("external", sorted(EXTERNAL))
def test_external_entity_or_dtd_is_refused_and_never_read(
    which: str, external: str, tmp_path: Path
) -> None:
    name, content, template, refusal = EXTERNAL[external]
    (tmp_path / name).write_text(content, encoding="utf-8")
    document = template.replace("ROOT", ROOTS[which].decode())
    document = document.replace("FILE", str(tmp_path / name))
    with pytest.raises(ParseError, match=refusal) as info:
        PARSERS[which](document.encode())
    assert "TOP-SECRET" not in str(info.value)


def test_doctype_hidden_behind_a_comment_is_still_seen() -> None:
    document = (
        b'<?xml version="1.0"?><!-- <repomd> --><?pi <x?>'
        b'<!DOCTYPE repomd [<!ENTITY a "b">]><repomd/>'
    )
    with pytest.raises(ParseError, match="internal subset"):
        parse_repomd(document)


def test_undeclared_entity_and_bare_doctype() -> None:
    with pytest.raises(ParseError, match="undefined entity") as info:
        parse_repomd(b"<repomd>\n<revision>&nope;</revision></repomd>")
    assert info.value.where == "repomd.xml line 2 column 10"
    assert parse_repomd(b"<!DOCTYPE repomd><repomd><revision>7</revision></repomd>").revision == "7"


# ---------------------------------------------------------------- malformed input

REPOMD_DATA = (
    '<data type="primary"><checksum type="sha256">{c}</checksum>'
    '<location href="repodata/p.xml.gz"/>{extra}</data>'
)


def _repomd(*blocks: str) -> bytes:
    body = "".join(blocks)
    return f'<repomd xmlns="http://linux.duke.edu/metadata/repo">{body}</repomd>'.encode()


@pytest.mark.parametrize(
    ("document", "message", "where"),
    [
        (b"<metadata/>", "not <repomd>", "repomd.xml"),
        (b"<repomd><data/></repomd>", "without a type", "repomd.xml data #1"),
        (_repomd('<data type="primary"/>'), "no <location href>", "repomd.xml data[primary]"),
        (
            _repomd('<data type="primary"><location href="x"/></data>'),
            "no <checksum>",
            "repomd.xml data[primary]",
        ),
        (
            _repomd(REPOMD_DATA.replace("sha256", "crc32").format(c="ab", extra="")),
            "unknown <checksum> type 'crc32'",
            "repomd.xml data[primary]",
        ),
        (
            _repomd(REPOMD_DATA.format(c="xyz", extra="")),
            "not hexadecimal",
            "repomd.xml data[primary]",
        ),
        (
            _repomd(REPOMD_DATA.format(c="ab", extra="<size>12k</size>")),
            "<size> is not a number",
            "repomd.xml data[primary]",
        ),
        (
            _repomd(REPOMD_DATA.format(c="ab", extra=f"<open-size>{'9' * 5000}</open-size>")),
            "<open-size> is not a number",
            "repomd.xml data[primary]",
        ),
        (
            _repomd(REPOMD_DATA.format(c="ab", extra=""), REPOMD_DATA.format(c="cd", extra="")),
            "two <data> entries",
            "repomd.xml data[primary]",
        ),
        (b"<repomd><revision>1</revision>", "no element found", "repomd.xml line 1 column 30"),
    ],
)
def test_malformed_repomd(document: bytes, message: str, where: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_repomd(document)
    assert info.value.where == where


def test_repomd_optional_fields() -> None:
    md = parse_repomd(
        _repomd(
            REPOMD_DATA.replace('"sha256"', '"SHA"').format(
                c="AB", extra="<timestamp>5.0</timestamp>"
            )
        )
    )
    entry = md.get("primary")
    assert entry is not None
    assert (entry.checksum_type, entry.hashlib_name, entry.checksum) == ("sha", "sha1", "ab")
    assert (entry.timestamp, entry.size, entry.open_checksum, md.revision) == (5, None, "", "")


PRIMARY = (
    '<metadata xmlns="http://linux.duke.edu/metadata/common" '
    'xmlns:rpm="http://linux.duke.edu/metadata/rpm">{}</metadata>'
)


@pytest.mark.parametrize(
    ("package", "message", "where"),
    [
        ("<package type='rpm'><arch>x</arch></package>", "without <name>", "package #2"),
        ("<package type='rpm'><name>n</name></package>", "without <arch>", "package #2 (n)"),
        (
            "<package type='rpm'><name>n</name><arch>a</arch></package>",
            "without <version>",
            "package #2 (n)",
        ),
        (
            "<package type='rpm'><name>n</name><arch>a</arch><version rel='1'/></package>",
            "without ver",
            "package #2 (n)",
        ),
        (
            "<package type='rpm'><name>n</name><arch>a</arch>"
            "<version epoch='x' ver='1'/></package>",
            "epoch 'x' is not a number",
            "package #2 (n)",
        ),
    ],
)
def test_malformed_primary(package: str, message: str, where: str) -> None:
    good = "<package type='rpm'><name>ok</name><arch>noarch</arch><version ver='1'/></package>"
    document = PRIMARY.format(good + package).encode()
    with pytest.raises(ParseError, match=message) as info:
        list(parse_primary(io.BytesIO(document)))
    assert info.value.where == f"primary.xml {where}"


@pytest.mark.parametrize(
    ("epoch", "canonical"),
    [
        (None, "0"),
        ("", "0"),
        ("0", "0"),
        ("000", "0"),
        ("007", "7"),
        ("12", "12"),
        ("9" * 16, "9" * 16),
    ],
)
def test_rpm_epoch_canonical_form(epoch: str | None, canonical: str) -> None:
    assert parse_rpm_epoch(epoch, "here") == canonical


@pytest.mark.parametrize("epoch", ["1" * 17, "-1", "1.0", "x", "\u0661"])
def test_rpm_epoch_refused(epoch: str) -> None:
    with pytest.raises(ParseError, match="at most 16 digits") as info:
        parse_rpm_epoch(epoch, "here")
    assert info.value.where == "here"


def test_primary_skips_non_rpm_entries_and_keeps_src() -> None:
    document = PRIMARY.format(
        "<package type='rpm'><name>a</name><arch>src</arch><version epoch='00' ver='1' rel='2'/>"
        "</package><package type='other'><name>b</name></package>"
    ).encode()
    (only,) = parse_primary(io.BytesIO(document))
    assert only == AvailablePackage(_pkg("a", "0", "1", "2", "src"))


def test_malformed_updateinfo() -> None:
    with pytest.raises(ParseError, match="update without <id>") as info:
        list(parse_updateinfo(io.BytesIO(b"<updates><update type='security'/></updates>")))
    assert info.value.where == "updateinfo.xml update #1"
    bad_package = (
        b"<updates><update type='security'><id>X-1</id><pkglist><collection>"
        b"<package name='a' version='1'/></collection></pkglist></update></updates>"
    )
    with pytest.raises(ParseError, match="name, version and arch") as info:
        list(parse_updateinfo(io.BytesIO(bad_package)))
    assert info.value.where == "updateinfo.xml update #1 (X-1)"


def test_errors_of_the_decompressing_stream_pass_through() -> None:
    primary = (RPMMD / "repo" / "repodata").glob("*-primary.xml.gz")
    blob = next(primary).read_bytes()
    with (
        pytest.raises(ParseError, match="truncated gz data") as info,
        open_decompressed(io.BytesIO(blob[:-20]), "primary.xml.gz", MIB) as stream,
    ):
        list(parse_primary(stream))
    assert info.value.where == "primary.xml.gz"
    with (
        pytest.raises(TooLargeError, match=r"primary\.xml\.gz"),
        open_decompressed(io.BytesIO(blob), "primary.xml.gz", 2000) as stream,
    ):
        list(parse_primary(stream))


def test_primary_is_streamed_not_loaded() -> None:
    """A generator: the first package arrives before the document has been read."""
    body = "".join(
        f"<package type='rpm'><name>p{i}</name><arch>x86_64</arch><version ver='{i}'/></package>"
        for i in range(20000)
    )
    stream = io.BytesIO(PRIMARY.format(body).encode())
    packages = parse_primary(stream)
    assert next(packages).package.name == "p0"
    assert stream.tell() < len(stream.getvalue()) // 4
    assert sum(1 for _ in packages) == 19999


@pytest.mark.parametrize("encoding", ["TF-8", "shift_jis"])
def test_unknown_or_multibyte_declared_encoding(encoding: str) -> None:
    """Found by the fuzzer: expat asks Python's codecs, which raise LookupError/ValueError."""
    document = f'<?xml version="1.0" encoding="{encoding}"?><repomd/>'.encode()
    with pytest.raises(ParseError, match="unsupported XML encoding"):
        parse_repomd(document)
    with pytest.raises(ParseError, match="unsupported XML encoding"):
        list(parse_primary(io.BytesIO(document)))
