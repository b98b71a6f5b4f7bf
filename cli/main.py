"""``patchwatch``: one command for the server processes and the operator's verbs.

Exit codes: 0 success, 1 failure of the work itself, 2 bad usage or configuration.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn
from typing import cast

from peewee import PeeweeException

from patchwatch import __version__
from patchwatch.cli import admin_cmd
from patchwatch.cli import assets_cmd
from patchwatch.cli import hosts_cmd
from patchwatch.cli import ops_cmd
from patchwatch.cli import refresh_cmd
from patchwatch.cli import repos_cmd
from patchwatch.cli import secfeeds_cmd
from patchwatch.cli import serve_cmd
from patchwatch.cli import tools_cmd
from patchwatch.cli import vulns_cmd
from patchwatch.cli.gunicorn_app import LOG_FORMAT
from patchwatch.cli.output import OneLineParser
from patchwatch.cli.output import UsageError
from patchwatch.cli.output import printable
from patchwatch.domain.errors import ConfigError
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.settings import Settings
from patchwatch.domain.settings import load_settings

log = logging.getLogger("patchwatch")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="patchwatch",
        description="Patch-status monitoring for Linux fleets.",
        epilog="Exit codes: 0 success, 1 the work failed, 2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument(
        "--data-dir", dest="data_dir", metavar="DIR",
        help="the server's data folder (setting data_dir), where its SQLite store is",
    )  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # subcommands are OneLineParsers too; the modules add them as plain ArgumentParsers
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
    )
    serve_cmd.add_commands(sub)
    tools_cmd.add_commands(sub)
    admin_cmd.add_commands(sub)
    refresh_cmd.add_commands(sub)
    hosts_cmd.add_commands(sub)
    repos_cmd.add_commands(sub)
    ops_cmd.add_commands(sub)
    assets_cmd.add_commands(sub)
    vulns_cmd.add_commands(sub)
    secfeeds_cmd.add_commands(sub)
    name_commands(parser)
    return parser


def name_commands(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)command's arguments its full name, ``patchwatch hosts list``, so
    that an error says which command it comes from."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_path=sub.prog)
                name_commands(sub)


def setup_logging(settings: Settings, quiet: bool, verbose: bool) -> None:
    level = "DEBUG" if verbose else "WARNING" if quiet else settings.log_level.upper()
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = getattr(args, "command_path", "patchwatch")  # errors name the command
    try:
        overrides = {name: getattr(args, name, None) for name in ("data_dir", "bind", "workers")}
        settings = load_settings(os.environ, args.config, overrides)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(settings, args.quiet, args.verbose)
    try:
        return int(args.handler(settings, args) or EXIT_OK)
    except ConfigError as exc:
        print(f"{prog}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"{prog}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except PatchwatchError as exc:
        print(f"{prog}: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except PeeweeException as exc:  # the store is unreachable or refused the work
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog}: database error: {reason}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head & co: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def run() -> NoReturn:
    """The command's entry point: :func:`main`, then exit without a last collection.

    Why: at exit the interpreter runs the cyclic garbage collector over every object
    still alive, and a command that built a large heap (processing's package memo
    and id caches) spent a noticeable time there after its work was done. Nothing it holds needs
    a finaliser that only that collection would run, so the heap is frozen (left out
    of collections) first. Tests call :func:`main` and keep collecting.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
