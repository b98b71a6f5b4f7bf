"""What the operator commands share: listings as table, JSON or CSV, progress, prompts.

Tables are for people: they fit the terminal (80 columns when the output is not a
terminal, so that a pasted or mailed table stays readable), cutting the widest column
first with an ellipsis, and show control characters from reports as escapes. JSON and
CSV are for scripts: every field, never cut, exactly as the admin API answers (JSON
times as Unix seconds; CSV as :mod:`patchwatch.domain.tabular` writes it). Progress goes to
stderr and only to a terminal, never into a pipe or a cron mail, and ``-q`` turns it
off.

Usage errors are one line (``prog: message``) instead of argparse's usage block, so
that a wrong flag in a cron job reads like every other error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import IO
from typing import Any
from typing import NoReturn

from peewee import PeeweeException

from patchwatch.domain.errors import AmbiguousError
from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import PatchwatchError
from patchwatch.domain.settings import Settings
from patchwatch.domain.settings import mask_url
from patchwatch.domain.tabular import csv_text
from patchwatch.domain.tabular import is_time_key
from patchwatch.store.db import open_database
from patchwatch.store.db import sqlite_path
from patchwatch.store.migrations import current_version
from patchwatch.store.migrations import migrate

FORMATS = ("table", "json", "csv")
DEFAULT_WIDTH = 80
GAP = "  "
ELLIPSIS = "…"

Column = tuple[str, str]  # (key in the row, header)
Handler = Callable[[Settings, argparse.Namespace], int]


class UsageError(PatchwatchError):
    """The operator's command line or input cannot be used: exit 2, one line."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit 2.

    Options must be spelled out (no ``--for`` for ``--force``): an abbreviation that
    means one option today silently means another when an option is added. Arguments
    the parser does not know are named, never echoed with their values, which may be
    secrets typed into the wrong option.
    """

    def __init__(self, *args: Any, allow_abbrev: bool = False, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = allow_abbrev
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """Parse, and report unknown arguments under the name of the command they follow."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "command_path", self.prog)
            self.exit(2, f"{prog}: {unrecognized(extras)} (see --help)\n")
        return parsed


def unrecognized(extras: Sequence[str]) -> str:
    """Describe unknown arguments by their option names only: values are not repeated."""
    names = [arg.split("=", 1)[0] for arg in extras if arg.startswith("-")]
    values = sum(1 for arg in extras if not arg.startswith("-")) + sum(
        1 for arg in extras if arg.startswith("-") and "=" in arg
    )
    text = "unrecognized arguments: " + " ".join(names) if names else "unexpected arguments"
    if values:
        text += f"{',' if names else ':'} {plural(values, 'value')} not shown"
    return text


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give a parser made by ``add_parser`` one-line usage errors; return it."""
    parser.__class__ = OneLineParser
    return parser


def add_format(parser: argparse.ArgumentParser, choices: Sequence[str] = FORMATS) -> None:
    parser.add_argument(
        "--format", choices=choices, default=choices[0], help=f"output format ({choices[0]})"
    )


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """Accept ``-q`` after the command too; SUPPRESS keeps ``patchwatch -q CMD`` working."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress"
    )


def open_store(settings: Settings) -> None:
    """Bind the database and bring its schema up to date, refusing to create one.

    An operator's verb pointed at the wrong ``data_dir`` or ``database_url`` must say
    so, not answer "no hosts" from a new empty database it just made there.

    :raises PatchwatchError: when there is no database or it cannot be opened.
    """
    hint = (
        "give the server's --data-dir (or set data_dir or database_url), or create it "
        "with 'patchwatch migrate'"
    )
    path = sqlite_path(settings.resolved_database_url)
    if path is not None and not Path(path).is_file():  # checked first: no folder made
        raise PatchwatchError(f"no database at {path}: {hint}")
    try:
        db = open_database(settings.resolved_database_url)
        db.connect(reuse_if_open=True)
        if current_version(db) == 0:
            where = mask_url(settings.resolved_database_url)
            raise PatchwatchError(f"the database {where} has no patchwatch schema: {hint}")
        migrate(db)
    except (PeeweeException, OSError) as exc:
        raise PatchwatchError(f"cannot open the database: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def guarded(handler: Handler) -> Handler:
    """Open the store and run the command; an unclear name or bad value is a usage error
    (exit 2), a database error one line (exit 1) instead of a traceback.

    The one way an operator's verb opens the store (``set_defaults(handler=guarded(...))``),
    so that every verb refuses to create one and reports a failure the same way. Only
    the server verbs and ``migrate`` open it otherwise: they create and migrate it.
    """

    def run(settings: Settings, args: argparse.Namespace) -> int:
        open_store(settings)
        try:
            return handler(settings, args)
        except (ParseError, AmbiguousError) as exc:  # the operator's input: bad usage
            raise UsageError(str(exc)) from None
        except PeeweeException as exc:
            raise PatchwatchError(f"database error: {_first_line(exc)}") from None

    run.__doc__ = handler.__doc__
    run.__name__ = handler.__name__
    return run


def usage_error(message: str) -> NoReturn:
    """Stop with a usage error: main prints it under the command's name and exits 2."""
    raise UsageError(message)


def positive_int(text: str) -> int:
    """A count for an argparse ``type=``: a whole number, one or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


# --- values ------------------------------------------------------------------------------


def plural(n: int, word: str, many: str = "") -> str:
    """``1 host``, ``2 hosts``; ``many`` for irregular plurals (repository/repositories)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def format_time(ts: float | None) -> str:
    """A Unix time as UTC minutes, the precision an operator reads."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


# Characters a terminal acts on instead of showing: C0 controls (ESC starts the
# escape sequences that move the cursor, retitle the window or rewrite the screen),
# DEL, C1 controls (0x9b is a one-byte CSI on some terminals) and the bidirectional
# overrides that reorder what is shown. Reports put text from hosts into kernel, os,
# arch, tags and repository ids: the CLI shows such characters as escapes.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F),
             *range(0x2066, 0x206A)]  # fmt: skip
_TERMINAL = {cp: (f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}") for cp in _CONTROLS}
_TERMINAL_LINES = {k: v for k, v in _TERMINAL.items() if k != 0x0A}
_JSON = {cp: f"\\u{cp:04x}" for cp in _CONTROLS if cp >= 0x7F}  # json.dumps does C0


def printable(text: str, lines: bool = False) -> str:
    """``text`` with every terminal control character shown as an escape (``\\x1b``);
    ``lines`` keeps newlines (for a block of text printed as several lines)."""
    return text.translate(_TERMINAL_LINES if lines else _TERMINAL)


def cell(key: str, value: Any) -> str:
    """A value as a table shows it: times readable, flags yes/no, lists comma-separated."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and is_time_key(key):
        return format_time(float(value))
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return printable(",".join(str(v) for v in value)) or "-"
    return printable(" ".join(str(value).split()))  # whitespace runs as one space


# --- tables ------------------------------------------------------------------------------


def terminal_width(stream: IO[str] | None = None) -> int:
    """The terminal's width when writing to one, else 80."""
    stream = stream or sys.stdout
    if stream.isatty():
        return max(20, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)
    return DEFAULT_WIDTH


def fit_widths(natural: Sequence[int], width: int, gap: int = len(GAP)) -> list[int]:
    """Shrink column widths until the row fits ``width``: always the widest first.

    Narrow columns (counts, flags) keep their width while one long column (a URL, a
    repository key) absorbs the cut, which is what a reader wants to keep whole.
    """
    widths = list(natural)
    budget = width - gap * max(0, len(widths) - 1)
    while sum(widths) > budget:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= 1:
            break
        widths[widest] -= 1
    return widths


def truncate(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` characters, ending with an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + ELLIPSIS if width > 0 else ""


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], width: int) -> str:
    """Rows as aligned columns under upper-case headers, at most ``width`` wide."""
    headers = [h.upper() for _k, h in columns]
    cells = [[cell(k, row.get(k)) for k, _h in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(k), int) and not isinstance(row.get(k), bool) for row in rows)
        and bool(rows)
        for k, _h in columns
    ]
    natural = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    widths = fit_widths(natural, width)
    lines = []
    for values in [headers, *cells]:
        parts = []
        for i, value in enumerate(values):
            text = truncate(value, widths[i])
            parts.append(text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i]))
        lines.append(GAP.join(parts).rstrip())
    return "\n".join(lines)


def render_json(data: Any) -> str:
    """JSON as scripts read it; DEL, C1 and bidi controls written as ``\\u`` escapes
    too (json.dumps escapes only C0), so that JSON on a terminal is safe to look at."""
    return json.dumps(data, indent=2, ensure_ascii=False).translate(_JSON)


def render_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    """The rows under the listing's fields, as the API writes them (patchwatch.domain.tabular)."""
    return csv_text(rows, fields).rstrip("\n")


def emit(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    columns: Sequence[Column],
    empty: str = "",
    stream: IO[str] | None = None,
    fields: Sequence[str] = (),
) -> None:
    """Print a listing in the chosen format; say ``empty`` on stderr when it has no rows.

    ``fields`` (from :mod:`patchwatch.domain.listings`) are the CSV header, whether or not
    there are rows. The note goes to stderr so that ``--format csv`` of nothing is
    still just the header.
    """
    stream = stream or sys.stdout
    if fmt == "json":
        print(render_json(list(rows)), file=stream)
    elif fmt == "csv":
        if not fields:
            raise ValueError("a listing written as CSV needs its fields")
        print(render_csv(rows, fields), file=stream)
    elif rows:
        print(render_table(rows, columns, terminal_width(stream)), file=stream)
    if not rows and empty:
        print(empty, file=sys.stderr)


def print_fields(
    data: dict[str, Any], fields: Sequence[Column], stream: IO[str] | None = None
) -> None:
    """One object as ``label: value`` lines, cut to the terminal's width."""
    stream = stream or sys.stdout
    width = terminal_width(stream)
    label_width = max(len(label) for _k, label in fields) + 1
    for key, label in fields:
        line = f"{label + ':':<{label_width}} {cell(key, data.get(key))}"
        print(truncate(line, width), file=stream)


# --- progress and prompts ----------------------------------------------------------------


class Progress:
    """A one-line ``label done/total what`` counter on stderr, only on a terminal."""

    def __init__(self, label: str, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.enabled = not quiet and self.stream.isatty()
        self.shown = False

    def __call__(self, done: int, total: int, what: str = "") -> None:
        if not self.enabled:
            return
        text = f"{self.label} {done}/{total} {what}".rstrip()
        width = terminal_width(self.stream) - 1
        self.stream.write("\r" + truncate(text, width) + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """Erase the counter so that the command's output starts on a clean line."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def confirm(question: str, stdin: IO[str] | None = None) -> bool:
    """Ask a yes/no question on the terminal; anything but y/yes is no."""
    stdin = stdin or sys.stdin
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def can_prompt(stdin: IO[str] | None = None) -> bool:
    """Tell whether a person can answer a prompt (stdin is a terminal)."""
    return (stdin or sys.stdin).isatty()


def yes_no(text: str) -> bool:
    """Read yes/no (also true/false, on/off, 1/0) for an argparse ``type=``."""
    value = text.strip().lower()
    if value in ("yes", "y", "true", "on", "1"):
        return True
    if value in ("no", "n", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def non_negative(text: str) -> float:
    """A number of days or such for an argparse ``type=``: a float, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text!r}")
    return value
