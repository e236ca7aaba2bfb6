"""End-to-end engine throughput: send, encode, decode, store, deliver and acknowledge.

Runs N engines joined by a lossless in-process network (``mvds_node.sim.Net``, one round per
epoch, no sleeping: the clock is virtual) and times how long it takes until every message has
been delivered to every peer and every record has been acknowledged: ``seconds`` (wall) and
``cpu_seconds`` (the process's CPU time, every thread: on a shared machine, the figure to
compare). Prints one JSON object.

    python3 dev.py bench engine_throughput            # the full matrix
    python3 dev.py bench engine_throughput --quick    # 1,000 messages, for a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mvds_node.sim import Net
from mvds_node.sync import (
    Engine,
    MemoryStore,
    MessageDelivered,
    Mode,
    RelayPolicy,
    Store,
    SyncConfig,
)

GROUP = bytes(range(1, 33))


@contextmanager
def stores(kind: str, n: int) -> Iterator[list[Store]]:
    if kind == "memory":
        yield [MemoryStore() for _ in range(n)]
        return
    from mvds_node.sync.store._sqlite import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        made: list[Store] = [SQLiteStore(Path(tmp) / f"node{i}.db") for i in range(n)]
        try:
            yield made
        finally:
            for s in made:
                s.close()


def run(
    *,
    engines: int,
    mode: Mode,
    store: str,
    messages: int,
    size: int,
    relay: RelayPolicy,
    commit_every: int = 1,
) -> dict[str, object]:
    config = SyncConfig(epoch_seconds=1.0, relay=relay)
    names = [bytes([i + 1]) * 32 for i in range(engines)]
    with stores(store, engines) as made:
        net = Net()
        nodes = [
            net.add(name, Engine(s, config=config, now=0.0))
            for name, s in zip(names, made, strict=True)
        ]
        for name, node in zip(names, nodes, strict=True):
            node.add_group(GROUP)
            for other in names:
                if other != name:
                    node.add_peer(GROUP, other, mode=mode)
        body = b"\xab" * (size - 8)
        expected = messages * (engines - 1)
        counted = 0

        def done() -> bool:
            nonlocal counted
            for evs in net.events.values():
                counted += sum(1 for e in evs if isinstance(e, MessageDelivered))
                evs.clear()
            return counted >= expected and all(s.record_count() == 0 for s in made)

        start, cpu_start = time.perf_counter(), time.process_time()
        for first in range(0, messages, commit_every * engines):
            # Round-robin senders. With commit_every=1 each send is its own committed
            # transaction; otherwise each sender commits its sends in batches (Engine.batch).
            with contextlib.ExitStack() as batches:
                if commit_every > 1:
                    for node in nodes:
                        batches.enter_context(node.batch())
                for i in range(first, min(messages, first + commit_every * engines)):
                    nodes[i % engines].send(
                        GROUP,
                        body + i.to_bytes(8, "big"),
                        now=net.now,
                        timestamp=1_700_000_000_000 + i,
                    )
        sent = time.perf_counter()
        rounds = net.run_until(done, max_rounds=10_000)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    return {
        "engines": engines,
        "mode": mode.value,
        "store": store,
        "relay": relay.value,
        "commit_every": commit_every,
        "messages": messages,
        "body_bytes": size,
        "seconds": round(elapsed, 3),
        # CPU time of the whole process (every thread): on a shared machine the wall time also
        # counts the time other programs had the cores, this does not.
        "cpu_seconds": round(cpu, 3),
        "send_seconds": round(sent - start, 3),
        "messages_per_second": round(messages / elapsed),
        "deliveries_per_second": round(expected / elapsed),
        "rounds": rounds,
        "payloads": net.payloads,
        "wire_bytes": net.wire_bytes,
        "wire_bytes_per_delivery": round(net.wire_bytes / expected, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="1,000 messages")
    args = parser.parse_args(argv)
    messages = 1_000 if args.quick else args.messages
    cases: list[Callable[[], dict[str, object]]] = []
    # A full mesh needs no relaying (every member hears the author), so 10 engines also run
    # with RelayPolicy.NONE; MODE and OFFER show what relaying costs when it is left on.
    for engines in (2, 10):
        for mode in (Mode.BATCH, Mode.INTERACTIVE):
            for store in ("memory", "sqlite"):
                relays = [RelayPolicy.MODE]
                if engines > 2:
                    relays += [RelayPolicy.OFFER, RelayPolicy.NONE]
                for relay in relays:
                    for commit_every in (1, 100) if store == "sqlite" else (1,):
                        cases.append(
                            functools.partial(
                                run,
                                engines=engines,
                                mode=mode,
                                store=store,
                                messages=messages,
                                size=args.size,
                                relay=relay,
                                commit_every=commit_every,
                            )
                        )
    results = []
    for case in cases:
        result = case()
        results.append(result)
        print(json.dumps(result), file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "engine_throughput",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
