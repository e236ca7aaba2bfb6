"""A memory network for transport tests: listeners by address, streams made of memory pairs.

It stands in for TCP where timing matters (``MockClock`` cannot drive real sockets) and where a
test needs a peer that never reads (``lockstep`` pairs have no buffer, so ``send_all`` waits).
"""

from __future__ import annotations

import errno
from typing import final

import trio
import trio.testing


@final
class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, network: MemoryNetwork, address: tuple[str, int]) -> None:
        self._network = network
        self.address = address
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](16)

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        self._network._listeners.pop(self.address, None)
        self._send.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()


@final
class MemoryNetwork:
    """``open_stream(host, port)`` reaches the listener at that address, if any."""

    def __init__(self) -> None:
        self._listeners: dict[tuple[str, int], MemoryListener] = {}
        self.attempts: list[tuple[float, str]] = []
        """Every dial attempt: (trio time, "host:port")."""
        self.lockstep_to: set[tuple[str, int]] = set()
        """Addresses whose connections are unbuffered (the sender waits for the reader)."""
        self.hang: set[tuple[str, int]] = set()
        """Addresses where connecting never completes."""

    def listen(self, host: str, port: int) -> MemoryListener:
        listener = MemoryListener(self, (host, port))
        self._listeners[(host, port)] = listener
        return listener

    async def open_stream(self, host: str, port: int) -> trio.abc.Stream:
        self.attempts.append((trio.current_time(), f"{host}:{port}"))
        if (host, port) in self.hang:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        listener = self._listeners.get((host, port))
        if listener is None:
            raise OSError(errno.ECONNREFUSED, f"nothing listens on {host}:{port}")
        client: trio.abc.HalfCloseableStream
        server: trio.abc.HalfCloseableStream
        if (host, port) in self.lockstep_to:
            client, server = trio.testing.lockstep_stream_pair()
        else:
            client, server = trio.testing.memory_stream_pair()
        try:
            listener._send.send_nowait(server)
        except (trio.WouldBlock, trio.ClosedResourceError):
            raise OSError(errno.ECONNREFUSED, "listener not accepting") from None
        return client
