"""Row ids packed into one value: ``PackageSet.member_ids``.

Four-byte little-endian integers, in the order given. Why a packed copy next to the
member rows: reading one value by primary key costs a fraction of gathering a set's
1,500 member rows, and the update computation reads every host's set (see
``patchwatch.store.models.PackageSet``). Pure functions, shared by the writers
(``patchwatch.store.sets``), the schema migration that fills old sets and the reader
(``patchwatch.pipeline.hostupdates``), so that there is one encoding.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence


def pack_ids(ids: Sequence[int]) -> bytes | None:
    """The ids packed; None if one does not fit in 32 bits (readers then use the rows)."""
    try:
        packed = array("i", ids)
    except OverflowError:
        return None
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_ids(value: bytes | memoryview) -> array[int]:
    """The ids :func:`pack_ids` packed, in the same order."""
    ids = array("i")
    ids.frombytes(value)
    if sys.byteorder != "little":
        ids.byteswap()
    return ids
