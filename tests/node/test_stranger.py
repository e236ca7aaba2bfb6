"""A stranger with a TCP socket and no key: whatever it sends, the node refuses it and goes on.

One test drives a real ``mvds-node run --json`` process from outside, the way an attacker on the
network would: low-order X25519 keys as handshake message 1, random openings, lying length
prefixes. Another injects a bug into the handling of one connection and checks that the node
reports it (``InternalError``) and still serves everyone else.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from mvds_node.node import (
    AnyEvent,
    Identity,
    InboxReader,
    InternalError,
    Node,
    open_node,
    parse_address,
)
from mvds_node.sync import Engine
from mvds_node.transports import NoiseStream, SyncFrame, encode_frame
from mvds_node.transports._framing import FrameDecoder
from tests.transports.test_noise import LOW_ORDER_POINTS
from tests.transports.test_tcp import _buggy_receive_data

from .cliutil import acli, cli, init, log_key, start
from .helpers import config_for, connect, read_until_closed

# Bound on each hostile connection: the node answers (or hangs up) at once, or within its
# handshake timeout (10 s) for an opening that promises more bytes than it sends.
_PER_CONNECTION = 15


async def _hostile(host: str, port: int, opening: bytes, *, hang_up: bool = True) -> bytes:
    """Open a connection, send ``opening``, and return what the node sent back before the
    connection ended (we hang up first if ``hang_up``: the node must then see a cut stream)."""
    received = b""
    with trio.fail_after(_PER_CONNECTION):
        stream = await trio.open_tcp_stream(host, port)
        try:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(opening)
            if not hang_up:
                with contextlib.suppress(trio.BrokenResourceError):
                    while chunk := await stream.receive_some(65536):
                        received += chunk
        finally:
            await stream.aclose()
    return received


def _openings(rng: random.Random) -> list[tuple[str, bytes, bool]]:
    """``(what, bytes, wait for the node to hang up)`` for every hostile opening."""
    out: list[tuple[str, bytes, bool]] = []
    for point in LOW_ORDER_POINTS:
        # A well-formed message 1 whose key is a low-order point: the node hangs up on it.
        out.append((f"low-order {point.hex()}", b"\x00\x20" + point, True))
    for n in range(200):
        size = rng.randint(0, 200)
        out.append((f"random {n}", rng.randbytes(size), False))
    out += [
        ("one byte of a length", b"\x00", False),
        ("a length and nothing", b"\x00\x20", False),
        ("a truncated key", b"\x00\x20" + bytes(range(10)), False),
        ("a length that promises 64 KiB", b"\xff\xff" + rng.randbytes(100), False),
        ("a message 1 with a payload", b"\x00\x21" + rng.randbytes(33), True),
        ("an oversized message 1", b"\xff\xff" + rng.randbytes(65535), True),
        ("70,000 bytes", rng.randbytes(70_000), False),
        ("a zero-length message 1", b"\x00\x00", True),
    ]
    return out


async def test_a_stranger_cannot_kill_a_running_node(tmp_path: Path) -> None:
    dirs = {n: tmp_path / n for n in ("alice", "bob")}
    keys = {n: init(d, n) for n, d in dirs.items()}
    for me, other in (("alice", "bob"), ("bob", "alice")):
        cli("--dir", dirs[me], "peers", "add", keys[other], "--name", other, "--group", "chat",
            "--log-key", log_key(dirs[other]))  # fmt: skip
    openings = _openings(random.Random(20261207))
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            alice = await start(nursery, dirs["alice"])
            host, port = parse_address(alice.address)
            previous = "nothing"
            for what, opening, wait in openings:
                try:
                    answer = await _hostile(host, port, opening, hang_up=not wait)
                except OSError as exc:
                    raise AssertionError(f"the node stopped listening after {previous}") from exc
                assert alice.process.returncode is None, f"the node died on {what}"
                previous = what
                if what.startswith("low-order"):
                    assert answer == b"", "no handshake message 2 for a low-order key"
            # Every low-order key was refused as a bad handshake, with the reason.
            await alice.wait_for(
                lambda r: (
                    sum(
                        1
                        for line in r.lines
                        if line["type"] == "refused" and "ephemeral key" in line["detail"]
                    )
                    >= len(LOW_ORDER_POINTS)
                ),
                "every low-order key refused",
            )
            # A real peer still syncs with it, both ways.
            await acli(
                "--dir", dirs["bob"], "peers", "add", keys["alice"], "--name", "alice",
                "--address", alice.address,
            )  # fmt: skip
            bob = await start(nursery, dirs["bob"])
            await acli("--dir", dirs["alice"], "send", "chat", "still standing")
            await acli("--dir", dirs["bob"], "send", "chat", "glad to hear it")
            await bob.wait_for(
                lambda r: "still standing" in [m["text"] for m in r.messages()], "bob got it"
            )
            await alice.wait_for(
                lambda r: "glad to hear it" in [m["text"] for m in r.messages()], "alice got it"
            )
            errors = [line for line in alice.lines if line["type"] == "internal-error"]
            assert errors == [], errors[0]["traceback"] if errors else ""
            refused = [line for line in alice.lines if line["type"] == "refused"]
            assert len(refused) >= len(LOW_ORDER_POINTS)
            assert {line["reason"] for line in refused} <= {
                "handshake-failed",
                "handshake-timeout",
            }
            for node in (alice, bob):
                assert await node.stop() == 0
            nursery.cancel_scope.cancel()


async def _next_internal_error(events: trio.MemoryReceiveChannel[AnyEvent]) -> InternalError:
    async for event in events:
        if isinstance(event, InternalError):
            return event
    raise AssertionError("events ended")


@asynccontextmanager
async def _alice_with_bob_and_carol(
    tmp_path: Path, carol: Identity
) -> AsyncIterator[
    tuple[
        Node,
        Node,
        trio.MemoryReceiveChannel[AnyEvent],
        InboxReader,
        NoiseStream,
    ]
]:
    """Alice, whose members are Bob and Carol; Bob's node; Alice's events and inbox; and a
    connection on which Carol has proved her key to Alice by hand."""
    alice, bob = Identity.generate(), Identity.generate()
    async with (
        open_node(
            config_for(tmp_path, "alice", alice, {"bob": bob, "carol": carol}), identity=alice
        ) as a,
        open_node(config_for(tmp_path, "bob", bob, {"alice": alice}), identity=bob) as b,
        a.events() as events,
        a.messages() as inbox,
    ):
        host, port = parse_address(a.status().listening[0])
        stream = await trio.open_tcp_stream(host, port)
        noise = await NoiseStream.handshake(stream, carol.noise, initiator=True)
        yield a, b, events, inbox, noise


async def _bob_is_served(a: Node, b: Node, inbox: InboxReader) -> None:
    """Bob connects to Alice and his message reaches her application, as if nothing happened."""
    connect(b, a, "alice")
    await b.send("chat", b"business as usual")
    assert (await inbox.receive()).body == b"business as usual"


@pytest.mark.internal_errors_expected
async def test_a_bug_on_one_connection_is_reported_and_the_node_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_internal_errors: list[InternalError]
) -> None:
    carol = Identity.generate()
    monkeypatch.setattr(FrameDecoder, "receive_data", _buggy_receive_data)
    with trio.fail_after(30):
        async with _alice_with_bob_and_carol(tmp_path, carol) as (a, b, events, inbox, noise):
            # Carol, a member, proves her key and sends bytes that set the bug off.
            await noise.send_all(encode_frame(SyncFrame(b"BOOM")))
            event = await _next_internal_error(events)
            assert event.where.startswith("tcp connection from 127.0.0.1:")
            assert event.error == "RuntimeError: a bug in the decoder"
            assert "receive_data" in event.traceback
            await read_until_closed(noise)  # her connection was closed
            await noise.aclose()
            await _bob_is_served(a, b, inbox)
    assert [e.error for e in no_internal_errors] == ["RuntimeError: a bug in the decoder"]


@pytest.mark.internal_errors_expected
async def test_a_bug_on_one_packet_or_event_is_reported_and_the_node_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_internal_errors: list[InternalError]
) -> None:
    """Past the transport, in the node: a bug met on one peer's packet, or on one transport
    event (here Carol's connection coming up), is reported and the node goes on."""
    carol = Identity.generate()
    real_receive = Engine.receive_payloads
    real_reset = Engine.reset_peer

    def receive_payloads(
        self: Engine,
        peer: bytes,
        payloads: Iterable[bytes],
        *,
        now: float,
        direct: bool = False,
        via: str = "",
    ) -> None:
        payloads = list(payloads)
        if any(b"BOOM" in bytes(p) for p in payloads):
            raise RuntimeError("a bug in the engine")
        real_receive(self, peer, payloads, now=now, direct=direct, via=via)

    def reset_peer(self: Engine, peer: bytes, *, now: float) -> int:
        if peer == carol.public_key:
            raise RuntimeError("a bug on connecting")
        return real_reset(self, peer, now=now)

    monkeypatch.setattr(Engine, "receive_payloads", receive_payloads)
    monkeypatch.setattr(Engine, "reset_peer", reset_peer)
    with trio.fail_after(30):
        async with _alice_with_bob_and_carol(tmp_path, carol) as (a, b, events, inbox, noise):
            first = await _next_internal_error(events)
            assert first.where == "handling a transport event"
            assert first.error == "RuntimeError: a bug on connecting"
            await noise.send_all(encode_frame(SyncFrame(b"BOOM")))
            second = await _next_internal_error(events)
            assert second.where == f"packet from {carol.public_key.hex()[:16]}"
            assert second.error == "RuntimeError: a bug in the engine"
            await noise.aclose()
            await _bob_is_served(a, b, inbox)
    assert [e.error for e in no_internal_errors] == [
        "RuntimeError: a bug on connecting",
        "RuntimeError: a bug in the engine",
    ]
