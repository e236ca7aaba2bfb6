"""The Redis backend against a real redis-server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, LogReader, LogSettings, LogWriter, log_name
from mvds_node.remotelog._format import public_key, sign_head
from mvds_node.remotelog._redis import RedisBackend
from mvds_node.sync import encode_message, message_id

from . import services
from .services import redis_server

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()


def messages(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (message_id(G, i + 1, b"r%d" % i), encode_message(G, i + 1, b"r%d" % i)) for i in range(n)
    ]


async def test_writer_stops_reader_catches_up(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as url:
        settings = LogSettings(page_size=10, inline=4)
        writer_backend = RedisBackend(url)
        await LogWriter(writer_backend, KEY, G, settings=settings).append(messages(35))
        await writer_backend.aclose_connection()  # the writer is gone
        reader_backend = RedisBackend(url)
        reader = LogReader(reader_backend, public_key(KEY), G, settings=settings)
        result = await reader.poll(lambda m: False)
        assert result.messages == [w for _, w in messages(35)]
        await reader_backend.aclose_connection()


async def test_ns_compare_and_set_and_watch(tmp_path: Path) -> None:
    async with redis_server(tmp_path) as url:
        backend = RedisBackend(url)
        name = log_name(public_key(KEY), G)
        heard: list[str] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def listen(task_status: trio.TaskStatus[None]) -> None:
                    async with RedisBackend(url).watch() as updates:
                        task_status.started()  # subscribed
                        async for updated in updates:
                            heard.append(updated)
                            return

                await nursery.start(listen)
                await backend.ns_update(name, sign_head(KEY, name, 3, b"", False))
        assert heard == [name]
        with pytest.raises(BackendError, match="not above"):
            await backend.ns_update(name, sign_head(KEY, name, 2, b"", False))
        assert await backend.ns_fetch(name) == sign_head(KEY, name, 3, b"", False)
        assert await backend.cas_get(b"\x00" * 32) is None
        await backend.aclose_connection()


async def test_server_down_and_back(tmp_path: Path) -> None:
    settings = LogSettings(page_size=5, inline=0)
    async with redis_server(tmp_path / "a") as url:
        backend = RedisBackend(url)
        writer = LogWriter(backend, KEY, G, settings=settings)
        await writer.append(messages(7))
    # The server is gone: appends fail and change nothing.
    with pytest.raises(BackendError):
        await writer.append(messages(9))
    assert writer.seq == 1
    # It comes back (empty: it kept nothing on disk); the writer starts its log again.
    async with redis_server(tmp_path / "b") as url2:
        backend.port = int(url2.rsplit(":", 1)[1])
        await writer.append(messages(9))
        await backend.aclose_connection()


async def test_nodes_over_redis_hear_updates_at_once(tmp_path: Path) -> None:
    from dataclasses import replace

    from mvds_node.node import Identity, NodeConfig, open_node
    from mvds_node.node._config import RemoteLogConfig
    from tests.node.helpers import config_for

    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    async with redis_server(tmp_path / "redis") as url:

        def cfg(name: str, me: Identity, other_name: str, other: Identity) -> NodeConfig:
            base = config_for(tmp_path, name, me, {other_name: other})
            return replace(
                base,
                listen=None,
                peers=tuple(replace(p, log_key=keys[p.key]) for p in base.peers),
                # Polls an hour apart: only Redis pub/sub can make this test pass in time.
                remote_log=RemoteLogConfig(url=url, page_size=8, inline=2, poll_seconds=3600),
            )

        with trio.fail_after(20):
            async with (
                open_node(cfg("alice", alice, "bob", bob), identity=alice) as a,
                open_node(cfg("bob", bob, "alice", alice), identity=bob) as b,
                b.messages() as inbox,
            ):
                await a.send("chat", b"over redis")
                message = await inbox.receive()
                assert (message.body, message.via) == (b"over redis", alice.public_key)


async def test_a_server_whose_port_was_taken_starts_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test servers' ports are picked free, yet another process may take one first."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = [taken.getsockname()[1]]
        free_port = services._free_port
        monkeypatch.setattr(services, "_free_port", lambda: picks.pop() if picks else free_port())
        async with redis_server(tmp_path) as url:
            assert not picks, "the taken port was tried first"
            assert url != f"redis://127.0.0.1:{taken.getsockname()[1]}"
            backend = RedisBackend(url)
            address = await backend.cas_add(b"stored")
            assert await backend.cas_get(address) == b"stored"
            await backend.aclose_connection()
