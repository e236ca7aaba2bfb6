"""Builders shared by the node tests: configurations, identities, nodes on a memory hub.

A node on a :class:`~mvds_node.transports.MemoryHub` (``listen=None``, no address for TCP to
dial) syncs without sockets, so its tests run under the autojump clock and check time exactly;
the TCP tests keep to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import trio

from mvds_node.node import (
    AnyEvent,
    GroupConfig,
    Identity,
    Node,
    NodeConfig,
    PeerConfig,
    PeerConnected,
    group_id_for,
    open_node,
    parse_address,
)
from mvds_node.transports import FrameMode, MemoryHub, MemoryTransport, Transport

E = TypeVar("E")


def config_for(
    tmp_path: Path, name: str, me: Identity, others: dict[str, Identity], **changes: Any
) -> NodeConfig:
    """``name``'s configuration: it knows ``others`` by name, and they share the group
    ``chat``; it listens on 127.0.0.1 (``listen=None`` in ``changes`` for no TCP at all)."""
    peers = tuple(
        PeerConfig(key=i.public_key, name=n, log_key=i.signing_public_key)
        for n, i in others.items()
    )
    group = GroupConfig(name="chat", id=group_id_for("chat"), members=tuple(p.key for p in peers))
    config = NodeConfig(
        data_dir=tmp_path / name,
        name=name,
        listen=("127.0.0.1", 0),
        peers=peers,
        groups=(group,),
        epoch_seconds=0.05,
    )
    return replace(config, **changes)


def connect(a: Node, b: Node, b_name: str) -> None:
    """Let ``a`` dial ``b`` at the address ``b`` listens on."""
    host, port = parse_address(b.status().listening[0])
    a.add_peer(PeerConfig(key=b.identity.public_key, name=b_name, address=(host, port)))


async def connected(
    a: Node, b: Node, b_name: str, a_events: trio.MemoryReceiveChannel[AnyEvent]
) -> None:
    """:func:`connect`, then wait until ``a`` reports the connection up."""
    connect(a, b, b_name)
    await next_event(a_events, PeerConnected)


async def next_event(events: trio.MemoryReceiveChannel[AnyEvent], kind: type[E]) -> E:
    """The next event of type ``kind``, skipping the others."""
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"events ended before a {kind.__name__}")


@contextlib.asynccontextmanager
async def memory_nodes(
    tmp_path: Path,
    names: Sequence[str] = ("alice", "bob"),
    *,
    hub: MemoryHub | None = None,
    carriers: dict[str, Sequence[Transport]] | None = None,
    **changes: Any,
) -> AsyncIterator[dict[str, Node]]:
    """Nodes named ``names``, each a member of ``chat`` with all the others, on one memory
    hub and no sockets; ``carriers`` adds carriers of a node's own, tried with the hub."""
    hub = MemoryHub() if hub is None else hub
    ids = {n: Identity.generate() for n in names}
    # Every endpoint is on the hub before any node starts: each node's peers are reached from
    # the start (a hub has no events to say that a peer came).
    endpoints = {name: hub.transport(me.public_key) for name, me in ids.items()}
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for name, me in ids.items():
            others = {n: i for n, i in ids.items() if n != name}
            config = config_for(tmp_path, name, me, others, **({"listen": None} | changes))
            extra = tuple((carriers or {}).get(name, ()))
            transports = (*extra, endpoints[name])
            nodes[name] = await stack.enter_async_context(
                open_node(config, identity=me, transports=transports)
            )
        yield nodes


async def next_sync(endpoint: MemoryTransport) -> tuple[bytes, bytes]:
    """The next SYNC packet a hand-driven endpoint receives, past the control frames a node
    sends on its own (its AUTHOR introduction)."""
    while True:
        sender, packet = await endpoint.receive()
        if packet[3] == FrameMode.SYNC:
            return sender, packet


async def read_until_closed(stream: trio.abc.ReceiveStream) -> None:
    """Read what a node sends on a hand-driven connection (its greeting comes first) until it
    closes the connection; bound it with the test's ``fail_after``."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await stream.receive_some():
            pass
