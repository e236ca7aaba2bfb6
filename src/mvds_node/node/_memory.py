"""Freed memory kept for reuse: the C allocator's trim and mmap thresholds.

A node moving large messages allocates and frees buffers of megabytes many times a second: a
payload being built and framed, a frame being reassembled, a batch of Noise messages. By default
glibc hands an allocation above 128 KiB to ``mmap`` and returns freed memory at the top of the
heap to the system once more than 128 KiB of it is free (both thresholds then move up with the
sizes it sees, but not far enough for these buffers), so the next buffer is made of fresh pages.
Each fresh page is a fault that the kernel must clear: on the virtual machines measured, up to
4.5 µs a page, and in a transfer of 300 MB of 60 KB messages 42,000-55,000 faults on the sending
node. With the thresholds raised, the buffers come from memory the process already has: 17,000-
20,000 faults, about 10 % less CPU on each side, and 14 % more throughput (``docs/performance.md``).

The cost is memory the process holds on to: up to the limit of freed memory at the top of the
heap, which the system gets back only when the process exits. The setting is process-wide (it
applies to every allocation, the application's too); with several nodes in one process the
largest limit applies. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Final

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_MMAP_MAX: Final = 32 * 1024 * 1024
"""glibc refuses an mmap threshold above 32 MiB on 64-bit systems."""

_kept = 0


def keep_freed_memory(limit: int) -> bool:
    """Let the C allocator keep up to ``limit`` bytes of freed memory for reuse, and serve
    allocations up to half of it (at most 32 MiB) from that memory instead of fresh ``mmap``
    regions. Only ever raises the limit: a smaller one than already set is ignored.

    Returns:
        True if the allocator is glibc's and took the setting (or a larger one is in place).
    """
    global _kept
    if limit <= 0:
        return False
    if limit <= _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    limit = min(limit, 2**31 - 1)
    if not mallopt(_M_TRIM_THRESHOLD, limit):
        return False
    mallopt(_M_MMAP_THRESHOLD, min(limit // 2, _MMAP_MAX))
    _kept = limit
    return True
