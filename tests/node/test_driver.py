"""The node driver on memory carriers under the autojump clock: routing by what carriers
declare, the retransmission gap a carrier's latency gives, one event vocabulary and its JSON,
and what ``open_node`` raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing

from mvds_node.errors import NodeFailed
from mvds_node.node import (
    Identity,
    InputRejected,
    MessageAcked,
    MessageDelivered,
    Node,
    event_to_json,
    open_node,
)
from mvds_node.sync import PayloadRejected, RejectReason, SQLiteStore
from mvds_node.transports import MemoryHub, SyncFrame, encode_frame

from .helpers import config_for, memory_nodes, next_event


async def test_two_nodes_on_a_memory_hub_sync_and_ack_at_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        memory_nodes(tmp_path) as nodes,
        nodes["bob"].messages() as inbox,
        nodes["alice"].events() as events,
    ):
        alice, bob = nodes["alice"], nodes["bob"]
        start = trio.current_time()
        mid = await alice.send("chat", b"hello")
        message = await inbox.receive()
        assert (message.message_id, message.body, message.group) == (mid, b"hello", "chat")
        assert message.via == alice.identity.public_key
        acked = await next_event(events, MessageAcked)
        assert acked == MessageAcked(mid, bob.identity.public_key)
        # No connection to make and a reliable carrier: there and back within one epoch.
        assert trio.current_time() - start <= alice.config.epoch_seconds
        assert alice.status().peers[0].pending == 0


async def test_a_carrier_that_reaches_the_peer_is_preferred_reliable_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Alice has two carriers to Bob: a lossless hub, and a lossy one she lists first. The
    # router takes the reliable one whatever the order, so nothing is lost.
    lossy, lossless = MemoryHub(loss=1.0), MemoryHub()
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    a_lossy = lossy.transport(ids["alice"].public_key)
    b_lossy = lossy.transport(ids["bob"].public_key)
    # Both on the lossless hub before either starts: alice introduces herself (AUTHOR) on the
    # carrier that reaches bob when she starts.
    a_lossless = lossless.transport(ids["alice"].public_key)
    b_lossless = lossless.transport(ids["bob"].public_key)
    async with (
        open_node(
            config_for(tmp_path, "alice", ids["alice"], {"bob": ids["bob"]}, listen=None),
            identity=ids["alice"],
            transports=(a_lossy, a_lossless),
        ) as alice,
        open_node(
            config_for(tmp_path, "bob", ids["bob"], {"alice": ids["alice"]}, listen=None),
            identity=ids["bob"],
            transports=(b_lossy, b_lossless),
        ) as bob,
        bob.messages() as inbox,
    ):
        for i in range(5):
            await alice.send("chat", b"m%d" % i)
        assert [(await inbox.receive()).body for _ in range(5)] == [b"m%d" % i for i in range(5)]
        assert lossy.statistics().lost == 0
        assert lossless.statistics().delivered > 0


@pytest.mark.parametrize(("latency", "by_9s"), [(0.0, range(5, 20)), (5.0, range(1, 2))])
async def test_the_retransmission_gap_comes_from_the_carriers_latency(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, latency: float, by_9s: range
) -> None:
    # Every packet is lost. With no latency declared the engine backs off from two epochs
    # (0.1 s); a carrier that declares 5 s gets nothing again before 2 * 5 s.
    hub = MemoryHub(loss=1.0, max_latency=latency)
    async with memory_nodes(tmp_path, hub=hub) as nodes:
        # Each node's introduction (its AUTHOR frame) is lost too; count from after them.
        await trio.testing.wait_all_tasks_blocked()
        introductions = hub.statistics().lost
        assert introductions == 2
        await nodes["alice"].send("chat", b"into the void")
        start = trio.current_time()
        await trio.sleep(9.0)  # virtual time
        assert hub.statistics().lost - introductions in by_9s
        await trio.sleep(2.0)  # virtual time
        if latency:
            assert hub.statistics().lost - introductions == 2
        assert trio.current_time() - start == 11.0


async def test_payloads_are_cut_to_the_carriers_size(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MemoryHub(max_payload=600)
    bodies = [bytes([i]) * 200 for i in range(12)]
    async with memory_nodes(tmp_path, hub=hub) as nodes, nodes["bob"].messages() as inbox:
        await nodes["alice"].send_many("chat", bodies)
        got = [(await inbox.receive()).body for _ in bodies]
        assert sorted(got) == sorted(bodies)
        # 2,400 bytes of bodies in packets of at most 600: several payloads, none refused.
        assert hub.statistics().delivered >= 5


async def test_a_carrier_that_does_not_check_frames_has_them_checked_by_the_node(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MemoryHub()
    async with memory_nodes(tmp_path, hub=hub) as nodes, nodes["bob"].events() as events:
        alice, bob = nodes["alice"], nodes["bob"]
        mallory = hub.transport(b"mallory")
        await mallory.send(bob.identity.public_key, b"GET / HTTP/1.1\r\n\r\n")
        refused = await next_event(events, InputRejected)
        assert (refused.peer, refused.reason) == (b"mallory", "frame:bad-magic")
        # A frame from a peer outside the group reaches the engine, which refuses it whole.
        await mallory.send(bob.identity.public_key, encode_frame(SyncFrame(b"\x00")))
        rejected = await next_event(events, PayloadRejected)
        assert rejected.reason is RejectReason.NOT_A_MEMBER
        assert str(rejected.reason) == "peer is not a member of any group"
        assert bob.status().refused == 2
        await alice.send("chat", b"still served")


async def test_events_are_the_engines_and_encode_to_json(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        memory_nodes(tmp_path) as nodes,
        nodes["bob"].events() as events,
        nodes["alice"].events() as a_events,
    ):
        alice, bob = nodes["alice"], nodes["bob"]
        mid = await alice.send("chat", b"\x00hi")
        delivered = await next_event(events, MessageDelivered)
        assert (delivered.message_id, delivered.body) == (mid, b"\x00hi")
        doc = event_to_json(delivered)
        assert doc["type"] == "delivered"
        assert (doc["message_id"], doc["body"], doc["parents"]) == (mid.hex(), "006869", [])
        assert doc["sender"] == alice.identity.public_key.hex()
        acked = await next_event(a_events, MessageAcked)
        assert event_to_json(acked) == {
            "type": "acked",
            "message_id": mid.hex(),
            "peer": bob.identity.public_key.hex(),
            "via": "memory",  # the carrier the acknowledgement came over
        }
        json.dumps(alice.status().to_json())  # the snapshot is JSON all through
        await alice.send("chat", b"typing", ephemeral=True)
        ephemeral = await next_event(events, MessageDelivered)
        assert (ephemeral.message_id, ephemeral.ephemeral, ephemeral.body) == (b"", True, b"typing")


def test_json_keeps_every_field_of_an_event() -> None:
    from mvds_node.sync import GaveUp, RecordType

    doc = event_to_json(GaveUp(b"\x01", b"\x02", RecordType.MESSAGE, 7))
    assert doc == {
        "type": "gave-up",
        "message_id": "01",
        "peer": "02",
        "record": "message",
        "send_count": 7,
    }
    rejected = PayloadRejected(b"\x02", RejectReason.PEER_FULL, 3, False)
    assert event_to_json(rejected)["reason"] == RejectReason.PEER_FULL.value


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Acked", MessageAcked),
        ("Delivered", MessageDelivered),
        ("Refused", InputRejected),
    ],
)
def test_old_event_names_are_deprecated_aliases(old: str, new: type) -> None:
    import mvds_node.node

    with pytest.warns(DeprecationWarning, match=old):
        assert getattr(mvds_node.node, old) is new


class _Buggy:
    """A carrier whose reader meets a bug: the node's task fails."""

    reliable = True
    max_payload = 1200
    max_latency = 0.0

    async def send(self, peer: bytes, packet: bytes) -> None:
        await trio.lowlevel.checkpoint()

    async def receive(self) -> tuple[bytes, bytes]:
        await trio.sleep(1.0)  # virtual time
        raise ValueError("a bug in the carrier")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_open_node_raises_node_failed_from_its_tasks_group(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    me = Identity.generate()
    config = config_for(tmp_path, "alice", me, {}, listen=None)
    with pytest.raises(NodeFailed, match="ValueError: a bug in the carrier") as caught:
        async with open_node(config, identity=me, transports=(_Buggy(),)):
            await trio.sleep_forever()
    assert isinstance(caught.value.__cause__, BaseExceptionGroup)
    assert caught.value.__cause__.subgroup(ValueError) is not None


async def test_an_exception_in_the_block_leaves_open_node_as_itself(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    me = Identity.generate()
    config = config_for(tmp_path, "alice", me, {}, listen=None)
    with pytest.raises(KeyError, match="mine"):
        async with open_node(config, identity=me):
            raise KeyError("mine")
    # A cancellation from outside is not a failure of the node.
    with trio.move_on_after(1.0) as scope:
        async with open_node(config, identity=me):
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_node_runs_in_the_callers_nursery(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hub = MemoryHub()
    alice, bob = Identity.generate(), Identity.generate()
    a_config = config_for(tmp_path, "alice", alice, {"bob": bob}, listen=None)
    b_config = config_for(tmp_path, "bob", bob, {"alice": alice}, listen=None)
    a_hub, b_hub = hub.transport(alice.public_key), hub.transport(bob.public_key)
    b_config.data_dir.mkdir(parents=True)
    with SQLiteStore(b_config.store_path) as store:
        async with open_node(a_config, identity=alice, transports=(a_hub,)) as a:
            async with trio.open_nursery() as nursery:
                b = Node(b_config, bob, store, transports=(b_hub,))
                await nursery.start(b.run)
                async with b.messages() as inbox:
                    await a.send("chat", b"to a node in a nursery")
                    assert (await inbox.receive()).body == b"to a node in a nursery"
                nursery.cancel_scope.cancel()
            # Leaving run closed its carriers: the hub no longer reaches bob.
            assert not a_hub.reaches(bob.public_key)
