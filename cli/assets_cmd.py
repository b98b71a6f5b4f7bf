"""``patchwatch assets``: write the operator's files out of the installed package.

Alert rules, the Alertmanager example, dashboards, the agent with its hooks and
units, the server's systemd unit and an example configuration travel inside the
wheel (under ``patchwatch/assets`` and ``patchwatch/agent``), so that a host
installed with ``pip install patchwatch`` has the same files as a clone, in the
version that matches its server. Existing files are kept unless ``--force``: an
operator's edited rules are not overwritten by an upgrade.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from patchwatch.cli.output import UsageError
from patchwatch.cli.tools_cmd import settings_toml
from patchwatch.domain.settings import Settings

EXAMPLE_CONFIG = "patchwatch.example.toml"

#: (package, folder in the package, folder written): what ``assets`` writes, and where
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("patchwatch", "assets/alerts", "alerts"),
    ("patchwatch", "assets/dashboards", "grafana/dashboards"),
    ("patchwatch", "assets/systemd", "systemd"),
    ("patchwatch.agent", "", "agent"),
)
_SKIPPED = ("__init__.py", "__pycache__")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "assets",
        help="write alert rules, dashboards, agent, hooks, units and an example config",
    )
    p.add_argument("dest", metavar="DIR", help="folder to write into (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.add_argument("--list", action="store_true", help="print what would be written, only")
    p.set_defaults(handler=cmd_assets)


def cmd_assets(settings: Settings, args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    plan = list(asset_files())
    if args.list:
        for rel, _data in plan:
            print(rel)
        return 0
    existing = [rel for rel, _ in plan if (dest / rel).exists()]
    if existing and not args.force:
        raise UsageError(
            f"{len(existing)} file(s) exist in {dest} (first: {existing[0]}); "
            "pass --force to overwrite them"
        )
    for rel, data in plan:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if rel.startswith("agent/") and (data.startswith(b"#!") or "/zypper/" in rel):
            target.chmod(0o755)
    print(f"wrote {len(plan)} files to {dest}")
    return 0


def asset_files() -> Iterator[tuple[str, bytes]]:
    """Yield (relative path, content) of every asset, the example configuration last."""
    for package, folder, written in SOURCES:
        root = files(package)
        for part in filter(None, folder.split("/")):
            root = root / part
        for rel, item in _walk(root, ""):
            yield f"{written}/{rel}", item.read_bytes()
    example = settings_toml(Settings(), with_help=True).replace(
        "patchwatch settings in effect (patchwatch config)",
        "patchwatch settings, every default (patchwatch assets)",
    )
    yield EXAMPLE_CONFIG, (example + "\n").encode()


def _walk(node: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name in _SKIPPED or child.name.endswith(".pyc"):
            continue
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _walk(child, rel + "/")
        else:
            yield rel, child
