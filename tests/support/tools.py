"""Real tools the tests run: skip when one is missing, or fail where the environment requires it."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest


def require_or_skip(env: str, reason: str) -> None:
    """Skip with ``reason``, or fail when the environment says the tool is required."""
    if os.environ.get(env) == "1":
        pytest.fail(f"{reason} (required because {env}=1)")
    pytest.skip(reason)


ORACLES_ENV = "PATCHWATCH_TEST_REQUIRE_ORACLES"


def require_tool(name: str) -> str:
    """Return the path of a real tool, or skip (fail in CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        require_or_skip(
            ORACLES_ENV,
            f"{name} not found (Debian: apt-get install --no-install-recommends "
            "prometheus prometheus-alertmanager)",
        )
    return str(path)


def require_yaml() -> Any:
    """Import PyYAML (a test dependency), or skip (fail in CI) without it."""
    try:
        import yaml
    except ImportError:
        require_or_skip(ORACLES_ENV, "PyYAML not installed (pip install pyyaml)")
    return yaml
