"""Freed memory kept for reuse (``keep_freed_memory``): fewer fresh pages for large buffers.

The allocator setting is process-wide and cannot be taken back, so the check runs in a fresh
interpreter: the same pattern of large buffers (three of 3 MiB made and freed together, as a
payload, its frame and a batch of Noise messages are) is run before and after the call, and the
page faults of each run are counted.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

from mvds_node.node import _memory

SNIPPET = """
import json, resource
from mvds_node.node._memory import keep_freed_memory

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        a = bytearray(3 << 20); b = bytearray(3 << 20); c = bytearray(3 << 20)
        del a, b, c
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
took = keep_freed_memory(64 << 20)
print(json.dumps({"before": before, "took": took, "after": faults()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_large_buffers_reuse_freed_memory_instead_of_fresh_pages() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, check=True, timeout=60
    )
    figures = json.loads(out.stdout)
    if not figures["took"]:
        pytest.skip("the C library is not glibc")
    # 20 rounds of 9 MiB: about 46,000 faults when the freed buffers go back to the system.
    assert figures["before"] > 20_000
    assert figures["after"] < figures["before"] / 5


def test_a_limit_only_ever_rises(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def mallopt(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    class Libc:
        gnu_get_libc_version = object()

    Libc.mallopt = staticmethod(mallopt)  # type: ignore[attr-defined]

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(_memory, "_kept", 0)
    assert _memory.keep_freed_memory(0) is False, "0 leaves the allocator alone"
    assert _memory.keep_freed_memory(128 << 20)
    assert calls == [(-1, 128 << 20), (-3, 32 << 20)], "mmap threshold capped at 32 MiB"
    assert _memory.keep_freed_memory(16 << 20), "a larger limit is in place"
    assert len(calls) == 2, "and it stays"
