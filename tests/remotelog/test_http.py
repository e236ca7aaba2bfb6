"""The HTTP helper: Twirp routes on loopback, limits, and names only their key holder updates."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, LogReader, LogSettings, LogWriter, log_name
from mvds_node.remotelog._format import public_key, sign_head
from mvds_node.remotelog._http import HelperLimits, HttpBackend, serve_helper
from mvds_node.sync import encode_message, message_id

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()


@pytest.fixture
async def helper(tmp_path: Path, nursery: trio.Nursery) -> str:
    listeners = await nursery.start(
        functools.partial(
            serve_helper,
            str(tmp_path / "store"),
            "127.0.0.1",
            0,
            limits=HelperLimits(requests_per_second=1000, burst=2000),
        )
    )
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def messages(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (message_id(G, i + 1, b"m%d" % i), encode_message(G, i + 1, b"m%d" % i)) for i in range(n)
    ]


async def test_writer_and_reader_through_the_helper(helper: str) -> None:
    settings = LogSettings(page_size=10, inline=3)
    writer_backend, reader_backend = HttpBackend(helper), HttpBackend(helper)
    writer = LogWriter(writer_backend, KEY, G, settings=settings)
    await writer.append(messages(25))
    reader = LogReader(reader_backend, public_key(KEY), G, settings=settings)
    result = await reader.poll(lambda m: False)
    assert result.messages == [w for _, w in messages(25)]
    assert writer_backend.statistics().requests > 1 and reader_backend.statistics().requests > 1
    await writer_backend.aclose_connection()
    await reader_backend.aclose_connection()


async def test_only_the_key_holder_updates_a_name(helper: str) -> None:
    backend = HttpBackend(helper)
    name = log_name(public_key(KEY), G)
    await backend.ns_update(name, sign_head(KEY, name, 5, b"", False))
    # Someone else's signature on our name.
    with pytest.raises(BackendError, match="403"):
        await backend.ns_update(name, sign_head(Ed25519PrivateKey.generate(), name, 6, b"", False))
    # Our own, older record: a rollback.
    with pytest.raises(BackendError, match="409"):
        await backend.ns_update(name, sign_head(KEY, name, 4, b"", False))
    with pytest.raises(BackendError, match="400"):
        await backend.ns_update("not-a-log-name", sign_head(KEY, name, 9, b"", False))
    assert await backend.ns_fetch(name) == sign_head(KEY, name, 5, b"", False)
    assert await backend.ns_fetch(log_name(b"\x01" * 32, G)) is None
    await backend.aclose_connection()


async def raw(url: str, data: bytes) -> bytes:
    """Send ``data`` and read until the helper closes (every request here makes it close)."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(data)
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


async def test_bad_requests_get_clear_errors(helper: str) -> None:
    with trio.fail_after(10):
        assert b" 400 " in await raw(
            helper,
            b"POST /twirp/vac.cas.CAS/Get HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
            b"Content-Length: 3\r\n\r\n\xff\xff\xff",
        )
        assert b" 413 " in await raw(
            helper, b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n"
        )
        assert b" 405 " in await raw(
            helper, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        assert b" 404 " in await raw(
            helper,
            b"POST /nope HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        assert b" 400 " in await raw(helper, b"garbage\r\n\r\n")
        assert b" 431 " in await raw(
            helper, b"POST / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
        )


async def test_rate_limit(tmp_path: Path, nursery: trio.Nursery) -> None:
    listeners = await nursery.start(
        functools.partial(
            serve_helper,
            str(tmp_path / "s"),
            "127.0.0.1",
            0,
            limits=HelperLimits(requests_per_second=1, burst=5),
        )
    )
    backend = HttpBackend(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}")
    for _ in range(5):
        await backend.cas_get(b"\x00" * 32)
    with pytest.raises(BackendError, match="429"):
        await backend.cas_get(b"\x00" * 32)
    await backend.aclose_connection()


async def test_helper_down_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="unreachable"):
        await HttpBackend("http://127.0.0.1:1").cas_get(b"\x00" * 32)
