"""Two nodes over TCP on 127.0.0.1, the receiver's store on a small file system that fills up.

Run by ``test_disk.py`` inside a private mount namespace, with ``SMALL`` a tmpfs of a few MiB::

    python disk_node.py SMALL BIG

Bob (the receiver) keeps his data directory in ``SMALL``, Alice (the sender) hers in ``BIG``.
The script fills ``SMALL`` with a filler file, checks that Bob stays up, refuses sends and does
not acknowledge what he cannot store, deletes the filler, checks that everything arrives, then
remounts ``SMALL`` read-only and checks that opening Bob's store is refused. It prints one JSON
object of what it saw; the test asserts on it. Any exception (a store error escaping
``open_node``, say) ends it with a traceback and a non-zero status.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from mvds_node.errors import StoreError
from mvds_node.node import (
    AnyEvent,
    Identity,
    MessageAcked,
    NodeConfig,
    PeerConfig,
    PeerConnected,
    StoreFailed,
    StoreRecovered,
    open_node,
    parse_address,
)
from mvds_node.sync import SQLiteStore
from mvds_node.transports import TcpTransport
from tests.node.helpers import config_for

# A retransmission gap of two seconds on the live connection (twice TCP's max_latency, 60 s by
# default),
# so that what Bob refused comes again within the scenario's time.
assert TcpTransport.__init__.__kwdefaults__ is not None
TcpTransport.__init__.__kwdefaults__["max_latency"] = 1.0  # a test-scale setting

SMALL_BODIES = 6
LARGE_BODIES = 4  # 60 KB each: kept in segment files, not in the database
FILL_CHUNK = 64 * 1024
FILL_MAX = 64 * 1024 * 1024  # far more than the tmpfs holds: the loop ends at ENOSPC


def config(data: Path, name: str, other: Identity) -> NodeConfig:
    """``name`` in ``data``, knowing only ``other`` (as ``peer``), on 127.0.0.1."""
    return config_for(data, name, other, {"peer": other})


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; return the bytes written."""
    written = 0
    with path.open("wb") as f:
        while written < FILL_MAX:
            try:
                f.write(b"\0" * FILL_CHUNK)
                f.flush()
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
            written += FILL_CHUNK
        else:
            raise AssertionError(f"{path.parent} did not fill up after {written} bytes")
        try:
            f.close()
        except OSError as e:  # the last buffered bytes found no room either
            if e.errno != errno.ENOSPC:
                raise
    return written


async def until(condition: Callable[[], bool]) -> None:
    """Wait, a tick at a time, until ``condition()`` holds: retransmissions come on the clock,
    and no event tells of a payload the peer refused. At most 20 s."""
    for _ in range(1000):
        if condition():
            return
        await trio.sleep(0.02)
    raise AssertionError("the condition did not come true in 20 s")


async def scenario(small: Path, big: Path) -> dict[str, Any]:
    alice, bob = Identity.generate(), Identity.generate()
    seen: dict[str, Any] = {}
    bob_events: list[AnyEvent] = []
    with trio.fail_after(25):
        async with (
            open_node(config(big, "alice", bob), identity=alice) as a,
            open_node(config(small, "bob", alice), identity=bob) as b,
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
            acked: set[bytes] = set()

            async def acks_for(ids: list[bytes]) -> None:
                async for event in a_events:
                    if isinstance(event, MessageAcked):
                        acked.add(event.message_id)
                        if acked >= set(ids):
                            return

            before = [await a.send("chat", b"before %d" % i) for i in range(5)]
            got = [await inbox.receive() for _ in before]
            await acks_for(before)
            seen["before_delivered"] = sorted(m.body.decode() for m in got)

            seen["filler_bytes"] = fill(small / "filler")
            try:
                await b.send("chat", b"from bob on a full disk")
            except StoreError as e:
                seen["send_error"] = str(e)
            try:
                await b.send("chat", b"L" * 60_000)
            except StoreError as e:
                seen["large_send_error"] = str(e)
            seen["status_while_full"] = b.status().store_error

            bodies = [b"during %d" % i for i in range(SMALL_BODIES)]
            bodies += [(b"large %d " % i).ljust(60_000, b".") for i in range(LARGE_BODIES)]
            during = [await a.send("chat", body) for body in bodies]
            # Each was sent and retransmitted at least once while Bob's disk was full.
            sent = a.status().engine["messages_sent"]
            await until(lambda: a.status().engine["messages_sent"] >= sent + 2 * len(during))
            seen["delivered_while_full"] = inbox.unread
            seen["pending_while_full"] = a.status().peers[0].pending
            seen["acked_while_full"] = len(acked & set(during))

            (small / "filler").unlink()
            got = [await inbox.receive() for _ in during]
            await acks_for(during)
            seen["after_delivered"] = sorted(m.message_id for m in got) == sorted(during)
            await b.send("chat", b"from bob after")
            seen["pending_after"] = a.status().peers[0].pending
            status = b.status()
            seen["status_after"] = status.store_error
            seen["messages_stored"] = status.messages_stored
            seen["store_path"] = str(b.config.store_path)
            seen["events"] = [
                {"type": type(e).__name__, "path": e.path, "reason": getattr(e, "reason", None)}
                for e in bob_events
                if isinstance(e, (StoreFailed, StoreRecovered))
            ]
            nursery.cancel_scope.cancel()
    return seen


def main() -> None:
    small, big = Path(sys.argv[1]), Path(sys.argv[2])
    os.umask(0o077)
    seen = trio.run(scenario, small, big)
    store_path = seen["store_path"]
    # What Bob committed is all there after a restart.
    with SQLiteStore(store_path) as store:
        seen["reopened_messages"] = store.message_count()
    subprocess.run(["mount", "-o", "remount,ro", str(small)], check=True)
    try:
        SQLiteStore(store_path).close()
    except StoreError as e:
        seen["read_only_error"] = str(e)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
