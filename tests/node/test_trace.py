"""``node.trace`` and the sync status in ``node.status``: where a message is, as a user asks.

On a memory hub under the autojump clock (a peer that is not on the hub is offline), and once
end to end over TCP on 127.0.0.1: a message to a peer that is down shows as pending with its next
retry, then as acknowledged over TCP once the peer is up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing

from mvds_node.node import Identity, MessageAcked, Node, open_node
from mvds_node.transports import MemoryHub
from tests.node.helpers import config_for, connect, next_event, next_sync


def _peer(node: Node, key: bytes) -> dict[str, Any]:
    return next(p for p in node.status().to_json()["peers"] if p["key"] == key.hex())


async def test_pending_to_an_offline_peer_then_acked_when_it_comes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MemoryHub()
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    bob_key = ids["bob"].public_key
    with trio.fail_after(120):
        async with (
            open_node(
                config_for(tmp_path, "alice", ids["alice"], {"bob": ids["bob"]}, listen=None),
                identity=ids["alice"],
                transports=(hub.transport(ids["alice"].public_key),),
            ) as alice,
            alice.events() as events,
        ):
            bodies = [b"one", b"two" * 50, b"three" * 100]
            ids_sent = [await alice.send("chat", body) for body in bodies]
            await trio.sleep(5 * alice.config.epoch_seconds)  # virtual: a few epochs pass

            t = alice.trace(ids_sent[0])
            assert t.known and t.stored and t.group == "chat" and not t.held
            assert t.stored_ms > 0
            (peer,) = t.peers
            assert (peer.peer, peer.state, peer.given_up) == (bob_key, "sending", False)
            # No carrier reaches him: the payloads went to the one that dials (TCP).
            assert peer.transmissions >= 1 and peer.carrier == "tcp"
            assert peer.next_retry_ms > t.taken_ms - 1000 * alice.config.epoch_seconds

            # Status: exactly what is owed to the peer that is down, and its bytes.
            wires = alice._engine.store_view.get_wires(ids_sent)
            p = _peer(alice, bob_key)
            assert (p["pending"], p["pending_bytes"]) == (3, sum(map(len, wires.values())))
            assert p["connected"] is False
            assert [c["carrier"] for c in p["contacts"]] == ["tcp"]
            json.dumps(alice.trace(ids_sent[0]).to_json())

            # Bob comes online: the next retransmission reaches him.
            async with open_node(
                config_for(tmp_path, "bob", ids["bob"], {"alice": ids["alice"]}, listen=None),
                identity=ids["bob"],
                transports=(hub.transport(bob_key),),
            ):
                acked: set[bytes] = set()
                while len(acked) < 3:
                    acked.add((await next_event(events, MessageAcked)).message_id)
                assert acked == set(ids_sent)
                t = alice.trace(ids_sent[0])
                (peer,) = t.peers
                assert (peer.state, peer.acked_via) == ("acked", "memory")
                assert peer.acked_ms >= t.stored_ms
                p = _peer(alice, bob_key)
                assert (p["pending"], p["pending_bytes"]) == (0, 0)


async def test_a_held_message_shows_its_missing_parent_and_who_is_asked(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from mvds_node.sync import (
        DeliveryMode,
        SyncConfig,
        decode_payload,
        encode_message,
        encode_payload,
        message_id,
    )
    from mvds_node.transports import HEADER_SIZE, SyncFrame, encode_frame

    hub = MemoryHub()
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    config = config_for(
        tmp_path,
        "alice",
        ids["alice"],
        {"bob": ids["bob"]},
        listen=None,
        delivery=DeliveryMode.CONSISTENT,
    )
    group = config.groups[0]
    bob_end = hub.transport(ids["bob"].public_key)
    with trio.fail_after(60):
        async with open_node(
            config, identity=ids["alice"], transports=(hub.transport(ids["alice"].public_key),)
        ) as alice:
            parent = message_id(group.id, 1, b"first")
            child = message_id(group.id, 2, b"second")
            wire = encode_message(group.id, 2, b"second", parents=(parent,))
            await bob_end.send(
                ids["alice"].public_key, encode_frame(SyncFrame(encode_payload(messages=[wire])))
            )
            # Alice stores it, holds it and asks Bob for the parent: his endpoint hears that.
            sender, packet = await next_sync(bob_end)
            assert sender == ids["alice"].public_key
            assert decode_payload(packet[HEADER_SIZE:], SyncConfig().limits).requests == [parent]
            t = alice.trace(child)
            assert t.held
            assert [(w.message_id, w.on) for w in t.parents_missing] == [
                (parent, (ids["bob"].public_key,))
            ]
            p = alice.trace(parent)
            assert p.known and not p.stored
            assert [(x.peer, x.state) for x in p.peers] == [(ids["bob"].public_key, "requesting")]
            (g,) = alice.status().groups
            assert g.lacking == 1 and g.held == 1
            assert [(w.message_id, w.on) for w in g.held_ids] == [(child, (parent,))]
            assert [(w.message_id, w.on) for w in g.lacking_ids] == [
                (parent, (ids["bob"].public_key,))
            ]
            assert _peer(alice, ids["bob"].public_key)["requested"] == 1


async def test_end_to_end_over_tcp_pending_then_acked_via_tcp(tmp_path: Path) -> None:
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    bob_key = ids["bob"].public_key
    with trio.fail_after(60):
        async with (
            open_node(
                config_for(tmp_path, "alice", ids["alice"], {"bob": ids["bob"]}),
                identity=ids["alice"],
            ) as alice,
            alice.events() as events,
        ):
            mid = await alice.send("chat", b"are you there?")
            # Bob is down (nowhere to dial): the message waits, with a retry due.
            t = alice.trace(mid)
            (peer,) = t.peers
            assert (peer.state, peer.given_up, peer.acked_ms) == ("sending", False, 0)
            assert peer.next_retry_ms > 0
            assert _peer(alice, bob_key)["pending"] == 1
            async with open_node(
                config_for(tmp_path, "bob", ids["bob"], {"alice": ids["alice"]}),
                identity=ids["bob"],
            ) as bob:
                connect(alice, bob, "bob")
                acked = await next_event(events, MessageAcked)
                assert (acked.message_id, acked.via) == (mid, "tcp")
                (peer,) = alice.trace(mid).peers
                assert (peer.state, peer.acked_via) == ("acked", "tcp")
                assert peer.acked_ms > 0
                p = _peer(alice, bob_key)
                assert p["pending"] == 0
                assert "tcp" in [c["carrier"] for c in p["contacts"]]
