"""Reading a CRLF-framed protocol (NATS) from a Trio stream, with bounded sizes.

A broken stream, an overlong line and a size over the caller's limit are each a
:class:`~mvds_node.remotelog.BackendError` naming the server.
"""

from __future__ import annotations

from typing import Final

import trio

from mvds_node.remotelog._backend import BackendError

__all__ = ["LineReader"]

MAX_LINE: Final = 64 * 1024


class LineReader:
    """Buffered reads of lines and of exact byte counts (each followed by CRLF)."""

    def __init__(self, stream: trio.abc.Stream, server: str) -> None:
        self.stream = stream
        self.server = server
        self.buf = bytearray()

    async def _fill(self) -> None:
        try:
            chunk = await self.stream.receive_some(65536)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise BackendError(f"{self.server}: the connection broke: {e!r}") from None
        if not chunk:
            raise BackendError(f"{self.server} closed the connection")
        self.buf += chunk

    async def line(self) -> bytes:
        """The next line, without its CRLF."""
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_LINE:
                raise BackendError(f"{self.server} sent an overlong line")
            await self._fill()
        if i > MAX_LINE:
            raise BackendError(f"{self.server} sent an overlong line")
        line = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return line

    async def exact(self, n: int, limit: int) -> bytes:
        """The next ``n`` bytes and the CRLF after them; refuses ``n`` over ``limit``."""
        if not 0 <= n <= limit:
            raise BackendError(f"{self.server} sent {n} bytes, over the limit of {limit}")
        while len(self.buf) < n + 2:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[: n + 2]
        return data
