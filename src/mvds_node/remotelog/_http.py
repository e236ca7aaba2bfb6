"""The client of our HTTP helper (``http://host:port``), on httpx, and the HTTP plumbing it
shares with the IPFS backend.

Routes (protobuf bodies, ``Content-Type: application/protobuf``; the server is
:mod:`mvds_node.remotelog._helper`)::

    POST /twirp/vac.cas.CAS/Add     Content     -> Address
    POST /twirp/vac.cas.CAS/Get     Address     -> Content      (Twirp "not_found" if absent)
    POST /twirp/vac.ns.NS/Update    NameUpdate  -> Response
    POST /twirp/vac.ns.NS/Fetch     Query       -> Content      (Twirp "not_found" if absent)

Theory of operation: one :class:`HttpClient` per backend holds one ``httpx.AsyncClient`` (which
runs on Trio through httpcore's Trio backend) with a pool of keep-alive connections, so
concurrent requests (a reader fetching 16 objects at once) ride separate connections and a
request the server is slow to answer delays only itself, up to its own timeouts. Every request
has connect, write, read and pool-wait timeouts and an overall deadline. The answer is read as a
stream and abandoned as soon as it passes the route's size limit: the connection it came on is
then closed, never reused, so a half-read answer cannot be mistaken for the next one. Every
failure — the library's exceptions, a wrong status, an oversized or undecodable answer — comes
out as one :class:`BackendError` that names the host and the route.

*Deployments.* ``https://host:port`` is TLS with the system's CAs, or only
``remote_log.ca_file``'s, hostnames checked, and a client certificate when ``cert_file`` is set.
A bearer token (``remote_log.secret``, or the password of the URL, ``https://:TOKEN@host``) goes
in every request's ``Authorization: Bearer`` header; the URL's user part is never sent.
Messages name the helper by its host and port only, so no token can appear in them; a refusal
for want of a token (401) or of a right (403) says which setting to check.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import httpx
import trio
from google.protobuf.message import DecodeError

from mvds_node.remotelog._backend import BackendError
from mvds_node.remotelog._format import MAX_OBJECT_BYTES
from mvds_node.remotelog._helper import HelperLimits as HelperLimits
from mvds_node.remotelog._helper import HelperTokens as HelperTokens
from mvds_node.remotelog._helper import serve_helper as serve_helper
from mvds_node.remotelog._secrets import (
    REDACTED,
    Credentials,
    SecretError,
    parse_backend_url,
    tls_context,
)
from mvds_node.remotelog.proto import cas_pb2, ns_pb2

__all__ = [
    "ClientTimeouts",
    "HelperLimits",
    "HelperTokens",
    "HttpBackend",
    "HttpClient",
    "HttpStatistics",
    "serve_helper",
]

MAX_ANSWER_BYTES: Final = MAX_OBJECT_BYTES + 1024
"""Largest answer body read from the helper: an object at the limit plus its protobuf framing."""
_ERROR_TEXT: Final = 200
"""Characters of a refusal's text quoted in a :class:`BackendError`."""


@final
@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Seconds one request may spend in each phase (httpx's four timeouts) and in all."""

    connect: float = 10.0
    """Opening a TCP connection."""
    write: float = 30.0
    """Between two writes of the request making progress."""
    read: float = 30.0
    """Between two reads of the answer making progress (a server computing its answer counts)."""
    pool: float = 30.0
    """Waiting for a free connection of the pool (all busy with other requests)."""
    total: float = 120.0
    """The whole request, however it is spread: a server trickling its answer is cut here."""


@final
@dataclass(frozen=True, slots=True)
class HttpStatistics:
    """What an :class:`HttpClient` (or the :class:`HttpBackend` on it) did so far."""

    requests: int
    """Requests sent, failed ones included."""


class HttpClient:
    """POSTs to one server through a pool of keep-alive connections; every failure a
    :class:`BackendError`.

    Args:
        base_url: ``http://host:port`` or ``https://host:port``.
        what: how messages name the server (``"helper 127.0.0.1:8001"``).
        timeouts: per-request timeouts.
        max_connections: connections kept open to the server at most; requests beyond wait
            for one (up to ``timeouts.pool``).
        ssl: the TLS context for an ``https://`` URL; None: the system's CAs.
        headers: sent with every request (``Authorization: Bearer ...``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        what: str,
        timeouts: ClientTimeouts | None = None,
        max_connections: int = 8,
        ssl: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.what = what
        self.timeouts = timeouts or ClientTimeouts()
        self._requests = 0
        self._base_url = base_url
        self.max_connections = max_connections
        """Connections the pool holds at most; read when the pool opens (at the first request,
        and again after :meth:`aclose`), so a caller may widen it before then."""
        self._ssl = ssl
        self._headers = dict(headers or {})
        self._client: httpx.AsyncClient | None = None

    def statistics(self) -> HttpStatistics:
        """A snapshot of what the client did so far."""
        return HttpStatistics(requests=self._requests)

    @property
    def requests(self) -> int:
        """Deprecated: use :meth:`statistics`."""
        warnings.warn(
            "HttpClient.requests is deprecated: use HttpClient.statistics().requests",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._requests

    def _open(self) -> httpx.AsyncClient:
        t = self.timeouts
        max_connections = self.max_connections
        return httpx.AsyncClient(
            base_url=self._base_url,
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                # Below the helper's idle timeout, so we drop a connection before it does.
                keepalive_expiry=4.0,
            ),
            # Compressed answers could inflate past any limit before we count them.
            headers={"Accept-Encoding": "identity", **self._headers},
            verify=self._ssl if self._ssl is not None else True,
            trust_env=False,
            follow_redirects=False,
        )

    async def post(
        self, route: str, body: bytes, content_type: str, *, max_bytes: int
    ) -> tuple[int, bytes]:
        """One POST: ``(status, body)``, the body at most ``max_bytes``.

        Raises:
            BackendError: unreachable, too slow, a protocol error, or an answer over
                ``max_bytes`` (its connection is closed, not reused).
        """
        self._requests += 1
        if self._client is None:
            self._client = self._open()
        client = self._client
        where = f"{self.what} {route.partition('?')[0]}"
        try:
            with trio.fail_after(self.timeouts.total):
                request = client.build_request(
                    "POST", route, content=body, headers={"Content-Type": content_type}
                )
                request.stream = _Body(body)  # Content-Length is set from ``body`` already
                async with contextlib.aclosing(await client.send(request, stream=True)) as response:
                    encoding = response.headers.get("content-encoding", "identity").lower()
                    if encoding != "identity":
                        raise BackendError(f"{where}: answer in {encoding!r}, not plain")
                    declared = response.headers.get("content-length")
                    if declared is not None and (len(declared) > 12 or int(declared) > max_bytes):
                        raise BackendError(f"{where}: answer over {max_bytes} bytes")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        if size > max_bytes:
                            # Leaving the block unread closes this connection (httpcore reuses
                            # only one whose answer was read to the end).
                            raise BackendError(f"{where}: answer over {max_bytes} bytes")
                        chunks.append(chunk)
                    return response.status_code, b"".join(chunks)
        except trio.TooSlowError:
            raise BackendError(f"{where}: no answer within {self.timeouts.total} s") from None
        except httpx.TimeoutException as e:
            raise BackendError(f"{where}: timed out ({type(e).__name__})") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:
            raise BackendError(_unreachable(where, e)) from None
        except ValueError as e:
            # h11 turns some malformed headers (a Content-Length of thousands of digits) into
            # ValueError rather than a protocol error.
            raise BackendError(f"{where}: malformed answer: {e}") from None

    async def aclose(self) -> None:
        """Close every pooled connection; a later request opens new ones."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _unreachable(where: str, e: Exception) -> str:
    """The message for a request that failed below HTTP: for TLS, what to check."""
    cause: BaseException | None = e
    for _ in range(8):
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"{where}: TLS: the server's certificate is not trusted "
                f"({cause.verify_message}): check remote_log.ca_file"
            )
        if isinstance(cause, ssl.SSLError):
            return (
                f"{where}: TLS handshake failed ({cause.reason or cause}): is it an https:// "
                "server? does it want a client certificate (remote_log.cert_file)?"
            )
        cause = cause.__cause__ or cause.__context__
    return f"{where}: unreachable: {type(e).__name__}: {_reason(e)}"


def _reason(error: BaseException) -> str:
    """The text of ``error``, or of the first exception under it that has one: httpx wraps some
    failures (a TLS certificate refused) in exceptions of no text."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            break
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return ""


class _Body(httpx.AsyncByteStream):
    """A request body sent in one piece by a plain iterator. httpx's own is an async
    generator, and a request cancelled while its body is being sent (a deadline, a poll that
    ended because another fetch failed) leaves that generator suspended, to be collected with a
    ``ResourceWarning``; an iterator has nothing to finalise."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._sent = True

    def __aiter__(self) -> _Body:
        self._sent = False
        return self

    async def __anext__(self) -> bytes:
        if self._sent:
            raise StopAsyncIteration
        self._sent = True
        return self._data


def twirp_error(payload: bytes) -> tuple[str, str]:
    """The ``(code, msg)`` of a Twirp error body; empty strings for anything else."""
    try:
        document = json.loads(payload[:65536])
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    code, msg = document.get("code"), document.get("msg")
    return (code if isinstance(code, str) else ""), (msg if isinstance(msg, str) else "")


def _decode(kind: Any, data: bytes, where: str) -> Any:
    try:
        return kind.FromString(data)
    except DecodeError:
        raise BackendError(f"{where}: answer is not the route's protobuf") from None


class HttpBackend:
    """The client side: a :class:`~mvds_node.remotelog.Backend` that talks to an HTTP helper.

    Args:
        url: ``http://host:port`` or ``https://host:port``; ``https://:TOKEN@host:port`` gives
            the bearer token in the URL.
        credentials: the bearer token (``secret``, over one in the URL) and, for ``https://``,
            the CA file and client certificate.
        timeouts: per-request timeouts (defaults: :class:`ClientTimeouts`).
        max_connections: pooled connections to the helper.
        ssl: a TLS context to use instead of the one made from ``credentials``.
        headers: sent with every request.

    Raises:
        BackendError: the URL is malformed, or a TLS file cannot be used.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        timeouts: ClientTimeouts | None = None,
        max_connections: int = 8,
        ssl: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        credentials = credentials or Credentials()
        try:
            parsed = parse_backend_url(url, default_port=443 if url.startswith("https:") else 80)
        except SecretError as e:
            raise BackendError(f"helper {e}") from None
        if parsed.scheme not in ("http", "https"):
            raise BackendError(f"helper {parsed.redacted()}: use http:// or https://")
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        base = f"{parsed.scheme}://{host}:{parsed.port}"
        if parsed.path:
            base += "/" + parsed.path
        self.url = base
        """The helper's URL without its token."""
        self._token = credentials.secret or parsed.password
        if parsed.tls and ssl is None:
            try:
                ssl = tls_context(credentials, what=f"helper {base}")
            except SecretError as e:
                raise BackendError(str(e)) from None
        elif not parsed.tls and (credentials.ca_file or credentials.cert_file):
            raise BackendError(
                f"helper {base}: remote_log.ca_file and cert_file are for TLS: use https://"
            )
        all_headers = dict(headers or {})
        if self._token:
            all_headers["Authorization"] = f"Bearer {self._token.reveal()}"
        self.http = HttpClient(
            base,
            what=f"helper {base.removeprefix('http://')}",
            timeouts=timeouts,
            max_connections=max_connections,
            ssl=ssl,
            headers=all_headers,
        )

    def statistics(self) -> HttpStatistics:
        """A snapshot of the requests made so far."""
        return self.http.statistics()

    @property
    def calls(self) -> int:
        """Deprecated: use :meth:`statistics`."""
        warnings.warn(
            "HttpBackend.calls is deprecated: use HttpBackend.statistics().requests",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.http.statistics().requests

    async def _call(self, route: str, body: bytes) -> bytes | None:
        path = f"/twirp/{route}"
        status, payload = await self.http.post(
            path, body, "application/protobuf", max_bytes=MAX_ANSWER_BYTES
        )
        if status == 200:
            return payload
        code, msg = twirp_error(payload)
        if status == 404 and code == "not_found":
            return None
        text = (msg or payload.decode(errors="replace"))[:_ERROR_TEXT]
        if self._token:
            text = text.replace(self._token.reveal(), REDACTED)  # a server echoing what it got
        hint = ""
        if status == 401:
            hint = (
                ": check remote_log.secret (the helper's token)"
                if self._token
                else ": this helper wants a token: set remote_log.secret"
            )
        elif status == 403:
            hint = ": the token lacks this right (a read-only token writing?)"
        raise BackendError(
            f"{self.http.what} {path}: answered {status} {code or '(not Twirp)'}: {text}{hint}"
        )

    async def cas_add(self, data: bytes) -> bytes:
        route = "vac.cas.CAS/Add"
        reply = await self._call(route, cas_pb2.Content(data=data).SerializeToString())
        if reply is None:
            raise BackendError(f"{self.http.what} /twirp/{route}: did not store the object")
        return bytes(_decode(cas_pb2.Address, reply, f"{self.http.what} /twirp/{route}").id)

    async def cas_get(self, address: bytes) -> bytes | None:
        route = "vac.cas.CAS/Get"
        reply = await self._call(route, cas_pb2.Address(id=address).SerializeToString())
        if reply is None:
            return None
        return bytes(_decode(cas_pb2.Content, reply, f"{self.http.what} /twirp/{route}").data)

    async def ns_update(self, name: str, record: bytes) -> None:
        update = ns_pb2.NameUpdate(name=name, content=record).SerializeToString()
        await self._call("vac.ns.NS/Update", update)

    async def ns_fetch(self, name: str) -> bytes | None:
        route = "vac.ns.NS/Fetch"
        reply = await self._call(route, ns_pb2.Query(name=name).SerializeToString())
        if reply is None:
            return None
        return bytes(_decode(ns_pb2.Content, reply, f"{self.http.what} /twirp/{route}").data)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def aclose_connection(self) -> None:
        """Close the connection pool (the name the node and CLI call on every backend)."""
        await self.http.aclose()
