"""Exact pacman (libalpm) version ordering, as a comparison function and as sort keys.

Why this module exists: Arch Linux hosts take an update exactly when pacman's
``alpm_pkg_vercmp`` (the function behind the ``vercmp`` tool, libalpm 13 / pacman 6) says the
repository's version is newer, so patchwatch must order versions as it does, quirks included.
It is pure and knows nothing of package records; ``patchwatch vercmp arch`` exposes it.

What pacman does: a version is ``[epoch:]pkgver[-pkgrel]``. The epoch is the leading digits
before a colon (absent or empty: 0), the pkgrel follows the last hyphen. Epochs compare as
numbers, then pkgvers, then pkgrels, but only when *both* versions have a pkgrel: a version
without one is equal to every pkgrel of its pkgver (``1.5 == 1.5-1`` and ``1.5 == 1.5-2``,
while ``1.5-1 < 1.5-2``). Each part is compared by alpm's copy of rpm 4.8's ``rpmvercmp``:
maximal runs of ASCII letters or digits are segments, everything else separates them;
numbers compare as numbers of any length, letters by ASCII (``A < a``), and at the same
place a number beats letters. Unlike rpm, the *number* of separators before a segment
counts first (``1.0 < 1..0``, ``2.0 == 2_0``), and when one side runs out, what the other
has left decides: letters directly after the last segment make it smaller (``1.0a < 1.0``,
so ``1.0rc1 < 1.0``), a separator and anything else make it larger (``1.0 < 1.0.a``).

Key encoding: ``(epoch: int, body: str)`` as in ``patchwatch.domain.versions``, so comparing two
keys is an int and a one-byte-per-character string comparison in C. The body of a part is
its segments in order, each written as the count of separators before it (a number, in
``versions``' length-prefixed number encoding), a tag (letters < end < number) and the
segment (letters followed by U+0000, or an encoded number); the part ends with a zero
count and the end tag, which therefore sorts above "letters with no separator" and below
everything else, as ``rpmvercmp`` decides. The body is the pkgver's encoding followed by
the pkgrel's; a missing pkgrel adds nothing, so that version's key sorts just below every
pkgrel of the same pkgver (the way a ``pkg>=1.5`` bound sits below ``1.5-1``). Keys
therefore order every pair exactly as ``vercmp`` does, except a pair of the same epoch and
pkgver where one side has no pkgrel: ``vercmp`` says equal, which no total order can say
of ``1.5`` against both ``1.5-1`` and ``1.5-2``; ``compare_alpm`` gives ``vercmp``'s answer.
Every package in a repository or a local database has a pkgrel (makepkg requires one).

Accepted input, decided once and documented here (callers rely on ``VersionError``): every
string of printable ASCII characters (space included) that ``vercmp`` accepts, ordered as it
orders them, except these deliberate refusals:

- the empty string, an empty pkgver (``1:``, ``-1``) and an empty pkgrel (``1.0-``): pacman
  builds none of them, and refusing the last keeps "no pkgrel" one thing;
- a pkgver or pkgrel that ends in a separator (``1.0.``, ``1.0-1_``): ``vercmp`` compares
  such trailing separators in a way that is not transitive (``1.1 < 1..a < 1. < 1.1``, each
  step confirmed by the real tool in the tests), so no sort key can agree with it;
- characters outside printable ASCII (``vercmp`` classifies bytes by the C library's
  locale tables, and control characters never come from a real package database), and
  epochs too long for Python's int conversion.
"""

from __future__ import annotations

import functools
import re

from patchwatch.domain.errors import VersionError
from patchwatch.domain.versions import Key
from patchwatch.domain.versions import _encode_number
from patchwatch.domain.versions import split_release

__all__ = ["alpm_sort_key", "compare_alpm", "split_alpm"]

_CACHE_SIZE = 1 << 16  # Arch's core + extra hold ~15k packages

_ALPHA = "\x01"
_END = "\x02"
_NUMBER = "\x03"
_ALPHA_END = "\x00"  # below every letter: a shorter run of letters is smaller (strcmp)
_PART_END = _encode_number("0") + _END
_COUNTS = [_encode_number(str(n)) for n in range(8)]  # separator counts, the common ones

_SEGMENT = re.compile(r"([^0-9A-Za-z]*)([0-9]+|[A-Za-z]+)")
_EPOCH = re.compile(r"([0-9]*):")


def _error(s: str, reason: str) -> VersionError:
    return VersionError(f"invalid pacman version {s!r}: {reason}")


@functools.lru_cache(maxsize=_CACHE_SIZE)
def split_alpm(s: str) -> tuple[str, str, str | None]:
    """Split ``[epoch:]pkgver[-pkgrel]`` as libalpm's ``parseEVR`` does.

    Returns ``(epoch, pkgver, pkgrel)``: the epoch is the leading digits before a colon, "0"
    when there are none (pacman reads ``:1.0`` as epoch 0 too); the pkgrel follows the last
    hyphen and is None when there is no hyphen. Raises ``VersionError`` for the refusals
    listed in the module docstring.
    """
    if not s:
        raise _error(s, "version string is empty")
    if not (s.isascii() and s.isprintable()):
        raise _error(s, "only printable ASCII characters are allowed")
    m = _EPOCH.match(s)
    if m:
        epoch = m.group(1) or "0"
        rest = s[m.end() :]
    else:
        epoch, rest = "0", s
    pkgver, pkgrel = split_release(
        rest, functools.partial(_error, s), "pkgver is empty", "pkgrel is empty"
    )
    if not pkgver[-1].isalnum():
        raise _error(s, "pkgver ends with a separator, which pacman orders inconsistently")
    if pkgrel is not None and not pkgrel[-1].isalnum():
        raise _error(s, "pkgrel ends with a separator, which pacman orders inconsistently")
    return epoch, pkgver, pkgrel


def _fragment(part: str) -> str:
    """Encode a pkgver or a pkgrel (not ending in a separator) for plain string comparison."""
    out: list[str] = []
    for separators, segment in _SEGMENT.findall(part):
        n = len(separators)
        out.append(_COUNTS[n] if n < 8 else _encode_number(str(n)))
        if segment[0] <= "9":
            out.append(_NUMBER + _encode_number(segment))
        else:
            out.append(_ALPHA + segment + _ALPHA_END)
    out.append(_PART_END)
    return "".join(out)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parts(s: str) -> tuple[int, str, str | None]:
    """The epoch as an int and the encoded pkgver and pkgrel (None: no pkgrel)."""
    epoch, pkgver, pkgrel = split_alpm(s)
    try:
        number = int(epoch)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        raise _error(s, "epoch has too many digits") from None
    return number, _fragment(pkgver), None if pkgrel is None else _fragment(pkgrel)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def alpm_sort_key(s: str) -> Key:
    """Return the sort key of a full pacman version string.

    Keys order versions exactly as ``vercmp`` does, apart from the documented case of a
    version without pkgrel, whose key sorts just below every pkgrel of its pkgver.
    """
    epoch, pkgver, pkgrel = _parts(s)
    return epoch, pkgver + (pkgrel or "")


def compare_alpm(a: str, b: str) -> int:
    """Compare two pacman version strings: -1, 0 or 1, as ``vercmp`` (``alpm_pkg_vercmp``)."""
    ea, va, ra = _parts(a)
    eb, vb, rb = _parts(b)
    if ea != eb:
        return -1 if ea < eb else 1
    if va != vb:
        return -1 if va < vb else 1
    if ra is None or rb is None or ra == rb:
        return 0
    return -1 if ra < rb else 1
