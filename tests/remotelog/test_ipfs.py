"""The IPFS backend (Kubo RPC API) against real js-ipfs nodes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import LogReader, LogSettings, LogWriter
from mvds_node.remotelog._format import address_of, public_key
from mvds_node.remotelog._ipfs import IpfsBackend, cid_of
from mvds_node.sync import encode_message, message_id

from .services import ipfs_node

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()
WRITER = public_key(KEY)


def messages(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (message_id(G, i + 1, b"i%d" % i), encode_message(G, i + 1, b"i%d" % i)) for i in range(n)
    ]


async def test_one_node_writer_restarts_and_reader_catches_up(tmp_path: Path) -> None:
    settings = LogSettings(page_size=8, inline=3)
    with trio.fail_after(120):
        async with ipfs_node(tmp_path / "a") as (url, _):
            backend = IpfsBackend(url)
            assert await backend.cas_get(address_of(b"nothing stored")) is None
            address = await backend.cas_add(b"block")
            assert cid_of(address).startswith("bafkrei")
            assert await backend.cas_get(address) == b"block"
            await LogWriter(backend, KEY, G, settings=settings).append(messages(20))
            # A new writer process reads its own log back from IPNS and goes on.
            again = IpfsBackend(url)
            writer = LogWriter(again, KEY, G, settings=settings)
            await writer.append(messages(25)[20:])
            assert writer.seq == 2
            own_id = await again.own_ipns_id(WRITER.hex())
            reader_backend = IpfsBackend(url, ipns_ids={WRITER.hex(): own_id})
            reader = LogReader(reader_backend, WRITER, G, settings=settings)
            result = await reader.poll(lambda m: False)
            assert result.messages == [w for _, w in messages(25)]
            for b in (backend, again, reader_backend):
                await b.aclose_connection()


async def test_reader_node_fetches_name_and_content_over_ipfs(tmp_path: Path) -> None:
    settings = LogSettings(page_size=8, inline=2)
    with trio.fail_after(180):
        async with (
            ipfs_node(tmp_path / "a", online=True) as (url_a, addr_a),
            ipfs_node(tmp_path / "b", online=True) as (url_b, _),
        ):
            writer_backend = IpfsBackend(url_a)
            await LogWriter(writer_backend, KEY, G, settings=settings).append(messages(12))
            ipns_id = await writer_backend.own_ipns_id(WRITER.hex())
            await writer_backend.aclose_connection()  # the writer is gone; its IPFS node stays
            reader_backend = IpfsBackend(url_b, ipns_ids={WRITER.hex(): ipns_id})
            await reader_backend._json("swarm/connect", arg=addr_a)
            reader = LogReader(reader_backend, WRITER, G, settings=settings)
            # The first resolve of a name B never saw subscribes B to it (IPNS over pubsub) and
            # finds nothing yet; the record arrives from A, and a later poll finds it. Bounded.
            for _ in range(40):
                result = await reader.poll(lambda m: False)
                if result.messages:
                    break
                await trio.sleep(0.5)
            assert result.messages == [w for _, w in messages(12)]
            await reader_backend.aclose_connection()
