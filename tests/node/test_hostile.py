"""A live node under hostile input: it refuses, says why, and keeps syncing with everyone else."""

from __future__ import annotations

import contextlib
import random
import struct
from pathlib import Path

import trio

from mvds_node.node import Identity, Refused, open_node, parse_address
from mvds_node.transports import NoiseStream, SyncFrame, encode_frame

from .test_node import config_for, connect


async def next_refusal(events: trio.MemoryReceiveChannel[object]) -> Refused:
    async for event in events:
        if isinstance(event, Refused):
            return event
    raise AssertionError("events ended")


async def test_garbage_before_the_handshake(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    rng = random.Random(3)
    with trio.fail_after(30):
        async with (
            open_node(config_for(tmp_path, "alice", alice, {"bob": bob}), identity=alice) as a,
            open_node(config_for(tmp_path, "bob", bob, {"alice": alice}), identity=bob) as b,
            a.events() as events,
            a.messages() as inbox,
        ):
            host, port = parse_address(a.status().listening[0])
            for size in (0, 1, 31, 32, 200, 70_000):  # bounded: six connections
                stream = await trio.open_tcp_stream(host, port)
                junk = bytes(rng.getrandbits(8) for _ in range(size))
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(struct.pack(">H", len(junk) % 65536) + junk)
                await stream.aclose()
            refusal = await next_refusal(events)
            assert refusal.reason.startswith("handshake")
            # A real peer still gets through.
            connect(b, a, "alice")
            await b.send("chat", b"still here")
            assert (await inbox.receive()).body == b"still here"


async def test_hostile_frames_from_a_proved_peer(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    rng = random.Random(5)
    with trio.fail_after(30):
        async with (
            open_node(config_for(tmp_path, "alice", alice, {"bob": bob}), identity=alice) as a,
            open_node(config_for(tmp_path, "bob", bob, {"alice": alice}), identity=bob) as b,
            a.events() as events,
            a.messages() as inbox,
        ):
            host, port = parse_address(a.status().listening[0])
            attacks = [
                b"GET / HTTP/1.1\r\n\r\n",  # not our magic
                b"MV\x09\x01\x00\x00\x00\x00",  # unknown version
                b"MV\x01\x09\x00\x00\x00\x00",  # unknown mode
                b"MV\x01\x01\xff\xff\xff\xff",  # a length over the limit
                encode_frame(SyncFrame(bytes(rng.getrandbits(8) for _ in range(300)))),
            ]
            reasons = []
            for attack in attacks:
                # Bob's key, proved in a real handshake: then bytes that are not valid frames.
                stream = await trio.open_tcp_stream(host, port)
                noise = await NoiseStream.handshake(stream, bob.noise, initiator=True)
                try:
                    await noise.send_all(attack)
                    await noise.receive_some()  # alice closes the connection
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                await noise.aclose()
                if attack.startswith(b"MV\x01\x01") and len(attack) > 8:
                    continue  # a well-formed SYNC frame of garbage: judged by the engine
                refusal = await next_refusal(events)
                reasons.append(refusal.reason)
                assert refusal.peer in (bob.public_key, None)
            assert all(r.startswith("frame:") for r in reasons), reasons
            assert a.status().refused >= len(reasons)
            # The garbage payload was refused by the engine, and the node still syncs.
            connect(b, a, "alice")
            await b.send("chat", b"after the storm")
            message = await inbox.receive()
            assert message.body == b"after the storm"
