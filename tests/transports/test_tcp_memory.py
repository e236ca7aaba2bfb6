"""TcpTransport on a memory network under MockClock: exact backoff times, timeouts, a stalled peer.

The transport takes ``open_stream`` and any listeners, so the same code that runs on sockets runs
here on memory stream pairs, where ``autojump_clock`` makes time exact and the tests instant.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from mvds_node.transports import (
    DialFailed,
    InputRejected,
    Keypair,
    NoiseStream,
    PacketDropped,
    PeerDown,
    PeerUp,
    Ping,
    ReconnectPolicy,
    TcpTransport,
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
