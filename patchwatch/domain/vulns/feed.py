"""A whole feed document read into memory: bounded before and after decompression.

The KEV catalogue, the Debian tracker and EPSS's daily CSV arrive whole, plain or
compressed; each is refused above its bound as sent and again as decompressed (a
small gzip can expand to gigabytes), before any of it is parsed.

:func:`collector_paused` is for the loads that keep a whole feed as objects (an OSV
feed's records, the merged vulnerabilities rebuilt from them).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

import orjson

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.repodata.compression import decompress

__all__ = ["collector_paused", "feed_bytes", "feed_json"]


def feed_bytes(data: bytes, what: str, max_bytes: int) -> bytes:
    """``data`` decompressed; ``TooLargeError`` (naming ``what``) above ``max_bytes``."""
    if len(data) > max_bytes:
        raise TooLargeError(f"{what} of {len(data)} bytes is above {max_bytes}")
    return decompress(data, "auto", max_bytes)


def feed_json(data: bytes, what: str, max_bytes: int) -> object:
    """The JSON document ``data`` holds (see :func:`feed_bytes`); ``ParseError`` otherwise."""
    text = feed_bytes(data, what, max_bytes)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"{what} is not JSON: {exc}") from None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector out of a bulk load; restore it after.

    Why: a load that keeps hundreds of thousands of objects (a 50,000-record feed's
    records, entries and ranges) had the collector walk them again and again as they
    piled up, then three times more on their way from the young generation to the old
    one: a third of reading a feed, and as much again when storing it. What is loaded is
    acyclic (decoded JSON, tuples, frozen records), so reference counting frees all that
    the load drops, and nothing is left uncollected: at the end, every object alive is
    moved to the oldest generation at once (``freeze`` then ``unfreeze``, no walk), to be
    looked at by the next full collection. The process must not rely on ``gc.freeze``
    elsewhere while this runs (patchwatch freezes its heap only on the way out).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()
