"""The console's blueprint with its pages and actions registered (importing them does)."""

from __future__ import annotations

from patchwatch.receiver.console import actions as _actions  # noqa: F401 (registers the actions)
from patchwatch.receiver.console import pages as _pages  # noqa: F401 (registers the pages)
from patchwatch.receiver.console.blueprint import bp

__all__ = ["bp"]
