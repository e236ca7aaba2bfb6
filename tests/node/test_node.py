from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from mvds_node.errors import ConfigError, TransportBroken
from mvds_node.node import (
    DiscoveryConfig,
    Identity,
    InputRejected,
    MessageAcked,
    MulticastConfig,
    NodeConfig,
    TcpConfig,
    TransportFailed,
    TransportRestored,
    _carriers,
    event_to_json,
    open_node,
    parse_address,
)
from mvds_node.transports import MulticastTransport

from .helpers import config_for, connect, connected


async def test_two_nodes_sync_over_tcp_and_ack(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    with trio.fail_after(20):
        async with (
            open_node(config_for(tmp_path, "alice", alice, {"bob": bob}), identity=alice) as a,
            open_node(config_for(tmp_path, "bob", bob, {"alice": alice}), identity=bob) as b,
            b.messages() as inbox,
            a.events() as a_events,
        ):
            connect(a, b, "bob")
            ids = [await a.send("chat", f"hello {i}".encode()) for i in range(20)]
            got = [await inbox.receive() for _ in range(20)]
            assert sorted(m.body for m in got) == sorted(f"hello {i}".encode() for i in range(20))
            assert {m.via for m in got} == {alice.public_key}
            assert {m.group for m in got} == {"chat"}
            acked: set[bytes] = set()
            async for event in a_events:
                if isinstance(event, MessageAcked):
                    acked.add(event.message_id)
                    if acked == set(ids):
                        break
            status = a.status()
            (peer,) = status.peers
            assert peer.key == bob.public_key and peer.connected and peer.pending == 0
            assert status.messages_stored == 20


async def test_bulk_sends_of_small_and_large_bodies_arrive_and_are_acked(tmp_path: Path) -> None:
    # send_many over a live connection: records written once, bodies of 4 KiB and more in
    # segment files on both sides, the sender paced by its connection's queue.
    alice, bob = Identity.generate(), Identity.generate()
    bodies = [(b"%03d " % i) * (3000 if i % 3 == 0 else 5) for i in range(150)]  # every third 12 KB
    with trio.fail_after(30):
        async with (
            open_node(config_for(tmp_path, "alice", alice, {"bob": bob}), identity=alice) as a,
            open_node(config_for(tmp_path, "bob", bob, {"alice": alice}), identity=bob) as b,
            b.messages() as inbox,
            a.events() as a_events,
        ):
            await connected(a, b, "bob", a_events)
            ids = []
            for first in range(0, len(bodies), 50):
                ids += await a.send_many("chat", bodies[first : first + 50])
            got = [await inbox.receive() for _ in bodies]
            assert [m.body for m in got] == bodies, "in order, each once"
            assert [m.message_id for m in got] == ids
            acked: set[bytes] = set()
            async for event in a_events:
                if isinstance(event, MessageAcked):
                    acked.add(event.message_id)
                    if acked == set(ids):
                        break
            assert a.status().peers[0].pending == 0
            for name in ("alice", "bob"):
                segments = tmp_path / name / "store.sqlite.bodies"
                assert sorted(x.name for x in segments.iterdir()) == ["00000001.seg"]


async def test_ephemeral_goes_nosync_and_is_not_stored(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    with trio.fail_after(20):
        async with (
            open_node(config_for(tmp_path, "alice", alice, {"bob": bob}), identity=alice) as a,
            open_node(config_for(tmp_path, "bob", bob, {"alice": alice}), identity=bob) as b,
            b.messages(live=True) as inbox,
            b.messages() as durable,
            a.events() as a_events,
        ):
            await connected(a, b, "bob", a_events)
            assert await a.send("chat", b"typing...", ephemeral=True) == b""
            message = await inbox.receive()
            assert (message.body, message.ephemeral, message.message_id) == (
                b"typing...",
                True,
                b"",
            )
            assert a.status().messages_stored == 0 and b.status().messages_stored == 0
            # Live-only: never in the inbox.
            with pytest.raises(trio.WouldBlock):
                durable.receive_nowait()


async def test_message_sent_offline_arrives_after_restart(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    a_cfg = config_for(tmp_path, "alice", alice, {"bob": bob})
    b_cfg = config_for(tmp_path, "bob", bob, {"alice": alice})
    with trio.fail_after(20):
        async with open_node(a_cfg, identity=alice) as a:
            mid = await a.send("chat", b"written while bob is away")
        # Alice is gone; her message is in her store. Both come up; bob dials alice.
        async with (
            open_node(a_cfg, identity=alice) as a,
            open_node(b_cfg, identity=bob) as b,
            b.messages() as inbox,
        ):
            assert a.status().peers[0].pending == 1
            connect(b, a, "alice")
            message = await inbox.receive()
            assert (message.message_id, message.body) == (mid, b"written while bob is away")


async def test_unknown_group_is_a_clear_error(tmp_path: Path) -> None:
    alice = Identity.generate()
    with trio.fail_after(10):
        async with open_node(config_for(tmp_path, "alice", alice, {}), identity=alice) as a:
            with pytest.raises(ConfigError, match="no-such-group"):
                await a.send("no-such-group", b"x")


async def test_unknown_key_is_refused(tmp_path: Path) -> None:
    alice, bob, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    with trio.fail_after(20):
        a_cfg = config_for(tmp_path, "alice", alice, {"bob": bob})
        m_cfg = config_for(tmp_path, "mallory", mallory, {"alice": alice})
        async with (
            open_node(a_cfg, identity=alice) as a,
            open_node(replace(m_cfg, name="mallory"), identity=mallory) as m,
            a.events() as a_events,
        ):
            connect(m, a, "alice")
            async for event in a_events:
                if isinstance(event, InputRejected):
                    assert event.reason == "unknown-key"
                    break
            assert a.status().refused >= 1


async def test_nodes_sync_over_multicast_without_tcp(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    secret = bytes(range(32))
    port = 20000 + int.from_bytes(alice.public_key[:2], "big") % 40000

    def lan(cfg: NodeConfig) -> NodeConfig:
        group = replace(cfg.groups[0], secret=secret)
        mc = MulticastConfig(enabled=True, group="239.255.77.79", port=port, interface="127.0.0.1")
        return replace(cfg, listen=None, groups=(group,), multicast=mc)

    with trio.fail_after(20):
        async with (
            open_node(lan(config_for(tmp_path, "alice", alice, {"bob": bob})), identity=alice) as a,
            open_node(lan(config_for(tmp_path, "bob", bob, {"alice": alice})), identity=bob) as b,
            b.messages() as inbox,
            b.messages(live=True) as live,
        ):
            # Big enough to need several datagrams: the engine cuts payloads to fit.
            bodies = [bytes([i]) * 500 for i in range(12)]
            for body in bodies:
                await a.send("chat", body)
            got = [await inbox.receive() for _ in bodies]
            assert sorted(m.body for m in got) == sorted(bodies)
            assert {m.via for m in got} == {alice.public_key}
            await a.send("chat", b"typing", ephemeral=True)
            async for ephemeral in live:  # the durable ones came live too, before it
                if ephemeral.ephemeral:
                    break
            assert ephemeral.body == b"typing"
            # Bob's acks come back over multicast too (checked at each of Alice's events).
            async with a.events() as events:
                while a.status().peers[0].pending:
                    with trio.move_on_after(0.1):
                        await events.receive()


def _on_the_lan(secret: bytes, port: int) -> Callable[[NodeConfig], NodeConfig]:
    def lan(cfg: NodeConfig) -> NodeConfig:
        group = replace(cfg.groups[0], secret=secret)
        mc = MulticastConfig(enabled=True, group="239.255.77.79", port=port, interface="127.0.0.1")
        return replace(cfg, listen=None, groups=(group,), multicast=mc)

    return lan


async def test_a_failed_multicast_carrier_is_reopened_and_syncs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interface goes away under Bob's multicast sockets (his receive fails as a whole and
    the sockets are gone), then comes back: he reopens them and hears Alice again, with no TCP
    between them."""
    alice, bob = Identity.generate(), Identity.generate()
    lan = _on_the_lan(bytes(range(32)), 20000 + int.from_bytes(bob.public_key[:2], "big") % 40000)
    monkeypatch.setattr(_carriers, "REOPEN_DELAYS", (0.01,))
    interface_gone = trio.Event()
    real_receive = MulticastTransport.receive
    failed: list[MulticastTransport] = []

    async def receive(self: MulticastTransport) -> tuple[bytes, bytes]:
        if self.node_id == bob.public_key and not failed:
            await interface_gone.wait()
            failed.append(self)
            self._close_sockets()
            raise TransportBroken("multicast receive failed: [Errno 19] No such device")
        return await real_receive(self)

    monkeypatch.setattr(MulticastTransport, "receive", receive)
    with trio.fail_after(20):
        async with (
            open_node(lan(config_for(tmp_path, "bob", bob, {"alice": alice})), identity=bob) as b,
            b.events() as events,
            b.messages() as inbox,
            open_node(lan(config_for(tmp_path, "alice", alice, {"bob": bob})), identity=alice) as a,
        ):
            interface_gone.set()
            seen = []
            async for event in events:
                if isinstance(event, (TransportFailed, TransportRestored)):
                    seen.append(event)
                    if isinstance(event, TransportRestored):
                        break
            carrier = failed[0]
            assert b.status().carriers_down == ()
            assert seen == [
                TransportFailed(carrier, "multicast receive failed: [Errno 19] No such device"),
                TransportRestored(carrier),
            ]
            assert event_to_json(seen[1]) == {
                "type": "transport-restored",
                "transport": "MulticastTransport",
            }
            await a.send("chat", b"heard again")
            assert (await inbox.receive()).body == b"heard again"


async def test_a_node_whose_multicast_interface_is_missing_starts_without_it(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    cfg = config_for(tmp_path, "alice", alice, {"bob": bob})
    group = replace(cfg.groups[0], secret=bytes(32))
    # 192.0.2.1 (TEST-NET-1) is on no interface of this machine.
    mc = MulticastConfig(enabled=True, group="239.255.77.79", port=7701, interface="192.0.2.1")
    with trio.fail_after(20):
        async with open_node(replace(cfg, groups=(group,), multicast=mc), identity=alice) as a:
            (down,) = a.status().carriers_down
            assert down.startswith("multicast 239.255.77.79:7701 on 192.0.2.1: cannot open: ")
            assert a.status().to_json()["carriers_down"] == [down]
            assert a.status().listening, "TCP runs all the same"


async def test_nodes_find_each_other_by_mdns_and_sync(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()

    def mdns(cfg: NodeConfig) -> NodeConfig:
        return replace(cfg, discovery=DiscoveryConfig(enabled=True, interfaces=("127.0.0.1",)))

    with trio.fail_after(40):
        async with (
            open_node(
                mdns(config_for(tmp_path, "alice", alice, {"bob": bob})), identity=alice
            ) as a,
            open_node(mdns(config_for(tmp_path, "bob", bob, {"alice": alice})), identity=bob) as b,
            b.messages() as inbox,
        ):
            # No addresses configured anywhere: only mDNS can bring them together.
            await a.send("chat", b"found you")
            message = await inbox.receive()
            assert (message.body, message.via) == (b"found you", alice.public_key)


class BreaksWhenTold:
    """A carrier whose receive fails as a whole (its socket died) once ``broken`` is set."""

    reliable = False
    max_payload = 1200
    max_latency = 0.0

    def __init__(self) -> None:
        self.broken = trio.Event()
        self.receives = 0

    async def send(self, peer: bytes, packet: bytes) -> None:
        raise TransportBroken("the carrier failed")

    async def receive(self) -> tuple[bytes, bytes]:
        self.receives += 1
        await self.broken.wait()
        raise TransportBroken("the carrier failed")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_broken_carrier_is_reported_and_the_node_runs_on(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    carrier = BreaksWhenTold()
    with trio.fail_after(20):
        async with (
            open_node(
                config_for(tmp_path, "alice", alice, {"bob": bob}),
                identity=alice,
                transports=(carrier,),
            ) as a,
            open_node(config_for(tmp_path, "bob", bob, {"alice": alice}), identity=bob) as b,
            a.events() as a_events,
            a.messages() as a_inbox,
            b.messages() as b_inbox,
        ):
            carrier.broken.set()
            async for event in a_events:
                if isinstance(event, TransportFailed):
                    assert event == TransportFailed(carrier, "the carrier failed")
                    assert event_to_json(event) == {
                        "type": "transport-failed",
                        "transport": "BreaksWhenTold",
                        "detail": "the carrier failed",
                    }
                    break
            # Alice still syncs both ways over her other carrier (TCP).
            connect(a, b, "bob")
            await a.send("chat", b"after the failure")
            assert (await b_inbox.receive()).body == b"after the failure"
            await b.send("chat", b"and back")
            assert (await a_inbox.receive()).body == b"and back"
            assert carrier.receives == 1  # the failed carrier is not read again


async def test_the_tcp_settings_reach_the_listener(tmp_path: Path) -> None:
    alice = Identity.generate()
    config = replace(config_for(tmp_path, "alice", alice, {}), tcp=TcpConfig(handshake_timeout=0.5))
    with trio.fail_after(20):
        async with open_node(config, identity=alice) as a:
            host, port = parse_address(a.status().listening[0])
            stream = await trio.open_tcp_stream(host, port)
            # A client that never starts its handshake is closed after 0.5 s, not the default 10.
            with trio.fail_after(5):
                # A reset instead of an end of stream is a close all the same.
                with contextlib.suppress(trio.BrokenResourceError):
                    assert await stream.receive_some(100) == b""
            await stream.aclose()
