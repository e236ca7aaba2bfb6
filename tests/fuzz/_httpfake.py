"""A fake network under httpx, for the HTTP and IPFS backend targets: raw answer bytes in.

httpx's own transport runs unchanged (httpcore's connection pool and h11 parsing the answer);
only the sockets are replaced. Each connection the pool opens reads the next scripted answer
bytes, cut into reads of at most ``cut`` bytes, then end of stream; a connection beyond the
script fails to connect. So the answer's bytes reach our client code through the same parser
as from a socket, at no cost of a socket.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import trio

from mvds_node.remotelog._http import HttpClient


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, data: bytes, cut: int) -> None:
        self._data = data
        self._cut = cut

    # httpcore's interface takes timeouts (ASYNC109); the fake never waits.
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()
        n = min(max_bytes, self._cut)
        out, self._data = self._data[:n], self._data[n:]
        return out

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def get_extra_info(self, info: str) -> Any:
        return None


class Network(httpcore.AsyncNetworkBackend):
    """Scripted connections: the answer bytes each new connection reads."""

    def __init__(self, answers: Iterable[bytes], *, cut: int = 65536) -> None:
        self._answers = list(reversed(list(answers)))
        self._cut = max(1, cut)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        await trio.lowlevel.checkpoint()
        if not self._answers:
            raise httpcore.ConnectError("connection refused")
        return _Stream(self._answers.pop(), self._cut)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no unix sockets here")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


_CLIENTS: dict[str, httpx.AsyncClient] = {}


def install(http: HttpClient, network: Network) -> httpcore.AsyncConnectionPool:
    """Make ``http`` open its connections on ``network``; return the pool to close after.

    The ``httpx.AsyncClient`` that ``http`` builds is made once per process and given a fresh
    pool each time: building one costs a TLS context (tens of milliseconds), which would be
    most of the time per input. Close the returned pool, not the client, to end an input.
    """
    key = http._base_url
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = http._open()
    pool = httpcore.AsyncConnectionPool(
        network_backend=network, max_connections=8, max_keepalive_connections=8
    )
    transport: Any = client._transport  # httpx.AsyncHTTPTransport
    transport._pool = pool
    http._client = client
    return pool
