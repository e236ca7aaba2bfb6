"""Log archives: a writer's whole remote log in one file, for carrying by hand.

``export_log`` walks a log from its head through every page and collects every object it names;
``import_log`` checks the whole file (the head's signature, every object against its address,
every page reachable and well formed) before it writes anything, then stores the objects and,
last, the head, which only replaces an older head of the same log. A reader pointed at that
backend then catches up with no network at all.

File layout: ``MVDSLOGA`` (8) | version (1) | u32 length + the NS name (UTF-8) | u32 length +
the writer's key (32) | u32 length + the signed head record | u32 count, then per object u32
length + bytes (its address is its SHA-256). Sealed logs are carried sealed: no key is needed to
carry one, only to read it.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import trio

from mvds_node.errors import MvdsError
from mvds_node.remotelog._backend import Backend, BackendError
from mvds_node.remotelog._format import (
    MAX_OBJECT_BYTES,
    LogError,
    Page,
    address_of,
    log_name,
    open_head,
    parse_page,
    signed_seq,
    unseal,
)
from mvds_node.remotelog._log import add_checked
from mvds_node.remotelog.proto import remotelog_pb2

__all__ = ["ArchiveError", "ArchiveResult", "export_log", "import_log"]

MAGIC: Final = b"MVDSLOGA"
VERSION: Final = 1
MAX_OBJECTS: Final = 10_000_000
_U32: Final = struct.Struct(">I")
_LOG_NAME: Final = re.compile(r"mvds/[0-9a-f]{64}/[0-9a-f]{16}")
"""What :func:`~mvds_node.remotelog.log_name` makes: the only names an archive may carry."""


class ArchiveError(MvdsError):
    """A log archive cannot be written, or a file is not one we accept (the message says why)."""


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    name: str
    seq: int
    objects: int
    bytes: int


def _page(data: bytes, sealed: bool, key: bytes | None, name: str) -> Page:
    if sealed:
        if key is None:
            raise ArchiveError(f"{name} is sealed: the group's key is needed to walk it")
        data = unseal(key, data, name)
    return parse_page(data, name)


async def _collect(
    backend: Backend, name: str, writer: bytes, key: bytes | None
) -> tuple[bytes, list[bytes]]:
    record = await backend.ns_fetch(name)
    if record is None:
        raise ArchiveError(f"no log named {name} in this backend")
    head = open_head(record, name, writer)
    objects: list[bytes] = []
    page = _page(head.log, head.sealed, key, name)
    pages = 0
    while True:
        for pair in page.pairs:
            if pair.address:
                data = await backend.cas_get(pair.address)
                if data is None:
                    raise ArchiveError(f"{name}: object {pair.address.hex()[:16]} is missing")
                objects.append(data)
        if not page.tail:
            break
        pages += 1
        data = await backend.cas_get(page.tail)
        if data is None:
            raise ArchiveError(f"{name}: page {page.tail.hex()[:16]} is missing")
        objects.append(data)
        page = _page(data, head.sealed, key, name)
        if pages > MAX_OBJECTS:
            raise ArchiveError(f"{name}: the log does not end")
    return record, objects


def _write_blob(f: BinaryIO, data: bytes) -> None:
    f.write(_U32.pack(len(data)))
    f.write(data)


async def export_log(
    backend: Backend,
    writer: bytes,
    group_id: bytes,
    path: str | os.PathLike[str],
    *,
    group_key: bytes | None = None,
) -> ArchiveResult:
    """Write ``writer``'s log of a group, from ``backend``, to one file (atomically). A sealed
    log needs ``group_key`` to be walked; its objects are carried sealed.

    Raises:
        ArchiveError: no such log, an object is missing, or the file cannot be written.
        LogError: the log in the backend is damaged or forged.
    """
    name = log_name(writer, group_id)
    record, objects = await _collect(backend, name, writer, group_key)
    size = await trio.to_thread.run_sync(_write_archive, Path(path), name, writer, record, objects)
    head = remotelog_pb2.SignedHead.FromString(record)
    return ArchiveResult(name, head.seq, len(objects), size)


def _write_archive(
    target: Path, name: str, writer: bytes, record: bytes, objects: list[bytes]
) -> int:
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + bytes([VERSION]))
            _write_blob(f, name.encode())
            _write_blob(f, writer)
            _write_blob(f, record)
            f.write(_U32.pack(len(objects)))
            for data in objects:
                _write_blob(f, data)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, target)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ArchiveError(f"{target}: cannot write: {e.strerror or e}") from None
    return size


def _read_blob(f: BinaryIO, limit: int, what: str) -> bytes:
    raw = f.read(4)
    if len(raw) != 4:
        raise ArchiveError(f"archive is truncated (in {what})")
    (n,) = _U32.unpack(raw)
    if n > limit:
        raise ArchiveError(f"archive claims {n} bytes for {what}")
    data = f.read(n)
    if len(data) != n:
        raise ArchiveError(f"archive is truncated (in {what})")
    return data


def _read_archive(p: Path) -> tuple[str, bytes, bytes, dict[bytes, bytes], int, int]:
    try:
        f = open(p, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        raise ArchiveError(f"{p}: cannot read: {e.strerror or e}") from None
    with f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ArchiveError(f"{p}: not an mvds-node log archive")
        version = f.read(1)
        if version != bytes([VERSION]):
            raise ArchiveError(f"{p}: archive version {version.hex()} is not supported")
        name = _read_blob(f, 256, "the name").decode(errors="replace")
        writer = _read_blob(f, 32, "the writer key")
        record = _read_blob(f, MAX_OBJECT_BYTES, "the head")
        raw = f.read(4)
        if len(raw) != 4:
            raise ArchiveError(f"{p}: archive is truncated (in the object count)")
        (count,) = _U32.unpack(raw)
        if count > MAX_OBJECTS:
            raise ArchiveError(f"{p}: archive claims {count} objects")
        objects = {}
        for i in range(count):
            data = _read_blob(f, MAX_OBJECT_BYTES, f"object {i}")
            objects[address_of(data)] = data
        if f.read(1):
            raise ArchiveError(f"{p}: bytes after the last object")
        size = f.tell()
    return name, writer, record, objects, count, size


async def import_log(
    backend: Backend,
    path: str | os.PathLike[str],
    *,
    group_keys: list[bytes] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveResult:
    """Check a log archive completely, then load it into ``backend``. A sealed log is checked
    with whichever of ``group_keys`` opens it. ``progress``, if given, follows the loading:
    (objects stored, objects).

    Raises:
        ArchiveError: not an archive, truncated, altered, forged, a name that is not a log
            name, older than what the backend has (nothing was changed in the NS), or the
            backend failed or refused a write (the head is written last, so the NS still holds
            what it held unless that last write was the one cut short).
    """
    p = Path(path)
    name, writer, record, objects, count, size = await trio.to_thread.run_sync(_read_archive, p)
    try:
        if not _LOG_NAME.fullmatch(name):
            raise ArchiveError(f"{p}: {name[:120]!r} is not the name of a remote log")
        head = open_head(record, name, writer)
        if not name.startswith(f"mvds/{writer.hex()}/"):
            raise ArchiveError(f"{p}: the log's name does not belong to its writer")
        key = None
        if head.sealed:
            for candidate in group_keys or []:
                with contextlib.suppress(LogError):
                    unseal(candidate, head.log, name)
                    key = candidate
                    break
            if key is None:
                raise ArchiveError(f"{p}: the log is sealed with a key we do not have")
        # Every page and object the head reaches must be in the file and well formed.
        page = _page(head.log, head.sealed, key, name)
        seen = 0
        while True:
            for pair in page.pairs:
                if pair.address and pair.address not in objects:
                    raise ArchiveError(f"{p}: object {pair.address.hex()[:16]} is missing")
                seen += bool(pair.address)
            if not page.tail:
                break
            data = objects.get(page.tail)
            if data is None:
                raise ArchiveError(f"{p}: page {page.tail.hex()[:16]} is missing")
            seen += 1
            page = _page(data, head.sealed, key, name)
            if seen > count:
                raise ArchiveError(f"{p}: the log does not end")
    except LogError as e:
        raise ArchiveError(f"{p}: {e}") from None
    try:
        current = await backend.ns_fetch(name)
        # A record there that is not a signed head (damaged) does not hold the import back.
        old = signed_seq(current) if current is not None else None
        if old is not None and old > head.seq:
            raise ArchiveError(
                f"{p}: the backend already has a newer head (sequence {old} > {head.seq})"
            )
        for done, data in enumerate(objects.values()):
            if progress is not None:
                progress(done, len(objects))
            await add_checked(backend, data, name)
        await backend.ns_update(name, record)
        if progress is not None:
            progress(len(objects), len(objects))
    except BackendError as e:
        raise ArchiveError(f"{p}: the backend refused the log: {e}") from None
    return ArchiveResult(name, head.seq, count, size)
