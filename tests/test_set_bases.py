"""Choosing the base a new package set is written against (pure, no database)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from patchwatch.domain.packed_ids import pack_ids
from patchwatch.domain.set_bases import MAX_BASES
from patchwatch.domain.set_bases import MAX_DIFFERENCE
from patchwatch.domain.set_bases import MIN_SIZE
from patchwatch.domain.set_bases import SAMPLE_EVERY
from patchwatch.domain.set_bases import BaseIndex
from patchwatch.domain.set_bases import Thresholds


def index_of(*bases: list[int]) -> BaseIndex:
    index = BaseIndex()
    for set_id, members in enumerate(bases, start=1):
        index.add(set_id, sorted(members), pack_ids(sorted(members)) or b"")
    return index


def drift(members: list[int], rng: random.Random, changes: int) -> list[int]:
    out = set(members)
    for _ in range(changes):
        if rng.random() < 0.5 and out:
            out.discard(rng.choice(sorted(out)))
        else:
            out.add(rng.randrange(100_000, 200_000))
    return sorted(out)


def test_the_nearest_of_several_images_is_chosen_with_the_exact_difference() -> None:
    rng = random.Random(1)
    images = [sorted(rng.sample(range(50_000), 1500)) for _ in range(20)]
    index = index_of(*images)
    for number, image in enumerate(images, start=1):
        host = drift(image, rng, 30)
        found = index.nearest(host)
        assert found is not None
        base_id, difference = found
        assert base_id == number
        assert difference == sorted(set(host) ^ set(image))


def test_a_set_far_from_every_base_is_written_whole() -> None:
    rng = random.Random(2)
    image = sorted(rng.sample(range(50_000), 1500))
    index = index_of(image)
    assert index.nearest(drift(image, rng, 200)) is not None  # about 13%: near
    assert index.nearest(image[:1000] + list(range(60_000, 60_500))) is None  # 1,000 apart
    assert index.nearest(sorted(rng.sample(range(50_000, 99_000), 1500))) is None


def test_small_sets_are_neither_bases_nor_differences() -> None:
    small = list(range(0, 64 * 32, 32))[: MIN_SIZE - 1]
    index = index_of(small)
    assert len(index) == 0
    assert index_of(list(range(0, 4000, 2))).nearest(small) is None


def test_thresholds_given_to_the_index_are_the_ones_it_applies() -> None:
    """Small sets become bases and differences under lower thresholds given as a value."""
    small = [[1, 2, 3, 4], [1, 2, 3, 5]]
    default = BaseIndex()
    lowered = BaseIndex(Thresholds(min_size=2, sample_every=1, max_difference=0.5))
    for index in (default, lowered):
        index.add(1, small[0], pack_ids(small[0]) or b"")
    assert len(default) == 0 and default.nearest(small[1]) is None
    assert len(lowered) == 1 and lowered.nearest(small[1]) == (1, [4, 5])
    assert BaseIndex().thresholds == Thresholds(MIN_SIZE, SAMPLE_EVERY, MAX_DIFFERENCE)


def test_the_number_of_bases_is_bounded() -> None:
    index = BaseIndex()
    members = list(range(MIN_SIZE))
    for set_id in range(MAX_BASES + 10):
        index.add(set_id, members, pack_ids(members) or b"")
    assert len(index) == MAX_BASES


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sets(st.integers(0, 3000), min_size=0, max_size=400), min_size=1, max_size=6),
    st.sets(st.integers(0, 3000), min_size=0, max_size=400),
)
def test_base_and_difference_always_give_back_the_set(bases, wanted) -> None:
    index = index_of(*(sorted(b) for b in bases))
    members = sorted(wanted)
    found = index.nearest(members)
    if found is None:
        return
    base_id, difference = found
    base = set(sorted(bases[base_id - 1]))
    assert base ^ set(difference) == set(members)
    assert len(difference) <= len(members) * MAX_DIFFERENCE
