"""Target: the HTTP helper's request handling (``remotelog/_helper.py``), one connection.

The fuzzer's bytes arrive on one client connection, cut where it says, and the helper serves it
as it serves a socket (h11 parsing, the per-address limits, the Twirp routes, signed-head checks
and quotas) on a fresh store in a scratch directory. A request the helper cannot serve must be
answered 4xx (or the connection closed); a bug the helper meets on one request is what it would
print on stderr as an internal error, so here :func:`_helper._report` makes that a finding.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import trio

from mvds_node.remotelog import _helper
from mvds_node.remotelog._backend import FileBackend
from tests.fuzz._support import FakeStream, Input

MAX_LEN = 16384
_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # a store per input: keep it off disk
SCRATCH = Path(tempfile.mkdtemp(prefix="mvds-fuzz-helper-", dir=_SHM))
_TIGHT = _helper.HelperLimits(
    burst=3, requests_per_second=0.001, max_names_per_address=1, max_bytes_per_address=600
)


class Finding(AssertionError):
    """The helper met a bug serving the fuzzer's request."""


def _report(exc: Exception, where: str) -> None:
    raise Finding(f"internal error on {where}") from exc


_helper._report = _report


class _Socket:
    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 40000)


class _ClientStream(FakeStream):
    socket = _Socket()


async def _serve(limits: _helper.HelperLimits, chunks: list[bytes]) -> bytes:
    root = SCRATCH / "store"
    shutil.rmtree(root, ignore_errors=True)
    helper = _helper._Helper(FileBackend(root), limits)
    stream = _ClientStream(chunks)
    await helper.handle(stream)  # type: ignore[arg-type]
    return bytes(stream.sent)


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    limits = _TIGHT if fdp.ConsumeBool() else _helper.HelperLimits()
    cuts = [fdp.ConsumeIntInRange(1, 2048) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    rest = fdp.ConsumeBytes(fdp.remaining_bytes())
    chunks = []
    for cut in cuts:
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    sent = trio.run(_serve, limits, [c for c in chunks if c])
    if sent and not sent.startswith(b"HTTP/1.1 "):
        raise AssertionError(f"the helper answered with {sent[:40]!r}")
