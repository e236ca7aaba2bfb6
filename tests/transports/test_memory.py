"""MemoryHub/MemoryTransport: delivery, bounds, seeded loss, and the closed contract."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mvds_node.errors import LocalProtocolError, TransportClosed
from mvds_node.transports import (
    MemoryHub,
    MemoryTransport,
    Ping,
    Transport,
    encode_frame,
    memory_transport_pair,
)

PACKET = encode_frame(Ping(1))


async def test_pair_exchanges_both_ways() -> None:
    with trio.fail_after(5):
        a, b = memory_transport_pair()
        assert isinstance(a, Transport)
        assert a.reliable and a.max_latency == 0.0
        await a.send(b"b", PACKET)
        await b.send(b"a", b"any bytes at all")
        assert await b.receive() == (b"a", PACKET)
        assert await a.receive() == (b"b", b"any bytes at all")
        await a.aclose()
        await b.aclose()


async def test_receive_blocks_until_a_packet_arrives() -> None:
    with trio.fail_after(5):
        a, b = memory_transport_pair()
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                await trio.testing.wait_all_tasks_blocked()
                await a.send(b"b", PACKET)

            nursery.start_soon(later)
            assert await b.receive() == (b"a", PACKET)


async def test_full_buffer_and_unknown_peer_drop_without_waiting() -> None:
    with trio.fail_after(5):
        hub = MemoryHub(buffer_size=2)
        a, b = hub.transport(b"a"), hub.transport(b"b")
        for _ in range(5):
            await a.send(b"b", PACKET)  # never blocks
        await a.send(b"nobody", PACKET)
        assert hub.statistics().delivered == 2
        assert hub.statistics().dropped == 4
        assert b.receive_nowait() == (b"a", PACKET)
        assert b.receive_nowait() == (b"a", PACKET)
        with pytest.raises(trio.WouldBlock):
            b.receive_nowait()


async def test_seeded_loss_is_reproducible() -> None:
    with trio.fail_after(5):

        async def run(seed: int) -> list[bytes]:
            hub = MemoryHub(loss=0.5, seed=seed, buffer_size=1000)
            a, b = hub.transport(b"a"), hub.transport(b"b")
            assert not a.reliable
            for n in range(200):
                await a.send(b"b", n.to_bytes(2, "big"))
            got = []
            while True:
                try:
                    got.append(b.receive_nowait()[1])
                except trio.WouldBlock:
                    return got

        first, second = await run(7), await run(7)
        assert first == second
        assert 60 < len(first) < 140
        assert await run(8) != first


async def test_closed_contract() -> None:
    with trio.fail_after(5):
        hub = MemoryHub()
        a, b = hub.transport(b"a"), hub.transport(b"b")
        async with trio.open_nursery() as nursery:

            async def blocked_receive() -> None:
                with pytest.raises(TransportClosed):
                    await b.receive()

            nursery.start_soon(blocked_receive)
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose()
        await b.aclose()  # idempotent
        with pytest.raises(TransportClosed):
            await b.send(b"a", PACKET)
        with pytest.raises(TransportClosed):
            b.receive_nowait()
        await a.send(b"b", PACKET)  # to a closed endpoint: dropped, not an error
        assert hub.statistics().dropped == 1
        # The ID is free again once its endpoint closed.
        assert isinstance(hub.transport(b"b"), MemoryTransport)


async def test_cancelled_aclose_still_closes() -> None:
    with trio.fail_after(5):
        a, _ = memory_transport_pair()
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.aclose()
        with pytest.raises(TransportClosed):
            await a.send(b"b", PACKET)


async def test_misuse() -> None:
    hub = MemoryHub(max_payload=10)
    a = hub.transport(b"a")
    with pytest.raises(LocalProtocolError):
        hub.transport(b"a")
    with trio.fail_after(5), pytest.raises(LocalProtocolError):
        await a.send(b"a", bytes(11))
    with pytest.raises(ValueError, match="buffer_size"):
        MemoryHub(buffer_size=0)
    with pytest.raises(ValueError, match="loss"):
        MemoryHub(loss=1.5)
