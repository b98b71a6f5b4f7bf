"""Shared helpers of the vulnerability tests: fixture paths, the real feeds read once, oracles.

The oracles are the real tools: ``rpm.vercmp`` through one ``rpm --eval`` Lua loop for
any number of pairs, and ``dpkg --compare-versions`` run by a shell loop per CPU. When a
tool is missing the test is skipped, unless ``PATCHWATCH_TEST_REQUIRE_ORACLES=1``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from collections.abc import Iterable
from pathlib import Path

import pytest

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.vulns import archive
from patchwatch.domain.vulns import osv
from patchwatch.domain.vulns.model import FeedStats
from patchwatch.domain.vulns.model import Record
from tests.support.tools import require_or_skip

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vulns"
ALMALINUX = FIXTURES / "almalinux-osv-2026-08-21.tar.xz"
KEV = FIXTURES / "known_exploited_vulnerabilities-2025-08-25.json.xz"
OSV_SCHEMA = FIXTURES / "osv-schema.json"
REQUIRE_ORACLES = "PATCHWATCH_TEST_REQUIRE_ORACLES"


@functools.lru_cache(maxsize=1)
def almalinux() -> tuple[list[Record], FeedStats]:
    """The 5,680 real AlmaLinux records, read once per test session by the code under test."""
    stats = FeedStats()
    records = osv.load_records(archive.iter_members(ALMALINUX, stats), stats)
    return records, stats


@functools.lru_cache(maxsize=1)
def almalinux_raw() -> dict[str, list[dict]]:
    """The same archive read by the standard library alone: member name -> decoded JSON.

    Independent of ``patchwatch.domain.vulns``: the reference the parsed records are checked
    against (``details`` and ``references`` left out).
    """
    out: dict[str, list[dict]] = {}
    with tarfile.open(ALMALINUX, "r:xz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".json"):
                f = tar.extractfile(member)
                assert f is not None
                doc = json.load(f)
                # the long prose is never compared: keep the session's memory small
                doc.pop("details", None)
                doc.pop("references", None)
                out.setdefault(member.name, []).append(doc)
    return out


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_or_skip(REQUIRE_ORACLES, f"{name} is not installed")
    assert path is not None
    return path


def rpm_vercmp(pairs: list[tuple[str, str]]) -> list[int]:
    """``rpm.vercmp(a, b)`` for every pair, from one ``rpm --eval`` process."""
    rpm = tool("rpm")
    for a, b in pairs:
        assert "\n" not in a + b and "\x00" not in a + b, (a, b)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "pairs.txt")
        data.write_text("".join(f"{a}\n{b}\n" for a, b in pairs))
        out = Path(tmp, "out.txt")
        lua = Path(tmp, "vercmp.lua")
        lua.write_text(
            f"local f = io.open({json.dumps(str(data))})\n"
            f"local o = io.open({json.dumps(str(out))}, 'w')\n"
            "while true do\n"
            "  local a = f:read('l'); if a == nil then break end\n"
            "  local b = f:read('l')\n"
            "  o:write(tostring(rpm.vercmp(a, b)), '\\n')\n"
            "end\n"
            "o:close(); f:close()\n"
        )
        subprocess.run(
            [rpm, "--eval", f"%{{lua: dofile({json.dumps(str(lua))})}}"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        answers = [int(x) for x in out.read_text().split()]
    assert len(answers) == len(pairs)
    return answers


def dpkg_less(pairs: list[tuple[str, str]]) -> list[bool]:
    """``dpkg --compare-versions a lt b`` for every pair (one shell loop per CPU)."""
    dpkg = tool("dpkg")
    workers = max(2, os.cpu_count() or 1)
    script = (
        "while IFS= read -r a && IFS= read -r b; do "
        f'if {dpkg} --compare-versions "$a" lt "$b"; then echo 1; else echo 0; fi; done'
    )
    results: dict[int, list[bool]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for n in range(workers):
            chunk = Path(tmp, f"pairs-{n}.txt")
            chunk.write_text("".join(f"{a}\n{b}\n" for a, b in pairs[n::workers]))
            with chunk.open() as stdin:
                procs.append(
                    (n, subprocess.Popen(["sh", "-c", script], stdin=stdin, stdout=subprocess.PIPE))
                )
        for n, p in procs:
            out, _ = p.communicate(timeout=600)
            assert p.returncode == 0
            results[n] = [line == b"1" for line in out.split()]
    answers: list[bool] = [False] * len(pairs)
    for n, values in results.items():
        answers[n::workers] = values
    return answers


def assert_feed_refused(
    parse: Callable[..., object], not_feeds: Iterable[bytes], raw: bytes, grown: int
) -> None:
    """``parse`` refuses what is not its feed, and ``raw`` above ``max_bytes`` before and
    after decompression (``raw`` grows by more than ``grown`` bytes decompressed)."""
    for data in not_feeds:
        with pytest.raises(ParseError):
            parse(data)
    with pytest.raises(TooLargeError):
        parse(raw, max_bytes=len(raw) - 1)
    with pytest.raises(TooLargeError):
        parse(raw, max_bytes=len(raw) + grown)
