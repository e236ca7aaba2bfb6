"""Our HTTP helper: the spec's Twirp routes over HTTP/1.1, server and client, on Trio.

Routes (protobuf bodies, ``Content-Type: application/protobuf``)::

    POST /twirp/vac.cas.CAS/Add     Content     -> Address
    POST /twirp/vac.cas.CAS/Get     Address     -> Content      (Twirp "not_found" if absent)
    POST /twirp/vac.ns.NS/Update    NameUpdate  -> Response
    POST /twirp/vac.ns.NS/Fetch     Query       -> Content      (Twirp "not_found" if absent)

The server (``mvds-node helper serve``) stores on disk through :class:`FileBackend`. It bounds
everything a client sends (header bytes, body size, requests per second per client address) and
lets only the key holder update a name: an update must be a :class:`SignedHead` whose writer key
is the one in the name, with a valid signature and a sequence number above the stored one. So
a helper shared by many people cannot be used to forge or roll back anyone's log; it can only
withhold it, which readers notice as a head that stops advancing.

The HTTP parsing is deliberately small: HTTP/1.1 with keep-alive (a client sends its requests
one after another on one connection), ``Content-Length`` bodies only, and a clear error, after
which the connection is closed, for anything else.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from google.protobuf.message import DecodeError

from mvds_node.remotelog._backend import BackendError, FileBackend
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, LogError, open_head
from mvds_node.remotelog.proto import cas_pb2, ns_pb2, remotelog_pb2

__all__ = ["HelperLimits", "HttpBackend", "serve_helper"]

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BODY_BYTES: Final = MAX_OBJECT_BYTES + 1024
_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class HelperLimits:
    requests_per_second: float = 500.0
    """Sustained requests per second per client address (a token bucket)."""
    burst: int = 1000
    """Requests a client may make at once before the rate applies."""
    max_connections: int = 256


class HttpError(Exception):
    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


class _Request:
    __slots__ = ("body", "keep_alive", "method", "path")

    def __init__(self, method: str, path: str, body: bytes, keep_alive: bool) -> None:
        self.method, self.path, self.body, self.keep_alive = method, path, body, keep_alive


async def _read_request(stream: trio.abc.Stream, buf: bytearray) -> _Request | None:
    """The next request on a connection (``buf`` carries bytes between requests); None if the
    client closed the connection between requests."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEADER_BYTES:
            raise HttpError(431, "malformed", "request header too large")
        chunk = await stream.receive_some(65536)
        if not chunk:
            if not buf:
                return None
            raise HttpError(400, "malformed", "connection closed mid-request")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    if end > MAX_HEADER_BYTES:
        raise HttpError(431, "malformed", "request header too large")
    head = bytes(buf[:end])
    del buf[: end + 4]
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed", "not an HTTP/1.x request line")
    method, path = parts[0], parts[1]
    keep_alive = parts[2] == "HTTP/1.1"
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise HttpError(400, "malformed", "bad Content-Length") from None
        elif name == "transfer-encoding":
            raise HttpError(501, "unimplemented", "only Content-Length bodies are accepted")
        elif name == "connection":
            keep_alive = value.strip().lower() == "keep-alive" or (
                keep_alive and value.strip().lower() != "close"
            )
    if not 0 <= length <= MAX_BODY_BYTES:
        raise HttpError(413, "resource_exhausted", f"body over {MAX_BODY_BYTES} bytes")
    while len(buf) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise HttpError(400, "malformed", "body shorter than Content-Length")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return _Request(method, path, body, keep_alive)


async def _respond(
    stream: trio.abc.Stream, status: int, body: bytes, content_type: str, *, keep_alive: bool
) -> None:
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
    connection = "keep-alive" if keep_alive else "close"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode()
    await stream.send_all(head + body)


@dataclass
class _Bucket:
    tokens: float
    stamp: float = field(default_factory=time.monotonic)


class _Helper:
    def __init__(self, store: FileBackend, limits: HelperLimits) -> None:
        self.store = store
        self.limits = limits
        self.buckets: dict[str, _Bucket] = {}
        self.connections = 0

    def _allow(self, client: str) -> bool:
        now = time.monotonic()
        b = self.buckets.get(client)
        if b is None:
            if len(self.buckets) > 10_000:  # bounded: forget idle clients
                self.buckets.clear()
            b = self.buckets[client] = _Bucket(float(self.limits.burst))
        b.tokens = min(
            self.limits.burst, b.tokens + (now - b.stamp) * self.limits.requests_per_second
        )
        b.stamp = now
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True

    async def handle(self, stream: trio.SocketStream) -> None:
        if self.connections >= self.limits.max_connections:
            await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        try:
            client = str(stream.socket.getpeername()[0])
            async with stream:
                buf = bytearray()
                while True:
                    try:
                        with trio.fail_after(_TIMEOUT):
                            request = await _read_request(stream, buf)
                            if request is None:
                                return
                            if not self._allow(client):
                                raise HttpError(429, "resource_exhausted", "too many requests")
                            if request.method != "POST":
                                raise HttpError(405, "bad_route", "Twirp routes take POST")
                            reply = await self.route(request.path, request.body)
                            await _respond(
                                stream,
                                200,
                                reply,
                                "application/protobuf",
                                keep_alive=request.keep_alive,
                            )
                            if not request.keep_alive:
                                return
                    except HttpError as e:
                        # After a refused request the connection's framing is not to be trusted.
                        payload = json.dumps({"code": e.code, "msg": e.msg}).encode()
                        with contextlib.suppress(
                            trio.BrokenResourceError, trio.ClosedResourceError
                        ):
                            await _respond(
                                stream, e.status, payload, "application/json", keep_alive=False
                            )
                        return
                    except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                        return
        finally:
            self.connections -= 1

    async def route(self, path: str, body: bytes) -> bytes:
        try:
            if path == "/twirp/vac.cas.CAS/Add":
                data = cas_pb2.Content.FromString(body).data
                address = await self.store.cas_add(data)
                return cas_pb2.Address(id=address).SerializeToString()
            if path == "/twirp/vac.cas.CAS/Get":
                found = await self.store.cas_get(cas_pb2.Address.FromString(body).id)
                if found is None:
                    raise HttpError(404, "not_found", "no such object")
                return cas_pb2.Content(data=found).SerializeToString()
            if path == "/twirp/vac.ns.NS/Update":
                update = ns_pb2.NameUpdate.FromString(body)
                await self.update(update.name, update.content)
                return ns_pb2.Response(data=b"ok").SerializeToString()
            if path == "/twirp/vac.ns.NS/Fetch":
                record = await self.store.ns_fetch(ns_pb2.Query.FromString(body).name)
                if record is None:
                    raise HttpError(404, "not_found", "no such name")
                return ns_pb2.Content(data=record).SerializeToString()
        except DecodeError:
            raise HttpError(400, "invalid_argument", "body is not the route's protobuf") from None
        except BackendError as e:
            raise HttpError(500, "internal", str(e)) from None
        raise HttpError(404, "bad_route", f"no route {path}")

    async def update(self, name: str, record: bytes) -> None:
        """Only the key holder may update: a valid signed head, for its own name, going up."""
        parts = name.split("/")
        try:
            shaped = parts[0] == "mvds" and (
                len(parts) == 3 or (len(parts) == 4 and parts[3] == "acks")
            )
            writer = bytes.fromhex(parts[1]) if shaped else b""
        except ValueError:
            writer = b""
        if len(writer) != 32:
            raise HttpError(
                400, "invalid_argument", "names are mvds/<writer key>/<group tag>[/acks]"
            )
        try:
            head = open_head(record, name, writer)
        except LogError as e:
            raise HttpError(403, "permission_denied", str(e)) from None
        current = await self.store.ns_fetch(name)
        if current is not None:
            old = remotelog_pb2.SignedHead.FromString(current)
            if head.seq <= old.seq:
                raise HttpError(
                    409, "already_exists", f"sequence {head.seq} is not above {old.seq}"
                )
        await self.store.ns_update(name, record)


async def serve_helper(
    root: str,
    host: str,
    port: int,
    *,
    limits: HelperLimits | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the helper on ``host:port`` (0 picks a port; the listeners are reported)."""
    helper = _Helper(FileBackend(root), limits or HelperLimits())
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        task_status.started(listeners)
        await trio.serve_listeners(helper.handle, listeners, handler_nursery=nursery)


def _decode(kind: Any, data: bytes) -> Any:
    try:
        return kind.FromString(data)
    except DecodeError:
        raise BackendError("helper's answer is not the route's protobuf") from None


class HttpBackend:
    """The client side: a :class:`~mvds_node.remotelog.Backend` that talks to an HTTP helper."""

    def __init__(self, url: str) -> None:
        rest = url.removeprefix("http://").rstrip("/")
        host, _, port = rest.partition(":")
        self.host = host
        self.port = int(port or 80)
        self.calls = 0
        self._stream: trio.SocketStream | None = None
        self._buf = bytearray()
        self._lock = trio.Lock()
        self.timeout = _TIMEOUT
        """Seconds one request may take."""

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._buf = bytearray()
        stream, buf = self._stream, self._buf
        await stream.send_all(request)
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise trio.BrokenResourceError("helper closed the connection")
            buf += chunk
            if len(buf) > MAX_HEADER_BYTES + MAX_BODY_BYTES:
                raise BackendError("helper's answer is too large")
        end = buf.index(b"\r\n\r\n")
        head = bytes(buf[:end]).decode("latin-1")
        del buf[: end + 4]
        lines = head.split("\r\n")
        status_parts = lines[0].split(" ")
        status = int(status_parts[1]) if len(status_parts) > 1 and status_parts[1].isdigit() else 0
        length, keep = 0, True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
            elif name.strip().lower() == "connection" and value.strip().lower() == "close":
                keep = False
        if not 0 <= length <= MAX_BODY_BYTES:
            raise BackendError("helper's answer is too large")
        while len(buf) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise trio.BrokenResourceError("helper closed the connection mid-answer")
            buf += chunk
        payload = bytes(buf[:length])
        del buf[:length]
        if not keep:
            await self.aclose_connection()
        return status, payload

    async def aclose_connection(self) -> None:
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)
            self._stream = None

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """One POST on the kept-alive connection: ``(status, body)``.

        Raises:
            BackendError: the server is unreachable or its answer is malformed or too large.
        """
        self.calls += 1
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self._lock:
            for attempt in (1, 2):  # a kept-alive connection the server closed: retry once
                try:
                    with trio.fail_after(self.timeout):
                        return await self._exchange(request)
                except (OSError, trio.TooSlowError, trio.BrokenResourceError, ValueError) as e:
                    await self.aclose_connection()
                    if attempt == 2 or isinstance(e, trio.TooSlowError):
                        raise BackendError(f"{self.host}:{self.port} unreachable: {e}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, route: str, body: bytes) -> bytes | None:
        status, payload = await self.post(route, body, "application/protobuf")
        if status == 200:
            return payload
        if status == 404 and b'"not_found"' in payload:
            return None
        raise BackendError(f"helper answered {status}: {payload[:200].decode(errors='replace')}")

    async def cas_add(self, data: bytes) -> bytes:
        reply = await self._call(
            "/twirp/vac.cas.CAS/Add", cas_pb2.Content(data=data).SerializeToString()
        )
        if reply is None:
            raise BackendError("helper did not store the object")
        return bytes(_decode(cas_pb2.Address, reply).id)

    async def cas_get(self, address: bytes) -> bytes | None:
        reply = await self._call(
            "/twirp/vac.cas.CAS/Get", cas_pb2.Address(id=address).SerializeToString()
        )
        return None if reply is None else bytes(_decode(cas_pb2.Content, reply).data)

    async def ns_update(self, name: str, record: bytes) -> None:
        update = ns_pb2.NameUpdate(name=name, content=record).SerializeToString()
        await self._call("/twirp/vac.ns.NS/Update", update)

    async def ns_fetch(self, name: str) -> bytes | None:
        reply = await self._call(
            "/twirp/vac.ns.NS/Fetch", ns_pb2.Query(name=name).SerializeToString()
        )
        return None if reply is None else bytes(_decode(ns_pb2.Content, reply).data)
