"""Every operator verb opens the store one way, ``patchwatch.cli.output.guarded``.

Why it matters: a verb that opened the store on its own could create an empty one
where the operator pointed by mistake, and would report a bad name or a database
failure differently from its neighbours. Only the server verbs and ``migrate`` open
it otherwise (they create and migrate it); ``config``, ``vercmp`` and ``assets`` never do.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from patchwatch.cli.main import build_parser
from patchwatch.cli.output import Handler
from patchwatch.cli.output import guarded

CREATE_THE_STORE = {
    ("serve",),
    ("receiver",),
    ("scheduler",),
    ("processor",),
    ("exporter",),
    ("migrate",),
}
NEVER_TOUCH_IT = {("config",), ("vercmp",), ("assets",)}


def leaf_verbs(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Handler]]:
    """Every full command (``hosts show``, ``token create``) with its handler."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from leaf_verbs(sub, (*path, name))
            return
    yield path, parser.get_default("handler")


def is_guarded(handler: Handler) -> bool:
    return handler.__code__ is guarded(lambda settings, args: 0).__code__


def test_every_verb_on_an_existing_store_opens_it_through_guarded() -> None:
    verbs = dict(leaf_verbs(build_parser()))
    assert set(verbs) >= CREATE_THE_STORE | NEVER_TOUCH_IT  # the lists name real verbs
    bare = sorted(
        " ".join(path)
        for path, handler in verbs.items()
        if path not in CREATE_THE_STORE | NEVER_TOUCH_IT and not is_guarded(handler)
    )
    assert bare == []
    assert not any(is_guarded(verbs[path]) for path in CREATE_THE_STORE | NEVER_TOUCH_IT)
    assert len(verbs) - len(CREATE_THE_STORE | NEVER_TOUCH_IT) >= 30  # the walk found them
