"""Fuzzing the pacman database and APKINDEX parsers: ParseError or TooLargeError only.

A refresh maps exactly those two to "this mirror's data is bad"; anything else would
surface as a crash. Mutations are applied at each layer (the compressed file, the tar
inside it, the text inside the tar), so that they reach past the gzip checksum into
tarfile and the field parsers.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.repodata.alpm import parse_alpm_db
from patchwatch.domain.repodata.apkindex import parse_apkindex
from patchwatch.domain.repodata.apkindex import parse_stanzas
from patchwatch.domain.repodata.bounds import Skipped
from tests.support.archrepo import gz
from tests.support.archrepo import index_member
from tests.support.archrepo import pacman_db
from tests.support.archrepo import pacman_desc
from tests.support.archrepo import tar_segment
from tests.support.fuzzing import mutated_bytes

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = (ParseError, TooLargeError)
FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
LIMIT = 1 << 20

DB = (FIXTURES / "arch" / "pwtest.db.tar.gz").read_bytes()
DB_TAR = gzip.decompress(DB)
DESC = pacman_desc("hello", "1:1.1-1", DEPENDS="glibc\nzlib")
APKINDEX = (FIXTURES / "apk" / "APKINDEX").read_bytes()
APK_SIGNED = gz(tar_segment(".SIGN.RSA.k.rsa.pub", b"s" * 256)) + index_member(APKINDEX)


def mutated(sample: bytes) -> st.SearchStrategy[bytes]:
    """A sample with a few bytes replaced, inserted or deleted, or cut short."""
    return mutated_bytes(sample, [b"%", b"\n", b":", b"\n\n", b"\xff", b"\x00", b"/"])


def _only_expected(call: Callable[[], object]) -> None:
    try:
        call()
    except EXPECTED:
        pass


def _alpm(data: bytes) -> None:
    list(parse_alpm_db(io.BytesIO(data), LIMIT, max_entries=50, skipped=Skipped()))


@FUZZ
@given(st.one_of(st.binary(max_size=2000), mutated(DB)))
def test_alpm_compressed_bytes(data: bytes) -> None:
    _only_expected(lambda: _alpm(data))


@FUZZ
@given(mutated(DB_TAR))
def test_alpm_tar_layer(tar: bytes) -> None:
    _only_expected(lambda: _alpm(gzip.compress(tar, mtime=0)))


@FUZZ
@given(mutated(DESC), st.sampled_from(["hello-1:1.1-1/desc", "x/desc", "desc", "a/b/desc"]))
def test_alpm_desc_text(desc: bytes, member: str) -> None:
    _only_expected(lambda: _alpm(pacman_db([(member, desc)])))


@FUZZ
@given(st.one_of(st.binary(max_size=2000), mutated(APK_SIGNED)))
def test_apkindex_compressed_bytes(data: bytes) -> None:
    _only_expected(lambda: parse_apkindex(data, LIMIT, max_entries=50))


@FUZZ
@given(mutated(APKINDEX))
def test_apkindex_text(text: bytes) -> None:
    _only_expected(lambda: parse_apkindex(index_member(text), LIMIT, max_entries=50))
    _only_expected(lambda: list(parse_stanzas(text.splitlines(keepends=True))))
