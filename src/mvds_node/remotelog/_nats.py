"""A NATS JetStream backend (``nats://host:port``), speaking the NATS protocol over Trio.

* NS: a JetStream key-value bucket (stream ``KV_mvds``, subjects ``$KV.mvds.<key>``, one value
  per key). An update reads the current value and its revision, refuses a record whose signed
  sequence is not higher, and writes with ``Nats-Expected-Last-Subject-Sequence`` set to that
  revision: a compare-and-set, so two writers cannot interleave. Readers can subscribe to
  ``$KV.mvds.>`` (:meth:`NatsBackend.watch`) and hear updates at once.
* CAS: a JetStream object store (stream ``OBJ_mvds``): chunks on ``$O.mvds.C.<nuid>``, then the
  metadata on ``$O.mvds.M.<name>`` with a roll-up header, in the layout other NATS clients use,
  the object named by its address.

Reads use JetStream's direct get. One connection per backend, one request at a time; every size
read from the server is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Final, TypeVar

import trio

from mvds_node._address import format_address
from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of, signed_seq
from mvds_node.remotelog._lines import LineReader
from mvds_node.remotelog._secrets import SecretError, parse_backend_url

__all__ = ["NatsBackend"]

BUCKET: Final = "mvds"
KV_STREAM: Final = f"KV_{BUCKET}"
OBJ_STREAM: Final = f"OBJ_{BUCKET}"
CHUNK: Final = 128 * 1024
_MAX_MSG: Final = MAX_OBJECT_BYTES + 64 * 1024
_TIMEOUT: Final = 10.0


_T = TypeVar("_T")


def _key(name: str) -> str:
    """A NATS subject token for any name (base64url, no padding)."""
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


_MAX_SEQ: Final = 2**63
"""Stream sequences and revisions are unsigned 64-bit in NATS; we refuse one from 2**63 on."""
_MAX_JSON_DEPTH: Final = 32
"""JetStream API replies nest a few levels; deeper is refused before :func:`json.loads` (whose
recursion a reply nested thousands deep would exhaust)."""


def _number(text: str, what: str, limit: int) -> int:
    """A decimal integer from the server, ``0 <= n < limit``.

    Raises:
        BackendError: not a plain decimal number, or out of range.
    """
    if not (0 < len(text) <= 20 and text.isascii() and text.isdigit()):
        raise BackendError(f"nats sent {what} {text[:24]!r}, not a number")
    n = int(text)
    if n >= limit:
        raise BackendError(f"nats sent {what} {n}, over the limit of {limit - 1}")
    return n


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from the server.

    Raises:
        BackendError: not JSON, nested too deep, or not an object.
    """
    depth = 0
    for byte in data:  # brackets inside strings count too: a bound, not a parser
        if byte in b"[{":
            depth += 1
            if depth > _MAX_JSON_DEPTH:
                raise BackendError(f"nats: {what} is nested over {_MAX_JSON_DEPTH} deep")
        elif byte in b"]}":
            depth -= 1
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):
        raise BackendError(f"nats: {what} is not JSON") from None
    if not isinstance(reply, dict):
        raise BackendError(f"nats: {what} is a JSON {type(reply).__name__}, not an object")
    return reply


def _json_int(reply: dict[str, Any], field: str, what: str, limit: int) -> int:
    value = reply.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise BackendError(f"nats: {what} has no usable {field!r}")
    return value


def _error_text(reply: dict[str, Any]) -> str:
    error = reply.get("error")
    if isinstance(error, dict):
        return str(error.get("description", "an error"))[:200]
    return str(error)[:200]


class _Msg:
    __slots__ = ("data", "headers", "reply", "status", "subject")

    def __init__(
        self, subject: str, reply: str, headers: dict[str, str], status: str, data: bytes
    ) -> None:
        self.subject, self.reply, self.headers, self.status, self.data = (
            subject,
            reply,
            headers,
            status,
            data,
        )


class _Conn(LineReader):
    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream, "nats")

    async def _line(self) -> str:
        return (await self.line()).decode(errors="replace")

    async def _exact(self, n: int) -> bytes:
        return await self.exact(n, _MAX_MSG)

    async def next_msg(self) -> _Msg:
        """The next MSG/HMSG; answers PINGs, skips +OK/PONG/INFO, raises on -ERR."""
        while True:
            line = await self._line()
            op = line.split(" ", 1)[0].upper()
            if op == "PING":
                await self.stream.send_all(b"PONG\r\n")
            elif op in ("PONG", "+OK", "INFO", ""):
                continue
            elif op == "-ERR":
                raise BackendError(f"nats: {line[5:]}")
            elif op == "MSG":
                # MSG <subject> <sid> [reply-to] <#bytes>
                parts = line.split(" ")
                if len(parts) not in (4, 5):
                    raise BackendError(f"nats sent a malformed MSG line {line[:40]!r}")
                subject, reply = parts[1], parts[3] if len(parts) == 5 else ""
                data = await self._exact(_number(parts[-1], "a message size", _MAX_MSG + 1))
                return _Msg(subject, reply, {}, "", data)
            elif op == "HMSG":
                # HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
                parts = line.split(" ")
                if len(parts) not in (5, 6):
                    raise BackendError(f"nats sent a malformed HMSG line {line[:40]!r}")
                subject, reply = parts[1], parts[3] if len(parts) == 6 else ""
                hlen = _number(parts[-2], "a header size", _MAX_MSG + 1)
                total = _number(parts[-1], "a message size", _MAX_MSG + 1)
                if hlen > total:
                    raise BackendError(f"nats sent headers of {hlen} bytes in {total}")
                raw = await self._exact(total)
                head, data = raw[:hlen].decode(errors="replace"), raw[hlen:]
                lines = head.split("\r\n")
                if not lines[0].startswith("NATS/1.0"):
                    raise BackendError(f"nats sent headers {lines[0][:40]!r}")
                status = lines[0][len("NATS/1.0") :].strip()
                headers = {}
                for h in lines[1:]:
                    k, _, v = h.partition(":")
                    if k:
                        headers[k.strip()] = v.strip()
                return _Msg(subject, reply, headers, status, data)
            else:
                raise BackendError(f"nats sent {line[:40]!r}")


def _sequence_of(msg: _Msg) -> int:
    """The stream sequence a direct get names in its ``Nats-Sequence`` header."""
    return _number(msg.headers.get("Nats-Sequence", ""), "a Nats-Sequence", _MAX_SEQ)


def _object_meta(data: bytes) -> tuple[str, int, int]:
    """``(nuid, size, chunks)`` of an object's metadata, each checked and bounded."""
    meta = _json_object(data, "object metadata")
    nuid = meta.get("nuid")
    if not isinstance(nuid, str) or not 0 < len(nuid) <= 64 or not nuid.isalnum():
        raise BackendError("nats: object metadata has no usable 'nuid'")
    size = _json_int(meta, "size", "object metadata", MAX_OBJECT_BYTES + 1)
    chunks = _json_int(meta, "chunks", "object metadata", MAX_OBJECT_BYTES // CHUNK + 2)
    return nuid, size, chunks


class NatsBackend:
    """A :class:`~mvds_node.remotelog.Backend` on NATS JetStream (key-value and object store)."""

    def __init__(self, url: str) -> None:
        try:
            parsed = parse_backend_url(url, default_port=4222, many_hosts=True)
        except SecretError as e:
            raise BackendError(f"nats {e}") from None
        self.host, self.port = parsed.host, parsed.port
        self._conn: _Conn | None = None
        self._inbox = f"_INBOX.{os.urandom(8).hex()}"
        self._n = 0
        self._lock = trio.Lock()
        self._ready = False

    async def _connect(self) -> _Conn:
        stream = await trio.open_tcp_stream(self.host, self.port)
        try:
            conn = _Conn(stream)
            info = await conn._line()
            if not info.startswith("INFO"):
                raise BackendError("not a NATS server")
            options = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
            await stream.send_all(f"CONNECT {json.dumps(options)}\r\nPING\r\n".encode())
            while (line := await conn._line()) != "PONG":
                if line.startswith("-ERR"):
                    raise BackendError(f"nats: {line[:200]}")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return conn

    async def aclose_connection(self) -> None:
        if self._conn is not None:
            await trio.aclose_forcefully(self._conn.stream)
            self._conn = None
            self._ready = False

    async def _request(
        self, subject: str, data: bytes = b"", headers: dict[str, str] | None = None
    ) -> _Msg:
        try:
            with trio.fail_after(_TIMEOUT):
                if self._conn is None:
                    self._conn = await self._connect()
                    await self._conn.stream.send_all(f"SUB {self._inbox}.* 1\r\n".encode())
                conn = self._conn
                self._n += 1
                reply = f"{self._inbox}.{self._n}"
                if headers:
                    head = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                    hb = (head + "\r\n").encode()
                    cmd = f"HPUB {subject} {reply} {len(hb)} {len(hb) + len(data)}\r\n"
                    await conn.stream.send_all(cmd.encode() + hb + data + b"\r\n")
                else:
                    cmd = f"PUB {subject} {reply} {len(data)}\r\n"
                    await conn.stream.send_all(cmd.encode() + data + b"\r\n")
                while True:
                    msg = await conn.next_msg()
                    if msg.subject == reply:
                        return msg
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
        ) as e:
            await self.aclose_connection()
            raise BackendError(
                f"nats {format_address(self.host, self.port)} unreachable: {e!r}"
            ) from None
        except BackendError as e:
            await self.aclose_connection()
            raise BackendError(f"nats {format_address(self.host, self.port)}: {e}") from None

    async def _api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        msg = await self._request(subject, json.dumps(body).encode() if body is not None else b"")
        return await self._checked(lambda: _json_object(msg.data, f"the answer to {subject}"))

    async def _checked(self, interpret: Callable[[], _T]) -> _T:
        """``interpret()`` a reply; a malformed one also drops the connection (its state, such
        as a half-read stream of replies, cannot be trusted)."""
        try:
            return interpret()
        except BackendError as e:
            await self.aclose_connection()
            raise BackendError(f"nats {format_address(self.host, self.port)}: {e}") from None

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            for name, subjects, per_subject in (
                (KV_STREAM, [f"$KV.{BUCKET}.>"], 1),
                (OBJ_STREAM, [f"$O.{BUCKET}.C.>", f"$O.{BUCKET}.M.>"], -1),
            ):
                info = await self._api(f"$JS.API.STREAM.INFO.{name}")
                if "error" not in info:
                    continue
                config = {
                    "name": name,
                    "subjects": subjects,
                    "max_msgs_per_subject": per_subject,
                    "discard": "new",
                    "allow_rollup_hdrs": True,
                    "allow_direct": True,
                    "storage": "file",
                    "num_replicas": 1,
                }
                created = await self._api(f"$JS.API.STREAM.CREATE.{name}", config)
                error = created.get("error")
                exists = isinstance(error, dict) and error.get("err_code") == 10058
                if error is not None and not exists:
                    raise BackendError(f"nats: cannot create {name}: {_error_text(created)}")
            self._ready = True

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> int:
        msg = await self._request(subject, data, headers)
        what = f"the acknowledgement of {subject}"
        ack = await self._checked(lambda: _json_object(msg.data, what))
        if "error" in ack:
            raise BackendError(f"nats refused {subject}: {_error_text(ack)}")
        return await self._checked(lambda: _json_int(ack, "seq", what, _MAX_SEQ))

    async def _last(self, stream: str, subject: str) -> _Msg | None:
        msg = await self._request(f"$JS.API.DIRECT.GET.{stream}.{subject}")
        if msg.status.startswith("404"):
            return None
        if msg.status:
            raise BackendError(f"nats direct get: {msg.status}")
        return msg

    # --- NS ---------------------------------------------------------------------------------

    async def ns_fetch(self, name: str) -> bytes | None:
        await self._ensure()
        async with self._lock:
            msg = await self._last(KV_STREAM, f"$KV.{BUCKET}.{_key(name)}")
        return None if msg is None else msg.data

    async def ns_update(self, name: str, record: bytes) -> None:
        seq = signed_seq(record)
        await self._ensure()
        subject = f"$KV.{BUCKET}.{_key(name)}"
        async with self._lock:
            current = await self._last(KV_STREAM, subject)
            revision = 0
            if current is not None:
                revision = await self._checked(functools.partial(_sequence_of, current))
                old = signed_seq(current.data)
                if seq is not None and old is not None and old >= seq:
                    raise BackendError(f"nats refused {name}: sequence {seq} is not above {old}")
            await self._publish(
                subject, record, {"Nats-Expected-Last-Subject-Sequence": str(revision)}
            )

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[str]]:
        """Names as they are updated, on a connection of its own (subscribed on entry).

        Raises:
            BackendError: the server is unreachable or misbehaves (on entry, or out of the
                iteration later).
        """
        try:
            with trio.fail_after(_TIMEOUT):
                conn = await self._connect()
        except (OSError, trio.TooSlowError) as e:
            raise BackendError(
                f"nats {format_address(self.host, self.port)} unreachable: {e!r}"
            ) from None
        async with conn.stream:
            try:
                await conn.stream.send_all(f"SUB $KV.{BUCKET}.> 1\r\nPING\r\n".encode())
            except (OSError, trio.BrokenResourceError) as e:
                raise BackendError(f"nats {format_address(self.host, self.port)}: {e!r}") from None

            async def names() -> AsyncGenerator[str, None]:
                prefix = f"$KV.{BUCKET}."
                while True:
                    msg = await conn.next_msg()
                    token = msg.subject.removeprefix(prefix)
                    with contextlib.suppress(ValueError):
                        yield base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()

            updates = names()
            async with contextlib.aclosing(updates):
                yield updates

    # --- CAS --------------------------------------------------------------------------------

    async def cas_add(self, data: bytes) -> bytes:
        address = address_of(data)
        await self._ensure()
        meta_subject = f"$O.{BUCKET}.M.{_key(address.hex())}"
        async with self._lock:
            if await self._last(OBJ_STREAM, meta_subject) is not None:
                return address  # content addressed: already there
            nuid = os.urandom(11).hex()
            chunks = 0
            for i in range(0, max(1, len(data)), CHUNK):
                await self._publish(f"$O.{BUCKET}.C.{nuid}", data[i : i + CHUNK], None)
                chunks += 1
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
            meta = {
                "name": address.hex(),
                "bucket": BUCKET,
                "nuid": nuid,
                "size": len(data),
                "chunks": chunks,
                "digest": f"SHA-256={digest}",
            }
            await self._publish(meta_subject, json.dumps(meta).encode(), {"Nats-Rollup": "sub"})
        return address

    async def cas_get(self, address: bytes) -> bytes | None:
        await self._ensure()
        async with self._lock:
            meta_msg = await self._last(OBJ_STREAM, f"$O.{BUCKET}.M.{_key(address.hex())}")
            if meta_msg is None:
                return None
            nuid, size, chunks = await self._checked(lambda: _object_meta(meta_msg.data))
            parts: list[bytes] = []
            got = 0
            seq = 1
            for _ in range(chunks):
                body = json.dumps({"seq": seq, "next_by_subj": f"$O.{BUCKET}.C.{nuid}"}).encode()
                msg = await self._request(f"$JS.API.DIRECT.GET.{OBJ_STREAM}", body)
                if msg.status:
                    raise BackendError(f"nats: chunk of {address.hex()[:16]}: {msg.status}")
                got += len(msg.data)
                if got > size:
                    await self.aclose_connection()
                    raise BackendError(f"nats: object {address.hex()[:16]} is over {size} bytes")
                parts.append(msg.data)
                seq = await self._checked(functools.partial(_sequence_of, msg)) + 1
            if got != size:
                raise BackendError(f"nats: object {address.hex()[:16]} has {got} of {size} bytes")
        return b"".join(parts)
