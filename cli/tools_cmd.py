"""Small operator commands: show settings, compare versions, migrate the schema."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable

from patchwatch.domain.errors import VersionError
from patchwatch.domain.records import PackageKind
from patchwatch.domain.settings import SETTINGS
from patchwatch.domain.settings import Settings
from patchwatch.domain.settings import describe
from patchwatch.domain.settings import env_name
from patchwatch.store.db import open_database
from patchwatch.store.migrations import migrate

VERCMP_FAMILIES = ("deb", "rpm", "arch", "apk")
"""Version families ``patchwatch vercmp`` compares (package kinds and the newer families)."""


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "config", help="print the effective settings as TOML for --config (secrets masked)"
    )
    p.add_argument("--help-table", action="store_true", help="also print each setting's help")
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print the settings table (defaults and help) as Markdown, as in the README",
    )
    p.set_defaults(handler=cmd_config)

    p = sub.add_parser(
        "vercmp",
        help="compare versions read as 'A B' lines from stdin; print -1, 0 or 1 per line",
    )
    p.add_argument(
        "kind",
        choices=VERCMP_FAMILIES,
        help="deb (dpkg), rpm, arch (pacman's vercmp) or apk (Alpine's apk-tools)",
    )
    p.set_defaults(handler=cmd_vercmp)

    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    p.set_defaults(handler=cmd_migrate)


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown())
        return 0
    print(settings_toml(settings, with_help=args.help_table))
    return 0


def settings_toml(settings: Settings, with_help: bool = False) -> str:
    """The settings in effect as TOML that ``--config`` reads back to the same settings.

    Each line names the environment variable that sets it too. A secret is masked,
    and a masked value is written as a comment: read back, it must not replace the
    secret in effect (which then still comes from where it came from).
    """
    lines = [
        "# patchwatch settings in effect (patchwatch config): TOML that --config reads.",
        "# Masked secrets are comments: they keep coming from their environment variables.",
    ]
    shown = {name: text for name, text, _env in describe(settings)}
    for f in SETTINGS:
        value = getattr(settings, f.name)
        if with_help:
            lines += [""] + [f"# {line}" for line in textwrap.wrap(f.metadata["help"], 86)]
        line = f"{f.name} = {toml_value(value)}  # {env_name(f.name)}"
        if f.metadata["secret"] and value and shown[f.name] != value:
            line = f"# {f.name} = {toml_value(shown[f.name])}  # {env_name(f.name)}, masked"
        lines.append(line)
    return "\n".join(lines)


_TOML_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r",
                 0x22: '\\"', 0x5C: "\\\\"}  # fmt: skip


def toml_value(value: object) -> str:
    """A setting's value as a TOML literal (string, integer, float, boolean, array)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value)
    out = []
    for ch in text:
        cp = ord(ch)
        if cp in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[cp])
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\u{cp:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def settings_markdown() -> str:
    """Return the settings table as Markdown (the README embeds exactly this)."""
    lines = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, default, env in describe(Settings()):
        shown = f"`{default}`" if default else "(empty)"
        help_text = next(f.metadata["help"] for f in SETTINGS if f.name == name)
        lines.append(f"| `{name}` | `{env}` | {shown} | {help_text} |")
    return "\n".join(lines)


def _comparer(family: str) -> Callable[[str, str], int]:
    """The comparison function of a version family (imported only when asked for)."""
    if family == "arch":
        from patchwatch.domain.versions_alpm import compare_alpm

        return compare_alpm
    if family == "apk":
        from patchwatch.domain.versions_apk import compare_apk

        return compare_apk
    from patchwatch.domain.versions import compare

    kind = PackageKind(family)
    return lambda a, b: compare(kind, a, b)


def cmd_vercmp(settings: Settings, args: argparse.Namespace) -> int:
    compare = _comparer(args.kind)
    status = 0
    out = sys.stdout
    for lineno, line in enumerate(sys.stdin, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            print(f"line {lineno}: expected two versions, got {len(parts)} fields", file=sys.stderr)
            status = 2
            continue
        try:
            out.write(f"{compare(parts[0], parts[1])}\n")
        except VersionError as exc:
            print(f"line {lineno}: {exc}", file=sys.stderr)
            status = 2
    return status


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings.resolved_database_url)
    with db.connection_context():
        applied = migrate(db)
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    return 0
