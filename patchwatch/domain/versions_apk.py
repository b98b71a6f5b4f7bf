"""Exact apk (Alpine) version ordering and matching, as functions and as sort keys.

Why this module exists: Alpine hosts take an update exactly when apk-tools'
``apk_version_compare`` says the index's version is newer, and world constraints such as
``pkg~1.2`` hold packages back by ``apk_version_match``; patchwatch must answer as they do.
The reference is apk-tools 3.0 (``src/version.c``) and its own test vectors
(``test/unit/version.data``, all of which ``tests/test_versions_apk.py`` runs): no ``apk``
binary can be installed here, so those vectors stand in for the tool. Pure, no records;
``patchwatch vercmp apk`` exposes it. apk-tools 2.14 (the line Alpine shipped before
apk-tools 3) tests itself on the first 733 of those lines, the same ones; it differs where
3.0 changed the rules in 2024 and added lines: zero-led parts, the ``~`` hash, fuzzy
matching and what counts as a valid version.

What apk does: a version is read as tokens, ``digit{.digit}...{letter}{_suffix{number}}...
{~hash}{-rN}``: an initial number, ``.number`` parts, one lower-case letter, suffixes
``_alpha _beta _pre _rc`` (pre-releases, in that order) and ``_cvs _svn _git _hg _p``
(post-releases, in that order), each optionally numbered, a ``~`` commit hash (lower-case
hex) and a ``-rN`` revision. Anything out of that grammar (an upper-case letter, a second
letter, an unknown suffix, ``-r`` with no digits, ...) ends the version with an *invalid*
token. Two versions are read in step; the first differing token decides. Tokens of the same
kind compare by value: numbers as apk's uint64 parser reads them (so modulo 2**64), except
that a ``.number`` part where either side starts with ``0`` compares as a string
(``1.0 < 1.00``, ``8.2.0015 < 8.2.002``), letters and hashes as strings, suffixes in the
order above. Tokens of different kinds: a pre-release suffix is lower than anything, then
invalid < end < revision < hash < suffix number < post-release suffix < letter < number.
Everything after an invalid token is ignored: ``1.0bc == 1.0bd``, and every string that does
not start with a digit is equal to every other such string and below all versions.

Fuzzy matching (``~`` in ``apk_version_match``): ``a ~ b`` holds when b's tokens are, up to
its end, equal to the first tokens of a (``3.6.9 ~ 3.6``, not ``3.6 ~ 3.6.9``).

Key encoding: ``(0, body)``, the same shape as ``patchwatch.domain.versions`` keys (apk has no
epoch). The body is one tag per token, the tags in the order of kinds above, followed by the
token's value: numbers in ``versions``' length-prefixed encoding of the uint64 value,
zero-led parts, letters and hashes as their characters (strings end with U+0000, below every
digit and letter, so a prefix is smaller), suffixes as one character. The body ends at the
end or invalid token. This order is total and reproduces ``apk_version_compare`` exactly, so
keys order as compare does on every pair, invalid versions included.

Accepted input: every string. apk compares every string, invalid versions included, and so
does this module (nothing raises ``VersionError``); ``valid_apk`` says whether apk would take
the string as a valid version (``apk_version_validate``), for callers that must refuse
invalid ones.
"""

from __future__ import annotations

import functools
import re

from patchwatch.domain.versions import Key
from patchwatch.domain.versions import _encode_number

__all__ = ["MATCH_OPERATORS", "apk_sort_key", "compare_apk", "match_apk", "valid_apk"]

_CACHE_SIZE = 1 << 16  # Alpine main + community hold ~25k packages

# Token kinds in apk's order (the numbers order the grammar, as in version.c).
_INITIAL, _DIGIT, _LETTER, _SUFFIX, _SUFFIX_NO, _HASH, _REVISION = range(7)

# Tags, in the order the kinds compare (see the module docstring).
_T_PRE = "\x01"
_T_INVALID = "\x02"
_T_END = "\x03"
_T_REVISION = "\x04"
_T_HASH = "\x05"
_T_SUFFIX_NO = "\x06"
_T_POST = "\x07"
_T_LETTER = "\x08"
_T_ZERO_LED = "\x09"
_T_DIGIT = "\x0a"
_T_INITIAL = "\x0b"
_STRING_END = "\x00"

_PRE_RELEASE = {"alpha": "1", "beta": "2", "pre": "3", "rc": "4"}
_POST_RELEASE = {"cvs": "6", "svn": "7", "git": "8", "hg": "9", "p": "A"}

_DIGITS = re.compile(r"[0-9]*")
_SUFFIX_NAME = re.compile(r"[a-z]*")
_HEX = re.compile(r"[0-9a-f]*")
_UINT64 = 1 << 64


def _span(pattern: re.Pattern[str], s: str, pos: int) -> str:
    """The run of ``pattern`` (which may be empty) at ``pos``."""
    m = pattern.match(s, pos)
    return m.group() if m else ""


def _uint64(digits: str) -> str:
    """Encode a digit run as apk's ``apk_blob_pull_uint`` reads it: modulo 2**64.

    10**64 is a multiple of 2**64, so the last 64 digits decide; no huge int is built.
    """
    return _encode_number(str(int(digits[-64:]) % _UINT64))


def _tokens(s: str) -> tuple[str, bool]:
    """Encode ``s`` token by token as apk's ``token_first``/``token_next`` read it.

    Returns the body and whether the version is valid (it reached the end token).
    """
    digits = _span(_DIGITS, s, 0)
    if not digits:
        return _T_INVALID, False
    out = [_T_INITIAL, _uint64(digits)]
    kind = _INITIAL
    pos = len(digits)
    n = len(s)
    while pos < n:
        c = s[pos]
        if "a" <= c <= "z":
            if kind > _DIGIT:
                break
            out.append(_T_LETTER + c)
            kind = _LETTER
            pos += 1
        elif c == "." or "0" <= c <= "9":
            if c == ".":
                if kind > _DIGIT:
                    break
                pos += 1
            if kind in (_INITIAL, _DIGIT):
                kind = _DIGIT
            elif kind == _SUFFIX:
                kind = _SUFFIX_NO
            else:
                break
            digits = _span(_DIGITS, s, pos)
            if not digits:
                break
            pos += len(digits)
            if kind == _SUFFIX_NO:
                out.append(_T_SUFFIX_NO + _uint64(digits))
            elif digits[0] == "0":
                out.append(_T_ZERO_LED + digits + _STRING_END)
            else:
                out.append(_T_DIGIT + _uint64(digits))
        elif c == "_":
            if kind > _SUFFIX_NO:
                break
            name = _span(_SUFFIX_NAME, s, pos + 1)
            if name in _PRE_RELEASE:
                out.append(_T_PRE + _PRE_RELEASE[name])
            elif name in _POST_RELEASE:
                out.append(_T_POST + _POST_RELEASE[name])
            else:
                break
            kind = _SUFFIX
            pos += 1 + len(name)
        elif c == "~":
            if kind >= _HASH:
                break
            commit = _span(_HEX, s, pos + 1)
            if not commit:
                break
            out.append(_T_HASH + commit + _STRING_END)
            kind = _HASH
            pos += 1 + len(commit)
        elif c == "-":
            if kind >= _REVISION or not s.startswith("-r", pos):
                break
            digits = _span(_DIGITS, s, pos + 2)
            if not digits:
                break
            out.append(_T_REVISION + _uint64(digits))
            kind = _REVISION
            pos += 2 + len(digits)
        else:
            break
    else:
        out.append(_T_END)
        return "".join(out), True
    out.append(_T_INVALID)
    return "".join(out), False


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _body(s: str) -> tuple[str, bool]:
    return _tokens(s)


def apk_sort_key(s: str) -> Key:
    """Return the sort key of an apk version: keys order exactly as ``compare_apk``."""
    return 0, _body(s)[0]


def valid_apk(s: str) -> bool:
    """Whether apk takes ``s`` as a valid version (``apk_version_validate``)."""
    return _body(s)[1]


def compare_apk(a: str, b: str) -> int:
    """Compare two apk versions: -1, 0 or 1, as ``apk_version_compare``."""
    ka = _body(a)[0]
    kb = _body(b)[0]
    if ka < kb:
        return -1
    return 0 if ka == kb else 1


def _fuzzy_equal(a: str, b: str) -> bool:
    """``a ~ b``: b's tokens up to its end are the first tokens of a (or a equals b)."""
    ka = _body(a)[0]
    kb, valid = _body(b)
    return ka == kb or (valid and ka.startswith(kb[:-1]))


_LESS, _EQUAL, _GREATER, _FUZZY = 1, 2, 4, 8
MATCH_OPERATORS = {
    "<": _LESS,
    "<=": _LESS | _EQUAL,
    "=": _EQUAL,
    ">=": _GREATER | _EQUAL,
    ">": _GREATER,
    "~": _FUZZY | _EQUAL,
    "<~": _LESS | _EQUAL | _FUZZY,
    ">~": _GREATER | _EQUAL | _FUZZY,
}
"""The version operators of apk's dependency syntax, as bits of apk's result mask."""


def match_apk(a: str, op: str, b: str) -> bool:
    """Whether version ``a`` satisfies ``op b`` as ``apk_version_match`` decides.

    ``op`` is one of ``MATCH_OPERATORS`` (``pkg<2`` reads as ``match_apk(v, "<", "2")``);
    the ``~`` forms compare fuzzily, so ``3.6.9`` matches ``~3.6`` and ``<~3.6``.
    Raises ``ValueError`` for any other operator.
    """
    try:
        mask = MATCH_OPERATORS[op]
    except KeyError:
        raise ValueError(f"unknown apk version operator {op!r}") from None
    if mask & _FUZZY and _fuzzy_equal(a, b):
        result = _EQUAL
    else:
        result = {-1: _LESS, 0: _EQUAL, 1: _GREATER}[compare_apk(a, b)]
    return bool(result & mask)
