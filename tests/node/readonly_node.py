"""Two nodes over TCP on 127.0.0.1; the receiver's file system turns read-only under it.

Run by ``test_disk.py`` inside a private mount namespace::

    python readonly_node.py SMALL BIG DEVICE

``SMALL`` is an ext4 file system on the loop device ``DEVICE``, mounted with
``errors=remount-ro``; Bob (the receiver) keeps his data directory there, Alice hers in
``BIG``. After a first exchange the script makes the kernel take ``SMALL`` read-only, as it does
on a disk error (ext4's ``trigger_fs_error``): the store's files stay open and every write
fails with EROFS. It checks that Bob stays up, refuses sends with a clear error, does not
acknowledge what he cannot store and shuts down cleanly; then it mounts the file system again
and counts what Bob had committed. Bob's store uses ``store_sync = "full"``: the kernel drops
writes not yet on the disk when it takes the file system read-only, as a power loss would.
It prints one JSON object of what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from mvds_node.errors import StoreError
from mvds_node.node import (
    AnyEvent,
    Identity,
    InternalError,
    MessageAcked,
    PeerConfig,
    PeerConnected,
    StoreFailed,
    StoreRecovered,
    open_node,
    parse_address,
)
from mvds_node.sync import SQLiteStore
from tests.node.disk_node import config, until

REFUSED = 4


async def scenario(small: Path, big: Path, device: str) -> dict[str, Any]:
    alice, bob = Identity.generate(), Identity.generate()
    seen: dict[str, Any] = {}
    bob_events: list[AnyEvent] = []
    with trio.fail_after(25):
        async with (
            open_node(config(big, "alice", bob), identity=alice) as a,
            open_node(replace(config(small, "bob", alice), store_sync="full"), identity=bob) as b,
            b.messages() as inbox,
            a.events() as a_events,
            b.events() as b_stream,
            trio.open_nursery() as nursery,
        ):

            async def collect() -> None:
                async for event in b_stream:
                    bob_events.append(event)

            nursery.start_soon(collect)
            host, port = parse_address(b.status().listening[0])
            a.add_peer(PeerConfig(key=bob.public_key, name="bob", address=(host, port)))
            async for event in a_events:
                if isinstance(event, PeerConnected):
                    break
            before = [await a.send("chat", b"before %d" % i) for i in range(5)]
            got = [await inbox.receive() for _ in before]
            acked: set[bytes] = set()
            async for event in a_events:
                if isinstance(event, MessageAcked):
                    acked.add(event.message_id)
                    if acked >= set(before):
                        break
            seen["before_delivered"] = len(got)

            # What the kernel does on a disk error with errors=remount-ro.
            trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
            trigger.write_text("test: the disk went bad")
            try:
                await b.send("chat", b"from bob on a read-only disk")
            except StoreError as e:
                seen["send_error"] = str(e)
            during = [await a.send("chat", b"during %d" % i) for i in range(REFUSED)]
            sent = a.status().engine["messages_sent"]
            await until(lambda: a.status().engine["messages_sent"] >= sent + 2 * len(during))
            seen["delivered_while_read_only"] = inbox.unread
            seen["acked_while_read_only"] = len(acked & set(during))
            seen["pending_while_read_only"] = a.status().peers[0].pending
            seen["status_while_read_only"] = b.status().store_error
            seen["store_path"] = str(b.config.store_path)
            nursery.cancel_scope.cancel()
        seen["events"] = [
            {"type": type(e).__name__, "reason": getattr(e, "reason", None)}
            for e in bob_events
            if isinstance(e, (StoreFailed, StoreRecovered, InternalError))
        ]
    return seen


def main() -> None:
    small, big, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    os.umask(0o077)
    seen = trio.run(scenario, small, big, device)
    # The node has closed its store; mount the file system again and count what it committed.
    subprocess.run(["umount", str(small)], check=True)
    subprocess.run(["mount", device, str(small)], check=True)
    with SQLiteStore(seen["store_path"]) as store:
        seen["reopened_messages"] = store.message_count()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
