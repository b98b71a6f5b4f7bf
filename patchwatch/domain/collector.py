"""Python's cyclic garbage collector kept out of bulk work (pure: no I/O)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Keep Python's cyclic garbage collector out of a bulk load; restore it after.

    Why: a load that keeps hundreds of thousands of objects (a 50,000-record feed's
    records, entries and ranges; a processing batch's decoded bodies) had the collector
    walk them again and again as they piled up, then three times more on their way from
    the young generation to the old one: a third of reading a feed, and 6-8 % of
    processing reports. What such a load builds is acyclic (decoded JSON, tuples, frozen
    records), so reference counting frees all that it drops, and nothing is left
    uncollected: at the end, every object alive is moved to the oldest generation at once
    (``freeze`` then ``unfreeze``, no walk), to be looked at by the next full collection.
    The process must not rely on ``gc.freeze`` elsewhere while this runs (patchwatch
    freezes its heap only on the way out).
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
