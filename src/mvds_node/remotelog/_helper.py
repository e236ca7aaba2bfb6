"""The HTTP helper server (``mvds-node helper serve``): the spec's Twirp routes over HTTP/1.1,
parsed by h11 on our own Trio loop.

Routes: see :mod:`mvds_node.remotelog._http`. The server stores on disk through
:class:`FileBackend` and lets only the key holder update a name: an update must be a
:class:`SignedHead` whose writer key is the one in the name, with a valid signature and a
sequence number above the stored one (and below 2**63, so a name can always be updated again).
A helper shared by many people cannot be used to forge or roll back anyone's log; it can only
withhold it, which readers notice as a head that stops advancing.

Theory of operation: one task per connection drives one ``h11.Connection``. Every read is
bounded: headers by h11 (16 KiB), a body by its ``Content-Length`` (8 MiB + 1 KiB; chunked
bodies are refused), time by an idle timeout while no request is in progress and a request
timeout once one has started. Limits are per client *address* (IPv4 address or IPv6 /64), so one
client cannot lock others out: connections per address beside the global cap (over either, the
connection gets a 503 and is closed), a token bucket of requests, and quotas of names created
and bytes stored. Memory is bounded beside them: the bodies being received at once, counted by
their announced ``Content-Length`` before a byte of them is read, may not pass a budget in all
and a smaller one per address (256 and 64 MiB); a request over either gets a 503 and the
connection is closed, so a crowd of large uploads cannot hold more than the budget in memory
whatever the connection caps allow (256 x 8 MiB would be 2 GiB). A refused request whose body
was read in full (404, 400, 429, ...) leaves the connection open; only a broken framing (bad
HTTP, body too large, a body not read) closes it, after the answer. Quota accounting is kept
in memory for the run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import sys
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, final

import h11
import trio
from google.protobuf.message import DecodeError

from mvds_node.errors import describe_failure
from mvds_node.remotelog._backend import BackendError, FileBackend
from mvds_node.remotelog._format import (
    MAX_OBJECT_BYTES,
    LogError,
    address_of,
    open_head,
    signed_seq,
)
from mvds_node.remotelog.proto import cas_pb2, ns_pb2

__all__ = ["MAX_SEQUENCE", "HelperLimits", "serve_helper"]

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BODY_BYTES: Final = MAX_OBJECT_BYTES + 1024
MAX_SEQUENCE: Final = 2**63 - 1
"""Highest head sequence accepted: a head at 2**64-1 could never be followed by another."""
_MAX_TRACKED: Final = 65_536
"""Client addresses whose quotas are tracked; once full, new addresses may only read."""
_STATUSES: Final = frozenset(s.value for s in HTTPStatus)
_MAX_REFUSING: Final = 1024
"""Connections told 503 at once; beyond, new ones over a cap are closed without an answer."""
_CLOSE_DRAIN_SECONDS: Final = 1.0
_CLOSE_DRAIN_BYTES: Final = 256 * 1024


@final
@dataclass(frozen=True, slots=True)
class HelperLimits:
    """What one client address may do, and how many connections the helper serves."""

    requests_per_second: float = 500.0
    """Sustained requests per second per client address (a token bucket)."""
    burst: int = 1000
    """Requests a client address may make at once before the rate applies."""
    max_connections: int = 256
    """Open connections in all: beyond, a new connection gets a 503 and is closed."""
    max_connections_per_address: int = 32
    """Open connections from one address: beyond, a 503, without affecting other addresses."""
    idle_timeout: float = 10.0
    """Seconds a connection may wait with no request in progress before it is closed."""
    request_timeout: float = 30.0
    """Seconds to receive one request (headers and body) and to send its answer."""
    max_names_per_address: int = 1024
    """Names one address may create in a run (updates of existing names are free)."""
    max_bytes_per_address: int = 1024 * 1024 * 1024
    """Bytes one address may add in a run: new CAS objects and the growth of NS records."""
    max_body_bytes_in_flight: int = 256 * 1024 * 1024
    """Request bodies held at once in all, by their announced ``Content-Length``: beyond, 503."""
    max_body_bytes_in_flight_per_address: int = 64 * 1024 * 1024
    """Request bodies one address may have the helper hold at once: beyond, 503 to it alone."""


class _Refused(Exception):
    """A Twirp error answer."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class _Client:
    """What one address holds and has used."""

    tokens: float
    stamp: float = field(default_factory=time.monotonic)
    connections: int = 0
    names: int = 0
    stored: int = 0
    receiving: int = 0
    """Announced body bytes of this address's requests in progress."""


def _address_key(host: str) -> str:
    """The unit limits apply to: an IPv4 address, or an IPv6 /64 (one host's usual share)."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _report(exc: Exception, where: str) -> None:
    """Tell the operator (stderr) about a bug met while serving ``where``."""
    error, trace = describe_failure(exc)
    print(f"helper: internal error on {where}: {error}\n{trace}", file=sys.stderr, flush=True)


def _writer_of(name: str) -> bytes:
    """The writer key in a log name ``mvds/<64 hex>/<16 hex>[/acks]``.

    Raises:
        _Refused: any other name (empty, ``..``, other shapes) as 400.
    """
    parts = name.split("/")
    shaped = (
        len(parts) in (3, 4)
        and parts[0] == "mvds"
        and len(parts[1]) == 64
        and len(parts[2]) == 16
        and (len(parts) == 3 or parts[3] == "acks")
        and all(c in "0123456789abcdef" for c in parts[1] + parts[2])
    )
    if not shaped:
        raise _Refused(400, "invalid_argument", "names are mvds/<writer key>/<group tag>[/acks]")
    return bytes.fromhex(parts[1])


class _Helper:
    def __init__(self, store: FileBackend, limits: HelperLimits) -> None:
        self.store = store
        self.limits = limits
        self.clients: dict[str, _Client] = {}
        self.connections = 0
        self.refusing = 0
        """Connections being told 503 (each takes up to two seconds)."""
        self.receiving = 0
        """Announced body bytes of all requests in progress."""
        self._name_locks: dict[str, trio.Lock] = {}

    def _client(self, key: str) -> _Client | None:
        c = self.clients.get(key)
        if c is None and len(self.clients) < _MAX_TRACKED:
            c = self.clients[key] = _Client(float(self.limits.burst))
        return c

    def _allow(self, c: _Client | None) -> bool:
        if c is None:
            return False
        now = time.monotonic()
        c.tokens = min(
            self.limits.burst, c.tokens + (now - c.stamp) * self.limits.requests_per_second
        )
        c.stamp = now
        if c.tokens < 1:
            return False
        c.tokens -= 1
        return True

    # --- connections ------------------------------------------------------------------------

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            key = _address_key(str(stream.socket.getpeername()[0]))
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        client = self._client(key)
        if (
            client is None
            or self.connections >= self.limits.max_connections
            or client.connections >= self.limits.max_connections_per_address
        ):
            if self.refusing >= _MAX_REFUSING:
                # A flood: no answer, so refusing costs no more tasks than serving would.
                await trio.aclose_forcefully(stream)
                return
            self.refusing += 1
            try:
                await self._refuse_connection(stream)
            finally:
                self.refusing -= 1
            return
        self.connections += 1
        client.connections += 1
        try:
            await self._serve(stream, client)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as e:
            _report(e, "a connection")  # that connection ends; the helper goes on
        finally:
            self.connections -= 1
            client.connections -= 1
            await trio.aclose_forcefully(stream)

    async def _refuse_connection(self, stream: trio.SocketStream) -> None:
        body = json.dumps({"code": "unavailable", "msg": "too many connections"}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with trio.move_on_after(_CLOSE_DRAIN_SECONDS):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(head.encode() + body)
        await self._close_gracefully(stream)

    async def _close_gracefully(self, stream: trio.SocketStream) -> None:
        """Half-close and drain a little, so the client reads our answer instead of a reset."""
        with trio.move_on_after(_CLOSE_DRAIN_SECONDS):
            try:
                await stream.send_eof()
                drained = 0
                while drained < _CLOSE_DRAIN_BYTES:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await trio.aclose_forcefully(stream)

    def _answer(
        self, conn: h11.Connection, status: int, code: str, msg: str, *, close: bool = False
    ) -> bytes:
        body = json.dumps({"code": code, "msg": msg}).encode()
        return self._response(conn, status, body, "application/json", close=close)

    @staticmethod
    def _response(
        conn: h11.Connection, status: int, body: bytes, content_type: str, *, close: bool = False
    ) -> bytes:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if close:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(status).phrase.encode() if status in _STATUSES else b""
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
        out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        return out

    async def _next_event(self, conn: h11.Connection, stream: trio.SocketStream) -> h11.Event:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            conn.receive_data(await stream.receive_some(65536))

    async def _serve(self, stream: trio.SocketStream, client: _Client) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        limits = self.limits
        while True:
            # Idle until the first byte of a request; then the request timeout runs.
            if not conn.trailing_data[0]:
                with trio.move_on_after(limits.idle_timeout) as idle:
                    data = await stream.receive_some(65536)
                if idle.cancelled_caught:
                    return
                conn.receive_data(data)
            try:
                with trio.fail_after(limits.request_timeout):
                    answer = await self._one_request(conn, stream, client)
                    if answer is None:
                        return
                    await stream.send_all(answer)
            except trio.TooSlowError:
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                await self._close_gracefully(stream)
                return
            conn.start_next_cycle()

    async def _one_request(
        self, conn: h11.Connection, stream: trio.SocketStream, client: _Client
    ) -> bytes | None:
        """Read one request and answer it: the bytes to send; None when the client is gone."""
        try:
            event = await self._next_event(conn, stream)
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request)  # h11: a server's first event
            headers = {k.lower(): v for k, v in event.headers}
            if len(event.target) + sum(len(k) + len(v) for k, v in event.headers) > (
                MAX_HEADER_BYTES
            ):
                # h11 bounds only a header still arriving; one that came whole is checked here.
                return self._answer(conn, 431, "malformed", "request header too large", close=True)
            if b"transfer-encoding" in headers:
                return self._answer(
                    conn, 411, "malformed", "send a Content-Length body", close=True
                )
            length = int(headers.get(b"content-length", b"0"))
            if length > MAX_BODY_BYTES:
                return self._answer(
                    conn, 413, "resource_exhausted", f"body over {MAX_BODY_BYTES} bytes", close=True
                )
            if (
                self.receiving + length > self.limits.max_body_bytes_in_flight
                or client.receiving + length > self.limits.max_body_bytes_in_flight_per_address
            ):
                # Not read: the connection closes after the answer, as for a body too large.
                return self._answer(
                    conn, 503, "unavailable", "too many request bodies at once", close=True
                )
        except (h11.RemoteProtocolError, ValueError) as e:
            return self._malformed(conn, e)
        self.receiving += length
        client.receiving += length
        try:
            return await self._read_and_route(conn, stream, client, event)
        finally:
            self.receiving -= length
            client.receiving -= length

    def _malformed(self, conn: h11.Connection, e: Exception) -> bytes | None:
        # ValueError: h11 passes some bad framing (a Content-Length of thousands of digits)
        # through as one.
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return None
        status = e.error_status_hint if isinstance(e, h11.RemoteProtocolError) else 400
        return self._answer(conn, status, "malformed", str(e)[:200], close=True)

    async def _read_and_route(
        self, conn: h11.Connection, stream: trio.SocketStream, client: _Client, event: h11.Request
    ) -> bytes | None:
        """Read the body of ``event`` and answer it."""
        try:
            allowed = self._allow(client)
            body = bytearray()
            while True:
                part = await self._next_event(conn, stream)
                if isinstance(part, h11.Data):
                    if allowed:  # a refused body is read and dropped, to keep the framing
                        body += part.data
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return None
        except (h11.RemoteProtocolError, ValueError) as e:
            return self._malformed(conn, e)
        try:
            if not allowed:
                raise _Refused(429, "resource_exhausted", "too many requests")
            if event.method != b"POST":
                raise _Refused(405, "bad_route", "Twirp routes take POST")
            reply = await self.route(event.target.decode("latin-1"), bytes(body), client)
        except _Refused as e:
            return self._answer(conn, e.status, e.code, e.msg)
        except Exception as e:
            # A bug met on one request: it alone fails, the operator sees why, the client
            # learns nothing of the helper's insides.
            _report(e, "a request")
            return self._answer(conn, 500, "internal", "the helper failed on this request")
        return self._response(conn, 200, reply, "application/protobuf")

    # --- routes -----------------------------------------------------------------------------

    async def route(self, path: str, body: bytes, client: _Client) -> bytes:
        try:
            if path == "/twirp/vac.cas.CAS/Add":
                data = cas_pb2.Content.FromString(body).data
                return cas_pb2.Address(id=await self.add(data, client)).SerializeToString()
            if path == "/twirp/vac.cas.CAS/Get":
                found = await self.store.cas_get(cas_pb2.Address.FromString(body).id)
                if found is None:
                    raise _Refused(404, "not_found", "no such object")
                return cas_pb2.Content(data=found).SerializeToString()
            if path == "/twirp/vac.ns.NS/Update":
                update = ns_pb2.NameUpdate.FromString(body)
                await self.update(update.name, update.content, client)
                return ns_pb2.Response(data=b"ok").SerializeToString()
            if path == "/twirp/vac.ns.NS/Fetch":
                name = ns_pb2.Query.FromString(body).name
                _writer_of(name)
                record = await self.store.ns_fetch(name)
                if record is None:
                    raise _Refused(404, "not_found", "no such name")
                return ns_pb2.Content(data=record).SerializeToString()
        except DecodeError:
            raise _Refused(400, "invalid_argument", "body is not the route's protobuf") from None
        except BackendError:
            # The store's message names its paths: not for clients.
            raise _Refused(500, "internal", "the helper's store failed") from None
        raise _Refused(404, "bad_route", "no such route")

    def _charge(self, client: _Client, size: int) -> None:
        if client.stored + size > self.limits.max_bytes_per_address:
            raise _Refused(
                429,
                "resource_exhausted",
                f"this address has stored its {self.limits.max_bytes_per_address} bytes",
            )
        client.stored += size

    async def add(self, data: bytes, client: _Client) -> bytes:
        if len(data) > MAX_OBJECT_BYTES:
            raise _Refused(400, "invalid_argument", f"object over {MAX_OBJECT_BYTES} bytes")
        address = address_of(data)
        path = self.store.root / "cas" / address.hex()
        if await trio.to_thread.run_sync(path.exists):
            return address  # content addressed: already there, costs nothing
        self._charge(client, len(data))  # reserved before the await: concurrent adds count
        try:
            return await self.store.cas_add(data)
        except BaseException:
            client.stored -= len(data)
            raise

    async def update(self, name: str, record: bytes, client: _Client) -> None:
        """Only the key holder may update: a valid signed head, for its own name, going up."""
        writer = _writer_of(name)
        seq = signed_seq(record)
        if seq is None:
            raise _Refused(
                403,
                "permission_denied",
                f"{name}: not a signed head (this helper stores only those)",
            )
        if seq > MAX_SEQUENCE:
            # No name could ever go past it, whoever signed it: the argument itself is bad.
            raise _Refused(
                400, "invalid_argument", f"sequence {seq} is over {MAX_SEQUENCE} (2**63-1)"
            )
        try:
            head = open_head(record, name, writer)
        except LogError as e:
            raise _Refused(403, "permission_denied", str(e)) from None
        lock = self._name_locks.setdefault(name, trio.Lock())
        try:
            async with lock:  # read, compare and write as one step per name
                current = await self.store.ns_fetch(name)
                if current is None:
                    if client.names >= self.limits.max_names_per_address:
                        raise _Refused(
                            429,
                            "resource_exhausted",
                            f"this address has created its {self.limits.max_names_per_address}"
                            " names",
                        )
                    growth = len(record)
                else:
                    old = signed_seq(current)
                    if old is not None and head.seq <= old:
                        raise _Refused(
                            409, "already_exists", f"sequence {head.seq} is not above {old}"
                        )
                    growth = max(0, len(record) - len(current))
                self._charge(client, growth)
                try:
                    await self.store.ns_update(name, record)
                except BaseException:
                    client.stored -= growth
                    raise
                if current is None:
                    client.names += 1
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._name_locks.pop(name, None)


async def serve_helper(
    root: str,
    host: str,
    port: int,
    *,
    limits: HelperLimits | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the helper on ``host:port`` until cancelled (0 picks a port; the listeners are
    reported through ``task_status``).

    Args:
        root: the directory the objects and names are stored in.
        limits: connection caps, timeouts and per-address quotas (defaults: :class:`HelperLimits`).
    """
    helper = _Helper(FileBackend(root), limits or HelperLimits())
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        task_status.started(listeners)
        await trio.serve_listeners(helper.handle, listeners, handler_nursery=nursery)
