"""Export and import of a 100,000-message bundle file (sneakernet), with SQLite stores.

Alice's store holds N messages of 256 bytes for Bob (a causal chain, sent in one batch). The
export (snapshot, sealing, write, fsync, commit) and the import (authenticate the whole file,
then apply it in one transaction: store, deliver, queue acks) are timed separately. Prints JSON.

    python3 dev.py bench bundle [--messages N]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from mvds_node.node._bundles import export_bundle, import_bundle
from mvds_node.sync import Engine, Mode, SQLiteStore, SyncConfig
from mvds_node.transports import Keypair

G = bytes(range(1, 33))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args(argv)
    alice_key, bob_key = Keypair.generate(), Keypair.generate()
    config = SyncConfig(epoch_seconds=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alice = Engine(SQLiteStore(root / "alice.db"), config=config, now=0.0)
        bob = Engine(SQLiteStore(root / "bob.db"), config=config, now=0.0)
        for me, other in ((alice, bob_key), (bob, alice_key)):
            me.add_group(G)
            me.add_peer(G, other.public, mode=Mode.BATCH)
        body = b"\xab" * 248
        with alice.batch():
            for i in range(args.messages):
                alice.send(G, body + i.to_bytes(8, "big"), now=0.0, timestamp=i)
        t0 = time.perf_counter()
        out = export_bundle(
            alice, root / "b", sender=alice_key, now=0.0, created_ms=0, peer=bob_key.public
        )
        t1 = time.perf_counter()
        result = import_bundle(bob, root / "b", keypair=bob_key, now=0.0)
        t2 = time.perf_counter()
        bob.events()
        assert result.messages_new == args.messages
    print(
        json.dumps(
            {
                "benchmark": "bundle",
                "python": platform.python_version(),
                "messages": args.messages,
                "body_bytes": 256,
                "bundle_bytes": out.bytes,
                "bytes_per_message": round(out.bytes / args.messages, 1),
                "export_seconds": round(t1 - t0, 3),
                "import_seconds": round(t2 - t1, 3),
                "import_messages_per_second": round(args.messages / (t2 - t1)),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
