"""Giving freed heap back to the system (trim_heap): what a bulk load leaves behind is not kept."""

from __future__ import annotations

import os
import platform

import pytest

from streams.runtime.heap import trim_heap

MB = 1 << 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_heap_freed_below_a_live_block_goes_back_to_the_system() -> None:
    # blocks of 16 KB go through malloc (pymalloc takes 512 bytes at most; mmap, 128 KB and up),
    # and a block allocated after them keeps the heap's top where it is: freeing them returns
    # nothing by itself, and whole pages inside each block are free for the trim
    blocks = [bytes(16_384 - 33) + bytes([i % 256]) for i in range(10_000)]
    pin = bytes(16_384 - 33) + b"\x01"
    before_free = rss()
    del blocks
    freed = rss()
    assert before_free - freed < 40 * MB  # glibc kept most of the 160 MB
    assert trim_heap()
    assert freed - rss() > 80 * MB
    assert pin[-1] == 1


def test_without_glibc_nothing_is_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    from streams.runtime import heap

    heap._malloc_trim.cache_clear()
    try:
        assert not trim_heap()
    finally:
        heap._malloc_trim.cache_clear()
