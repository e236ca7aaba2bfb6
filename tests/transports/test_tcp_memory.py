"""TcpTransport on a memory network under MockClock: exact backoff times, timeouts, a stalled peer.

The transport takes ``open_stream`` and any listeners, so the same code that runs on sockets runs
here on memory stream pairs, where ``autojump_clock`` makes time exact and the tests instant.
A ``trio.sleep`` here is a stretch of virtual time in the story (a peer silent, a trickle of
bytes), never a wait for something to be ready: the clock jumps only once every task waits.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
import trio
import trio.testing

from mvds_node.transports import (
    DialFailed,
    FrameLimits,
    FrameMode,
    InputRejected,
    Keypair,
    NoiseStream,
    PacketDropped,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    ReconnectPolicy,
    SyncFrame,
    TcpTransport,
    decode_frame,
    encode_frame,
)

from .helpers import drain_events, next_event
from .memnet import MemoryNetwork

ALICE = Keypair.generate()
BOB = Keypair.generate()
CAROL = Keypair.generate()
MALLORY = Keypair.generate()
EXACT = ReconnectPolicy(initial=1.0, multiplier=2.0, maximum=8.0, jitter=0.0, stable_after=30.0)


def make(net: MemoryNetwork, key: Keypair, **options: object) -> TcpTransport:
    return TcpTransport(
        key,
        open_stream=net.open_stream,
        rng=random.Random(0),
        reconnect=options.pop("reconnect", EXACT),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running(
    transport: TcpTransport, net: MemoryNetwork, address: tuple[str, int] | None = None
) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        listeners = [] if address is None else [net.listen(*address)]
        await nursery.start(transport.serve_listeners, listeners)
        try:
            yield
        finally:
            await transport.aclose()


async def test_backoff_is_exponential_and_capped(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        b = make(net, BOB)
        async with running(b, net):
            b.dial(ALICE.public, "alice", 1)
            delays = [(await next_event(b, DialFailed)).retry_in for _ in range(6)]
            assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
            assert [t for t, _ in net.attempts] == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0]
            # Alice appears; Bob finds her at his next attempt, at t = 31 exactly.
            a = make(net, ALICE, allow={BOB.public})
            async with running(a, net, ("alice", 1)):
                await next_event(b, PeerUp, peer=ALICE.public)
                assert trio.current_time() == 31.0


async def test_jitter_stays_within_bounds() -> None:
    policy = ReconnectPolicy(initial=1.0, maximum=100.0, jitter=0.25)
    rng = random.Random(3)
    for failures in range(1, 12):
        base = min(100.0, 2.0 ** (failures - 1))
        delay = policy.delay(failures, rng)
        assert base * 0.75 <= delay <= base * 1.25
    assert policy.delay(10_000, rng) <= 125.0  # no float overflow on a long outage
    with pytest.raises(ValueError, match="reconnect policy"):
        ReconnectPolicy(initial=0.0)


async def test_refused_dialler_backs_off(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that completes the handshake and hangs up at once is not hammered."""
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE)  # allows nobody
        m = make(net, MALLORY)
        async with running(a, net, ("alice", 1)), running(m, net):
            m.dial(ALICE.public, "alice", 1)
            for _ in range(4):
                await next_event(a, InputRejected, reason="unknown-key")
            assert [t for t, _ in net.attempts] == [0.0, 1.0, 3.0, 7.0]


async def test_stable_connection_resets_backoff(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(200):
        net = MemoryNetwork()
        b = make(net, BOB)
        a = make(net, ALICE, allow={BOB.public})
        async with running(b, net), running(a, net, ("alice", 1)):
            b.dial(ALICE.public, "alice", 1)
            await next_event(b, PeerUp)
            await trio.sleep(40)  # virtual time (autojump clock): longer than stable_after
            a.forget(BOB.public)  # Alice hangs up on Bob
            await next_event(b, PeerDown)
            await next_event(b, PeerUp)  # redialled at once: no backoff after a stable one
            assert [t for t, _ in net.attempts] == [0.0, 40.0]


async def test_dial_timeout(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        net.hang.add(("alice", 1))
        b = make(net, BOB, handshake_timeout=5.0)
        async with running(b, net):
            b.dial(ALICE.public, "alice", 1)
            failed = await next_event(b, DialFailed)
            assert failed.reason == "timeout"
            assert trio.current_time() == 5.0


async def test_silent_inbound_connection_times_out(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE, handshake_timeout=3.0)
        async with running(a, net, ("alice", 1)):
            raw = await net.open_stream("alice", 1)  # connects, then says nothing
            rejected = await next_event(a, InputRejected)
            assert rejected.reason == "handshake-timeout"
            assert trio.current_time() == 3.0
            assert a.statistics().handshakes == 0
            await raw.aclose()


async def test_too_many_inbound_connections(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE, max_inbound_connections=1, handshake_timeout=3.0)
        async with running(a, net, ("alice", 1)):
            first = await net.open_stream("alice", 1)
            second = await net.open_stream("alice", 1)
            rejected = await next_event(a, InputRejected)
            assert rejected.reason == "too-many-connections"
            assert trio.current_time() == 0.0
            assert await second.receive_some() == b""  # closed at once
            await first.aclose()
            await second.aclose()


async def test_a_stalled_peer_does_not_stall_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Bob stops reading; sends to him drop once his queue is full, and Carol is unaffected."""
    with trio.fail_after(100):
        net = MemoryNetwork()
        net.lockstep_to.add(("bob", 1))  # no buffering: Alice's writer waits for Bob's reader
        a = make(net, ALICE, send_queue_size=4, event_queue_size=1000)
        # Bob's application never calls receive(): his one-packet inbound queue fills, his reader
        # stops reading, and the connection backs up to Alice.
        b = make(net, BOB, allow={ALICE.public}, receive_queue_size=1)
        c = make(net, CAROL, allow={ALICE.public})
        async with (
            running(a, net),
            running(b, net, ("bob", 1)),
            running(c, net, ("carol", 1)),
        ):
            a.dial(BOB.public, "bob", 1)
            a.dial(CAROL.public, "carol", 1)
            up = {(await next_event(a, PeerUp)).peer for _ in range(2)}
            assert up == {BOB.public, CAROL.public}
            await trio.testing.wait_all_tasks_blocked()

            packet = encode_frame(Ping(1))
            start = trio.current_time()
            for _ in range(20):
                await a.send(BOB.public, packet)
                await trio.testing.wait_all_tasks_blocked()
            await a.send(CAROL.public, packet)
            assert await c.receive() == (ALICE.public, packet)
            assert trio.current_time() == start  # nothing waited, not even virtually

            dropped = [e for e in drain_events(a) if isinstance(e, PacketDropped)]
            assert dropped
            assert all(e == PacketDropped(BOB.public, "queue-full") for e in dropped)
            assert a.statistics().packets_dropped == len(dropped)
            # Bob still got what fit in the pipeline, in order, once he reads again.
            got = 0
            while True:
                with trio.move_on_after(1):
                    assert await b.receive() == (ALICE.public, packet)
                    got += 1
                    continue
                break
            assert got + len(dropped) == 20


async def test_newer_inbound_connection_replaces_the_older(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE, allow={BOB.public})
        async with running(a, net, ("alice", 1)):
            first = await NoiseStream.handshake(
                await net.open_stream("alice", 1), BOB, initiator=True
            )
            await next_event(a, PeerUp, peer=BOB.public)
            second = await NoiseStream.handshake(
                await net.open_stream("alice", 1), BOB, initiator=True
            )
            assert await first.receive_some() == b""  # the old one was closed
            await trio.testing.wait_all_tasks_blocked()
            assert a.statistics().connections == 1
            assert not [e for e in drain_events(a) if isinstance(e, PeerDown)]
            await a.send(BOB.public, encode_frame(Ping(3)))
            assert await second.receive_some() == encode_frame(Ping(3))
            await first.aclose()
            await second.aclose()


async def test_forget_stops_dialling_and_drops_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        b = make(net, BOB)
        async with running(b, net):
            b.dial(ALICE.public, "alice", 1)  # nobody there
            await next_event(b, DialFailed)
            packet = encode_frame(Ping(1))
            await b.send(ALICE.public, packet)  # queued while Alice is away
            await b.send(ALICE.public, packet)
            assert b.statistics().packets_dropped == 0
            b.forget(ALICE.public)
            assert b.statistics().packets_dropped == 2
            attempts = len(net.attempts)
            await trio.sleep(50)  # virtual time (autojump clock): a forgotten peer is not redialled
            assert len(net.attempts) == attempts
            await b.send(ALICE.public, packet)
            assert await next_event(b, PacketDropped) == PacketDropped(ALICE.public, "no-route")


async def test_queued_packets_go_out_when_the_dialled_peer_appears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        b = make(net, BOB)
        b.dial(ALICE.public, "alice", 1)  # before the service runs: starts with it
        await b.send(ALICE.public, encode_frame(Ping(1)))
        async with running(b, net):
            await next_event(b, DialFailed)
            await b.send(ALICE.public, encode_frame(Ping(2)))
            a = make(net, ALICE, allow={BOB.public})
            async with running(a, net, ("alice", 1)):
                assert await a.receive() == (BOB.public, encode_frame(Ping(1)))
                assert await a.receive() == (BOB.public, encode_frame(Ping(2)))


async def test_unread_events_are_counted_not_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        b = make(net, BOB, event_queue_size=2)
        async with running(b, net):
            for _ in range(5):
                await b.send(ALICE.public, encode_frame(Ping(1)))
            assert b.statistics().events_dropped == 3
            assert b.statistics().packets_dropped == 5


# --- a packet that does not finish, a peer that goes silent -------------------------------------


async def _mallory_connects(net: MemoryNetwork, a: TcpTransport) -> NoiseStream:
    mallory = await NoiseStream.handshake(
        await net.open_stream("alice", 1), MALLORY, initiator=True
    )
    await next_event(a, PeerUp, peer=MALLORY.public)
    return mallory


@pytest.mark.parametrize("layer", ["frame", "noise"])
async def test_a_packet_begun_and_not_finished_is_closed_after_the_frame_timeout(
    autojump_clock: trio.testing.MockClock, layer: str
) -> None:
    """One byte of a frame (inside a whole Noise message), or one byte of a Noise message's
    length: either way the connection is closed ``frame_timeout`` after that byte, with a
    reason, and Bob's connection is untouched."""
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE, allow={BOB.public, MALLORY.public}, frame_timeout=5.0)
        b = make(net, BOB)
        async with running(a, net, ("alice", 1)), running(b, net):
            b.dial(ALICE.public, "alice", 1)
            await next_event(a, PeerUp, peer=BOB.public)
            mallory = await _mallory_connects(net, a)
            await trio.sleep(2)  # virtual time: idle time before the packet does not count
            began = trio.current_time()
            if layer == "frame":
                await mallory.send_all(encode_frame(Ping(1))[:1])
            else:
                await mallory.transport_stream.send_all(b"\x00")
            rejected = await next_event(a, InputRejected)
            assert (rejected.peer, rejected.reason) == (MALLORY.public, "frame-timeout")
            assert trio.current_time() == began + 5.0
            down = await next_event(a, PeerDown, peer=MALLORY.public)
            assert down.reason.startswith("frame timeout")
            assert await mallory.receive_some() == b""
            await mallory.aclose()
            await b.send(ALICE.public, encode_frame(Ping(2)))
            assert await a.receive() == (BOB.public, encode_frame(Ping(2)))
            assert a.connected_peers() == {BOB.public}


async def test_a_packet_sent_slowly_but_in_time_arrives_and_a_trickle_does_not_extend_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE, allow={MALLORY.public}, frame_timeout=5.0, keepalive_interval=None)
        async with running(a, net, ("alice", 1)):
            mallory = await _mallory_connects(net, a)
            packet = encode_frame(SyncFrame(b"slow but sure"))
            # Virtual time (autojump clock): the packet trickles in over 4.9 s of its 5 s.
            await mallory.send_all(packet[:3])
            await trio.sleep(2)
            await mallory.send_all(packet[3:9])
            await trio.sleep(2.9)
            await mallory.send_all(packet[9:])  # 4.9 s after the first byte
            assert await a.receive() == (MALLORY.public, packet)
            # A frame trickled one byte every 2 s: each byte is progress, none completes it,
            # and the frame timeout counts from its first byte.
            began = trio.current_time()

            async def trickle() -> None:
                for byte in encode_frame(SyncFrame(bytes(100))):
                    try:
                        await mallory.send_all(bytes([byte]))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return  # Alice hung up
                    await trio.sleep(2)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                rejected = await next_event(a, InputRejected)
                nursery.cancel_scope.cancel()
            assert rejected.reason == "frame-timeout"
            assert trio.current_time() == began + 5.0
            await mallory.aclose()


async def test_our_own_slowness_closes_nobody(autojump_clock: trio.testing.MockClock) -> None:
    """Alice's application reads nothing for five minutes while Bob's and Mallory's packets
    wait for her, the first half of one of Mallory's among them: neither the frame timeout
    nor either side's keepalive closes a connection, and every packet arrives once she reads."""
    with trio.fail_after(1000):
        net = MemoryNetwork()
        a = make(
            net, ALICE, allow={BOB.public, MALLORY.public}, receive_queue_size=1, frame_timeout=5.0
        )
        b = make(net, BOB)
        async with running(a, net, ("alice", 1)), running(b, net):
            b.dial(ALICE.public, "alice", 1)
            await next_event(a, PeerUp, peer=BOB.public)
            mallory = await _mallory_connects(net, a)
            packets = [encode_frame(SyncFrame(bytes([i]) * 100)) for i in range(3)]
            for packet in packets:
                await b.send(ALICE.public, packet)
            last = encode_frame(SyncFrame(b"the rest follows"))
            await mallory.send_all(b"".join(packets) + last[:10])
            await trio.sleep(300)
            assert a.connected_peers() == {BOB.public, MALLORY.public}
            assert b.connected_peers() == {ALICE.public}

            async def next_packet() -> tuple[bytes, bytes]:
                # Skip control frames: Alice pinged Bob while she was not reading (so that he
                # knew she lived) and he answered.
                while True:
                    peer, packet = await a.receive()
                    if packet[3] != FrameMode.CONTROL:
                        return peer, packet

            got = [await next_packet() for _ in range(6)]
            assert sorted(got) == sorted(
                [(k, p) for p in packets for k in (BOB.public, MALLORY.public)]
            )
            # Mallory's partial packet has its full frame timeout from the moment Alice read on.
            await trio.sleep(4.9)
            await mallory.send_all(last[10:])
            assert await next_packet() == (MALLORY.public, last)
            assert not [e for e in drain_events(a) + drain_events(b) if isinstance(e, PeerDown)]
            await mallory.aclose()


async def test_a_silent_peer_is_pinged_then_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that completes the handshake and then neither answers nor sends anything is
    pinged after 15 s of silence and every 15 s after that, and dropped when the third ping
    goes unanswered: 60 s after it last said anything."""
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE, allow={MALLORY.public})
        async with running(a, net, ("alice", 1)):
            mallory = await _mallory_connects(net, a)
            up = trio.current_time()
            down = await next_event(a, PeerDown, peer=MALLORY.public)
            assert trio.current_time() == up + 60.0
            assert down.reason == "keepalive: no answer to 3 pings in 60s"
            # What Mallory was sent: three pings, then the end of the connection.
            received = b""
            while chunk := await mallory.receive_some():
                received += chunk
            assert len(received) == 3 * len(encode_frame(Ping(0)))
            assert all(received[i : i + 9] == encode_frame(Ping(0))[:9] for i in (0, 17, 34))
            await mallory.aclose()


async def test_anything_received_counts_as_an_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(200):
        net = MemoryNetwork()
        a = make(net, ALICE, allow={MALLORY.public})
        async with running(a, net, ("alice", 1)):
            mallory = await _mallory_connects(net, a)
            up = trio.current_time()
            await trio.sleep(50)  # two pings unanswered...
            await mallory.send_all(encode_frame(SyncFrame(b"I am here")))  # ...then a packet
            assert await a.receive() == (MALLORY.public, encode_frame(SyncFrame(b"I am here")))
            await next_event(a, PeerDown, peer=MALLORY.public)
            assert trio.current_time() == up + 50.0 + 60.0
            await mallory.aclose()


async def test_an_idle_pair_stays_connected_and_pings_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Alice pings, Bob (who sends no pings of his own) answers each at once on the same
    connection: ten minutes with no traffic, forty pings and pongs, no disconnection."""
    with trio.fail_after(1000):
        net = MemoryNetwork()
        a = make(net, ALICE, allow={BOB.public})
        b = make(net, BOB, keepalive_interval=None)
        async with running(a, net, ("alice", 1)), running(b, net):
            b.dial(ALICE.public, "alice", 1)
            await next_event(a, PeerUp, peer=BOB.public)
            pings: list[bytes] = []
            pongs: list[bytes] = []

            async def collect(t: TcpTransport, into: list[bytes]) -> None:
                while True:
                    into.append((await t.receive())[1])

            async with trio.open_nursery() as readers:
                readers.start_soon(collect, b, pings)
                readers.start_soon(collect, a, pongs)
                await trio.sleep(601)  # virtual time (autojump clock)
                readers.cancel_scope.cancel()
            assert a.connected_peers() == {BOB.public} and b.connected_peers() == {ALICE.public}
            assert not [e for e in drain_events(a) + drain_events(b) if isinstance(e, PeerDown)]
            assert len(pings) == 40  # at 15, 30, ... 600 s
            assert [decode_frame(p) for p in pongs] == [
                Pong(cast(Ping, decode_frame(p)).nonce) for p in pings
            ]


async def test_small_frame_limits_take_a_burst_of_small_packets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With frames limited to 1 kB, one read can still hold far more than two frames' worth of
    small packets: the decoder's buffer must hold a read, not only two frames."""
    with trio.fail_after(100):
        net = MemoryNetwork()
        limits = FrameLimits(max_body_bytes=1000)
        a = make(net, ALICE, allow={MALLORY.public}, limits=limits)
        async with running(a, net, ("alice", 1)):
            mallory = await _mallory_connects(net, a)
            packets = [encode_frame(SyncFrame(i.to_bytes(2, "big") * 50)) for i in range(300)]
            await mallory.send_all(b"".join(packets))  # 32 kB: one read
            assert [await a.receive() for _ in packets] == [(MALLORY.public, p) for p in packets]
            assert a.connected_peers() == {MALLORY.public}
            await mallory.aclose()


async def test_a_handshake_trickled_byte_by_byte_is_bounded_as_a_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each byte of message 1 arrives in time for the next, but the handshake as a whole has
    ``handshake_timeout``: the stranger is cut off at exactly that, whatever it does."""
    with trio.fail_after(100):
        net = MemoryNetwork()
        a = make(net, ALICE, handshake_timeout=10.0)
        async with running(a, net, ("alice", 1)):
            raw = await net.open_stream("alice", 1)
            began = trio.current_time()

            async def trickle() -> None:
                for byte in b"\x00\x20" + Keypair.generate().public:
                    try:
                        await raw.send_all(bytes([byte]))
                    except trio.BrokenResourceError:
                        return  # Alice hung up (at t = 10, when the next byte is also due)
                    await trio.sleep(1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                rejected = await next_event(a, InputRejected)
                nursery.cancel_scope.cancel()
            assert rejected.reason == "handshake-timeout"
            assert trio.current_time() == began + 10.0
            await raw.aclose()
