"""TcpTransport over real sockets on 127.0.0.1: exchange, refusals, hostile input, reconnecting.

Timing-sensitive behaviour (backoff, timeouts, a stalled peer) is tested on a memory network
with a mock clock in ``test_tcp_memory.py``; here everything waits on events, never on sleeps.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from mvds_node.errors import LocalProtocolError, TransportClosed
from mvds_node.transports import (
    DialFailed,
    InputRejected,
    InternalError,
    Keypair,
    NoiseStream,
    PacketDropped,
    PeerDown,
    PeerUp,
    Ping,
    ReconnectPolicy,
    SyncFrame,
    TcpTransport,
    Transport,
    encode_frame,
)
from mvds_node.transports._framing import FrameDecoder

from .helpers import next_event

ALICE = Keypair.generate()
BOB = Keypair.generate()
MALLORY = Keypair.generate()
FAST = ReconnectPolicy(initial=0.01, maximum=0.05, jitter=0.0)


@asynccontextmanager
async def serving(transport: TcpTransport, port: int = 0) -> AsyncIterator[int]:
    """Run ``transport`` listening on 127.0.0.1 and yield its port; close it afterwards."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(transport.serve, "127.0.0.1", port)
        try:
            yield listeners[0].socket.getsockname()[1]
        finally:
            await transport.aclose()


async def test_two_transports_exchange_packets_both_ways() -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE, allow={BOB.public})
        b = TcpTransport(BOB, reconnect=FAST)
        assert isinstance(a, Transport)
        assert a.reliable and a.public_key == ALICE.public
        async with serving(a) as port, serving(b):
            b.dial(ALICE.public, "127.0.0.1", port)
            up_a = await next_event(a, PeerUp)
            up_b = await next_event(b, PeerUp)
            assert (up_a.peer, up_a.outbound) == (BOB.public, False)
            assert (up_b.peer, up_b.outbound, up_b.address) == (
                ALICE.public,
                True,
                f"127.0.0.1:{port}",
            )

            small = encode_frame(Ping(42))
            big = encode_frame(SyncFrame(bytes(range(256)) * 1200))  # ~300 kB: many Noise chunks
            await a.send(BOB.public, small)
            await a.send(BOB.public, big)
            await b.send(ALICE.public, small)
            assert await b.receive() == (ALICE.public, small)
            assert await b.receive() == (ALICE.public, big)
            assert await a.receive() == (BOB.public, small)
            assert a.connected_peers() == {BOB.public}
            stats = a.statistics()
            assert (stats.peers, stats.connections, stats.packets_sent) == (1, 1, 2)


async def test_unknown_key_is_refused() -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE)  # allows nobody
        m = TcpTransport(MALLORY, reconnect=FAST)
        async with serving(a) as port, serving(m):
            m.dial(ALICE.public, "127.0.0.1", port)
            rejected = await next_event(a, InputRejected)
            assert rejected.peer == MALLORY.public
            assert rejected.reason == "unknown-key"
            assert a.connected_peers() == frozenset()
            # Mallory saw the handshake finish (XX refuses the initiator after message 3) and
            # then lose the connection at once.
            await next_event(m, PeerDown, peer=ALICE.public)


async def test_allow_callable_and_accept_unknown() -> None:
    with trio.fail_after(10):
        asked: list[bytes] = []

        def remember_and_allow_bob(key: bytes) -> bool:
            asked.append(key)
            return key == BOB.public

        a = TcpTransport(ALICE, allow=remember_and_allow_bob)
        b = TcpTransport(BOB, reconnect=FAST)
        async with serving(a) as port, serving(b):
            b.dial(ALICE.public, "127.0.0.1", port)
            await next_event(a, PeerUp, peer=BOB.public)
            assert asked == [BOB.public]
        c = TcpTransport(ALICE, accept_unknown=True)
        m = TcpTransport(MALLORY, reconnect=FAST)
        async with serving(c) as port, serving(m):
            m.dial(ALICE.public, "127.0.0.1", port)
            await next_event(c, PeerUp, peer=MALLORY.public)


async def test_dialling_the_wrong_key_fails_before_revealing_ours() -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE, accept_unknown=True)
        b = TcpTransport(BOB, reconnect=FAST)
        async with serving(a) as port, serving(b):
            b.dial(MALLORY.public, "127.0.0.1", port)  # expects Mallory, Alice answers
            failed = await next_event(b, DialFailed)
            assert failed.reason == "wrong-key"
            assert failed.peer == MALLORY.public
            assert ALICE.public.hex() in failed.detail
            # Alice never learned who dialled: message 3 was not sent.
            rejected = await next_event(a, InputRejected)
            assert rejected.peer is None and rejected.reason == "handshake-failed"


async def test_garbage_from_a_raw_socket_does_not_kill_the_listener() -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE, allow={BOB.public}, handshake_timeout=5)
        rng = random.Random(1)
        async with serving(a) as port:
            for size in (1, 31, 200, 5000):
                raw = await trio.open_tcp_stream("127.0.0.1", port)
                # A u16 length that matches, so the garbage reaches the Noise layer...
                await raw.send_all(size.to_bytes(2, "big") + rng.randbytes(size))
                rejected = await next_event(a, InputRejected)
                assert rejected.reason == "handshake-failed"
                assert rejected.peer is None
                await raw.aclose()
            # ...and garbage that stops half-way, then hangs up.
            raw = await trio.open_tcp_stream("127.0.0.1", port)
            await raw.send_all(b"\xff\xff" + rng.randbytes(100))
            await raw.aclose()
            rejected = await next_event(a, InputRejected)
            assert "connection lost" in rejected.detail

            # The listener still serves real peers.
            b = TcpTransport(BOB, reconnect=FAST)
            async with serving(b):
                b.dial(ALICE.public, "127.0.0.1", port)
                await next_event(a, PeerUp, peer=BOB.public)
                await b.send(ALICE.public, encode_frame(Ping(1)))
                assert await a.receive() == (BOB.public, encode_frame(Ping(1)))


async def test_a_low_order_ephemeral_from_a_stranger_is_refused_and_the_listener_lives() -> None:
    """34 bytes from anyone: ``00 20`` and 32 zero bytes (a low-order X25519 key) as message 1.
    The responder must refuse it as a bad handshake, not die computing its reply."""
    from .test_noise import LOW_ORDER_POINTS

    with trio.fail_after(10):
        a = TcpTransport(ALICE, allow={BOB.public})
        async with serving(a) as port:
            for point in LOW_ORDER_POINTS:
                raw = await trio.open_tcp_stream("127.0.0.1", port)
                await raw.send_all(b"\x00\x20" + point)
                rejected = await next_event(a, InputRejected)
                assert (rejected.peer, rejected.reason) == (None, "handshake-failed")
                assert "ephemeral key" in rejected.detail
                assert await raw.receive_some() == b""  # Alice hung up without answering
                await raw.aclose()
            b = TcpTransport(BOB, reconnect=FAST)
            async with serving(b):
                b.dial(ALICE.public, "127.0.0.1", port)
                await next_event(a, PeerUp, peer=BOB.public)
                await b.send(ALICE.public, encode_frame(Ping(2)))
                assert await a.receive() == (BOB.public, encode_frame(Ping(2)))


HOSTILE = {
    "unknown-version": b"MV\x09\x01\x00\x00\x00\x00",
    "unknown-mode": b"MV\x01\x09\x00\x00\x00\x00",
    "length-over-limit": b"MV\x01\x01\xff\xff\xff\xff",
    "bad-magic": random.Random(2).randbytes(64).replace(b"M", b"m"),
    "malformed-body": b"MV\x01\x03\x00\x00\x00\x01\x01",
}


@asynccontextmanager
async def _alice_bob_and_mallory() -> AsyncIterator[tuple[TcpTransport, TcpTransport, NoiseStream]]:
    """Alice serving, Bob connected to her, and Mallory (allowed in) through the handshake."""
    a = TcpTransport(ALICE, allow={BOB.public, MALLORY.public})
    b = TcpTransport(BOB, reconnect=FAST)
    async with serving(a) as port, serving(b):
        b.dial(ALICE.public, "127.0.0.1", port)
        await next_event(a, PeerUp, peer=BOB.public)
        raw = await trio.open_tcp_stream("127.0.0.1", port)
        yield a, b, await NoiseStream.handshake(raw, MALLORY, initiator=True)


async def _bob_is_served(a: TcpTransport, b: TcpTransport, n: int) -> None:
    """Bob's own connection is untouched: his packet reaches Alice, and only he is connected."""
    await b.send(ALICE.public, encode_frame(Ping(n)))
    assert await a.receive() == (BOB.public, encode_frame(Ping(n)))
    assert a.connected_peers() == {BOB.public}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_hostile_frames_close_only_that_connection(kind: str) -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE, allow={BOB.public, MALLORY.public})
        b = TcpTransport(BOB, reconnect=FAST)
        async with serving(a) as port, serving(b):
            b.dial(ALICE.public, "127.0.0.1", port)
            await next_event(a, PeerUp, peer=BOB.public)
            # Mallory is allowed in, completes the handshake, then sends a bad frame after a
            # good one.
            raw = await trio.open_tcp_stream("127.0.0.1", port)
            mallory = await NoiseStream.handshake(raw, MALLORY, initiator=True)
            await mallory.send_all(encode_frame(Ping(5)) + HOSTILE[kind])
            assert await a.receive() == (MALLORY.public, encode_frame(Ping(5)))
            rejected = await next_event(a, InputRejected)
            assert (rejected.peer, rejected.reason) == (MALLORY.public, f"frame:{kind}")
            down = await next_event(a, PeerDown, peer=MALLORY.public)
            assert "rejected input" in down.reason
            assert await mallory.receive_some() == b""  # Alice hung up on her
            await mallory.aclose()
            await _bob_is_served(a, b, 6)


_real_receive_data = FrameDecoder.receive_data


def _buggy_receive_data(self: FrameDecoder, data: bytes | bytearray | memoryview) -> None:
    """The frame decoder with a bug that a marker in the stream sets off."""
    if b"BOOM" in bytes(data):
        raise RuntimeError("a bug in the decoder")
    _real_receive_data(self, data)


async def test_a_bug_on_one_inbound_connection_ends_only_that_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FrameDecoder, "receive_data", _buggy_receive_data)
    with trio.fail_after(10):
        async with _alice_bob_and_mallory() as (a, b, mallory):
            await mallory.send_all(encode_frame(SyncFrame(b"BOOM")))
            # The connection ends (PeerDown says why), then the bug is reported.
            down = await next_event(a, PeerDown, peer=MALLORY.public)
            assert down.reason == "internal error: RuntimeError"
            error = await next_event(a, InternalError)
            assert error.where.startswith("tcp connection from 127.0.0.1:")
            assert error.error == "RuntimeError: a bug in the decoder"
            assert "receive_data" in error.traceback
            assert await mallory.receive_some() == b""  # that connection is closed
            await mallory.aclose()
            await _bob_is_served(a, b, 7)


async def test_a_bug_on_an_outbound_connection_is_reported_and_redialled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FrameDecoder, "receive_data", _buggy_receive_data)
    with trio.fail_after(10):
        a = TcpTransport(ALICE, allow={BOB.public})
        b = TcpTransport(BOB, reconnect=FAST)
        async with serving(a) as port, serving(b):
            b.dial(ALICE.public, "127.0.0.1", port)
            await next_event(a, PeerUp, peer=BOB.public)
            await a.send(BOB.public, encode_frame(SyncFrame(b"BOOM")))
            await next_event(b, PeerDown, peer=ALICE.public)
            error = await next_event(b, InternalError)
            assert error.where == f"tcp connection to 127.0.0.1:{port}"
            # Bob's dial loop goes on: he reconnects and the connection works.
            await next_event(b, PeerUp, peer=ALICE.public)
            await a.send(BOB.public, encode_frame(SyncFrame(b"fine")))
            assert await b.receive() == (ALICE.public, encode_frame(SyncFrame(b"fine")))


async def test_bad_ciphertext_closes_the_connection() -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE, allow={MALLORY.public})
        async with serving(a) as port:
            raw = await trio.open_tcp_stream("127.0.0.1", port)
            mallory = await NoiseStream.handshake(raw, MALLORY, initiator=True)
            await next_event(a, PeerUp, peer=MALLORY.public)
            await raw.send_all(b"\x00\x20" + bytes(32))  # a "Noise message" with a bad tag
            rejected = await next_event(a, InputRejected)
            assert (rejected.peer, rejected.reason) == (MALLORY.public, "bad-ciphertext")
            await next_event(a, PeerDown, peer=MALLORY.public)
            await mallory.aclose()


async def test_reconnect_after_the_listener_restarts() -> None:
    with trio.fail_after(10):
        b = TcpTransport(BOB, reconnect=FAST)
        async with serving(b):
            a1 = TcpTransport(ALICE, allow={BOB.public})
            async with serving(a1) as port:
                b.dial(ALICE.public, "127.0.0.1", port)
                await next_event(b, PeerUp, peer=ALICE.public)
            # a1 is closed: Bob notices, retries, and fails while nobody listens.
            await next_event(b, PeerDown, peer=ALICE.public)
            await next_event(b, DialFailed, peer=ALICE.public, reason="unreachable")
            # Alice comes back on the same port (same key, new process in real life).
            a2 = TcpTransport(ALICE, allow={BOB.public})
            async with serving(a2, port):
                await next_event(b, PeerUp, peer=ALICE.public)
                await b.send(ALICE.public, encode_frame(Ping(9)))
                assert await a2.receive() == (BOB.public, encode_frame(Ping(9)))


async def test_send_contract() -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE)
        async with serving(a):
            await a.send(BOB.public, encode_frame(Ping(1)))
            assert await next_event(a, PacketDropped) == PacketDropped(BOB.public, "no-route")
            with pytest.raises(LocalProtocolError, match="not a frame"):
                await a.send(BOB.public, b"not a frame")
            with pytest.raises(LocalProtocolError, match="exceeds"):
                await a.send(BOB.public, bytes(a.max_payload + 1))
            with pytest.raises(LocalProtocolError, match="already running"):
                await a.serve("127.0.0.1", 0)
            with pytest.raises(LocalProtocolError):
                a.dial(b"short", "127.0.0.1", 1)
        # serving() closed it.
        with pytest.raises(TransportClosed):
            await a.send(BOB.public, encode_frame(Ping(1)))
        with pytest.raises(TransportClosed):
            await a.receive()
        with pytest.raises(TransportClosed):
            a.dial(BOB.public, "127.0.0.1", 1)
        with pytest.raises(TransportClosed):
            await a.serve_listeners([])
        assert [event async for event in a.events] == []  # the channel ended


async def test_aclose_wakes_a_blocked_receive_and_ends_serve() -> None:
    with trio.fail_after(10):
        a = TcpTransport(ALICE)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.serve, "127.0.0.1", 0)

            async def blocked() -> None:
                with pytest.raises(TransportClosed):
                    await a.receive()

            nursery.start_soon(blocked)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await a.aclose()  # even cancelled, it closes
        # The nursery exited: serve returned after aclose.


async def _held_openings(port: int, count: int, source: str) -> list[trio.SocketStream]:
    """``count`` connections from ``source`` that never send a byte (a stranger holding slots)."""
    return [
        await trio.open_tcp_stream("127.0.0.1", port, local_address=source) for _ in range(count)
    ]


async def test_one_address_holds_at_most_its_share_of_handshakes() -> None:
    """A stranger opening connections and sending nothing from one address gets
    ``max_handshakes_per_address`` of them; the rest are closed at once, and a peer on another
    address still gets in."""
    with trio.fail_after(10):
        a = TcpTransport(
            ALICE, allow={BOB.public}, max_handshakes_per_address=4, max_inbound_connections=64
        )
        async with serving(a) as port:
            held = await _held_openings(port, 10, "127.0.0.9")
            for _ in range(6):
                rejected = await next_event(a, InputRejected)
                assert rejected.reason == "too-many-handshakes"
                assert "127.0.0.9" in rejected.address
            b = TcpTransport(BOB, reconnect=FAST)
            async with serving(b):
                b.dial(ALICE.public, "127.0.0.1", port)
                await next_event(a, PeerUp, peer=BOB.public)
            # Exactly four were kept waiting for their handshake; the other six were hung up on.
            closed = 0
            for raw in held:
                with trio.move_on_after(0.05):
                    if await raw.receive_some() == b"":
                        closed += 1
                await raw.aclose()
            assert closed == 6


async def test_strangers_filling_every_slot_do_not_lock_a_peer_out() -> None:
    """Every inbound slot taken by silent strangers on many addresses: a peer's connection
    evicts the oldest unfinished handshake and completes; completed ones are never evicted."""
    with trio.fail_after(10):
        a = TcpTransport(
            ALICE,
            allow={BOB.public, MALLORY.public},
            max_inbound_connections=8,
            max_handshakes_per_address=2,
        )
        async with serving(a) as port:
            # Mallory completes her handshake first: her connection must survive what follows.
            raw = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
            mallory = await NoiseStream.handshake(raw, MALLORY, initiator=True)
            await next_event(a, PeerUp, peer=MALLORY.public)
            held: list[trio.SocketStream] = []
            for n in range(7):
                held += await _held_openings(port, 1, f"127.0.1.{n + 1}")
            # Every slot is now taken (Mallory plus seven handshakes); Bob still gets in.
            b = TcpTransport(BOB, reconnect=FAST)
            async with serving(b):
                b.dial(ALICE.public, "127.0.0.1", port)
                evicted = await next_event(a, InputRejected)
                assert evicted.reason == "too-many-connections"
                assert "evicted" in evicted.detail
                await next_event(a, PeerUp, peer=BOB.public)
                await b.send(ALICE.public, encode_frame(Ping(7)))
                assert await a.receive() == (BOB.public, encode_frame(Ping(7)))
            await mallory.send_all(encode_frame(Ping(8)))
            assert await a.receive() == (MALLORY.public, encode_frame(Ping(8)))
            await mallory.aclose()
            for stream in held:
                await stream.aclose()
