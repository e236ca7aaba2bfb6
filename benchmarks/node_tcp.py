"""Two nodes over TCP+Noise on 127.0.0.1: messages per second delivered and acknowledged.

Alice and Bob run as real nodes (SQLite stores in a temporary directory, TCP+Noise on loopback,
the whole node stack: engine, framing, Noise, transports), each in its own process, as two
devices would. Alice sends N messages in bulk (``send_many``,
batches of ``--batch``) and the clock stops when Bob has delivered every one and Alice has seen
every acknowledgement. Cases: 256-byte messages (count per second) and 60 KB messages (MB/s).

    python3 dev.py bench node_tcp [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from mvds_node.node import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    PeerConnected,
    create_identity,
    group_id_for,
    load_config,
    open_node,
    parse_address,
    save_config,
)


def config(directory: Path, me: str, other: bytes, page_size: int = 4096) -> NodeConfig:
    return NodeConfig(
        store_page_size=page_size,
        data_dir=directory / me,
        name=me,
        listen=("127.0.0.1", 0),
        peers=(PeerConfig(key=other, name="peer"),),
        groups=(GroupConfig("bench", group_id_for("bench"), (other,)),),
        epoch_seconds=0.05,
    )


async def receiver(directory: str, messages: int) -> None:
    """The receiving node, in its own process: print its address, then "done" when it has
    delivered ``messages`` messages."""
    async with open_node(load_config(directory)) as node, node.messages() as inbox:
        print(node.status().listening[0], flush=True)
        delivered = 0
        async for _ in inbox:
            delivered += 1
            if delivered == messages:
                break
        print("done", flush=True)
        # Stay up until the sender has seen every acknowledgement and closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)


async def run(messages: int, size: int, batch: int, page_size: int = 4096) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alice = create_identity(root / "alice" / "identity.key")
        bob = create_identity(root / "bob" / "identity.key")
        save_config(config(root, "alice", bob.public_key, page_size))
        save_config(config(root, "bob", alice.public_key, page_size))
        process = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--receiver", str(root / "bob"), str(messages)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stdin is not None
        lines = _lines(process.stdout)
        address = await lines.__anext__()
        async with open_node(load_config(root / "alice")) as a, a.events() as events:
            host, port = parse_address(address)
            a.add_peer(PeerConfig(key=bob.public_key, name="bob", address=(host, port)))
            async for event in events:
                if isinstance(event, PeerConnected):
                    break
            bodies = [i.to_bytes(8, "big") + b"\xab" * (size - 8) for i in range(messages)]
            start = time.perf_counter()
            for first in range(0, messages, batch):
                await a.send_many("bench", bodies[first : first + batch])
            assert await lines.__anext__() == "done"
            delivered = time.perf_counter() - start
            # Acknowledgements: Alice's records for Bob are gone once he acked everything. The
            # acked events themselves are advisory (dropped when a burst fills the buffer), so
            # count in the store, checking whenever an event arrives.
            while a.status().peers[0].pending:
                with trio.move_on_after(0.02):
                    await events.receive()
            elapsed = time.perf_counter() - start
            stats = a.status().engine
        await process.stdin.aclose()
        await process.wait()
    return {
        "messages": messages,
        "body_bytes": size,
        "send_batch": batch,
        "store_page_size": page_size,
        "seconds_to_deliver": round(delivered, 3),
        "seconds_to_ack": round(elapsed, 3),
        "messages_per_second": round(messages / elapsed),
        "megabytes_per_second": round(messages * size / elapsed / 1e6, 1),
        "payloads_sent": stats["payloads_sent"],
        "bytes_sent": stats["bytes_sent"],
    }


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError("the receiver process exited")
        buf += chunk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages")
    parser.add_argument("--receiver", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        trio.run(receiver, args.receiver[0], int(args.receiver[1]))
        return
    scale = 10 if args.quick else 1
    results = [
        trio.run(run, 50_000 // scale, 256, 1000, page_size) for page_size in (4096, 65536)
    ] + [trio.run(run, 5_000 // scale, 60_000, 100, page_size) for page_size in (4096, 65536)]
    print(
        json.dumps(
            {
                "benchmark": "node_tcp",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
