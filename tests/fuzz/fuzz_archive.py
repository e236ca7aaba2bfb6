"""Target: remote-log archives (``remotelog/_archive.py``: ``import_log``).

The file is the fuzzer's bytes, or an archive the target assembles around the fuzzer's head
page, sequence, sealed flag and objects, with a head signed by the writer it names (an archive
carries its writer's key, so anyone can make one that passes the signature): the checks after
it (names, sealed logs, pages reaching objects, the end of the log) are reached too. It is
imported into an in-memory backend. Only :class:`ArchiveError` may come out.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from pathlib import Path

import trio

from mvds_node.remotelog._archive import MAGIC, VERSION, ArchiveError, import_log
from mvds_node.remotelog._backend import MemoryBackend
from mvds_node.remotelog._format import log_name, public_key, sign_head
from tests.fuzz._support import GROUP_ID, GROUP_KEY, Input, signing_key

MAX_LEN = 16384
SIGNING = signing_key("writer")
WRITER = public_key(SIGNING)
NAME = log_name(WRITER, GROUP_ID)
_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # a file per input: keep it off disk
PATH = Path(tempfile.mkdtemp(prefix="mvds-fuzz-archive-", dir=_SHM)) / "in.mvdslog"


def _blob(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def assemble(fdp: Input) -> bytes:
    """An archive of a signed head over the fuzzer's page, and the fuzzer's objects."""
    flags = fdp.ConsumeIntInRange(0, 255)
    seq = fdp.ConsumeIntInRange(0, 2**16)
    head = fdp.ConsumeBlob(8192)
    objects = [fdp.ConsumeBlob(4096) for _ in range(fdp.ConsumeIntInRange(0, 16))]
    name = NAME if not flags & 2 else NAME.replace("mvds/", "mvds/0", 1)[:-1]
    record = sign_head(SIGNING, name, seq, head, bool(flags & 1))
    count = len(objects) + fdp.ConsumeIntInRange(-1, 1) if flags & 4 else len(objects)
    out = MAGIC + bytes([VERSION]) + _blob(name.encode()) + _blob(WRITER) + _blob(record)
    out += struct.pack(">I", max(0, count)) + b"".join(_blob(o) for o in objects)
    return out + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4))


async def _import() -> None:
    await import_log(MemoryBackend(), PATH, group_keys=[GROUP_KEY])


def TestOneInput(data: bytes) -> None:
    # First byte 0: the file as it is, byte for byte; else an archive assembled around the rest.
    PATH.write_bytes(data[1:] if data[:1] == b"\x00" else assemble(Input(data[1:])))
    with contextlib.suppress(ArchiveError):
        trio.run(_import)
