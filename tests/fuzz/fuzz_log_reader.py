"""Target: a reader walking a hostile remote log (``LogReader.poll``, ``remotelog/_log.py``).

The input is a log as a backend holds it: a head page, a sequence number, a sealed flag, and
CAS objects (pages and messages, stored under their addresses). The target signs the head with
the writer's key, so the walk behind the signature is reached (pages, tails, cursors, sealed
objects, message checks), and polls twice with a commit between, as the node does. A variant
serves the fuzzer's head record as it is, unsigned or forged. Only :class:`LogError` (and
:class:`BackendError`, for a backend that refuses) may come out.
"""

from __future__ import annotations

import contextlib

import trio

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import LogError, address_of, log_name, public_key, sign_head
from mvds_node.remotelog._log import LogReader, LogSettings
from tests.fuzz._support import GROUP_ID, GROUP_KEY, Input, signing_key

MAX_LEN = 16384
SIGNING = signing_key("writer")
WRITER = public_key(SIGNING)
NAME = log_name(WRITER, GROUP_ID)
_SETTINGS = (LogSettings(max_pages_per_poll=3), LogSettings(signed=False))


class _Backend:
    """The log's CAS and NS; its calls complete at once."""

    def __init__(self, objects: list[bytes], record: bytes) -> None:
        self.cas = {address_of(o): o for o in objects}
        self.record = record

    async def cas_add(self, data: bytes) -> bytes:
        raise BackendError("a reader does not write")

    async def cas_get(self, address: bytes) -> bytes | None:
        await trio.lowlevel.checkpoint()
        return self.cas.get(address)

    async def ns_update(self, name: str, record: bytes) -> None:
        raise BackendError("a reader does not write")

    async def ns_fetch(self, name: str) -> bytes | None:
        await trio.lowlevel.checkpoint()
        return self.record if name == NAME else None


async def _read(fdp: Input) -> None:
    flags = fdp.ConsumeIntInRange(0, 255)
    seq = fdp.ConsumeIntInRange(0, 2**16)
    head = fdp.ConsumeBlob(8192)
    objects = [fdp.ConsumeBlob(4096) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    sealed = bool(flags & 1)
    # flags & 2: the record as served (unsigned, forged, or not a head at all).
    record = head if flags & 2 else sign_head(SIGNING, NAME, seq, head, sealed)
    backend = _Backend(objects, record)
    settings = _SETTINGS[1] if flags & 4 else _SETTINGS[0]
    reader = LogReader(backend, WRITER, GROUP_ID, settings=settings, group_key=GROUP_KEY)
    known = {o[:32] for o in objects[: (flags >> 4)]}
    for _ in range(2):
        result = await reader.poll(known.__contains__)
        reader.commit(result, lambda _id: True)
        if len(result.messages) != len(result.ids):
            raise AssertionError("a poll returned messages and IDs that do not pair up")


def TestOneInput(data: bytes) -> None:
    with contextlib.suppress(LogError, BackendError):
        trio.run(_read, Input(data))
