"""A tiny HTTP/1.1 server on 127.0.0.1 that answers as the test tells it: a hostile helper or
IPFS node, for checking that our clients turn every bad answer into a BackendError, and
(:class:`TwirpStore`) a helper that serves the Twirp routes but misbehaves for the requests a
test picks."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mvds_node.remotelog.proto import cas_pb2, ns_pb2

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


def twirp_error(status: int, code: str, msg: str) -> bytes:
    """A Twirp error answer, as our helper sends it."""
    return response(
        status, json.dumps({"code": code, "msg": msg}).encode(), content_type="application/json"
    )


class TwirpStore:
    """The helper's four Twirp routes answered from memory (no checks at all), for a hostile
    server that behaves only for some requests: ``answer(path, body)`` is a :data:`Answer`.

    ``misbehave(path, request)`` picks the requests that get something else: it returns the
    raw bytes to send (None: close), or waits as long as it likes first (a stall). ``request``
    is the decoded request (``Address``, ``Query``, ...). It returns ``...`` to answer as the
    helper would.
    """

    def __init__(self, misbehave: Callable[[str, Any], Awaitable[Any]] | None = None) -> None:
        self.cas: dict[bytes, bytes] = {}
        self.ns: dict[str, bytes] = {}
        self.misbehave = misbehave
        self.seen: list[tuple[str, Any]] = []
        """Every request, decoded, in the order they came."""

    async def answer(self, path: str, body: bytes) -> bytes | None:
        route = path.removeprefix("/twirp/")
        kind: Any = {
            "vac.cas.CAS/Add": cas_pb2.Content,
            "vac.cas.CAS/Get": cas_pb2.Address,
            "vac.ns.NS/Update": ns_pb2.NameUpdate,
            "vac.ns.NS/Fetch": ns_pb2.Query,
        }[route]
        request = kind.FromString(body)
        self.seen.append((route, request))
        if self.misbehave is not None:
            special = await self.misbehave(route, request)
            if special is not ...:
                return special  # type: ignore[no-any-return]
        if route == "vac.cas.CAS/Add":
            address = hashlib.sha256(request.data).digest()
            self.cas[address] = request.data
            return response(200, cas_pb2.Address(id=address).SerializeToString())
        if route == "vac.cas.CAS/Get":
            found = self.cas.get(request.id)
            if found is None:
                return twirp_error(404, "not_found", "no such object")
            return response(200, cas_pb2.Content(data=found).SerializeToString())
        if route == "vac.ns.NS/Update":
            self.ns[request.name] = request.content
            return response(200, ns_pb2.Response().SerializeToString())
        record = self.ns.get(request.name)
        if record is None:
            return twirp_error(404, "not_found", "no such name")
        return response(200, ns_pb2.Content(data=record).SerializeToString())
