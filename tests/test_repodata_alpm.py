"""The pacman database parser against what pacman's own repo-add wrote, and hostile ones.

tests/fixtures/arch holds the databases of one run of scripts/make_arch_repo.sh (makepkg
and repo-add from Debian's pacman 6.0.2), so these tests run everywhere. The test marked
"built" runs the script again and compares the parsed database with repo-add's input:
the ``.PKGINFO`` inside each package file it was given, and the files themselves (size
and SHA-256). Without the tools it skips, saying why; with
PATCHWATCH_TEST_REQUIRE_ORACLES=1 it fails instead. Hostile archives are built with the
stdlib's tarfile (tests/support/archrepo.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from backports.zstd import ZstdFile

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.limits import MAX_PACKAGE_NAME
from patchwatch.domain.limits import MAX_SOURCE
from patchwatch.domain.repodata.alpm import MAX_DESC
from patchwatch.domain.repodata.alpm import ArchPackage
from patchwatch.domain.repodata.alpm import parse_alpm_db
from patchwatch.domain.repodata.bounds import Skipped
from tests.support.archrepo import link
from tests.support.archrepo import pacman_db
from tests.support.archrepo import pacman_desc
from tests.support.archrepo import tar_bytes

ROOT = Path(__file__).resolve().parent.parent
ARCH = Path(__file__).parent / "fixtures" / "arch"
SCRIPT = ROOT / "scripts" / "make_arch_repo.sh"
MIB = 1 << 20

#: what scripts/make_arch_repo.sh puts in the database: (name, epoch, pkgver, pkgrel, arch, base)
EXPECTED = [
    ("gadget", "0", "1.0.r12.gabc1234", "3", "any", "gadget"),
    ("hello", "0", "1.1", "1", "any", "hello"),
    ("legacy", "1", "0.8", "1", "any", "legacy"),
    ("libdemo", "0", "1.0", "2.1", "x86_64", "libdemo"),
    ("toolkit-cli", "0", "2.0rc1", "1", "x86_64", "toolkit"),
    ("toolkit-common", "0", "2.0rc1", "1", "any", "toolkit"),
    ("widget", "2", "3.0", "2", "any", "widget"),
]


# what scripts/make_arch_repo.sh builds today: the committed databases above were made
# before it also built the packages that change architecture
BUILT = sorted([*EXPECTED, ("mover", "0", "1.1", "1", "any", "mover"),
                ("shifter", "0", "2.1", "1", "x86_64", "shifter")])  # fmt: skip


def _parse(data: bytes, limit: int = MIB, **kwargs: object) -> list[ArchPackage]:
    return list(parse_alpm_db(io.BytesIO(data), limit, **kwargs))  # type: ignore[arg-type]


def _fields(packages: list[ArchPackage]) -> list[tuple[str, ...]]:
    return [(p.name, p.epoch, p.pkgver, p.pkgrel, p.arch, p.base) for p in packages]


@pytest.mark.parametrize(
    "file", ["pwtest.db.tar.gz", "pwtest-zst.db.tar.zst", "pwtest.files.tar.gz"]
)
def test_committed_databases_read_as_repo_add_wrote_them(file: str) -> None:
    skipped = Skipped()
    packages = _parse((ARCH / file).read_bytes(), skipped=skipped)
    assert _fields(packages) == EXPECTED
    assert skipped.count == 0
    widget = packages[-1]
    assert widget.version == "2:3.0-2"
    assert widget.filename == "widget-2:3.0-2-any.pkg.tar.zst"
    assert widget.csize is not None and widget.csize > 0
    assert len(widget.sha256) == 64


def test_both_compressions_hold_the_same_packages() -> None:
    gz = _parse((ARCH / "pwtest.db.tar.gz").read_bytes())
    zst = _parse((ARCH / "pwtest-zst.db.tar.zst").read_bytes(), kind="pwtest-zst.db.tar.zst")
    assert gz == zst


# ---------------------------------------------------------- fresh builds of the script


def _require_tools() -> None:
    missing = [
        t for t in ("makepkg", "repo-add", "bsdtar", "fakeroot", "zstd") if not shutil.which(t)
    ]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install -y makepkg libarchive-tools)"
        if os.environ.get("PATCHWATCH_TEST_REQUIRE_ORACLES") == "1":
            pytest.fail(f"{reason}; PATCHWATCH_TEST_REQUIRE_ORACLES=1 requires them")
        pytest.skip(reason)


def _pkginfo(path: Path) -> dict[str, str]:
    """The single-valued fields of a package's .PKGINFO (what repo-add copies)."""
    with ZstdFile(path) as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
        for member in archive:
            if member.name == ".PKGINFO":
                handle = archive.extractfile(member)
                assert handle is not None
                text = handle.read().decode()
                break
        else:
            raise AssertionError(f"{path.name} has no .PKGINFO")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if " = " in line and not line.startswith("#"):
            key, _, value = line.partition(" = ")
            fields.setdefault(key, value)
    return fields


@pytest.mark.slow
def test_built_database_equals_repo_add_input(tmp_path: Path) -> None:
    """Every package repo-add was given, as its .PKGINFO and file say, and nothing else."""
    _require_tools()
    out = tmp_path / "repo"
    done = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    given = {}
    for path in sorted(out.glob("*.pkg.tar.zst")):
        info = _pkginfo(path)
        given[info["pkgname"]] = (info, path)
    for db in ("pwtest.db.tar.gz", "pwtest-zst.db.tar.zst"):
        packages = _parse((out / db).read_bytes())
        assert sorted(p.name for p in packages) == sorted(given)
        for package in packages:
            info, path = given[package.name]
            assert package.version == info["pkgver"]  # .PKGINFO's pkgver is epoch:pkgver-pkgrel
            assert package.arch == info["arch"]
            assert package.base == info["pkgbase"]
            assert package.filename == path.name
            assert package.csize == path.stat().st_size
            assert package.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert _fields(packages) == BUILT
    # the builds for a host to have installed are not in the database
    assert sorted(p.name for p in (out / "old").iterdir()) == [
        "gadget-1.0.r9.g1111111-3-any.pkg.tar.zst",
        "hello-1.0-1-any.pkg.tar.zst",
        "legacy-0.9-1-any.pkg.tar.zst",
        "libdemo-1.1-1-x86_64.pkg.tar.zst",
        "localonly-1.0-1-any.pkg.tar.zst",
        "mover-1.0-1-x86_64.pkg.tar.zst",
        "shifter-2.0-1-any.pkg.tar.zst",
        "widget-1:3.0-2-any.pkg.tar.zst",
    ]


# ------------------------------------------------------------------------ hostile input


def test_oversized_field_skips_and_counts_that_entry_only() -> None:
    long_name = "n" * (MAX_PACKAGE_NAME + 1)
    data = pacman_db(
        [
            ("ok-1.0-1/desc", pacman_desc("ok", "1.0-1")),
            (f"{long_name}-1.0-1/desc", pacman_desc(long_name, "1.0-1")),
            ("src-1.0-1/desc", pacman_desc("src", "1.0-1", base="b" * (MAX_SOURCE + 1))),
            ("zz-1:2-3/desc", pacman_desc("zz", "1:2-3")),
        ]
    )
    skipped = Skipped()
    assert [p.name for p in _parse(data, skipped=skipped)] == ["ok", "zz"]
    assert skipped.count == 2
    assert "name longer than 256" in skipped.examples[0]
    assert "source longer than 1024" in skipped.examples[1]


def test_oversized_desc_member_is_skipped_unread() -> None:
    big = pacman_desc("big", "1.0-1") + b"%DESC%\n" + b"x" * MAX_DESC + b"\n\n"
    data = pacman_db([("big-1.0-1/desc", big), ("ok-1.0-1/desc", pacman_desc("ok", "1.0-1"))])
    skipped = Skipped()
    assert [p.name for p in _parse(data, limit=4 * MIB, skipped=skipped)] == ["ok"]
    assert skipped.count == 1 and f"larger than {MAX_DESC}" in skipped.examples[0]


@pytest.mark.parametrize(
    "kind",
    [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE],
    ids=["symlink", "hardlink", "device", "fifo"],
)
def test_desc_that_is_not_a_regular_file_is_never_followed(kind: bytes) -> None:
    """A link to another member (or a device) is counted, not read in that member's place."""
    data = pacman_db(
        [
            ("ok-1.0-1/desc", pacman_desc("ok", "1.0-1")),
            link(
                "evil-1.0-1/desc",
                "ok-1.0-1/desc" if kind == tarfile.LNKTYPE else "/etc/passwd",
                kind,
            ),
        ]
    )
    skipped = Skipped()
    assert [p.name for p in _parse(data, skipped=skipped)] == ["ok"]
    assert skipped.count == 1 and "not a regular file" in skipped.examples[0]


def test_tar_bomb_is_refused_at_the_limit() -> None:
    bomb = gzip.compress(tar_bytes([("pad-1-1/other", bytes(64 * MIB))]), mtime=0)
    assert len(bomb) < MIB // 8
    with pytest.raises(TooLargeError, match="more than the limit"):
        _parse(bomb, limit=8 * MIB)


def test_truncated_gzip_is_refused_even_after_the_end_of_archive() -> None:
    whole = (ARCH / "pwtest.db.tar.gz").read_bytes()
    for cut in (len(whole) // 2, len(whole) - 4):  # inside the tar; inside the gzip trailer
        with pytest.raises(ParseError, match=r"truncated|corrupt"):
            _parse(whole[:cut])


def test_entry_limit() -> None:
    data = (ARCH / "pwtest.db.tar.gz").read_bytes()
    assert len(_parse(data, max_entries=7)) == 7
    with pytest.raises(TooLargeError, match="more than 6 packages"):
        _parse(data, max_entries=6)


@pytest.mark.parametrize(
    ("member", "desc", "message"),
    [
        ("a-1.0-1/desc", pacman_desc("b", "1.0-1"), "directory name disagrees"),
        ("a-1.0/desc", pacman_desc("a", "1.0"), "no pkgrel"),
        ("a-1.0-1/desc", b"%NAME%\na\n\n%ARCH%\nany\n", "no %VERSION%"),
        ("a-1.0-1/desc", b"stray\n", "outside a %FIELD% section"),
        ("a-1.0-1/desc", pacman_desc("a", "1.0-1") + b"%NAME%\na\n", "appears twice"),
        ("a-1.0.-1/desc", pacman_desc("a", "1.0.-1"), "ends with a separator"),
        ("a-1.0-1/desc", pacman_desc("a", "1.0-1").replace(b"1234", b"-5"), "not a size"),
        ("a-1.0-1/desc", pacman_desc("a", "1.0-1").replace(b"ab" * 32, b"zz"), "not a SHA-256"),
        ("a-1.0-1/desc", b"%NAME%\n\xff\n", "not UTF-8"),
    ],
)
def test_malformed_entry_fails_the_database(member: str, desc: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        _parse(pacman_db([(member, desc)]))


def test_not_a_tar_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="tar"):
        _parse(gzip.compress(b"this is not a tar archive" * 40))
