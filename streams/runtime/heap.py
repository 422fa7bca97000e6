"""Freed heap given back to the system.

A bulk load of the changelogs (changelog_store) builds and drops large transient structures: the
records librdkafka fetched, the dicts of decoded values per partition. glibc keeps what Python
frees below its heap's top for later allocations, so after a restart at 1M positions the worker
held ~80 MB more than the same data loaded by events (bench/RESULTS.md, 2026-12-07: RSS 658 MB
against 574 MB; `malloc_trim(0)` after the SKUs' load took it from 584 to 519 MB). The worker
trims once after each load; elsewhere the allocator is left to itself.
"""

from __future__ import annotations

import ctypes
import functools
import platform
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if platform.libc_ver()[0] != "glibc":  # musl, macOS: no malloc_trim
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = libc.malloc_trim
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Give the heap's free pages back to the system; True if any were (glibc only)."""
    trim = _malloc_trim()
    return trim is not None and trim(0) == 1
