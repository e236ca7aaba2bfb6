"""The demo behind ``python3 dev.py demo``: real nodes syncing on loopback, and a catch-up by file.

Three nodes with their own keys and SQLite stores in a temporary directory (or ``--dir``):

1. alice and bob run and dial each other over TCP+Noise on 127.0.0.1; they chat, and every
   message is delivered and acknowledged;
2. carol never joins the network; alice writes a bundle file for her (a USB stick, say), and
   carol imports it and has the whole conversation, in causal order;
3. carol replies by writing a bundle back; alice imports it, learns what carol has (no more
   retransmissions to her) and reads her reply, which bob then gets from alice over TCP.

    python -m mvds_node.demo [--dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import trio

from mvds_node.node import (
    GroupConfig,
    Identity,
    Message,
    Node,
    NodeConfig,
    PeerConfig,
    PeerConnected,
    group_id_for,
    open_node,
    parse_address,
)

NAMES = ("alice", "bob", "carol")


def say(text: str) -> None:
    print(text, flush=True)


def configs(root: Path, ids: dict[str, Identity]) -> dict[str, NodeConfig]:
    out = {}
    for me in NAMES:
        peers = tuple(
            PeerConfig(key=ids[n].public_key, name=n, log_key=ids[n].signing_public_key)
            for n in NAMES
            if n != me
        )
        group = GroupConfig("chat", group_id_for("chat"), tuple(p.key for p in peers))
        out[me] = NodeConfig(
            data_dir=root / me,
            name=me,
            listen=("127.0.0.1", 0),
            peers=peers,
            groups=(group,),
            epoch_seconds=0.1,
        )
    return out


async def run(root: Path) -> None:
    ids = {n: Identity.generate() for n in NAMES}
    names = {ids[n].public_key: n for n in NAMES}
    cfg = configs(root, ids)
    say(
        f"Three nodes in {root}: " + ", ".join(f"{n} {ids[n].public_key.hex()[:12]}" for n in NAMES)
    )

    def show(who: str, m: Message) -> None:
        say(f"  {who:5} got {m.body.decode()!r} from {names.get(m.via, '?')}")

    with trio.fail_after(60):
        async with (
            open_node(cfg["alice"], identity=ids["alice"]) as alice,
            open_node(cfg["bob"], identity=ids["bob"]) as bob,
            alice.messages() as alice_inbox,
            bob.messages() as bob_inbox,
            alice.events() as alice_events,
        ):
            say("\n1. alice and bob over TCP+Noise on loopback (carol is offline)")
            host, port = parse_address(bob.status().listening[0])
            alice.add_peer(PeerConfig(ids["bob"].public_key, "bob", (host, port)))
            async for event in alice_events:
                if isinstance(event, PeerConnected):
                    say(f"  alice connected to bob at {event.address} (Noise XX, keys proved)")
                    break
            lines = [
                (alice, "hi bob, carol is away this week"),
                (bob, "I'll keep notes for her"),
                (alice, "lunch on friday?"),
                (bob, "sure"),
            ]
            for node, text in lines:
                await node.send("chat", text.encode())
                inbox = bob_inbox if node is alice else alice_inbox
                show("bob" if node is alice else "alice", await inbox.receive())
            await _until_acked(alice, ids["bob"].public_key)
            say("  every message acknowledged; carol has " + _pending(alice, "carol"))

            say("\n2. carol catches up from a file (she never joins the network)")
            stick = root / "usb-stick"
            stick.mkdir()
            out = alice.export_bundle(stick / "for-carol.bundle", peer="carol")
            say(f"  alice wrote {out.path.name}: {out.messages} messages, {out.bytes} bytes")
            async with (
                open_node(_no_listen(cfg["carol"]), identity=ids["carol"]) as carol,
                carol.messages() as carol_inbox,
            ):
                result = carol.import_bundle(stick / "for-carol.bundle")
                say(
                    f"  carol imported it: {result.messages_new} new messages, sender "
                    f"{names[result.sender]} proved by Noise_X"
                )
                for _ in range(result.messages_new):
                    show("carol", await carol_inbox.receive())
                again = carol.import_bundle(stick / "for-carol.bundle")
                say(f"  importing it twice: {again.messages_new} new, {again.messages_known} known")

                say("\n3. carol answers by file; alice relays her reply to bob over TCP")
                await carol.send("chat", b"thanks both, friday works")
                back = carol.export_bundle(stick / "for-alice.bundle", peer="alice")
                say(f"  carol wrote {back.path.name}: {back.messages} message, {back.acks} acks")
            result = alice.import_bundle(stick / "for-alice.bundle")
            show("alice", await alice_inbox.receive())
            show("bob", await bob_inbox.receive())
            say(f"  alice: carol has {_pending(alice, 'carol')}")
    say("\nDone. Everything above went through real sockets, Noise and SQLite stores.")


def _no_listen(config: NodeConfig) -> NodeConfig:
    return dataclasses.replace(config, listen=None)


def _pending(node: Node, name: str) -> str:
    peer = next(p for p in node.status().peers if p.name == name)
    return "everything" if peer.pending == 0 else f"{peer.pending} messages still to get"


async def _until_acked(node: Node, peer: bytes) -> None:
    """Wait until ``peer`` acknowledged everything (checked at each event the node reports)."""
    async with node.events() as events:
        while next(p for p in node.status().peers if p.key == peer).pending:
            with trio.move_on_after(0.5):
                await events.receive()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mvds-node demo")
    parser.add_argument("--dir", help="keep the nodes' files here (default: a temporary dir)")
    args = parser.parse_args(argv)
    if args.dir:
        root = Path(args.dir)
        if root.exists() and any(root.iterdir()):
            sys.exit(f"demo: {root} is not empty")
        root.mkdir(parents=True, exist_ok=True)
        trio.run(run, root)
        return
    with tempfile.TemporaryDirectory(prefix="mvds-demo-") as tmp:
        trio.run(run, Path(tmp))


if __name__ == "__main__":
    main()
