"""The NATS JetStream backend against a real nats-server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, LogReader, LogSettings, LogWriter, log_name
from mvds_node.remotelog._format import public_key, sign_head
from mvds_node.remotelog._nats import CHUNK, NatsBackend
from mvds_node.sync import encode_message, message_id

from .services import nats_server

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()


def messages(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (message_id(G, i + 1, b"n%d" % i), encode_message(G, i + 1, b"n%d" % i)) for i in range(n)
    ]


async def test_writer_stops_reader_catches_up(tmp_path: Path) -> None:
    async with nats_server(tmp_path) as url:
        settings = LogSettings(page_size=10, inline=4)
        writer_backend = NatsBackend(url)
        await LogWriter(writer_backend, KEY, G, settings=settings).append(messages(35))
        await writer_backend.aclose_connection()
        reader_backend = NatsBackend(url)
        reader = LogReader(reader_backend, public_key(KEY), G, settings=settings)
        result = await reader.poll(lambda m: False)
        assert result.messages == [w for _, w in messages(35)]
        await reader_backend.aclose_connection()


async def test_object_store_chunks_and_kv_compare_and_set(tmp_path: Path) -> None:
    async with nats_server(tmp_path) as url:
        backend = NatsBackend(url)
        big = os.urandom(3 * CHUNK + 77)  # several chunks
        address = await backend.cas_add(big)
        assert await backend.cas_add(big) == address  # content addressed: stored once
        assert await backend.cas_get(address) == big
        assert await backend.cas_get(b"\x00" * 32) is None
        name = log_name(public_key(KEY), G)
        heard: list[str] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def listen(task_status: trio.TaskStatus[None]) -> None:
                    async with NatsBackend(url).watch() as updates:
                        task_status.started()
                        async for updated in updates:
                            heard.append(updated)
                            return

                await backend.ns_fetch(name)  # creates the streams before anyone listens
                await nursery.start(listen)
                await backend.ns_update(name, sign_head(KEY, name, 2, b"", False))
        assert heard == [name]
        with pytest.raises(BackendError, match="not above"):
            await backend.ns_update(name, sign_head(KEY, name, 1, b"", False))
        await backend.ns_update(name, sign_head(KEY, name, 3, b"x", False))
        assert await backend.ns_fetch(name) == sign_head(KEY, name, 3, b"x", False)
        await backend.aclose_connection()


async def test_server_down_is_a_backend_error(tmp_path: Path) -> None:
    async with nats_server(tmp_path) as url:
        backend = NatsBackend(url)
        writer = LogWriter(backend, KEY, G, settings=LogSettings(page_size=5, inline=0))
        await writer.append(messages(3))
    with pytest.raises(BackendError):
        await writer.append(messages(6))
    assert writer.seq == 1


class AnswerLost:
    """A backend whose next NS update is written but answered with a failure, as when the
    server dies between writing it and answering."""

    def __init__(self, backend: NatsBackend) -> None:
        self.backend = backend
        self.lose = 0

    async def ns_update(self, name: str, record: bytes) -> None:
        await self.backend.ns_update(name, record)
        if self.lose:
            self.lose -= 1
            raise BackendError("nats: the connection broke")

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)


async def test_an_update_whose_answer_was_lost_is_neither_stuck_nor_doubled(
    tmp_path: Path,
) -> None:
    async with nats_server(tmp_path) as url:
        settings = LogSettings(page_size=4, inline=2)
        backend = AnswerLost(NatsBackend(url))
        writer = LogWriter(backend, KEY, G, settings=settings)  # type: ignore[arg-type]
        sent = messages(30)
        await writer.append(sent[:5])
        backend.lose = 1
        with pytest.raises(BackendError):
            await writer.append(sent[5:12])  # landed, pages frozen, but reported failed
        await writer.append(sent[5:20])  # the same again, with more
        await writer.append(sent[20:])
        await backend.backend.aclose_connection()
        reading = NatsBackend(url)
        reader = LogReader(reading, public_key(KEY), G, settings=settings)
        result = await reader.poll(lambda m: False)
        await reading.aclose_connection()
        assert sorted(result.messages) == sorted(w for _, w in sent)  # each once
        assert writer.seq == 4
