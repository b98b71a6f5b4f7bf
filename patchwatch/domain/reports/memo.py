"""The parsed-package memo: package records already checked, by their raw values.

Kept apart from the parsers because it outlives a report (a receiver worker keeps one
for its whole life) and so has its own bound. The native parser reads it through
:data:`MEMO`, looked up as ``memo.MEMO`` so that a test may replace it.
"""

from __future__ import annotations

from patchwatch.domain.records import Package


class PackageMemo:
    """Package records already parsed, by their raw values.

    A fleet reports the same few thousand package builds over and over; a package
    object that passed the checks once needs only its items looked up, not checked
    and built again. Only objects that passed the checks are ever stored, and JSON
    values equal to stored strings are those strings (no number, boolean or null
    equals a string), so a hit is exactly as valid as the first parse was. The key
    of an object with exactly the six keys is the tuple of their values (a hit then
    has those keys and those values); of any other object, its (field, value) pairs,
    which never equal a tuple of strings.

    Bounded by bytes, not entries: emptied when the entries' estimated size reaches
    :attr:`LIMIT_BYTES`. Why bytes: a receiver worker keeps its memo for its whole
    life, and a bound on entries lets hostile long names take memory that is never
    given back (docs/performance.md has the figures). A fleet's usual builds fit many
    times over.

    Records are canonical: two keys that make equal records (an rpm epoch given as
    "" and as "0") share one object, so that within one ``generation`` distinct
    objects are distinct records and a report's list is deduplicated by identity.
    """

    LIMIT_BYTES = 64 * 1024 * 1024
    # an entry's cost besides its strings: key tuple, record, the two dicts' slots and
    # the strings' headers (measured with tracemalloc: docs/performance.md)
    ENTRY_BYTES = 320

    def __init__(self) -> None:
        self.records: dict[tuple[object, ...], Package] = {}
        self.canonical: dict[Package, Package] = {}
        self.generation = 0  # counts the times the memo was emptied
        self.size = 0  # estimated bytes held

    def remember(self, key: tuple[object, ...] | None, record: Package) -> Package:
        """Store ``record`` under ``key`` (None: do not); return the canonical record."""
        cost = self.ENTRY_BYTES + 2 * len(record.digest_line)
        if self.size + cost > self.LIMIT_BYTES:
            self.records, self.canonical = {}, {}
            self.size = 0
            self.generation += 1
        known = self.canonical.setdefault(record, record)
        if known is record or key is not None:
            self.size += cost
        if key is not None:
            self.records[key] = known
        return known


MEMO = PackageMemo()
