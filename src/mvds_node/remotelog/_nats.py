"""A NATS JetStream backend (``nats://host:port``, ``tls://`` for TLS), speaking the NATS protocol
over Trio.

* NS: a JetStream key-value bucket (stream ``KV_mvds``, subjects ``$KV.mvds.<key>``, one value
  per key). An update reads the current value and its revision, refuses a record whose signed
  sequence is not higher, and writes with ``Nats-Expected-Last-Subject-Sequence`` set to that
  revision: a compare-and-set, so two writers cannot interleave. Readers can subscribe to
  ``$KV.mvds.>`` (:meth:`NatsBackend.watch`) and hear updates at once.
* CAS: a JetStream object store (stream ``OBJ_mvds``): chunks on ``$O.mvds.C.<nuid>``, then the
  metadata on ``$O.mvds.M.<name>`` with a roll-up header, in the layout other NATS clients use,
  the object named by its address.

Reads use JetStream's direct get. One connection per backend, one request at a time; every size
read from the server is bounded (the INFO line, its nonce and server list, message sizes).

Why our own client: the maintained one, nats-py, runs on asyncio only, and under Trio it needs
trio-asyncio, whose crossing costs more than a request (docs/remote-log.md has the figures).
There is no NATS client on Trio or anyio.

*Deployments.* The URL may carry a user and password (``nats://alice:pw@host``) or a token
(``nats://TOKEN@host``); ``remote_log.secret`` gives the password (with a user in the URL) or
the token instead; ``remote_log.nkey_file`` an NKey seed and ``remote_log.creds_file`` a
``.creds`` file (user JWT and seed), with which we sign the server's nonce (see
:mod:`~mvds_node.remotelog._nkeys`). ``tls://`` (or a server whose INFO says ``tls_required``)
upgrades the connection to TLS after INFO, as NATS does, with
:func:`~mvds_node.remotelog.tls_context`. A URL may list a cluster's servers
(``nats://a:4222,b:4222,c:4222``); each connection tries them in turn, starting after the one
that failed last, together with the servers the cluster announces in INFO ``connect_urls``
(at most :data:`MAX_SERVERS` in all). ``?replicas=3`` makes the streams with three replicas
(and raises the replicas of streams made with fewer).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Final, TypeVar

import trio

from mvds_node._address import format_address
from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES, address_of, signed_seq
from mvds_node.remotelog._lines import LineReader
from mvds_node.remotelog._nkeys import NKey, read_creds, read_nkey
from mvds_node.remotelog._secrets import (
    Credentials,
    Secret,
    SecretError,
    parse_backend_url,
    redact_url,
    tls_context,
)

__all__ = ["NatsBackend"]

BUCKET: Final = "mvds"
KV_STREAM: Final = f"KV_{BUCKET}"
OBJ_STREAM: Final = f"OBJ_{BUCKET}"
CHUNK: Final = 128 * 1024
_MAX_MSG: Final = MAX_OBJECT_BYTES + 64 * 1024
_TIMEOUT: Final = 10.0
"""Seconds for one request, connecting included, and for connecting to one server."""
MAX_SERVERS: Final = 64
"""Servers a backend knows at most: the URL's, then those the cluster announces."""
_MAX_NONCE: Final = 256
"""nats-server's nonces are 11 random bytes in base64 (15 characters)."""
_MAX_REPLICAS: Final = 5
"""JetStream's own limit of a stream's replicas."""


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


class _Fatal(BackendError):
    """A failure another server of the cluster would not mend (credentials, TLS trust)."""


class _Conn(LineReader):
    def __init__(
        self, stream: trio.abc.Stream, on_info: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(stream, "nats")
        self.on_info = on_info

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
            elif op == "INFO":
                if self.on_info is not None:
                    self.on_info(line)  # a cluster announcing its servers anew
            elif op in ("PONG", "+OK", ""):
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


def _replicas(query: str, shown: str) -> int:
    """The ``replicas`` of a URL's query (``?replicas=3``); 1 without one."""
    replicas = 1
    for part in query.split("&") if query else ():
        key, _, value = part.partition("=")
        if key != "replicas":
            raise SecretError(f"{shown}: unknown setting {key!r} (only ?replicas=N)")
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= _MAX_REPLICAS):
            raise SecretError(f"{shown}: replicas must be 1 to {_MAX_REPLICAS}, not {value!r}")
        replicas = int(value)
    return replicas


def _announced(value: Any) -> list[tuple[str, int]]:
    """The servers of an INFO's ``connect_urls`` (``host:port`` each); malformed ones skipped,
    at most :data:`MAX_SERVERS`."""
    found: list[tuple[str, int]] = []
    if not isinstance(value, list):
        return found
    for item in value[:MAX_SERVERS]:
        if not isinstance(item, str) or len(item) > 300:
            continue
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            found.append((host, int(port)))
    return found


def _auth_hint(auth: str) -> str:
    return {
        "creds": "check remote_log.creds_file (its user JWT and seed, and the account's JWT "
        "on the server)",
        "nkey": "check remote_log.nkey_file (is its public key a user of the server?)",
        "user": "check the user in remote_log.url and its password (remote_log.secret or the URL)",
        "token": "check the token (remote_log.secret, or nats://TOKEN@host)",
        "": "the server wants credentials: a user and password or a token in remote_log.url "
        "or remote_log.secret, remote_log.nkey_file or remote_log.creds_file",
    }[auth]


class NatsBackend:
    """A :class:`~mvds_node.remotelog.Backend` on NATS JetStream (key-value and object store).

    Args:
        url: ``nats://`` or ``tls://``, with one server or a list, optional credentials and
            ``?replicas=N``.
        credentials: the ``[remote_log]`` secret and files.

    Raises:
        SecretError: the URL is malformed, or a credential file cannot be read or used.
    """

    def __init__(self, url: str, *, credentials: Credentials | None = None) -> None:
        credentials = credentials or Credentials()
        base, _, query = url.partition("?")
        parsed = parse_backend_url(base.rstrip("/"), default_port=4222, many_hosts=True)
        self.server = redact_url(url)
        """The URL as errors and the status show it (secrets as ``***``)."""
        if parsed.scheme not in ("nats", "tls"):
            raise SecretError(f"{self.server}: not a nats:// or tls:// URL")
        self.replicas = _replicas(query, self.server)
        self._servers: list[tuple[str, int]] = list(parsed.hosts)
        self._next = 0
        self._tls = parsed.tls
        self._ssl: ssl.SSLContext | None = None
        if parsed.tls or credentials.ca_file or credentials.cert_file:
            self._ssl = tls_context(credentials, what=f"nats {self.server}")
        self._credentials = credentials
        # What CONNECT says; at most one way of authenticating.
        self._auth = ""
        self._user: str | None = None
        self._secret: Secret | None = None
        self._nkey: NKey | None = None
        self._jwt: str | None = None
        if credentials.creds_file is not None:
            self._auth = "creds"
            self._jwt, self._nkey = read_creds(credentials.creds_file, what="remote_log.creds_file")
        elif credentials.nkey_file is not None:
            self._auth = "nkey"
            self._nkey = read_nkey(credentials.nkey_file, what="remote_log.nkey_file")
        else:
            secret = credentials.secret or parsed.password
            userinfo = base.partition("://")[2].partition("/")[0].rpartition("@")[0]
            if parsed.username is not None and (secret is not None or ":" in userinfo):
                self._auth, self._user, self._secret = "user", parsed.username, secret
                if ":" not in userinfo:
                    self.server = url  # a user name alone: nothing secret in the URL
            elif parsed.username is not None:  # nats://TOKEN@host
                self._auth, self._secret = "token", Secret(parsed.username)
            elif secret is not None:
                self._auth, self._secret = "token", secret
        self._conn: _Conn | None = None
        self._inbox = f"_INBOX.{os.urandom(8).hex()}"
        self._n = 0
        self._lock = trio.Lock()
        self._ready = False

    @property
    def servers(self) -> list[str]:
        """The servers a connection tries, in order (the URL's, then those announced)."""
        return [format_address(h, p) for h, p in self._servers]

    def _learn(self, info: dict[str, Any]) -> None:
        for server in _announced(info.get("connect_urls")):
            if server not in self._servers and len(self._servers) < MAX_SERVERS:
                self._servers.append(server)

    def _learn_line(self, line: str) -> None:
        with contextlib.suppress(BackendError):
            self._learn(_json_object(line[4:].encode(), "INFO"))

    async def _connect(self) -> _Conn:
        """A connection to one of the servers, tried in turn from the one after the server
        that failed last, each within :data:`_TIMEOUT`.

        Raises:
            BackendError: no server could be reached (the reasons of each, shortened), or one
                refused our credentials or failed the TLS check (which another would too).
        """
        reasons: list[str] = []
        for _ in range(len(self._servers)):
            i = self._next % len(self._servers)
            host, port = self._servers[i]
            try:
                with trio.fail_after(_TIMEOUT):
                    conn = await self._connect_to(host, port)
            except _Fatal as e:
                raise BackendError(f"nats {self.server}: {e}") from None
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, BackendError) as e:
                why = "timed out" if isinstance(e, trio.TooSlowError) else str(e) or repr(e)
                reasons.append(f"{format_address(host, port)}: {why}"[:200])
                self._next = i + 1
                continue
            return conn
        shown = "; ".join(reasons[:4]) + (
            f"; and {len(reasons) - 4} more" if len(reasons) > 4 else ""
        )
        raise BackendError(f"nats {self.server} unreachable: {shown}")

    async def _connect_to(self, host: str, port: int) -> _Conn:
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        try:
            conn = _Conn(stream, self._learn_line)
            line = await conn._line()
            if not line.startswith("INFO "):
                raise BackendError("not a NATS server")
            info = _json_object(line[5:].encode(), "INFO")
            self._learn(info)
            if self._tls or info.get("tls_required") is True:
                if self._tls and not (info.get("tls_required") or info.get("tls_available")):
                    raise _Fatal("the server does not offer TLS: use nats://, or enable TLS on it")
                if conn.buf:
                    raise BackendError("sent more than INFO before TLS")
                stream = await self._start_tls(stream, host)
                conn = _Conn(stream, self._learn_line)
            options: dict[str, Any] = {
                "verbose": False,
                "pedantic": False,
                "headers": True,
                "no_responders": True,
                "protocol": 1,
                "lang": "python-trio",
                "name": "mvds-node",
                "tls_required": isinstance(stream, trio.SSLStream),
            }
            options.update(self._auth_options(info))
            await stream.send_all(f"CONNECT {json.dumps(options)}\r\nPING\r\n".encode())
            while (line := await self._answer(conn)) != "PONG":
                if line.startswith("-ERR"):
                    text = line[4:].strip().strip("'")[:200]
                    if "authoriz" in text.lower() or "authentic" in text.lower():
                        raise _Fatal(f"{text.lower()}: {_auth_hint(self._auth)}")
                    raise BackendError(f"-ERR {text}")
                if line.startswith("PING"):
                    await stream.send_all(b"PONG\r\n")
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self._next = self._servers.index((host, port)) if (host, port) in self._servers else 0
        return conn

    async def _answer(self, conn: _Conn) -> str:
        """The server's next line after CONNECT; a TLS connection it closes here most likely
        wanted a client certificate (TLS 1.3 tells so only after the handshake)."""
        try:
            return await conn._line()
        except BackendError as e:
            if isinstance(conn.stream, trio.SSLStream) and self._credentials.cert_file is None:
                raise BackendError(
                    f"{e}: if the server asks for a client certificate, set "
                    "remote_log.cert_file and remote_log.key_file"
                ) from None
            raise

    async def _start_tls(self, stream: trio.abc.Stream, host: str) -> trio.SSLStream[Any]:
        if self._ssl is None:  # the server asks for TLS; the URL did not
            self._ssl = tls_context(self._credentials, what=f"nats {self.server}")
        tls = trio.SSLStream(stream, self._ssl, server_hostname=host)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as e:
            cause = e.__cause__
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise _Fatal(
                    f"TLS: {cause.verify_message or cause.reason}: the server's certificate "
                    "is not trusted; check remote_log.ca_file (the CA that signed it)"
                ) from None
            if isinstance(cause, ssl.SSLError):
                raise _Fatal(
                    f"TLS: {cause.reason or cause}: check remote_log.cert_file and key_file "
                    "if the server asks for a client certificate"
                ) from None
            raise
        return tls

    def _auth_options(self, info: dict[str, Any]) -> dict[str, Any]:
        """CONNECT's fields for our credentials (revealed here only, for the wire)."""
        if self._nkey is not None:
            nonce = info.get("nonce")
            if not (isinstance(nonce, str) and 0 < len(nonce) <= _MAX_NONCE and nonce.isascii()):
                raise _Fatal("the server sent no usable nonce to sign (is it nats-server?)")
            signed = {"sig": self._nkey.sign(nonce)}
            if self._jwt is not None:
                return {**signed, "jwt": self._jwt}
            return {**signed, "nkey": self._nkey.public}
        if self._auth == "user":
            return {"user": self._user, "pass": self._secret.reveal() if self._secret else ""}
        if self._auth == "token" and self._secret is not None:
            return {"auth_token": self._secret.reveal()}
        if info.get("auth_required") is True:
            raise _Fatal(_auth_hint(""))
        return {}

    async def _drop(self) -> None:
        """Close the connection after a failure; the next one starts at the next server."""
        if self._conn is not None:
            self._next += 1
        await self.aclose_connection()

    async def aclose_connection(self) -> None:
        if self._conn is not None:
            await trio.aclose_forcefully(self._conn.stream)
            self._conn = None
            self._ready = False

    async def _request(
        self, subject: str, data: bytes = b"", headers: dict[str, str] | None = None
    ) -> _Msg:
        if self._conn is None:
            conn = await self._connect()
            try:
                with trio.fail_after(_TIMEOUT):
                    await conn.stream.send_all(f"SUB {self._inbox}.* 1\r\n".encode())
            except (OSError, trio.BrokenResourceError, trio.TooSlowError) as e:
                await trio.aclose_forcefully(conn.stream)
                raise BackendError(f"nats {self.server} unreachable: {e!r}") from None
            self._conn = conn
        conn = self._conn
        try:
            with trio.fail_after(_TIMEOUT):
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
                        break
        except (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.TooSlowError,
        ) as e:
            await self._drop()
            raise BackendError(f"nats {self.server} unreachable: {e!r}") from None
        except BackendError as e:
            await self._drop()
            raise BackendError(f"nats {self.server}: {e}") from None
        if msg.status.startswith("503"):
            # No one answers the subject: JetStream is not up there (a cluster electing its
            # leaders). Another server may do better.
            await self._drop()
            raise BackendError(f"nats {self.server}: no JetStream answers {subject} now")
        return msg

    async def _api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        msg = await self._request(subject, json.dumps(body).encode() if body is not None else b"")
        return await self._checked(lambda: _json_object(msg.data, f"the answer to {subject}"))

    async def _checked(self, interpret: Callable[[], _T]) -> _T:
        """``interpret()`` a reply; a malformed one also drops the connection (its state, such
        as a half-read stream of replies, cannot be trusted)."""
        try:
            return interpret()
        except BackendError as e:
            await self._drop()
            raise BackendError(f"nats {self.server}: {e}") from None

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            for name, subjects, per_subject in (
                (KV_STREAM, [f"$KV.{BUCKET}.>"], 1),
                (OBJ_STREAM, [f"$O.{BUCKET}.C.>", f"$O.{BUCKET}.M.>"], -1),
            ):
                info = await self._api(f"$JS.API.STREAM.INFO.{name}")
                error = info.get("error")
                if error is None:
                    await self._scale(name, info)
                    continue
                if not (isinstance(error, dict) and error.get("code") == 404):
                    # Not "no such stream": JetStream is down or busy (a cluster without a
                    # leader yet); creating would fail the same way.
                    raise BackendError(f"nats {self.server}: {name}: {_error_text(info)}")
                config = {
                    "name": name,
                    "subjects": subjects,
                    "max_msgs_per_subject": per_subject,
                    "discard": "new",
                    "allow_rollup_hdrs": True,
                    "allow_direct": True,
                    "storage": "file",
                    "num_replicas": self.replicas,
                }
                created = await self._api(f"$JS.API.STREAM.CREATE.{name}", config)
                error = created.get("error")
                exists = isinstance(error, dict) and error.get("err_code") == 10058
                if error is not None and not exists:
                    raise BackendError(
                        f"nats {self.server}: cannot create {name}: {_error_text(created)}"
                    )
            self._ready = True

    async def _scale(self, name: str, info: dict[str, Any]) -> None:
        """Raise a stream's replicas to ours (a group moving from one server to a cluster);
        never lowers them."""
        config = info.get("config")
        if not isinstance(config, dict):
            return
        have = config.get("num_replicas", 1)
        if not isinstance(have, int) or isinstance(have, bool) or have >= self.replicas:
            return
        updated = await self._api(
            f"$JS.API.STREAM.UPDATE.{name}", {**config, "num_replicas": self.replicas}
        )
        if "error" in updated:
            raise BackendError(
                f"nats {self.server}: cannot raise {name} to {self.replicas} replicas: "
                f"{_error_text(updated)}"
            )

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
        conn = await self._connect()
        async with conn.stream:
            try:
                await conn.stream.send_all(f"SUB $KV.{BUCKET}.> 1\r\nPING\r\n".encode())
            except (OSError, trio.BrokenResourceError) as e:
                raise BackendError(f"nats {self.server}: {e!r}") from None

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
                    await self._drop()
                    raise BackendError(f"nats: object {address.hex()[:16]} is over {size} bytes")
                parts.append(msg.data)
                seq = await self._checked(functools.partial(_sequence_of, msg)) + 1
            if got != size:
                raise BackendError(f"nats: object {address.hex()[:16]} has {got} of {size} bytes")
        return b"".join(parts)
