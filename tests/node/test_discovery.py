"""mDNS discovery on 127.0.0.1 only."""

from __future__ import annotations

import socket

import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from mvds_node.node._discovery import SERVICE_TYPE, Discovery, PeerDiscovered, PeerLost, group_tag
from mvds_node.transports import Keypair

G1, G2, G3 = b"1" * 32, b"2" * 32, b"3" * 32
LO = ["127.0.0.1"]


async def test_two_nodes_find_each_other_and_strangers_are_not_reported() -> None:
    a_key, b_key, c_key = (Keypair.generate().public for _ in range(3))
    a = Discovery(a_key, 7001, [G1, G2], interfaces=LO)
    b = Discovery(b_key, 7002, [G2], interfaces=LO)
    c = Discovery(c_key, 7003, [G3], interfaces=LO)  # shares no group with a
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(c.run)
            b_scope = trio.CancelScope()

            async def run_b(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with b_scope:
                    await b.run(task_status=task_status)

            await nursery.start(run_b)
            found = await a.events.receive()
            assert found == PeerDiscovered(b_key, ("127.0.0.1",), 7002, frozenset({group_tag(G2)}))
            seen_by_b = await b.events.receive()
            assert isinstance(seen_by_b, PeerDiscovered) and seen_by_b.key == a_key
            # b leaves: its goodbye reaches a.
            b_scope.cancel()
            lost = await a.events.receive()
            assert lost == PeerLost(b_key)
            nursery.cancel_scope.cancel()


async def test_malformed_announcements_are_ignored() -> None:
    me = Discovery(Keypair.generate().public, 7004, [G1], interfaces=LO)
    zc = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=LO, ip_version=IPVersion.V4Only))
    bad = ServiceInfo(
        SERVICE_TYPE,
        f"broken.{SERVICE_TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=7005,
        properties={"v": "1", "key": "zz" * 32, "g": group_tag(G1)},
    )
    try:
        with trio.fail_after(30):
            await trio.to_thread.run_sync(lambda: zc.register_service(bad))
            async with trio.open_nursery() as nursery:
                await nursery.start(me.run)
                for _ in range(250):  # polled, bounded by fail_after as well
                    if me.ignored:
                        break
                    await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
        assert me.ignored >= 1
        assert me.events.statistics().current_buffer_used == 0
    finally:
        await trio.to_thread.run_sync(lambda: zc.unregister_service(bad))
        await trio.to_thread.run_sync(zc.close)
