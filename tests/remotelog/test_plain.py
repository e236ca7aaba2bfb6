"""The plain mode: the NS holds the spec's bare RemoteLog, for other implementations to read."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, FileBackend, LogReader, LogSettings, LogWriter
from mvds_node.remotelog._format import log_name, public_key
from mvds_node.remotelog._redis import RedisBackend
from mvds_node.remotelog.proto import remotelog_pb2
from mvds_node.sync import encode_message, message_id

from .services import redis_server

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()
PLAIN = LogSettings(page_size=4, inline=2, signed=False)


def messages(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [
        (message_id(G, i + 1, b"p%d" % i), encode_message(G, i + 1, b"p%d" % i))
        for i in range(start, start + n)
    ]


async def test_plain_log_is_the_spec_message(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "store")
    await LogWriter(backend, KEY, G, settings=PLAIN).append(messages(10))
    record = await backend.ns_fetch(log_name(public_key(KEY), G))
    assert record is not None
    spec = remotelog_pb2.RemoteLog.FromString(record)  # what any 3/REMOTE-LOG reader expects
    assert [p.remoteHash for p in spec.pair] == [m for m, _ in reversed(messages(10)[8:])]
    assert len(spec.tail) == 32
    reader = LogReader(backend, public_key(KEY), G, settings=PLAIN)
    result = await reader.poll(lambda m: False)
    assert result.messages == [w for _, w in messages(10)]
    assert (await reader.poll(lambda m: True)).messages == []
    # A restarted plain writer goes on from what the NS holds.
    await LogWriter(backend, KEY, G, settings=PLAIN).append(messages(3, start=10))
    result = await reader.poll({m for m, _ in messages(10)}.__contains__)
    assert result.messages == [w for _, w in messages(3, start=10)]


def test_plain_logs_are_never_sealed() -> None:
    with pytest.raises(ValueError, match="sealed"):
        LogWriter(FileBackend("/nonexistent"), KEY, G, settings=PLAIN, group_key=b"k" * 32)


async def test_plain_log_on_redis(tmp_path: Path) -> None:
    async with redis_server(tmp_path / "redis") as url:
        backend = RedisBackend(url)
        writer = LogWriter(backend, KEY, G, settings=PLAIN)
        await writer.append(messages(5))
        await writer.append(messages(2, start=5))  # no sequence to compare: plain overwrite
        result = await LogReader(backend, public_key(KEY), G, settings=PLAIN).poll(lambda m: False)
        assert result.messages == [w for _, w in messages(7)]
        await backend.aclose_connection()


async def test_our_helper_refuses_unsigned_heads(tmp_path: Path) -> None:
    import functools

    import trio

    from mvds_node.remotelog._http import HttpBackend, serve_helper

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(serve_helper, str(tmp_path / "h"), "127.0.0.1", 0)
        )
        backend = HttpBackend(f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}")
        with pytest.raises(BackendError, match="403"):
            await LogWriter(backend, KEY, G, settings=PLAIN).append(messages(1))
        await backend.aclose_connection()
        nursery.cancel_scope.cancel()
