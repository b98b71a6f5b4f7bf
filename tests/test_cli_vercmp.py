"""``patchwatch vercmp FAMILY``: 'A B' lines on stdin, -1/0/1 per line, exit 2 on bad lines.

Driven as a person or a script would, as a subprocess; the arch answers are also checked
against the real ``vercmp``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_versions_alpm import vercmp

PAIRS = {
    "deb": [("1.0~rc1-1", "1.0-1", "-1"), ("1:0.9", "2.0", "1"), ("1.0", "1.0-0", "0")],
    "rpm": [("1.0~rc1", "1.0", "-1"), ("1.0^git1", "1.0", "1"), ("1.0_1", "1.0.1", "0")],
    "arch": [("1.0rc1-1", "1.0-1", "-1"), ("1:0.9-1", "2.0-1", "1"), ("1.5", "1.5-2", "0")],
    "apk": [("1.0_rc1-r0", "1.0-r0", "-1"), ("1.0_p1", "1.0-r9", "1"), ("1.0bc", "1.0bd", "0")],
}
BAD = {
    "deb": ("1.0 a:1", "epoch in version is not number"),
    "rpm": ("1.0- 1", "release is empty"),
    "arch": ("1.0. 1", "pkgver ends with a separator"),
    "apk": ("1.0 2.0 3.0", "expected two versions, got 3 fields"),
}


def run_vercmp(family: str, stdin: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "patchwatch", "vercmp", family], cwd=ROOT, env=env,
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_vercmp_prints_one_answer_per_line(family: str, tmp_path: Path) -> None:
    pairs = PAIRS[family]
    proc = run_vercmp(family, "".join(f"{a} {b}\n" for a, b, _ in pairs) + "\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [expected for _, _, expected in pairs]
    assert proc.stderr == ""


@pytest.mark.parametrize("family", sorted(BAD))
def test_vercmp_reports_bad_lines_and_goes_on(family: str, tmp_path: Path) -> None:
    line, message = BAD[family]
    a, b, expected = PAIRS[family][0]
    proc = run_vercmp(family, f"{line}\n{a} {b}\n", tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.split() == [expected]
    assert proc.stderr.startswith("line 1: ") and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_vercmp_arch_answers_as_the_real_vercmp(tmp_path: Path) -> None:
    pairs = [(a, b) for a, b, _ in PAIRS["arch"]] + [("2.0_a", "2_0.a"), ("1.0", "1.0.a")]
    proc = run_vercmp("arch", "".join(f"{a} {b}\n" for a, b in pairs), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [int(x) for x in proc.stdout.split()] == vercmp(pairs, tmp_path)


def test_vercmp_refuses_an_unknown_family(tmp_path: Path) -> None:
    proc = run_vercmp("pkg", "1 2\n", tmp_path)
    assert proc.returncode == 2
    assert "invalid choice: 'pkg'" in proc.stderr
