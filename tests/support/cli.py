"""Running the ``patchwatch`` command as an operator does: a subprocess on a given store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def cli_env(url: str, home: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "PATCHWATCH_DATABASE_URL": url}


def cli(url: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run ``patchwatch ARGS`` with no terminal (stdin from /dev/null), as cron does."""
    proc = subprocess.run(
        [sys.executable, "-m", "patchwatch", *args], cwd=ROOT, env=cli_env(url, home),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def fails(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    """Assert a one-line error on stderr containing ``text`` and exit ``code``."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], proc.stderr
    assert proc.stdout == ""
