"""UDP multicast on loopback: one sender, three receivers, sealed datagrams.

The sender broadcasts N packets of ``--size`` bytes in bursts of ``--burst``; after each burst it
waits (at most 1 s) until every receiver has what was sent, so the figure is what the carrier
sustains without overrunning socket buffers. Reports datagrams per second, payload MB/s and any
datagrams lost. Everything runs in one process: sealing, sending, and three receivers opening
and replay-checking every datagram share one core. Prints JSON.

    python3 dev.py bench multicast
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

import trio

from mvds_node.transports import Keypair
from mvds_node.transports._multicast import BROADCAST, MulticastTransport


async def run(packets: int, size: int, burst: int) -> dict[str, object]:
    key = os.urandom(32)
    port = random.randint(20000, 60000)
    members = [
        MulticastTransport(Keypair.generate().public, key, group="239.255.77.90", port=port)
        for _ in range(4)
    ]
    for m in members:
        await m.open()
    sender, *receivers = members
    received = [0, 0, 0]
    progress = trio.Condition()

    async def drain(i: int, r: MulticastTransport) -> None:
        while True:
            await r.receive()
            received[i] += 1
            async with progress:
                progress.notify_all()

    packet = b"\x5a" * size
    lost = 0
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, r in enumerate(receivers):
            nursery.start_soon(drain, i, r)
        sent = 0
        while sent < packets:
            n = min(burst, packets - sent)
            for _ in range(n):
                await sender.send(BROADCAST, packet)
            sent += n
            with trio.move_on_after(1.0):
                async with progress:
                    while min(received) < sent - lost:
                        await progress.wait()
            lost = sent - min(received)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    for m in members:
        await m.aclose()
    return {
        "receivers": 3,
        "packets": packets,
        "packet_bytes": size,
        "seconds": round(elapsed, 3),
        "datagrams_per_second": round(packets / elapsed),
        "deliveries_per_second": round(3 * packets / elapsed),
        "payload_mb_per_second_per_receiver": round(packets * size / elapsed / 1e6, 1),
        "lost_per_receiver": [packets - r for r in received],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--burst", type=int, default=64)
    args = parser.parse_args(argv)
    result = trio.run(run, args.packets, args.size, args.burst)
    print(
        json.dumps(
            {"benchmark": "multicast", "python": platform.python_version(), **result}, indent=2
        )
    )


if __name__ == "__main__":
    main()
