"""UDP multicast, on the loopback interface named explicitly (TTL 1, IP_MULTICAST_IF 127.0.0.1).

Real sockets on 127.0.0.1 only, on a random high port per test. ``open()`` returns joined, so no
test waits for readiness. Loopback delivers one host's datagrams in the order they were sent, so a
test shows that a datagram was dropped by sending a good one after it and receiving that one
first; ``fail_after`` only guards against a hang.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from mvds_node.errors import LocalProtocolError, TransportBroken, TransportClosed
from mvds_node.transports import (
    BROADCAST,
    InputRejected,
    InternalError,
    Keypair,
    MulticastTransport,
    PacketDropped,
    Ping,
    SyncFrame,
    TransportEvent,
    encode_frame,
)
from mvds_node.transports._multicast import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_SESSIONS,
    REPLAY_WINDOW,
    _session_key,
    _Window,
)

KEY = os.urandom(32)
GROUP = "239.255.77.78"


def free_port() -> int:
    return random.randint(20000, 60000)


def frame(text: str) -> bytes:
    return encode_frame(SyncFrame(text.encode()))


def node_id() -> bytes:
    return Keypair.generate().public


@pytest.fixture
async def members() -> AsyncIterator[list[MulticastTransport]]:
    """Four open members of one group on one port."""
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                MulticastTransport(node_id(), KEY, group=GROUP, port=port)
            )
            for _ in range(4)
        ]


def queued_events(t: MulticastTransport) -> list[TransportEvent]:
    events = []
    while True:
        try:
            events.append(t.events.receive_nowait())
        except trio.WouldBlock:
            return events


def reasons(t: MulticastTransport) -> list[str]:
    return [e.reason for e in queued_events(t) if isinstance(e, InputRejected)]


async def raw_sender() -> trio.socket.SocketType:
    """A plain UDP socket that multicasts on 127.0.0.1, outside any transport."""
    s = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    await s.bind(("127.0.0.1", 0))
    return s


async def raw_listener(port: int) -> trio.socket.SocketType:
    """A plain UDP socket that captures the group's datagrams on 127.0.0.1."""
    s = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    await s.bind((GROUP, port))
    membership = socket.inet_aton(GROUP) + socket.inet_aton("127.0.0.1")
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    return s


# --- delivery and addressing ----------------------------------------------------------------------


async def test_one_sender_three_receivers(members: list[MulticastTransport]) -> None:
    sender, *receivers = members
    with trio.fail_after(5):
        await sender.send(BROADCAST, frame("hello group"))
        await sender.send(b"", frame("b'' is everyone too"))
        for r in receivers:
            assert await r.receive() == (sender.node_id, frame("hello group"))
            assert await r.receive() == (sender.node_id, frame("b'' is everyone too"))
        # The sender's own datagrams came back to it (IP_MULTICAST_LOOP) and were skipped.
        await receivers[0].send(sender.node_id, frame("reply"))
        assert await sender.receive() == (receivers[0].node_id, frame("reply"))
    stats = sender.statistics()
    assert (stats.datagrams_sent, stats.datagrams_received, stats.datagrams_ignored) == (2, 1, 2)
    assert all(not queued_events(t) for t in members)


async def test_addressed_datagram_reaches_only_its_recipient(
    members: list[MulticastTransport],
) -> None:
    sender, a, b, _ = members
    with trio.fail_after(5):
        await sender.send(a.node_id, frame("for a"))
        await sender.send(BROADCAST, frame("for all"))
        assert await a.receive() == (sender.node_id, frame("for a"))
        assert await a.receive() == (sender.node_id, frame("for all"))
        assert await b.receive() == (sender.node_id, frame("for all"))  # "for a" skipped
    assert b.statistics().datagrams_ignored == 1
    assert queued_events(b) == []  # normal traffic for someone else is not an incident


# --- what receivers refuse ------------------------------------------------------------------------


async def test_replayed_datagram_is_dropped_and_reported(
    members: list[MulticastTransport],
) -> None:
    sender, receiver, *_ = members
    with trio.fail_after(5):
        capture = await raw_listener(receiver.port)
        raw = await raw_sender()
        with capture, raw:
            await sender.send(BROADCAST, frame("once"))
            datagram, _ = await capture.recvfrom(MAX_DATAGRAM)
            assert await receiver.receive() == (sender.node_id, frame("once"))
            await raw.sendto(datagram, (GROUP, receiver.port))  # the same bytes again
            await sender.send(BROADCAST, frame("next"))
            assert await receiver.receive() == (sender.node_id, frame("next"))
    [event] = queued_events(receiver)
    assert isinstance(event, InputRejected)
    assert (event.reason, event.peer) == ("replay", sender.node_id)
    assert event.address.startswith("127.0.0.1:")


async def test_another_groups_traffic_is_dropped_as_foreign(
    members: list[MulticastTransport],
) -> None:
    sender, receiver, *_ = members
    with trio.fail_after(5):
        async with MulticastTransport(
            node_id(), os.urandom(32), group=GROUP, port=receiver.port
        ) as stranger:
            await stranger.send(BROADCAST, frame("not for you"))
            await sender.send(BROADCAST, frame("for us"))
            assert await receiver.receive() == (sender.node_id, frame("for us"))
    [event] = queued_events(receiver)
    assert isinstance(event, InputRejected)
    assert (event.reason, event.peer) == ("foreign-group", None)


async def test_tampered_and_non_frame_datagrams_are_reported(
    members: list[MulticastTransport],
) -> None:
    sender, receiver, *_ = members
    tampered = bytearray(sender.seal(BROADCAST, frame("tampered")))
    tampered[-1] ^= 1
    not_a_frame = sender.seal(BROADCAST, b"authentic, but not a frame")
    with trio.fail_after(5):
        raw = await raw_sender()
        with raw:
            await raw.sendto(bytes(tampered), (GROUP, receiver.port))
            await raw.sendto(not_a_frame, (GROUP, receiver.port))
        await sender.send(BROADCAST, frame("after"))
        assert await receiver.receive() == (sender.node_id, frame("after"))
    bad, junk = queued_events(receiver)
    assert isinstance(bad, InputRejected) and isinstance(junk, InputRejected)
    assert (bad.reason, bad.peer) == ("bad-ciphertext", None)  # proved nothing, names no one
    assert (junk.reason, junk.peer) == ("frame:bad-magic", sender.node_id)


async def test_random_garbage_never_crashes_and_is_counted(
    members: list[MulticastTransport],
) -> None:
    sender, receiver, *_ = members
    rng = random.Random(7)
    tag_prefix = sender.seal(BROADCAST, b"")[:13]  # magic, version, our group tag
    sent = 0
    with trio.fail_after(10):
        raw = await raw_sender()
        with raw:
            # Rounds of 20, each followed by a good datagram, so the socket buffer never fills
            # (the kernel would drop silently what these counts expect to see).
            for round_ in range(5):
                for _ in range(20):
                    junk = rng.randbytes(rng.randint(0, MAX_DATAGRAM + 100))
                    kind = rng.random()
                    if kind < 0.25:
                        junk = b"MVMC" + bytes([rng.randint(0, 2)]) + junk
                    elif kind < 0.5:
                        junk = tag_prefix + junk  # mostly for a recipient that is not us
                    elif kind < 0.75:  # for everyone, from a made-up sender and session
                        junk = tag_prefix + rng.randbytes(48) + BROADCAST + junk
                    await raw.sendto(junk, (GROUP, receiver.port))
                    sent += 1
                await sender.send(BROADCAST, frame(f"still working {round_}"))
                assert await receiver.receive() == (
                    sender.node_id,
                    frame(f"still working {round_}"),
                )
    stats = receiver.statistics()
    # Every datagram was either reported or (forged with a recipient that is not us) ignored.
    assert stats.datagrams_rejected + stats.datagrams_ignored == sent
    found = reasons(receiver)
    assert len(found) == stats.datagrams_rejected
    assert {"bad-magic", "too-short", "too-large", "bad-ciphertext"} <= set(found)
    assert set(found) <= {
        "bad-magic",
        "unknown-version",
        "foreign-group",
        "too-short",
        "too-large",
        "bad-ciphertext",
    }
    assert stats.sessions == 1  # only the authentic sender made the receiver keep state


async def test_a_bug_on_one_datagram_drops_that_datagram_only(
    members: list[MulticastTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception while opening one datagram (here a frame check that trips on a
    marker) drops that datagram with an InternalError carrying the traceback; the next
    datagram is received as usual."""
    from mvds_node.transports import decode_frame

    def buggy(data: bytes) -> object:
        if b"BOOM" in bytes(data):
            raise RuntimeError("a bug in the frame check")
        return decode_frame(data)

    sender, receiver, *_ = members
    monkeypatch.setattr("mvds_node.transports._multicast.decode_frame", buggy)
    with trio.fail_after(5), await raw_sender() as raw:
        # Sealed by the member, sent around its own (patched) frame check.
        await raw.sendto(sender.seal(BROADCAST, frame("BOOM")), (GROUP, receiver.port))
        await raw.sendto(sender.seal(BROADCAST, frame("after the bug")), (GROUP, receiver.port))
        assert await receiver.receive() == (sender.node_id, frame("after the bug"))
    errors = [e for e in queued_events(receiver) if isinstance(e, InternalError)]
    assert len(errors) == 1
    assert errors[0].where.startswith("multicast datagram from 127.0.0.1:")
    assert errors[0].error == "RuntimeError: a bug in the frame check"
    assert "buggy" in errors[0].traceback
    assert receiver.statistics().datagrams_rejected == 1


async def test_own_key_from_another_session_is_reported() -> None:
    """A second process with our identity (or a member impersonating us) is worth an event."""
    port = free_port()
    me = node_id()
    with trio.fail_after(5):
        async with (
            MulticastTransport(me, KEY, group=GROUP, port=port) as first,
            MulticastTransport(me, KEY, group=GROUP, port=port) as twin,
            MulticastTransport(node_id(), KEY, group=GROUP, port=port) as other,
        ):
            await twin.send(BROADCAST, frame("I am you"))
            await other.send(BROADCAST, frame("marker"))
            assert await first.receive() == (other.node_id, frame("marker"))
            assert await other.receive() == (me, frame("I am you"))
            assert reasons(first) == ["own-sender"]


# --- sending --------------------------------------------------------------------------------------


async def test_oversize_or_non_frame_send_raises(members: list[MulticastTransport]) -> None:
    sender, receiver, *_ = members
    assert sender.max_payload == MAX_DATAGRAM - HEADER_SIZE - 16 == 1291
    largest = encode_frame(SyncFrame(b"x" * (sender.max_payload - 8)))
    assert len(largest) == sender.max_payload
    with pytest.raises(LocalProtocolError, match="exceeds"):
        await sender.send(BROADCAST, encode_frame(SyncFrame(b"x" * (sender.max_payload - 7))))
    with pytest.raises(LocalProtocolError, match="not a frame"):
        await sender.send(BROADCAST, b"not a frame")
    with pytest.raises(LocalProtocolError, match="32-byte"):
        await sender.send(b"short", frame("x"))
    with trio.fail_after(5):
        await sender.send(BROADCAST, largest)  # the largest packet fits one datagram
        assert await receiver.receive() == (sender.node_id, largest)
    assert sender.statistics().datagrams_sent == 1


async def test_a_send_the_network_refuses_is_dropped_and_reported(
    members: list[MulticastTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, receiver, *_ = members
    failure = OSError(errno.ENETUNREACH, "Network is unreachable")

    async def refuse(data: bytes, address: tuple[str, int]) -> int:
        await trio.lowlevel.checkpoint()
        raise failure

    assert sender._send is not None
    monkeypatch.setattr(sender._send, "sendto", refuse)
    with trio.fail_after(5):
        await sender.send(receiver.node_id, frame("lost"))  # no exception: the engine resends
        failure = OSError(errno.ENOBUFS, "No buffer space available")
        await sender.send(BROADCAST, frame("lost"))
        failure = OSError(errno.EINVAL, "Invalid argument")
        with pytest.raises(TransportBroken):
            await sender.send(BROADCAST, frame("broken"))
    assert queued_events(sender) == [
        PacketDropped(receiver.node_id, "no-route"),
        PacketDropped(BROADCAST, "queue-full"),
    ]
    assert sender.statistics().packets_dropped == 2


# --- lifecycle ------------------------------------------------------------------------------------


async def test_aclose_makes_send_and_receive_raise(members: list[MulticastTransport]) -> None:
    t = members[0]
    with trio.fail_after(5):
        await t.aclose()
        with pytest.raises(TransportClosed):
            await t.send(BROADCAST, frame("late"))
        with pytest.raises(TransportClosed):
            await t.receive()
        with pytest.raises(TransportClosed):
            await t.open()
        assert [e async for e in t.events] == []  # the events channel ends
        await t.aclose()  # twice is fine


async def test_aclose_wakes_a_blocked_receiver(members: list[MulticastTransport]) -> None:
    t = members[1]

    async def wait() -> None:
        with pytest.raises(TransportClosed):
            await t.receive()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            await t.aclose()


async def test_use_before_open_and_double_open(members: list[MulticastTransport]) -> None:
    t = MulticastTransport(node_id(), KEY, group=GROUP, port=members[0].port)
    with pytest.raises(LocalProtocolError):
        await t.send(BROADCAST, frame("early"))
    with pytest.raises(LocalProtocolError):
        await t.receive()
    assert not t.reaches(members[0].node_id)
    with pytest.raises(LocalProtocolError, match="already open"):
        await members[0].open()
    await t.aclose()


async def test_sockets_that_went_down_fail_until_reopened(
    members: list[MulticastTransport],
) -> None:
    sender, receiver = members[0], members[1]
    receiver._close_sockets()  # what a failed interface leaves behind
    with pytest.raises(TransportBroken, match="reopen"):
        await receiver.send(BROADCAST, frame("while down"))
    with pytest.raises(TransportBroken, match="reopen"):
        await receiver.receive()
    await receiver.reopen()
    await receiver.reopen()  # harmless when open: the sockets are made anew
    with trio.fail_after(5):
        await sender.send(BROADCAST, frame("after"))
        assert await receiver.receive() == (sender.node_id, frame("after"))
        await receiver.send(BROADCAST, frame("and back"))
        assert await sender.receive() == (receiver.node_id, frame("and back"))
    await receiver.aclose()
    with pytest.raises(TransportClosed):
        await receiver.reopen()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"node_id": b"\x01" * 31}, "32 bytes"),
        ({"group_key": b"\x01" * 33}, "32 bytes"),
        ({"node_id": BROADCAST}, "everyone"),
        ({"group": "10.0.0.1"}, "not a multicast"),
        ({"group": "ff02::1"}, "IPv4"),
        ({"interface": "0.0.0.0"}, "one interface"),
        ({"interface": "255.255.255.255"}, "one interface"),
        ({"interface": "240.0.0.1"}, "reserved address"),
        ({"interface": "eth0"}, "IPv4"),
        ({"port": 0}, "port"),
        ({"event_queue_size": 0}, "event_queue_size"),
    ],
)
def test_constructor_refuses_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"node_id": b"\x01" * 32, "group_key": KEY, **kwargs}
    with pytest.raises(ValueError, match=message):
        MulticastTransport(**args)  # type: ignore[arg-type]


# --- sans-IO: sealing, opening, the replay window -------------------------------------------------


def test_replay_window() -> None:
    w = _Window()
    assert [w.accept(c) for c in (5, 3, 4, 5, 3, 6)] == [True, True, True, False, False, True]
    assert w.accept(6 + REPLAY_WINDOW - 1)  # 6 is now the oldest counter the window holds
    assert not w.accept(6)
    assert w.accept(7)  # reordered within the window: still new
    assert not w.accept(6 + REPLAY_WINDOW - 1 - REPLAY_WINDOW)  # fell out of the window


def test_replay_window_survives_a_huge_jump() -> None:
    """A member that jumps its counter to 2**64-1 must not make us build a 2**64-bit integer."""
    w = _Window()
    assert w.accept(1)
    assert w.accept(2**64 - 1)
    assert not w.accept(2**64 - 1)
    assert not w.accept(1)
    assert w.accept(2**64 - 2)


def test_sender_sessions_are_bounded() -> None:
    receiver = MulticastTransport(node_id(), KEY)
    forged = bytearray(MulticastTransport(node_id(), KEY).seal(BROADCAST, frame("x")))
    forged[50] ^= 1  # another session, so it fails authentication
    assert receiver.open_datagram(bytes(forged), "test") is None
    assert receiver.statistics().sessions == 0  # a forger cannot make us keep state
    for _ in range(MAX_SESSIONS + 5):
        sender = MulticastTransport(os.urandom(32), KEY)
        assert receiver.open_datagram(sender.seal(BROADCAST, frame("x")), "test") is not None
    assert receiver.statistics().sessions == MAX_SESSIONS


def test_a_wrapping_counter_starts_a_new_session() -> None:
    sender = MulticastTransport(node_id(), KEY)
    receiver = MulticastTransport(node_id(), KEY)
    first = sender.seal(BROADCAST, frame("a"))
    sender._counter = 2**64 - 1
    second = sender.seal(BROADCAST, frame("b"))
    assert first[45:53] != second[45:53]  # a fresh session ...
    assert second[53:61] == (1).to_bytes(8, "big")  # ... whose counter starts again at 1
    assert receiver.open_datagram(first, "test") == (sender.node_id, frame("a"))
    assert receiver.open_datagram(second, "test") == (sender.node_id, frame("b"))


_RECEIVER_ID = b"\x05" * 32
_SENDER = MulticastTransport(b"\x06" * 32, KEY)
_AUTHENTIC = _SENDER.seal(BROADCAST, encode_frame(Ping(1)))


@given(
    st.one_of(
        st.binary(max_size=MAX_DATAGRAM + 10),
        st.binary(max_size=MAX_DATAGRAM).map(lambda tail: _AUTHENTIC[:13] + tail),
        st.binary(max_size=MAX_DATAGRAM).map(lambda tail: _AUTHENTIC[:93] + tail),
        st.tuples(st.integers(0, len(_AUTHENTIC) - 1), st.integers(1, 255)).map(
            lambda flip: (
                _AUTHENTIC[: flip[0]]
                + bytes([_AUTHENTIC[flip[0]] ^ flip[1]])
                + _AUTHENTIC[flip[0] + 1 :]
            )
        ),
    )
)
def test_opening_any_bytes_never_raises(datagram: bytes) -> None:
    receiver = MulticastTransport(_RECEIVER_ID, KEY)
    assert receiver.open_datagram(datagram, "fuzz") is None
    stats = receiver.statistics()
    assert stats.datagrams_rejected + stats.datagrams_ignored == 1
    assert len(reasons(receiver)) == stats.datagrams_rejected
    assert stats.sessions == 0


def test_documented_header_matches() -> None:
    """The example in docs/wire.md section 4 is what the code writes."""
    text = (Path(__file__).parents[2] / "docs" / "wire.md").read_text()
    block = text.split("```multicast-header\n", 1)[1].split("```", 1)[0]
    documented = bytes.fromhex("".join(line.split("#", 1)[0] for line in block.splitlines()))
    t = MulticastTransport(b"\x01" * 32, b"\x03" * 32)
    t._session = b"\x02" * 8
    t._aead = _session_key(b"\x03" * 32, b"\x01" * 32, t._session)
    datagram = t.seal(BROADCAST, b"")
    assert datagram[:HEADER_SIZE] == documented
    assert len(datagram) == HEADER_SIZE + 16
    receiver = MulticastTransport(b"\x04" * 32, b"\x03" * 32)
    assert receiver.open_datagram(t.seal(BROADCAST, encode_frame(Ping(7))), "doc") == (
        b"\x01" * 32,
        encode_frame(Ping(7)),
    )
