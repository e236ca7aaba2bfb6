"""Embed a node in your own Trio program: an echo bot.

The bot is an ordinary Trio task that opens a node with ``open_node``, reads delivered messages
with ``node.messages()`` and answers with ``node.send``. To have something to talk to, this
script also starts a second node ("you") in the same process and sends the bot three lines over
TCP+Noise on loopback. In your program, the bot part is all you need::

    async with open_node(load_config(data_dir)) as node, node.messages() as inbox:
        async for message in inbox:
            await node.send(message.group, b"echo: " + message.body)

    python examples/embedded_echo_bot.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from mvds_node.node import (
    GroupConfig,
    Identity,
    Node,
    NodeConfig,
    PeerConfig,
    group_id_for,
    open_node,
    parse_address,
)


async def echo_bot(node: Node, *, task_status: trio.TaskStatus[None]) -> None:
    """Answer every durable message with an echo (ephemeral ones, like typing, are ignored)."""
    async with node.messages() as inbox:
        task_status.started()
        async for message in inbox:
            if not message.ephemeral:
                await node.send(message.group, b"echo: " + message.body)


def config(root: Path, me: str, other: Identity) -> NodeConfig:
    return NodeConfig(
        data_dir=root / me,
        name=me,
        listen=("127.0.0.1", 0),
        peers=(PeerConfig(other.public_key, "other", log_key=other.signing_public_key),),
        groups=(GroupConfig("chat", group_id_for("chat"), (other.public_key,)),),
        epoch_seconds=0.1,
    )


async def main() -> None:
    bot_id, you_id = Identity.generate(), Identity.generate()
    with tempfile.TemporaryDirectory() as tmp, trio.fail_after(30):
        root = Path(tmp)
        async with (
            open_node(config(root, "bot", you_id), identity=bot_id) as bot,
            open_node(config(root, "you", bot_id), identity=you_id) as you,
            you.messages() as inbox,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(echo_bot, bot)
            host, port = parse_address(bot.status().listening[0])
            you.add_peer(PeerConfig(bot_id.public_key, "bot", (host, port)))
            for line in ("hello", "are you there?", "bye"):
                await you.send("chat", line.encode())
                reply = await inbox.receive()
                print(f"you: {line!r:18} bot: {reply.body.decode()!r}")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
