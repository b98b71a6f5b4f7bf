"""A whole feed document read into memory: bounded before and after decompression.

The KEV catalogue, the Debian tracker and EPSS's daily CSV arrive whole, plain or
compressed; each is refused above its bound as sent and again as decompressed (a
small gzip can expand to gigabytes), before any of it is parsed.

The loads that keep a whole feed as objects (an OSV feed's records, the merged
vulnerabilities rebuilt from them) run with the collector paused
(:func:`patchwatch.domain.collector.collector_paused`).
"""

from __future__ import annotations

import orjson

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError
from patchwatch.domain.repodata.compression import decompress

__all__ = ["feed_bytes", "feed_json"]


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
