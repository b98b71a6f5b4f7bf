"""Hand freed memory back to the system after a large report.

CPython returns its own small-object arenas when they empty, but glibc keeps freed
heap pages (in every thread's arena) until asked to trim: a receiver worker or a
processing process that once held a large report's records would otherwise keep
their pages for its life (``patchwatch.receiver.gate``, ``patchwatch.pipeline.processor``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc: ctypes.CDLL | None = None
_libc_checked = False


def release_memory() -> bool:
    """Ask glibc to return freed heap memory to the system; False where there is no glibc."""
    global _libc, _libc_checked
    if not _libc_checked:
        _libc_checked = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            if libc is not None and hasattr(libc, "malloc_trim"):
                _libc = libc
        except OSError:
            _libc = None
    if _libc is None:
        return False
    _libc.malloc_trim(0)
    return True
