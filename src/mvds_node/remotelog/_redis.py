"""A Redis backend (``redis://host:port``), speaking RESP directly over a Trio stream.

* CAS: ``SET mvds:cas:<address hex> <bytes> NX`` (content addressed: a second write of the same
  bytes changes nothing), ``GET``.
* NS: a Lua script compares the record's sequence number with the stored one and writes only a
  higher one, atomically, then ``PUBLISH``es the name on ``mvds:ns``, so that readers that
  :meth:`RedisBackend.watch` hear about an update at once instead of at their next poll.

The protocol code is small on purpose (RESP2: the five reply types, bounded sizes); one
connection per backend, used by one request at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final

import trio

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of, signed_seq
from mvds_node.remotelog._lines import LineReader

__all__ = ["RedisBackend"]

_MAX_REPLY: Final = MAX_OBJECT_BYTES + 1024
_CHANNEL: Final = b"mvds:ns"
# KEYS[1] record key, KEYS[2] sequence key; ARGV[1] record, ARGV[2] sequence, ARGV[3] name.
_CAS_SCRIPT: Final = b"""
local cur = redis.call('GET', KEYS[2])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', 'mvds:ns', ARGV[3])
return 1
"""

Reply = bytes | int | list["Reply"] | None


class _Connection(LineReader):
    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream, "redis")

    async def read(self) -> Reply:
        line = await self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise BackendError(f"redis: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return await self.exact(n, _MAX_REPLY)
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            if n > 1024:
                raise BackendError("redis array reply is too long")
            return [await self.read() for _ in range(n)]
        raise BackendError(f"not a redis reply: {line[:40]!r}")

    async def send(self, *args: bytes) -> None:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        await self.stream.send_all(b"".join(out))


class RedisBackend:
    """A :class:`~mvds_node.remotelog.Backend` on a Redis server."""

    def __init__(self, url: str) -> None:
        rest = url.removeprefix("redis://").rstrip("/")
        host, _, port = rest.partition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port or 6379)
        self._conn: _Connection | None = None
        self._lock = trio.Lock()

    async def _call(self, *args: bytes) -> Reply:
        async with self._lock:
            try:
                if self._conn is None:
                    stream = await trio.open_tcp_stream(self.host, self.port)
                    self._conn = _Connection(stream)
                await self._conn.send(*args)
                return await self._conn.read()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
                await self.aclose_connection()
                raise BackendError(f"redis {self.host}:{self.port} unreachable: {e}") from None
            except BackendError:
                await self.aclose_connection()
                raise
            except ValueError:
                await self.aclose_connection()
                raise BackendError("redis sent a malformed reply") from None

    async def aclose_connection(self) -> None:
        if self._conn is not None:
            await trio.aclose_forcefully(self._conn.stream)
            self._conn = None

    async def cas_add(self, data: bytes) -> bytes:
        address = address_of(data)
        await self._call(b"SET", b"mvds:cas:" + address.hex().encode(), data, b"NX")
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        reply = await self._call(b"GET", b"mvds:cas:" + address.hex().encode())
        return reply if isinstance(reply, bytes) else None

    async def ns_update(self, name: str, record: bytes) -> None:
        seq = signed_seq(record)
        key = f"mvds:ns:{name}".encode()
        if seq is None:  # a plain log's bare RemoteLog: no sequence to compare
            await self._call(b"SET", key, record)
            await self._call(b"PUBLISH", _CHANNEL, name.encode())
            return
        done = await self._call(
            b"EVAL", _CAS_SCRIPT, b"2", key, key + b":seq", record, str(seq).encode(),
            name.encode(),
        )  # fmt: skip
        if done != 1:
            raise BackendError(f"redis refused {name}: sequence {seq} is not above the stored one")

    async def ns_fetch(self, name: str) -> bytes | None:
        reply = await self._call(b"GET", f"mvds:ns:{name}".encode())
        return reply if isinstance(reply, bytes) else None

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[str]]:
        """Names as they are updated (``SUBSCRIBE mvds:ns``), on a connection of its own::

        async with backend.watch() as updates:   # subscribed when this returns
            async for name in updates:
                ...
        """
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as e:
            raise BackendError(f"redis {self.host}:{self.port} unreachable: {e}") from None
        conn = _Connection(stream)
        async with stream:
            await conn.send(b"SUBSCRIBE", _CHANNEL)
            confirmation = await conn.read()
            if not (isinstance(confirmation, list) and confirmation[:1] == [b"subscribe"]):
                raise BackendError("redis did not confirm the subscription")

            async def names() -> AsyncGenerator[str, None]:
                while True:
                    reply = await conn.read()
                    if (
                        isinstance(reply, list)
                        and len(reply) == 3
                        and reply[0] == b"message"
                        and isinstance(reply[2], bytes)
                    ):
                        yield reply[2].decode(errors="replace")

            updates = names()
            async with contextlib.aclosing(updates):
                yield updates
