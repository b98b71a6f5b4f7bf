"""Exact dpkg and rpm version ordering, as comparison functions and as precomputed sort keys.

Why this module exists: the update computation must pick exactly the candidate apt/dnf would
pick, so "newer" has to mean what ``dpkg --compare-versions`` (dpkg 1.21, ``verrevcmp``) and
rpm's ``rpmvercmp``/``labelCompare`` (rpm 4.18, with the 4.15 caret) say, for every string a
real archive contains. The store also sorts tens of thousands of versions, so every version
gets a sort key once and ordinary tuple comparison of keys then gives the package manager's
order with no Python-level comparison function in the loop.

Key encoding (both families): ``(epoch: int, body: str)``. ``body`` encodes the rest of the
version as one string whose plain code-point comparison reproduces the tool's algorithm, so
comparing two keys is an int and a string comparison, both in C.

- Numbers are ``chr(0x30 + len) + digits`` with leading zeros removed: a longer number is
  larger, equal lengths compare digit by digit, ``007 == 7``, and any length works (lengths
  from 207 on use the marker U+00FF followed by the length written the same way).
- Every character of a body is at most U+00FF, so CPython stores it one byte per character
  and compares two bodies with ``memcmp``.
- dpkg (``verrevcmp``) alternates a non-digit run and a digit run. Each non-digit run is
  translated by dpkg's ``order()`` (``~`` lowest, letters by ASCII, every other character
  after all letters, at 0x80 + its code) and followed by a terminator that sorts above
  ``~`` and below every other character, exactly as dpkg sees the start of a digit run or
  the end of the string. An empty digit run is the number 0. After the last run comes an
  end mark that sorts above ``~`` and below everything else: dpkg treats a finished string
  as endless "" and 0 runs, so a string that continues with ``~`` is smaller and one that
  continues otherwise larger. An empty revision is encoded as ``0``, which dpkg treats as
  equal. Upstream and revision encodings are concatenated: both end in the end mark, so
  the upstream part decides first.
- rpm (``rpmvercmp``) drops separators and sees tokens ``~``, ``^``, alphabetic and numeric
  segments; at each position the order is ``~`` < end < ``^`` < alpha (``strcmp``) <
  numeric, which is what each branch of ``rpmvercmp`` returns. Each token gets a one-char
  tag in that order; alpha text needs no terminator because every tag sorts below letters.
  The release is appended after the version's end mark; a missing release appends nothing,
  so it sorts below any release, as ``labelCompare`` and rpm 4.18's ``rpm.vercmp`` do.

Accepted input, decided once and documented here (callers rely on ``VersionError``):

- dpkg: everything ``dpkg --compare-versions`` accepts is accepted and ordered the same way,
  including what dpkg only warns about (upstream not starting with a digit, characters such
  as ``_`` outside the policy set). Surrounding spaces and tabs are stripped as dpkg does.
  Errors are dpkg's errors (empty, embedded space, empty/non-numeric/too big epoch, nothing
  after the colon, empty revision, empty upstream), plus two deliberate refusals: a signed
  epoch (``+1:1.0``, which dpkg's ``strtol`` happens to accept) and any character outside
  printable ASCII (dpkg orders bytes >= 0x80 by the platform's ``char`` signedness, so no
  answer is portable, and control characters never come from a real index). The command
  line's special treatment of ``""`` and ``<unknown>`` as "no version" is not a version.
- rpm: split as rpm's ``parseEVR`` does (epoch = leading digits before ``:``, an empty epoch
  is 0, release after the last ``-``), compared as ``rpmvercmp`` does, including spaces and
  other characters, which are separators. Refused: the empty string (rpm refuses it too), an
  empty version or an empty release after ``-`` (rpm builds neither; refusing them keeps
  "release ''" meaning "no release" in ``split_rpm`` and in the records), NUL characters, and
  epochs too long for Python's int conversion.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from patchwatch.domain.errors import VersionError
from patchwatch.domain.records import PackageKind

__all__ = [
    "Key",
    "compare",
    "compare_deb",
    "compare_evr",
    "compare_rpm",
    "deb_sort_key",
    "join_alpm",
    "rpm_sort_key",
    "sort_key",
    "split_deb",
    "split_rpm",
]

Key = tuple[int, str]
"""A sort key: compare keys with <, ==, > (or sort by them) to get the package manager's order."""

_CACHE_SIZE = 1 << 17  # a whole distribution's distinct versions fit (bookworm: ~21k)

# --- numbers ------------------------------------------------------------------------------

_NUM_BASE = 0x30
_LONG_NUMBER = 0xFF - _NUM_BASE  # from here on: marker U+00FF, then the length's length


def split_release(
    rest: str, refuse: Callable[[str], Exception], no_version: str, no_release: str
) -> tuple[str, str | None]:
    """``rest`` cut at its last hyphen, as dpkg, rpm and pacman all cut the release off:
    (version, release), the release None when there is no hyphen. An empty side raises
    ``refuse(no_release)`` or ``refuse(no_version)``: each format names them its own way."""
    version, hyphen, release = rest.rpartition("-")
    if not hyphen:
        version = rest
    elif not release:
        raise refuse(no_release)
    if not version:
        raise refuse(no_version)
    return version, release if hyphen else None


def _encode_number(digits: str) -> str:
    """Encode an ASCII digit run so that string order equals numeric order."""
    d = digits.lstrip("0")
    n = len(d)
    if n < _LONG_NUMBER:
        return chr(_NUM_BASE + n) + d
    length = str(n)
    return chr(_NUM_BASE + _LONG_NUMBER) + chr(_NUM_BASE + len(length)) + length + d


# --- dpkg ---------------------------------------------------------------------------------

_DEB_TILDE = "\x01"
_DEB_END = "\x02"
_DEB_TERM = "\x03"
_DEB_ORDER = {ord("~"): _DEB_TILDE} | {
    c: chr(c + 0x80) for c in range(0x21, 0x7F) if not chr(c).isalnum() and chr(c) != "~"
}
"""dpkg's ``order()``: letters keep their code (65..122), ``~`` is lowest, others after.

dpkg uses c + 256 for the others; 0x80 + c keeps the same order and stays within Latin-1.
"""

_DEB_RUN = re.compile(r"([^0-9]*)([0-9]*)")
_DEB_INT_MAX = 2**31 - 1


def _deb_error(s: str, reason: str) -> VersionError:
    return VersionError(f"invalid dpkg version {s!r}: {reason}")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def split_deb(s: str) -> tuple[str, str, str]:
    """Split a dpkg version ``[epoch:]upstream[-revision]`` as dpkg's ``parseversion`` does.

    The epoch ends at the first colon and the revision starts after the last hyphen, so
    upstream may hold colons (only with an epoch) and hyphens (only with a revision).
    Returns ``(epoch, upstream, revision)`` with "" for an absent epoch or revision.
    Raises ``VersionError`` for what dpkg rejects (see the module docstring).
    """
    v = s.strip(" \t")
    if not v:
        raise _deb_error(s, "version string is empty")
    if not (v.isascii() and v.isprintable()):
        raise _deb_error(s, "only printable ASCII characters are allowed")
    if " " in v:
        raise _deb_error(s, "version string has embedded spaces")
    epoch, colon, rest = v.partition(":")
    if colon:
        if not epoch:
            raise _deb_error(s, "epoch in version is empty")
        if not epoch.isdigit():
            raise _deb_error(s, "epoch in version is not number")
        if len(epoch.lstrip("0")) > 10 or int(epoch) > _DEB_INT_MAX:
            raise _deb_error(s, "epoch in version is too big")
        if not rest:
            raise _deb_error(s, "nothing after colon in version number")
    else:
        epoch, rest = "", v
    refuse = functools.partial(_deb_error, s)
    upstream, revision = split_release(
        rest, refuse, "upstream version is empty", "revision number is empty"
    )
    return epoch, upstream, revision or ""


def _deb_fragment(part: str) -> str:
    """Encode an upstream version or a revision for plain string comparison (see above)."""
    out: list[str] = []
    for text, digits in _DEB_RUN.findall(part or "0"):
        if text or digits:  # findall ends with one empty match
            out.append(text.translate(_DEB_ORDER))
            out.append(_DEB_TERM)
            out.append(_encode_number(digits))
    out.append(_DEB_END)
    return "".join(out)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def deb_sort_key(s: str) -> Key:
    """Return the sort key of a full dpkg version string.

    ``deb_sort_key(a) < deb_sort_key(b)`` exactly when ``dpkg --compare-versions a lt b``,
    and the keys are equal exactly when dpkg says ``eq`` (``1.0`` and ``0:1.0-0`` are equal).
    """
    epoch, upstream, revision = split_deb(s)
    return int(epoch or 0), _deb_fragment(upstream) + _deb_fragment(revision)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _deb_key_from_parts(epoch: str, upstream: str, revision: str) -> Key:
    """Key for separate fields, refusing fields that would not split back the same way.

    A record with upstream ``1.0-2`` and no revision, or upstream ``1:0`` and no epoch, is
    not a dpkg version: dpkg would read the joined string differently, so comparing the
    fields as given would silently disagree with every dpkg on the fleet.
    """
    joined = f"{epoch}:{upstream}" if epoch else upstream
    if revision:
        joined = f"{joined}-{revision}"
    if split_deb(joined) != (epoch, upstream, revision):
        raise _deb_error(joined, f"fields {(epoch, upstream, revision)!r} do not form this version")
    return deb_sort_key(joined)


def compare_deb(a: str, b: str) -> int:
    """Compare two full dpkg version strings: -1, 0 or 1, as ``dpkg --compare-versions``."""
    ka = deb_sort_key(a)
    kb = deb_sort_key(b)
    if ka < kb:
        return -1
    return 0 if ka == kb else 1


# --- rpm ----------------------------------------------------------------------------------

_RPM_TILDE = "\x01"
_RPM_END = "\x02"
_RPM_CARET = "\x03"
_RPM_ALPHA = "\x04"
_RPM_NUMBER = "\x05"

_RPM_SEGMENT = re.compile(r"[0-9]+|[A-Za-z]+|[~^]")
_RPM_EPOCH = re.compile(r"([0-9]*):")


def _rpm_error(s: str, reason: str) -> VersionError:
    return VersionError(f"invalid rpm version {s!r}: {reason}")


def _split_rpm(s: str) -> tuple[str, str, str | None]:
    """Split like rpm's ``parseEVR``; the release is None when there is no hyphen."""
    if not s:
        raise _rpm_error(s, "version string is empty")
    if "\x00" in s:
        raise _rpm_error(s, "NUL character")
    m = _RPM_EPOCH.match(s)
    if m:
        epoch = m.group(1) or "0"  # rpm reads ":1.0" as epoch 0
        rest = s[m.end() :]
    else:
        epoch, rest = "", s
    version, release = split_release(
        rest, functools.partial(_rpm_error, s), "version is empty", "release is empty"
    )
    return epoch, version, release


def split_rpm(s: str) -> tuple[str, str, str]:
    """Split a full rpm ``[epoch:]version[-release]`` into ``(epoch, version, release)``.

    The epoch is the leading digits before a colon ("" when absent), the release follows the
    last hyphen ("" when absent), as rpm's ``parseEVR`` reads them.
    """
    epoch, version, release = _split_rpm(s)
    return epoch, version, release or ""


def _rpm_epoch(epoch: str, where: str) -> int:
    if not epoch:
        return 0
    if not (epoch.isascii() and epoch.isdigit()):
        raise _rpm_error(where, f"epoch {epoch!r} is not a number")
    try:
        return int(epoch)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        raise _rpm_error(where, "epoch has too many digits") from None


def _rpm_fragment(part: str) -> str:
    """Encode a version or release for plain string comparison (see the module docstring)."""
    out: list[str] = []
    for seg in _RPM_SEGMENT.findall(part):
        c = seg[0]
        if c == "~":
            out.append(_RPM_TILDE)
        elif c == "^":
            out.append(_RPM_CARET)
        elif c <= "9":
            out.append(_RPM_NUMBER + _encode_number(seg))
        else:
            out.append(_RPM_ALPHA + seg)
    out.append(_RPM_END)
    return "".join(out)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def rpm_sort_key(epoch: str, version: str, release: str) -> Key:
    """Return the sort key of rpm fields, ordered as ``rpm.labelCompare`` orders them.

    ``release`` "" means "no release", which sorts below every release (``1.0`` <
    ``1.0-0``). An empty epoch is 0.
    """
    where = f"{epoch}:{version}" if epoch else version
    where = f"{where}-{release}" if release else where
    if not version:
        raise _rpm_error(where, "version is empty")
    if "\x00" in version or "\x00" in release:
        raise _rpm_error(where, "NUL character")
    body = _rpm_fragment(version)
    if release:
        body += _rpm_fragment(release)
    return _rpm_epoch(epoch, where), body


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _rpm_string_key(s: str) -> Key:
    epoch, version, release = _split_rpm(s)
    return rpm_sort_key(epoch, version, release or "")


def compare_rpm(a: str, b: str) -> int:
    """Compare two full rpm EVR strings: -1, 0 or 1, as rpm 4.18's ``rpm.vercmp``.

    Separators are ignored (``1.0 == 1_0``), ``~`` sorts before anything including the end,
    ``^`` after the end but before anything else, numbers after letters.
    """
    ka = _rpm_string_key(a)
    kb = _rpm_string_key(b)
    if ka < kb:
        return -1
    return 0 if ka == kb else 1


# --- every family -------------------------------------------------------------------------


def sort_key(kind: PackageKind, epoch: str, version: str, release: str) -> Key:
    """Return the sort key of a package's fields (as in ``records.Package``) for its family.

    Keys of different families must not be compared with each other.
    """
    if kind == PackageKind.DEB:
        return _deb_key_from_parts(epoch, version, release)
    if kind == PackageKind.RPM:
        return rpm_sort_key(epoch, version, release)
    # pacman and apk orderings live in their own modules, which build on this one's
    # number encoding: imported here, when first needed, rather than in a cycle.
    if kind == PackageKind.ARCH:
        from patchwatch.domain.versions_alpm import alpm_sort_key

        return alpm_sort_key(join_alpm(epoch, version, release))
    if kind == PackageKind.APK:
        from patchwatch.domain.versions_apk import apk_sort_key

        return apk_sort_key(f"{version}-{release}" if release else version)
    raise ValueError(f"unknown package kind {kind!r}")


def join_alpm(epoch: str, pkgver: str, pkgrel: str) -> str:
    """The pacman version string of a record's fields: ``[epoch:]pkgver[-pkgrel]``."""
    out = f"{epoch}:{pkgver}" if epoch else pkgver
    return f"{out}-{pkgrel}" if pkgrel else out


def compare_evr(kind: PackageKind, a: tuple[str, str, str], b: tuple[str, str, str]) -> int:
    """Compare two ``(epoch, version, release)`` triples of the same family: -1, 0 or 1."""
    ka = sort_key(kind, *a)
    kb = sort_key(kind, *b)
    if ka < kb:
        return -1
    return 0 if ka == kb else 1


def compare(kind: PackageKind, a: str, b: str) -> int:
    """Compare two full version strings of the given family: -1, 0 or 1."""
    if kind == PackageKind.DEB:
        return compare_deb(a, b)
    if kind == PackageKind.RPM:
        return compare_rpm(a, b)
    if kind == PackageKind.ARCH:
        from patchwatch.domain.versions_alpm import compare_alpm

        return compare_alpm(a, b)
    if kind == PackageKind.APK:
        from patchwatch.domain.versions_apk import compare_apk

        return compare_apk(a, b)
    raise ValueError(f"unknown package kind {kind!r}")
