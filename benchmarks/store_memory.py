"""Peak memory of nodes whose SQLite stores hold 1,000,000 messages.

One engine sends N messages of 256 bytes (each naming the previous one as its parent, as a chat
would) to a peer engine, in batches, pumping the lossless in-process network between batches so
that every message is delivered, stored and acknowledged. Both engines use SQLite stores on disk,
so the peak RSS covers two nodes. Then the writer's engine is rebuilt from its store, as after a
restart, and used for one more exchange. Prints peak RSS (``ru_maxrss``), store size and timings
as JSON.

    python3 dev.py bench store_memory [--messages N]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from mvds_node.sim import Net
from mvds_node.sync import Engine, SQLiteStore, SyncConfig

GROUP = bytes(range(1, 33))
W, P = b"W" * 32, b"P" * 32


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args(argv)
    config = SyncConfig(epoch_seconds=1.0)
    start = time.perf_counter()
    rss_before = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "writer.db"
        store = SQLiteStore(path)
        reader_store = SQLiteStore(Path(tmp) / "reader.db")
        net = Net()
        writer = net.add(W, Engine(store, config=config, now=0.0))
        writer.add_group(GROUP)
        writer.add_peer(GROUP, P)
        reader = net.add(P, Engine(reader_store, config=config, now=0.0))
        reader.add_group(GROUP)
        reader.add_peer(GROUP, W)
        body = b"\xcd" * 248
        sent = 0
        while sent < args.messages:
            n = min(args.batch, args.messages - sent)
            with writer.batch():  # one commit per batch: the figure here is memory
                for i in range(sent, sent + n):
                    writer.send(GROUP, body + i.to_bytes(8, "big"), now=net.now, timestamp=i)
            sent += n
            net.run_until(lambda: store.record_count() == 0, max_rounds=100)
            for evs in net.events.values():
                evs.clear()
        fill_seconds = time.perf_counter() - start
        rss_filled = rss_mb()
        count = store.message_count()
        received = reader_store.message_count()
        store.close()
        # Restart: rebuild the engine from the full store and exchange one more message.
        t = time.perf_counter()
        store = SQLiteStore(path)
        writer = net.add(W, Engine(store, config=config, now=net.now))
        restart_seconds = time.perf_counter() - t
        writer.send(GROUP, b"after restart", now=net.now, timestamp=-1)
        net.run_until(lambda: store.record_count() == 0, max_rounds=100)
        size = sum(f.stat().st_size for f in Path(tmp).iterdir() if f.name.startswith("writer"))
        store.close()
        reader_store.close()
    print(
        json.dumps(
            {
                "benchmark": "store_memory",
                "messages_in_writer_store": count,
                "messages_in_reader_store": received,
                "body_bytes": 256,
                "peak_rss_mb": round(rss_mb(), 1),
                "rss_after_fill_mb": round(rss_filled, 1),
                "rss_at_start_mb": round(rss_before, 1),
                "writer_store_bytes_on_disk": size,
                "fill_seconds": round(fill_seconds, 1),
                "restart_seconds": round(restart_seconds, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
