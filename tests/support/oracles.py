"""Real tools as oracles of version ordering: pacman's ``vercmp``, and the key comparison.

A missing tool skips the test, or fails it under ``PATCHWATCH_TEST_REQUIRE_ORACLES=1``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "PATCHWATCH_TEST_REQUIRE_ORACLES"


def key_cmp(ka: object, kb: object) -> int:
    return (ka > kb) - (ka < kb)  # type: ignore[operator]


def assert_orders(
    compare: Callable[[str, str], int], key: Callable[[str], Any], a: str, b: str, expected: int
) -> None:
    """``compare`` orders ``a`` and ``b`` as ``expected`` says, both ways round, and the
    sort keys order them the same way (the key must agree with the comparison)."""
    assert compare(a, b) == expected
    assert compare(b, a) == -expected
    assert key_cmp(key(a), key(b)) == expected


def require_oracle(name: str, package: str) -> str:
    """Return the tool's path; skip (or fail under REQUIRE_ENV=1) when it is missing."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed (apt-get install {package}); its oracle test cannot run"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it")
    pytest.skip(reason)


def vercmp(pairs: list[tuple[str, str]], tmp_path: Path, workers: int = 2) -> list[int]:
    """Return the real ``vercmp A B`` for every pair (one shell loop per worker)."""
    tool = require_oracle("vercmp", "makepkg")
    for a, b in pairs:
        assert a and b and not any(c in a + b for c in "\n\x00"), (a, b)
        assert a not in ("-h", "--help") and b not in ("-h", "--help")
    script = f'while IFS= read -r a && IFS= read -r b; do {tool} "$a" "$b" || echo fail; done'
    procs = []
    for n in range(workers):
        chunk = tmp_path / f"vercmp-{n}.txt"
        chunk.write_text("".join(f"{a}\n{b}\n" for a, b in pairs[n::workers]))
        with chunk.open() as stdin:
            procs.append(
                subprocess.Popen(["sh", "-c", script], stdin=stdin, stdout=subprocess.PIPE)
            )
    answers: list[list[int]] = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        answers.append([int(line) for line in out.decode().split()])
    results = [0] * len(pairs)
    for n, chunk_answers in enumerate(answers):
        assert len(chunk_answers) == len(pairs[n::workers])
        results[n::workers] = chunk_answers
    return results
