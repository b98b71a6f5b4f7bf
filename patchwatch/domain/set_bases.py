"""Choose the stored package set a new one is written as a difference from.

A fleet is a few images with drift: a new host's 1,500 packages are mostly another
host's. Written whole, a new set cost 1,500 member rows, most of the work of
processing a new host's report; written as the packages it has that a *base* set
lacks and those the base has that it lacks (``package_set.base_id``), it costs a
few dozen. Bases are whole sets, never differences themselves, so that the content
of any set is one step away (the ``package_set_content`` view).

Finding the nearest base without comparing against each one: every base is known by
a sample of its ids (those divisible by :data:`SAMPLE_EVERY`); sets that share most
packages share most sampled ids, so counting shared samples through an inverted
index ranks the candidates, and only the best few are compared exactly. Pure: the
caller loads and stores the sets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

from patchwatch.domain.packed_ids import unpack_ids

SAMPLE_EVERY = 32  # one id in 32 (by value) stands for its set in the ranking
MIN_SIZE = 64  # smaller sets are written whole: a difference would save little
MAX_BASE_SIZE = 20_000  # larger whole sets are mirrors' indexes, not hosts': never bases
MAX_DIFFERENCE = 0.2  # a difference larger than this share of the set: write it whole
EXACT_CHECKS = 3  # candidates compared exactly, best ranked first
MAX_BASES = 2_000  # bases remembered (6 KB each, packed); later whole sets are not bases


@dataclass(frozen=True)
class Thresholds:
    """When a set is written as a difference, and how bases are ranked.

    A value, given to each :class:`BaseIndex`, rather than module constants read at
    call time: the tests write their small sets as differences with lower ones, and
    a value passed along cannot be missed by a reader that imported a constant.
    """

    min_size: int = MIN_SIZE
    sample_every: int = SAMPLE_EVERY
    max_difference: float = MAX_DIFFERENCE


DEFAULT_THRESHOLDS = Thresholds()


class BaseIndex:
    """Whole sets that new sets may be written against, ranked by shared samples."""

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
        self.thresholds = thresholds
        self.packed: dict[int, bytes] = {}  # base id -> its member ids, packed
        self.sample_sizes: dict[int, int] = {}
        self.by_sample: dict[int, list[int]] = {}  # sampled package id -> base ids
        self.generation = 0  # changes with every base added or removed

    def __len__(self) -> int:
        return len(self.packed)

    def _sample(self, ids: Iterable[int]) -> list[int]:
        every = self.thresholds.sample_every
        return [i for i in ids if not i % every]

    def add(self, set_id: int, members: Sequence[int], packed: bytes) -> None:
        """Remember a whole set as a base (ascending ``members``, as ``packed``)."""
        if (
            set_id in self.packed
            or len(members) < self.thresholds.min_size
            or len(self.packed) >= MAX_BASES
        ):
            return
        sample = self._sample(members)
        self.generation += 1
        self.packed[set_id] = packed
        self.sample_sizes[set_id] = len(sample)
        for pid in sample:
            self.by_sample.setdefault(pid, []).append(set_id)

    def remove(self, set_id: int) -> None:
        """Forget a base (deleted, or its id now names another set)."""
        if self.packed.pop(set_id, None) is None:
            return
        self.generation += 1
        del self.sample_sizes[set_id]
        for ids in self.by_sample.values():
            if set_id in ids:
                ids.remove(set_id)

    def nearest(self, members: Sequence[int]) -> tuple[int, list[int]] | None:
        """(base id, the ids in exactly one of the two) for the nearest base, or None.

        None when no base is near enough: the set is then best written whole (and
        becomes a base itself).
        """
        if len(members) < self.thresholds.min_size or not self.packed:
            return None
        sample = self._sample(members)
        shared = Counter(chain.from_iterable(self.by_sample.get(pid, ()) for pid in sample))
        if not shared:
            return None
        sizes = self.sample_sizes
        # estimated size of the difference, on the samples: |A| + |B| - 2|A & B|
        ranked = sorted(shared, key=lambda b: len(sample) + sizes[b] - 2 * shared[b])
        wanted = set(members)
        limit = int(len(members) * self.thresholds.max_difference)
        best: tuple[int, list[int]] | None = None
        for base_id in ranked[:EXACT_CHECKS]:
            difference = wanted.symmetric_difference(unpack_ids(self.packed[base_id]))
            if len(difference) <= limit and (best is None or len(difference) < len(best[1])):
                best = (base_id, sorted(difference))
        return best
