"""A tiny HTTP/1.1 server on 127.0.0.1 that answers as the test tells it: a hostile helper or
IPFS node, for checking that our clients turn every bad answer into a BackendError."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import trio

Answer = Callable[[str, bytes], Awaitable[bytes | None]]
"""(path, body) -> the raw bytes to send back (None: close without answering)."""


def response(status: int, body: bytes, *, content_type: str = "application/protobuf") -> bytes:
    """A well-formed HTTP/1.1 answer."""
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_request(stream: trio.SocketStream, buf: bytearray) -> tuple[str, bytes] | None:
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(buf) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return lines[0].split(" ")[1], body


class HostileServer:
    """Serves ``answer`` on every connection; counts connections accepted."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.url = ""

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            buf = bytearray()
            try:
                while (request := await _read_request(stream, buf)) is not None:
                    out = await self.answer(*request)
                    if out is None:
                        return
                    await stream.send_all(out)
            except trio.BrokenResourceError:
                return

    async def start(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
        )
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        return self.url
