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

*Deployments.* With a certificate and key (``--cert``, ``--key``) every connection is TLS (a
``trio.SSLStream`` around the TCP stream; the handshake must finish within the idle timeout).
With a tokens file (:class:`HelperTokens`) a request carries ``Authorization: Bearer TOKEN``:
writes (``Add``, ``Update``) need a ``write`` token, reads (``Get``, ``Fetch``) a ``read`` or
``write`` token unless reads are public. A missing or unknown token gets a 401 (with
``WWW-Authenticate: Bearer``), a read token that writes a 403; its body is read and dropped, so
the connection stays usable. Tokens are compared in constant time (``hmac.compare_digest``,
against every token, so the time does not tell which one matched). Each token has quotas of
its own beside its address's (names created and bytes stored,
``HelperLimits.max_names_per_token`` and ``max_bytes_per_token``): a token shared by one
person's devices is bounded wherever they connect from, and a writer behind a shared address
(a NAT) can be given a token of its own. Names and bytes are charged to both; the first
exhausted refuses.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import ssl
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Final, Literal, final

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
from mvds_node.remotelog._secrets import Secret, SecretError, read_secret_file
from mvds_node.remotelog.proto import cas_pb2, ns_pb2

__all__ = ["MAX_SEQUENCE", "HelperLimits", "HelperTokens", "helper_tls_context", "serve_helper"]

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
MAX_TOKENS: Final = 10_000
"""Tokens one tokens file may hold."""
MIN_TOKEN_CHARS: Final = 16
"""Shorter tokens are refused when the file is read: a guessable token protects nothing."""
MAX_TOKEN_CHARS: Final = 1024
_WRITE_ROUTES: Final = frozenset({"/twirp/vac.cas.CAS/Add", "/twirp/vac.ns.NS/Update"})


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
    max_names_per_token: int = 1024
    """Names one bearer token may create in a run (with a tokens file; beside the address's)."""
    max_bytes_per_token: int = 1024 * 1024 * 1024
    """Bytes one bearer token may add in a run (with a tokens file; beside the address's)."""


Right = Literal["read", "write"]


@final
class HelperTokens:
    """The bearer tokens a helper accepts, each with its right: ``write`` (which includes
    reading) or ``read``.

    Args:
        tokens: ``(right, token)`` pairs.
        public_reads: reads need no token (writes still do).

    Raises:
        SecretError: a token is shorter than :data:`MIN_TOKEN_CHARS`, too long, holds spaces or
            control characters, or appears twice; or there are over :data:`MAX_TOKENS`.
    """

    __slots__ = ("_tokens", "public_reads")

    def __init__(self, tokens: list[tuple[Right, Secret]], *, public_reads: bool = False) -> None:
        if len(tokens) > MAX_TOKENS:
            raise SecretError(f"tokens: over {MAX_TOKENS}")
        seen: set[str] = set()
        for number, (right, token) in enumerate(tokens, 1):
            text = token.reveal()
            if right not in ("read", "write"):
                raise SecretError(f"token {number}: the right is read or write, not {right!r}")
            if not MIN_TOKEN_CHARS <= len(text) <= MAX_TOKEN_CHARS:
                raise SecretError(
                    f"token {number}: a token has {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters"
                )
            if not text.isprintable() or any(c.isspace() for c in text):
                raise SecretError(f"token {number}: spaces or control characters in the token")
            if text in seen:
                raise SecretError(f"token {number}: given twice")
            seen.add(text)
        self._tokens = [(right, token.reveal().encode()) for right, token in tokens]
        self.public_reads = public_reads

    def __repr__(self) -> str:
        return f"HelperTokens({len(self._tokens)} tokens, public_reads={self.public_reads})"

    def __len__(self) -> int:
        return len(self._tokens)

    @classmethod
    def from_file(cls, path: Path, *, public_reads: bool = False) -> HelperTokens:
        """Tokens from a file of lines ``write TOKEN`` or ``read TOKEN``; blank lines and lines
        starting with ``#`` are skipped.

        Raises:
            SecretError: the file cannot be read or a line is malformed (the message gives its
                number, never its text).
        """
        text = read_secret_file(path, what="--tokens")
        tokens: list[tuple[Right, Secret]] = []
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) != 2 or words[0] not in ("read", "write"):
                raise SecretError(
                    f"--tokens: {path} line {number}: write 'read TOKEN' or 'write TOKEN'"
                )
            right: Right = "write" if words[0] == "write" else "read"
            tokens.append((right, Secret(words[1])))
        if not tokens:
            raise SecretError(f"--tokens: {path} holds no token")
        try:
            return cls(tokens, public_reads=public_reads)
        except SecretError as e:
            raise SecretError(f"--tokens: {path}: {e}") from None

    def find(self, presented: bytes) -> tuple[int, Right] | None:
        """The index and right of the token ``presented``, or None. Every token is compared,
        each in constant time, so the time taken tells nothing of which (if any) matched."""
        found: tuple[int, Right] | None = None
        for index, (right, token) in enumerate(self._tokens):
            if hmac.compare_digest(presented, token) and found is None:
                found = (index, right)
        return found


def helper_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server TLS context from a certificate chain and its key (PEM files).

    Raises:
        SecretError: a file cannot be read or is not a certificate or key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as error:
        raise SecretError(f"--cert {cert_file} / --key {key_file}: {error}") from None
    return context


class _Refused(Exception):
    """A Twirp error answer."""

    def __init__(self, status: int, code: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class _Client:
    """What one address (or one bearer token) holds and has used."""

    tokens: float
    stamp: float = field(default_factory=time.monotonic)
    connections: int = 0
    names: int = 0
    stored: int = 0
    receiving: int = 0
    """Announced body bytes of this address's requests in progress."""
    kind: str = "address"
    """What the quotas are counted for: "address" or "token"."""


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
    def __init__(
        self,
        store: FileBackend,
        limits: HelperLimits,
        *,
        tokens: HelperTokens | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.tokens = tokens
        self.tls = tls
        self.clients: dict[str, _Client] = {}
        self.token_clients: dict[int, _Client] = {}
        """Quotas per token, by its index in :attr:`tokens`."""
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
        served: trio.abc.Stream = stream
        try:
            if self.tls is not None:
                served = await self._handshake(stream, self.limits.idle_timeout)
                if served is stream:
                    return
            await self._serve(served, client)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as e:
            _report(e, "a connection")  # that connection ends; the helper goes on
        finally:
            self.connections -= 1
            client.connections -= 1
            await trio.aclose_forcefully(served)

    async def _handshake(self, stream: trio.SocketStream, seconds: float) -> trio.abc.Stream:
        """``stream`` wrapped in TLS once its handshake is done; ``stream`` itself if the
        handshake failed or took over ``seconds`` (a client that is not TLS, or a stalled one)."""
        assert self.tls is not None
        wrapped = trio.SSLStream(stream, self.tls, server_side=True, https_compatible=True)
        with trio.move_on_after(seconds):
            try:
                await wrapped.do_handshake()
                return wrapped
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        return stream

    async def _refuse_connection(self, stream: trio.SocketStream) -> None:
        body = json.dumps({"code": "unavailable", "msg": "too many connections"}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        served: trio.abc.Stream = stream
        if self.tls is not None:
            served = await self._handshake(stream, _CLOSE_DRAIN_SECONDS)
            if served is stream:
                await trio.aclose_forcefully(stream)
                return
        with trio.move_on_after(_CLOSE_DRAIN_SECONDS):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await served.send_all(head.encode() + body)
        await self._close_gracefully(served)

    async def _close_gracefully(self, stream: trio.abc.Stream) -> None:
        """Half-close (plain TCP) and drain a little, so the client reads our answer instead of
        a reset. TLS has no half-close: the client closes after a ``Connection: close``
        answer, which ends the drain."""
        with trio.move_on_after(_CLOSE_DRAIN_SECONDS):
            try:
                send_eof = getattr(stream, "send_eof", None)  # TCP has it, TLS not
                if send_eof is not None:
                    await send_eof()
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
        self,
        conn: h11.Connection,
        status: int,
        code: str,
        msg: str,
        *,
        close: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        body = json.dumps({"code": code, "msg": msg}).encode()
        return self._response(conn, status, body, "application/json", close=close, extra=extra)

    @staticmethod
    def _response(
        conn: h11.Connection,
        status: int,
        body: bytes,
        content_type: str,
        *,
        close: bool = False,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> bytes:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra]
        if close:
            headers.append(("Connection", "close"))
        reason = HTTPStatus(status).phrase.encode() if status in _STATUSES else b""
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
        out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        return out

    async def _next_event(self, conn: h11.Connection, stream: trio.abc.Stream) -> h11.Event:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            conn.receive_data(bytes(await stream.receive_some(65536)))

    async def _serve(self, stream: trio.abc.Stream, client: _Client) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        limits = self.limits
        while True:
            # Idle until the first byte of a request; then the request timeout runs.
            if not conn.trailing_data[0]:
                with trio.move_on_after(limits.idle_timeout) as idle:
                    data = await stream.receive_some(65536)
                if idle.cancelled_caught:
                    return
                conn.receive_data(bytes(data))
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
        self, conn: h11.Connection, stream: trio.abc.Stream, client: _Client
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
        self, conn: h11.Connection, stream: trio.abc.Stream, client: _Client, event: h11.Request
    ) -> bytes | None:
        """Read the body of ``event`` and answer it."""
        path = event.target.decode("latin-1")
        refusal: _Refused | None = None
        token_client: _Client | None = None
        try:
            token_client = self._authorize(path, event.headers)
        except _Refused as e:
            refusal = e  # answered once the body is read, so the connection stays usable
        try:
            # Refused requests count too: guessing tokens costs the rate like any request.
            allowed = self._allow(client)
            body = bytearray()
            while True:
                part = await self._next_event(conn, stream)
                if isinstance(part, h11.Data):
                    if allowed and refusal is None:  # a refused body is read and dropped
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
            if refusal is not None:
                raise refusal
            if event.method != b"POST":
                raise _Refused(405, "bad_route", "Twirp routes take POST")
            quotas = (client,) if token_client is None else (client, token_client)
            reply = await self.route(path, bytes(body), quotas)
        except _Refused as e:
            extra = (("WWW-Authenticate", "Bearer"),) if e.status == 401 else ()
            return self._answer(conn, e.status, e.code, e.msg, extra=extra)
        except Exception as e:
            # A bug met on one request: it alone fails, the operator sees why, the client
            # learns nothing of the helper's insides.
            _report(e, "a request")
            return self._answer(conn, 500, "internal", "the helper failed on this request")
        return self._response(conn, 200, reply, "application/protobuf")

    def _authorize(self, path: str, headers: Iterable[tuple[bytes, bytes]]) -> _Client | None:
        """Whether the request may go on: the quotas of its token (None without tokens, or a
        public read without one).

        Raises:
            _Refused: 401 (no token where one is needed, or an unknown one) or 403 (a read
                token writing).
        """
        if self.tokens is None:
            return None
        write = path in _WRITE_ROUTES
        presented = None
        for name, value in headers:
            if name.lower() == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() != b"bearer" or not token.strip():
                    raise _Refused(401, "unauthenticated", "send Authorization: Bearer TOKEN")
                presented = token.strip()
                break
        if presented is None:
            if not write and self.tokens.public_reads:
                return None
            what = "writes" if write else "reads"
            raise _Refused(
                401, "unauthenticated", f"this helper takes {what} only with a bearer token"
            )
        found = self.tokens.find(presented)
        if found is None:
            raise _Refused(401, "unauthenticated", "this helper does not know that bearer token")
        index, right = found
        if write and right != "write":
            raise _Refused(403, "permission_denied", "this token may only read")
        quota = self.token_clients.get(index)
        if quota is None:
            quota = self.token_clients[index] = _Client(0.0, kind="token")
        return quota

    # --- routes -----------------------------------------------------------------------------

    async def route(self, path: str, body: bytes, client: _Client | tuple[_Client, ...]) -> bytes:
        """Answer one request to ``path``; ``client`` is whose quotas it is charged to (its
        address, and its token when it has one)."""
        quotas = client if isinstance(client, tuple) else (client,)
        try:
            if path == "/twirp/vac.cas.CAS/Add":
                data = cas_pb2.Content.FromString(body).data
                return cas_pb2.Address(id=await self.add(data, quotas)).SerializeToString()
            if path == "/twirp/vac.cas.CAS/Get":
                found = await self.store.cas_get(cas_pb2.Address.FromString(body).id)
                if found is None:
                    raise _Refused(404, "not_found", "no such object")
                return cas_pb2.Content(data=found).SerializeToString()
            if path == "/twirp/vac.ns.NS/Update":
                update = ns_pb2.NameUpdate.FromString(body)
                await self.update(update.name, update.content, quotas)
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

    def _limits(self, c: _Client) -> tuple[int, int]:
        """``(names, bytes)`` ``c`` may create and store."""
        if c.kind == "token":
            return self.limits.max_names_per_token, self.limits.max_bytes_per_token
        return self.limits.max_names_per_address, self.limits.max_bytes_per_address

    def _charge(self, quotas: tuple[_Client, ...], size: int) -> None:
        """Count ``size`` stored bytes to every one of ``quotas``, or refuse without counting."""
        for c in quotas:
            limit = self._limits(c)[1]
            if c.stored + size > limit:
                raise _Refused(
                    429, "resource_exhausted", f"this {c.kind} has stored its {limit} bytes"
                )
        for c in quotas:
            c.stored += size

    @staticmethod
    def _refund(quotas: tuple[_Client, ...], size: int) -> None:
        for c in quotas:
            c.stored -= size

    async def add(self, data: bytes, client: _Client | tuple[_Client, ...]) -> bytes:
        quotas = client if isinstance(client, tuple) else (client,)
        if len(data) > MAX_OBJECT_BYTES:
            raise _Refused(400, "invalid_argument", f"object over {MAX_OBJECT_BYTES} bytes")
        address = address_of(data)
        path = self.store.root / "cas" / address.hex()
        if await trio.to_thread.run_sync(path.exists):
            return address  # content addressed: already there, costs nothing
        self._charge(quotas, len(data))  # reserved before the await: concurrent adds count
        try:
            return await self.store.cas_add(data)
        except BaseException:
            self._refund(quotas, len(data))
            raise

    async def update(self, name: str, record: bytes, client: _Client | tuple[_Client, ...]) -> None:
        """Only the key holder may update: a valid signed head, for its own name, going up."""
        quotas = client if isinstance(client, tuple) else (client,)
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
                    for c in quotas:
                        if c.names >= (names := self._limits(c)[0]):
                            raise _Refused(
                                429,
                                "resource_exhausted",
                                f"this {c.kind} has created its {names} names",
                            )
                    growth = len(record)
                else:
                    old = signed_seq(current)
                    if old is not None and head.seq <= old:
                        raise _Refused(
                            409, "already_exists", f"sequence {head.seq} is not above {old}"
                        )
                    growth = max(0, len(record) - len(current))
                self._charge(quotas, growth)
                try:
                    await self.store.ns_update(name, record)
                except BaseException:
                    self._refund(quotas, growth)
                    raise
                if current is None:
                    for c in quotas:
                        c.names += 1
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._name_locks.pop(name, None)


async def serve_helper(
    root: str,
    host: str,
    port: int,
    *,
    limits: HelperLimits | None = None,
    tokens: HelperTokens | None = None,
    tls: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the helper on ``host:port`` until cancelled (0 picks a port; the listeners are
    reported through ``task_status``).

    Args:
        root: the directory the objects and names are stored in.
        limits: connection caps, timeouts and quotas (defaults: :class:`HelperLimits`).
        tokens: the bearer tokens requests need (None: anyone may read and write).
        tls: a server TLS context (:func:`helper_tls_context`) to serve HTTPS; None: HTTP.
    """
    helper = _Helper(FileBackend(root), limits or HelperLimits(), tokens=tokens, tls=tls)
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        task_status.started(listeners)
        await trio.serve_listeners(helper.handle, listeners, handler_nursery=nursery)
