"""Where a remote log lives: a CAS and an NS behind one small interface.

Every backend implements :class:`Backend` (four async calls). This module has the in-process
:class:`MemoryBackend` (tests, the simulator) and :class:`FileBackend`, the embedded default
(``file:///path``): a directory with ``cas/`` (one file per object, named by its address) and
``ns/`` (one file per name), written atomically (temporary file, fsync, rename, fsync of the
directory), so a crash leaves either the old or the new version, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, final

import trio

from mvds_node._files import fsync_directory
from mvds_node.errors import MvdsError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of

__all__ = [
    "Backend",
    "BackendError",
    "FileBackend",
    "MemoryBackend",
    "MemoryBackendStatistics",
]


class BackendError(MvdsError):
    """The backend is unreachable or failed; the writer retries, the reader polls again."""


class Backend(Protocol):
    async def cas_add(self, data: bytes) -> bytes:
        """Store ``data``; return its address (SHA-256)."""
        ...

    async def cas_get(self, address: bytes) -> bytes | None:
        """The bytes stored under ``address``, or None if there are none."""
        ...

    async def ns_update(self, name: str, record: bytes) -> None: ...

    async def ns_fetch(self, name: str) -> bytes | None: ...


@final
@dataclass(frozen=True, slots=True)
class MemoryBackendStatistics:
    """Calls made to a :class:`MemoryBackend` so far, failed ones included."""

    cas_add: int
    cas_get: int
    ns_update: int
    ns_fetch: int


class MemoryBackend:
    """A CAS and NS in a dict; ``down = True`` makes every call fail (for tests)."""

    def __init__(self) -> None:
        self.cas: dict[bytes, bytes] = {}
        self.ns: dict[str, bytes] = {}
        self.down = False
        self._calls = {"cas_add": 0, "cas_get": 0, "ns_update": 0, "ns_fetch": 0}

    def statistics(self) -> MemoryBackendStatistics:
        """A snapshot of the calls made so far."""
        return MemoryBackendStatistics(**self._calls)

    @property
    def calls(self) -> dict[str, int]:
        """Deprecated: use :meth:`statistics`."""
        warnings.warn(
            "MemoryBackend.calls is deprecated: use MemoryBackend.statistics()",
            DeprecationWarning,
            stacklevel=2,
        )
        return dict(self._calls)

    def _count(self, name: str) -> None:
        self._calls[name] += 1

    async def _call(self, name: str) -> None:
        await trio.lowlevel.checkpoint()
        self._count(name)
        if self.down:
            raise BackendError("backend is down")

    async def cas_add(self, data: bytes) -> bytes:
        await self._call("cas_add")
        address = address_of(data)
        self.cas[address] = data
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        await self._call("cas_get")
        return self.cas.get(address)

    async def ns_update(self, name: str, record: bytes) -> None:
        await self._call("ns_update")
        self.ns[name] = record

    async def ns_fetch(self, name: str) -> bytes | None:
        await self._call("ns_fetch")
        return self.ns.get(name)


def _safe_name(name: str) -> str:
    if not name or len(name) > 200 or any(c not in _NAME_CHARS for c in name):
        raise BackendError(f"unusable name {name!r}")
    return name.replace("/", "__")


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_/.")


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_bounded(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_OBJECT_BYTES + 1)
    except FileNotFoundError:
        return None
    return data


class FileBackend:
    """The embedded default: a CAS and an NS in a directory (``file:///path``)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._cas = self.root / "cas"
        self._ns = self.root / "ns"

    def _ensure(self) -> None:
        self._cas.mkdir(parents=True, exist_ok=True)
        self._ns.mkdir(parents=True, exist_ok=True)

    async def cas_add(self, data: bytes) -> bytes:
        address = address_of(data)
        path = self._cas / address.hex()

        def add() -> None:
            self._ensure()
            if not path.exists():  # content addressed: an existing file holds the same bytes
                _write_atomically(path, data)

        try:
            await trio.to_thread.run_sync(add)
        except OSError as e:
            raise BackendError(f"{self.root}: cannot store: {e.strerror or e}") from None
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        if len(address) != 32:
            return None
        try:
            return await trio.to_thread.run_sync(_read_bounded, self._cas / address.hex())
        except OSError as e:
            raise BackendError(f"{self.root}: cannot read: {e.strerror or e}") from None

    async def cas_get_many(self, addresses: list[bytes]) -> list[bytes | None]:
        """Several objects in one trip to a worker thread (a reader fetching a page's worth)."""

        def read_all() -> list[bytes | None]:
            return [_read_bounded(self._cas / a.hex()) if len(a) == 32 else None for a in addresses]

        try:
            return await trio.to_thread.run_sync(read_all)
        except OSError as e:
            raise BackendError(f"{self.root}: cannot read: {e.strerror or e}") from None

    async def ns_update(self, name: str, record: bytes) -> None:
        path = self._ns / _safe_name(name)

        def update() -> None:
            self._ensure()
            _write_atomically(path, record)

        try:
            await trio.to_thread.run_sync(update)
        except OSError as e:
            raise BackendError(f"{self.root}: cannot update {name}: {e.strerror or e}") from None

    async def ns_fetch(self, name: str) -> bytes | None:
        try:
            return await trio.to_thread.run_sync(_read_bounded, self._ns / _safe_name(name))
        except OSError as e:
            raise BackendError(f"{self.root}: cannot read {name}: {e.strerror or e}") from None
