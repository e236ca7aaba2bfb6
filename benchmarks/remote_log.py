"""Catch-up from a remote log: 10,000 messages, each backend, each page mode.

A writer appends N messages of 256 bytes (in batches of 100, as a node uploads them); then a
reader that has none of them polls once and gets them all, checked against their IDs. Timed: the
reader's poll. Counted: bytes the reader read, and its NS and CAS calls. Backends: the embedded
file backend, our HTTP helper (in this process, on 127.0.0.1), and real redis-server and
nats-server (JetStream) processes on 127.0.0.1, started here (the Debian packages must be
installed; ``dev.py test`` installs them). Prints JSON.

    python3 dev.py bench remote_log [--messages N]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import FileBackend, LogReader, LogSettings, LogWriter
from mvds_node.remotelog._backend import Backend
from mvds_node.remotelog._format import public_key
from mvds_node.remotelog._http import HelperLimits, HttpBackend, serve_helper
from mvds_node.remotelog._ipfs import IpfsBackend
from mvds_node.remotelog._nats import NatsBackend
from mvds_node.remotelog._redis import RedisBackend
from mvds_node.sync import encode_message, message_id

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.remotelog.services import ipfs_node, nats_server, redis_server

G = bytes(range(32))
MODES = {
    "fully replicated (page 256, all inline)": LogSettings(page_size=256, inline=10**9),
    "CAS mapping (page 256, none inline)": LogSettings(page_size=256, inline=0),
    "mixed (page 256, newest 64 inline)": LogSettings(page_size=256, inline=64),
    "linked list (page 1)": LogSettings(page_size=1, inline=0),
}


class Counting:
    """Wraps a backend to count calls and bytes read."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.ns_calls = self.cas_calls = self.bytes_read = 0

    async def cas_add(self, data: bytes) -> bytes:
        return await self.inner.cas_add(data)

    async def cas_get(self, address: bytes) -> bytes | None:
        self.cas_calls += 1
        data = await self.inner.cas_get(address)
        self.bytes_read += len(data or b"")
        return data

    async def ns_update(self, name: str, record: bytes) -> None:
        await self.inner.ns_update(name, record)

    async def ns_fetch(self, name: str) -> bytes | None:
        self.ns_calls += 1
        data = await self.inner.ns_fetch(name)
        self.bytes_read += len(data or b"")
        return data


class CountingMany(Counting):
    """For backends that read many objects in one round trip (the file backend)."""

    async def cas_get_many(self, addresses: list[bytes]) -> list[bytes | None]:
        self.cas_calls += 1  # one round trip
        found: list[bytes | None] = await self.inner.cas_get_many(addresses)  # type: ignore[attr-defined]
        self.bytes_read += sum(len(d or b"") for d in found)
        return found


async def case(backend: Backend, settings: LogSettings, n: int) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    writer = LogWriter(backend, key, G, settings=settings)
    body = b"\xab" * 248
    msgs = [(message_id(G, i, body + i.to_bytes(8, "big")),
             encode_message(G, i, body + i.to_bytes(8, "big"))) for i in range(n)]  # fmt: skip
    t = time.perf_counter()
    for i in range(0, n, 100):
        await writer.append(msgs[i : i + 100])
    write_s = time.perf_counter() - t
    counting = CountingMany(backend) if hasattr(backend, "cas_get_many") else Counting(backend)
    reader = LogReader(counting, public_key(key), G, settings=settings)
    t = time.perf_counter()
    result = await reader.poll(lambda m: False)
    read_s = time.perf_counter() - t
    assert len(result.messages) == n
    close = getattr(backend, "aclose_connection", None)
    if close is not None:
        await close()
    return {
        "catch_up_seconds": round(read_s, 3),
        "write_seconds": round(write_s, 3),
        "bytes_read": counting.bytes_read,
        "ns_calls": counting.ns_calls,
        "cas_calls": counting.cas_calls,
        "pages": result.pages,
    }


async def main_async(n: int, only: set[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            redis_server(Path(tmp) / "redis") as redis_url,
            nats_server(Path(tmp) / "nats") as nats_url,
            ipfs_node(Path(tmp) / "ipfs") as (ipfs_url, _),
            trio.open_nursery() as nursery,
        ):
            listeners = await nursery.start(
                functools.partial(
                    serve_helper,
                    str(Path(tmp) / "helper"),
                    "127.0.0.1",
                    0,
                    limits=HelperLimits(requests_per_second=1e9, burst=10**9),
                )
            )
            url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            for mode, settings in MODES.items():
                backends: list[tuple[str, Backend]] = [
                    ("file", FileBackend(Path(tmp) / f"file-{len(out)}")),
                    ("http helper", HttpBackend(url)),
                    ("redis", RedisBackend(redis_url)),
                    ("nats jetstream", NatsBackend(nats_url)),
                    ("ipfs (Kubo)", IpfsBackend(ipfs_url)),
                ]
                for name, backend in backends:
                    if only and name.split(" ")[0] not in only:
                        continue
                    figures = {"messages": n, **await case(backend, settings, n)}
                    out.append({"backend": name, "mode": mode, **figures})
                    print(json.dumps(out[-1]), flush=True)
            nursery.cancel_scope.cancel()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--only", action="append", default=[], help="file, http, redis, nats or ipfs (repeatable)"
    )
    args = parser.parse_args(argv)
    results = trio.run(main_async, args.messages, set(args.only))
    print(json.dumps({"benchmark": "remote_log", "python": platform.python_version(),
                      "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
