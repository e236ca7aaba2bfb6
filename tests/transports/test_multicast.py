"""UDP multicast on the loopback interface, named explicitly (TTL 1, IP_MULTICAST_IF)."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from mvds_node.errors import LocalProtocolError, TransportClosed
from mvds_node.transports import InputRejected, Keypair
from mvds_node.transports._multicast import BROADCAST, MulticastTransport, _session_key

KEY = os.urandom(32)
GROUP = "239.255.77.78"


def port() -> int:
    return random.randint(20000, 60000)


@pytest.fixture
async def members() -> AsyncIterator[list[MulticastTransport]]:
    p = port()
    made = [
        MulticastTransport(Keypair.generate().public, KEY, group=GROUP, port=p) for _ in range(4)
    ]
    for t in made:
        await t.open()
    yield made
    for t in made:
        await t.aclose()


async def rejected(t: MulticastTransport) -> InputRejected:
    event = await t.events.receive()
    assert isinstance(event, InputRejected)
    return event


async def test_one_sender_three_receivers(members: list[MulticastTransport]) -> None:
    sender, *receivers = members
    with trio.fail_after(5):
        await sender.send(BROADCAST, b"hello group")
        for r in receivers:
            assert await r.receive() == (sender.node_id, b"hello group")


async def test_addressed_datagram_reaches_only_its_recipient(
    members: list[MulticastTransport],
) -> None:
    sender, a, b, _ = members
    with trio.fail_after(5):
        await sender.send(a.node_id, b"for a")
        await sender.send(BROADCAST, b"for all")
        assert await a.receive() == (sender.node_id, b"for a")
        assert await a.receive() == (sender.node_id, b"for all")
        assert await b.receive() == (sender.node_id, b"for all")  # "for a" skipped unread


def raw_sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    return s


async def test_replay_is_dropped_and_reported(members: list[MulticastTransport]) -> None:
    sender, receiver, *_ = members
    datagram = sender.seal(BROADCAST, b"once")
    with raw_sender() as raw, trio.fail_after(5):
        raw.sendto(datagram, (GROUP, receiver.port))
        assert await receiver.receive() == (sender.node_id, b"once")
        raw.sendto(datagram, (GROUP, receiver.port))
        await sender.send(BROADCAST, b"next")
        assert await receiver.receive() == (sender.node_id, b"next")
        assert (await rejected(receiver)).reason == "replay"


async def test_other_groups_and_garbage_are_dropped(members: list[MulticastTransport]) -> None:
    _, receiver, *_ = members
    stranger = MulticastTransport(Keypair.generate().public, os.urandom(32), group=GROUP, port=1)
    rng = random.Random(7)
    with raw_sender() as raw, trio.fail_after(10):
        raw.sendto(stranger.seal(BROADCAST, b"not for you"), (GROUP, receiver.port))
        # Bounded: 4 rounds of 50 random datagrams (some with our magic), each round followed
        # by a good one, so the socket's buffer never overflows and drops the good one.
        for round_ in range(4):
            for _ in range(50):
                junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 1500)))
                if rng.random() < 0.5:
                    junk = b"MVMC\x01" + junk
                raw.sendto(junk, (GROUP, receiver.port))
            await members[0].send(BROADCAST, f"still working {round_}".encode())
            assert await receiver.receive() == (
                members[0].node_id,
                f"still working {round_}".encode(),
            )
        altered = bytearray(members[0].seal(BROADCAST, b"tampered"))
        altered[-1] ^= 1
        raw.sendto(bytes(altered), (GROUP, receiver.port))
        await members[0].send(BROADCAST, b"still working")
        assert await receiver.receive() == (members[0].node_id, b"still working")
        reasons = set()
        while True:
            try:
                event = receiver.events.receive_nowait()
            except trio.WouldBlock:
                break
            assert isinstance(event, InputRejected)
            reasons.add(event.reason)
        assert {"foreign-group", "bad-ciphertext"} <= reasons
        assert reasons <= {
            "foreign-group",
            "bad-ciphertext",
            "too-short",
            "too-large",
            "not-ours",
            "version",
        }


async def test_limits_and_close(members: list[MulticastTransport]) -> None:
    t = members[0]
    with pytest.raises(LocalProtocolError):
        await t.send(BROADCAST, b"x" * (t.max_payload + 1))
    await t.send(BROADCAST, b"x" * t.max_payload)  # the largest packet fits one datagram
    await t.aclose()
    with pytest.raises(TransportClosed):
        await t.send(BROADCAST, b"late")
    with pytest.raises(TransportClosed):
        await t.receive()


async def test_close_wakes_a_blocked_receiver(members: list[MulticastTransport]) -> None:
    t = members[1]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                with pytest.raises(TransportClosed):
                    await t.receive()

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            await t.aclose()


def test_documented_header_matches() -> None:
    """The example in docs/wire.md section 4 is what the code writes."""
    text = (Path(__file__).parents[2] / "docs" / "wire.md").read_text()
    block = text.split("```multicast-header\n", 1)[1].split("```", 1)[0]
    documented = bytes.fromhex("".join(line.split("#", 1)[0] for line in block.splitlines()))
    t = MulticastTransport(b"\x01" * 32, b"\x03" * 32)
    t._session = b"\x02" * 8
    t._aead = _session_key(b"\x03" * 32, b"\x01" * 32, t._session)
    datagram = t.seal(BROADCAST, b"")
    assert datagram[:93] == documented
    assert len(datagram) == 93 + 16
