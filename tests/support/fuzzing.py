"""Inputs for the parsers' fuzz, bounds and property tests: mutated samples, streams made
as read, what parsing them costs in memory, and whether a parser takes an input."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

T = TypeVar("T")


@st.composite
def mutated_bytes(draw: st.DrawFn, sample: bytes, inserts: Sequence[bytes]) -> bytes:
    """A sample with a few bytes replaced, inserted (from ``inserts``) or deleted, or cut short."""
    data = bytearray(sample)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        if action == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif action == "insert":
            data[pos:pos] = draw(st.sampled_from(inserts))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        else:
            del data[pos:]
    return bytes(data)


class ChunkStream(io.RawIOBase):
    """A binary stream that hands out ``parts`` as they are read, none held beforehand."""

    def __init__(self, parts: Iterable[bytes]) -> None:
        self.parts = (part for part in parts if part)
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self.pending:
            self.pending = next(self.parts, b"")
            if not self.pending:
                return 0
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def peak_memory(call: Callable[[], object]) -> int:
    """Bytes allocated at the peak of ``call`` (tracemalloc), beyond what it returns."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def accepts(parse: Callable[[T], object], value: T, refused: type[Exception]) -> bool:
    """Whether ``parse`` takes ``value`` rather than refusing it with ``refused``.

    Any other exception propagates: a crash is a failure, never read as a refusal.
    """
    try:
        parse(value)
    except refused:
        return False
    return True
