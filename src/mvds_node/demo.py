"""A demo of nodes syncing and catching up, on the embedded defaults.

Three engines (alice, bob, carol) share one group over an in-process network that loses,
duplicates and reorders payloads. Alice and bob talk while carol is offline; carol comes back and
catches up. Each node keeps its messages in its own SQLite store in a temporary directory (or in
``--dir``). Run with ``python3 dev.py demo``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from mvds_node.sim import Net
from mvds_node.sync import Engine, MessageDelivered, Mode, SyncConfig, message_id
from mvds_node.sync._sqlite import SQLiteStore

GROUP = message_id(b"demo", 0, b"the demo group")
NAMES = ("alice", "bob", "carol")


def main(argv: list[str] | None = None, *, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description="Three MVDS nodes syncing over a lossy link.")
    parser.add_argument("--loss", type=float, default=0.3, help="payload loss rate (0..0.95)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dir", type=Path, help="keep the node stores here")
    args = parser.parse_args(argv)
    if not 0 <= args.loss <= 0.95:
        parser.error("--loss must be between 0 and 0.95")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.dir or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        return _run(base, args.loss, args.seed, out)


def _run(base: Path, loss: float, seed: int, out: Callable[[str], None]) -> int:
    config = SyncConfig(epoch_seconds=1.0)
    net = Net(seed=seed, loss=loss, duplicate=0.1, delay=0.1, reorder=True)
    ids = {name: name.encode().ljust(32, b".") for name in NAMES}
    stores = {name: SQLiteStore(base / f"{name}.db") for name in NAMES}
    try:
        nodes = {
            name: net.add(ids[name], Engine(stores[name], config=config, now=0.0)) for name in NAMES
        }
        for name, node in nodes.items():
            node.add_group(GROUP)
            for other in NAMES:
                if other != name:
                    node.add_peer(GROUP, ids[other], mode=Mode.BATCH)
        by_id = {v: k for k, v in ids.items()}
        seen: dict[str, int] = dict.fromkeys(NAMES, 0)

        def show() -> None:
            for name in NAMES:
                for ev in net.events[ids[name]]:
                    if isinstance(ev, MessageDelivered):
                        seen[name] += 1
                        out(
                            f"  round {net.round:3d}  {name:5s} got {ev.body.decode()!r}"
                            f" (via {by_id.get(ev.sender, '?')})"
                        )
                net.events[ids[name]].clear()

        out(f"Payload loss {loss:.0%}, 10% duplicated, 10% delayed, reordered. carol is offline.")
        net.offline.add(ids["carol"])
        lines = [
            ("alice", "hi bob, carol is away"),
            ("bob", "hi alice! she'll catch up later"),
            ("alice", "lunch at noon?"),
            ("bob", "sure"),
        ]
        for i, (who, text) in enumerate(lines):
            nodes[who].send(GROUP, text.encode(), now=net.now, timestamp=1_700_000_000_000 + i)
            for _ in range(3):
                net.step()
                show()

        def alice_and_bob_have_both() -> bool:
            show()
            return seen["alice"] >= 2 and seen["bob"] >= 2

        net.run_until(alice_and_bob_have_both, max_rounds=500)
        out("carol comes back online.")
        net.offline.discard(ids["carol"])
        nodes["alice"].reset_peer(ids["carol"], now=net.now)
        nodes["bob"].reset_peer(ids["carol"], now=net.now)

        def carol_has_all() -> bool:
            show()
            return seen["carol"] >= len(lines)

        rounds = net.run_until(carol_has_all, max_rounds=500)
        out(f"carol caught up with {seen['carol']} messages in {rounds} rounds.")
        net.run_until(net.quiet, max_rounds=5000)
        out(
            f"Network quiet after round {net.round}: "
            f"{net.payloads} payloads, {net.wire_bytes} bytes; "
            f"stores hold {', '.join(f'{n}: {stores[n].message_count()}' for n in NAMES)} messages."
        )
        return 0 if all(seen[n] >= 2 for n in NAMES) and seen["carol"] >= len(lines) else 1
    finally:
        for s in stores.values():
            s.close()


if __name__ == "__main__":
    sys.exit(main())
