"""What the operator's views share: name matching, id batches, progress, versions."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any
from typing import TypeVar

from patchwatch.domain.errors import AmbiguousError
from patchwatch.domain.errors import NotFoundError
from patchwatch.domain.errors import ParseError

DAY = 86400.0
BATCH = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's limits

GLOB_CHARS = frozenset("*?[")

ProgressFn = Callable[[int, int, str], None]  # (done, total, what is being done)
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = BATCH) -> Iterable[Sequence[T]]:
    """Cut ids into lists short enough for one ``IN (...)``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def is_glob(text: str) -> bool:
    """Whether an operator's name is a pattern (``web*``) rather than a name."""
    return any(c in GLOB_CHARS for c in text)


def candidates(names: Sequence[str], limit: int = 4) -> str:
    """The first few names an ambiguous reference matches, for its error message."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def required_ref(ref: str, message: str, where: str) -> str:
    """An operator's reference, stripped; an empty one is refused (``ParseError``)."""
    ref = ref.strip()
    if not ref:
        raise ParseError(message, where)
    return ref


def numbered_ref(ref: str, model: Any, what: str, where: str, empty: str) -> tuple[str, Any]:
    """An operator's reference, stripped (empty: ``ParseError`` with ``empty``), and the
    ``model`` row it names when it is a number: an id (``NotFoundError`` when none)."""
    ref = required_ref(ref, empty, where)
    if not ref.isdigit():
        return ref, None
    row = model.get_or_none(model.id == int(ref))
    if row is None:
        raise NotFoundError(f"no {what} with id {ref}")
    return ref, row


def the_one(
    matches: Sequence[T], ref: str, none: str, plural: str, shown: Sequence[str], hint: str,
    limit: int = 4,
) -> T:  # fmt: skip
    """The one match of a reference: ``NotFoundError`` (``none``) without one,
    ``AmbiguousError`` naming the first few (``shown``) and what to give instead (``hint``)
    with several."""
    if not matches:
        raise NotFoundError(none)
    if len(matches) > 1:
        raise AmbiguousError(
            f"{ref!r} matches {len(matches)} {plural} ({candidates(shown, limit)}); {hint}"
        )
    return matches[0]


def evr(epoch: str, version: str, release: str) -> str:
    """A version as dpkg and rpm print it: the epoch only when not 0, the release if any."""
    out = f"{epoch}:{version}" if epoch not in ("", "0") else version
    return f"{out}-{release}" if release else out
