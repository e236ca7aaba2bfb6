"""Per-operation cost of the stores: µs per call of each ``Store`` method the engine uses.

Each operation runs N times (default 10,000) inside transactions, the way the engine calls it, on
a fresh SQLite file (WAL, ``synchronous=NORMAL``) and on the memory store for comparison. Batch
methods (``put_records``, ``delete_records``, ``get_wires``, ``due_records``) are timed per record
in batches of ``--batch``, and one "send" row times a whole engine send (its own transaction with
``add_message`` and ``put_records`` of one record). Prints one JSON object.

    python3 dev.py bench store_ops
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mvds_node.sync import MemoryStore, Record, RecordType, Store, StoredMessage
from mvds_node.sync.store._sqlite import SQLiteStore

GROUP = bytes(range(1, 33))
PEER = b"P" * 32


def _id(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big", signed=True)).digest()


def measure(store: Store, n: int, batch: int) -> dict[str, float]:
    ids = [_id(i) for i in range(n)]
    wire = b"\xab" * 300
    messages = [
        StoredMessage(m, GROUP, i, wire, (ids[i - 1],) if i else ()) for i, m in enumerate(ids)
    ]
    chunks = [ids[i : i + batch] for i in range(0, n, batch)]
    out: dict[str, float] = {}

    def timed(name: str, per: int, body: Callable[[], object]) -> None:
        start = time.perf_counter()
        body()
        out[name] = round((time.perf_counter() - start) / per * 1e6, 2)

    def in_tx(fn: Callable[[int], object]) -> Callable[[], None]:
        def run() -> None:
            for c in range(0, n, batch):
                with store.transaction():
                    for i in range(c, min(c + batch, n)):
                        fn(i)

        return run

    def batched(fn: Callable[[list[bytes]], object]) -> Callable[[], None]:
        def run() -> None:
            for chunk in chunks:
                with store.transaction():
                    fn(chunk)

        return run

    timed("add_message", n, in_tx(lambda i: store.add_message(messages[i])))
    timed("add_message_duplicate", n, in_tx(lambda i: store.add_message(messages[i])))
    timed("has_message", n, in_tx(lambda i: store.has_message(ids[i])))
    absent = [_id(-1 - i) for i in range(n)]
    timed("has_message_missing", n, in_tx(lambda i: store.has_message(absent[i])))
    timed("get_message", n, in_tx(lambda i: store.get_message(ids[i])))
    timed("is_parent", n, in_tx(lambda i: store.is_parent(ids[i])))
    timed("get_wires_per_id", n, batched(store.get_wires))

    def put_one(i: int) -> None:
        store.put_records([Record(ids[i], PEER, RecordType.MESSAGE, GROUP, 0, 0)])

    timed("put_records_one", n, in_tx(put_one))
    timed("get_record", n, in_tx(lambda i: store.get_record(ids[i], PEER)))
    timed("records_for_message", n, in_tx(lambda i: store.records_for_message(ids[i])))

    drained: list[Record] = []

    def drain() -> None:
        while True:
            with store.transaction():
                due = store.due_records(0, batch)
                if not due:
                    return
                for r in due:
                    r.send_count += 1
                    r.first_epoch = 0
                    r.send_epoch = 5
                store.put_records(due)
                drained.extend(due)

    timed("drain_due_and_put_per_record", n, drain)
    t = time.perf_counter()
    for _ in range(1000):
        store.min_due_epoch()
    out["min_due_epoch"] = round((time.perf_counter() - t) / 1000 * 1e6, 2)

    def put_batches() -> None:
        for c in range(0, n, batch):
            with store.transaction():
                store.put_records(drained[c : c + batch])

    timed("put_records_batch_per_record", n, put_batches)
    keys = [(m, PEER) for m in ids]

    def delete_batches() -> None:
        for c in range(0, n, batch):
            with store.transaction():
                store.delete_records(keys[c : c + batch])

    timed("delete_records_batch_per_record", n, delete_batches)
    timed("mark_delivered", n, in_tx(lambda i: store.mark_delivered(ids[i])))
    timed("set_epoch", n, in_tx(lambda i: store.set_epoch(i)))

    def empty_transactions() -> None:
        for _ in range(n):
            with store.transaction():
                pass

    timed("empty_transaction", n, empty_transactions)
    timed("delete_message", n, in_tx(lambda i: store.delete_message(ids[i])))

    # A whole engine send: one transaction with add_message and put_records of one record.
    sends = [StoredMessage(_id(n + i), GROUP, i, wire, (_id(n + i - 1),)) for i in range(n)]

    def send(i: int) -> None:
        with store.transaction():
            store.add_message(sends[i])
            store.put_records([Record(sends[i].id, PEER, RecordType.MESSAGE, GROUP, 0, 0)])

    def sends_() -> None:
        for i in range(n):
            send(i)

    timed("send_transaction", n, sends_)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    results["memory"] = measure(MemoryStore(), args.ops, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "ops.db")
        try:
            results["sqlite"] = measure(store, args.ops, args.batch)
        finally:
            store.close()
    print(
        json.dumps(
            {
                "benchmark": "store_ops",
                "unit": "microseconds per operation (per record for batches)",
                "ops": args.ops,
                "batch": args.batch,
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        ),
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
