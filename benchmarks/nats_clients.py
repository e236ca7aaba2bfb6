"""Our NATS client against nats-py (run on Trio through trio-asyncio), on a real nats-server.

Two workloads, the ones the remote log does:

* ``kv_puts``: 1,000 compare-and-set updates of one key in the ``mvds`` key-value bucket (read
  the revision, write with the expected revision), as :meth:`NatsBackend.ns_update` does.
* ``catch_up``: a reader that has nothing polls a log of 10,000 messages, each in the object
  store (``inline=0``), through :class:`~mvds_node.remotelog.LogReader`: every page and every
  message is an object-store get (``fetch_concurrency`` 16 at once).

Both clients run against the same server and the same data, alternating, several rounds; the
machine may be shared, so the medians are what to read. Prints JSON.

    python3 benchmarks/nats_clients.py [--rounds 5] [--puts 1000] [--messages 10000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.js.errors
import trio
import trio_asyncio  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import BackendError, LogReader, LogSettings, LogWriter
from mvds_node.remotelog._format import public_key, sign_head
from mvds_node.remotelog._nats import BUCKET, OBJ_STREAM, NatsBackend, _key
from mvds_node.sync import encode_message, message_id

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.remotelog.services import nats_server

G = bytes(range(32))
KEY = Ed25519PrivateKey.generate()
SETTINGS = LogSettings(page_size=256, inline=0)
_T = TypeVar("_T")


def _aio(f: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
    return trio_asyncio.aio_as_trio(f)  # type: ignore[no-any-return]


class NatsPyBackend:
    """The remote log's reads and NS updates on nats-py, in the layout NatsBackend writes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.nc: Any = None

    async def connect(self) -> None:
        self.nc = await _aio(nats.connect)(self.url)
        self.js = self.nc.jetstream()
        self.kv = await _aio(self.js.key_value)(BUCKET)

    async def close(self) -> None:
        await _aio(self.nc.close)()

    async def ns_fetch(self, name: str) -> bytes | None:
        try:
            entry = await _aio(self.kv.get)(_key(name))
        except nats.js.errors.KeyNotFoundError:
            return None
        value: bytes = entry.value
        return value

    async def ns_update(self, name: str, record: bytes) -> None:
        try:
            revision = (await _aio(self.kv.get)(_key(name))).revision
        except nats.js.errors.KeyNotFoundError:
            revision = 0
        await _aio(self.kv.update)(_key(name), record, last=revision)

    async def cas_get(self, address: bytes) -> bytes | None:
        # nats-py's own object store names metadata with base64 padding, ours without: read
        # our layout with its direct gets, the same requests NatsBackend makes.
        meta_subject = f"$O.{BUCKET}.M.{_key(address.hex())}"
        try:
            meta_msg = await _aio(self.js.get_last_msg)(OBJ_STREAM, meta_subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        meta = json.loads(meta_msg.data)
        parts, seq = [], 1
        for _ in range(meta["chunks"]):
            chunk_subject = f"$O.{BUCKET}.C.{meta['nuid']}"
            msg = await _aio(self.js.get_msg)(
                OBJ_STREAM, seq=seq, subject=chunk_subject, next=True, direct=True
            )
            parts.append(msg.data)
            seq = msg.seq + 1
        return b"".join(parts)

    async def cas_add(self, data: bytes) -> bytes:
        raise NotImplementedError  # the benchmark writes with our client only


def messages(n: int) -> list[tuple[bytes, bytes]]:
    bodies = [b"m%06d" % i + b"." * 249 for i in range(n)]
    return [(message_id(G, i + 1, b), encode_message(G, i + 1, b)) for i, b in enumerate(bodies)]


async def kv_puts(backend: Any, name: str, first_seq: int, puts: int) -> float:
    records = [sign_head(KEY, name, first_seq + i, b"", False) for i in range(puts)]
    start = time.perf_counter()
    for record in records:
        await backend.ns_update(name, record)
    return time.perf_counter() - start


async def catch_up(backend: Any, expected: int) -> float:
    reader = LogReader(backend, public_key(KEY), G, settings=SETTINGS)
    start = time.perf_counter()
    result = await reader.poll(lambda m: False)
    elapsed = time.perf_counter() - start
    if len(result.messages) != expected:
        raise BackendError(f"caught up {len(result.messages)} of {expected}")
    return elapsed


async def main(rounds: int, puts: int, count: int) -> dict[str, Any]:
    figures: dict[str, dict[str, list[float]]] = {
        "ours": {"kv_puts": [], "catch_up": []},
        "nats-py": {"kv_puts": [], "catch_up": []},
    }
    with tempfile.TemporaryDirectory() as tmp:
        async with nats_server(Path(tmp)) as url, trio_asyncio.open_loop():
            writer_backend = NatsBackend(url)
            writer = LogWriter(writer_backend, KEY, G, settings=SETTINGS)
            batch = messages(count)
            for i in range(0, count, 100):
                await writer.append(batch[i : i + 100])
            await writer_backend.aclose_connection()
            seq = 1
            for r in range(rounds):
                order = ["ours", "nats-py"] if r % 2 == 0 else ["nats-py", "ours"]
                for client in order:
                    name = f"bench-{client}-{r}"
                    if client == "ours":
                        ours = NatsBackend(url)
                        figures[client]["kv_puts"].append(await kv_puts(ours, name, seq, puts))
                        figures[client]["catch_up"].append(await catch_up(ours, count))
                        await ours.aclose_connection()
                    else:
                        theirs = NatsPyBackend(url)
                        await theirs.connect()
                        figures[client]["kv_puts"].append(await kv_puts(theirs, name, seq, puts))
                        figures[client]["catch_up"].append(await catch_up(theirs, count))
                        await theirs.close()
                    seq += puts
    medians = {
        client: {k: round(statistics.median(v), 4) for k, v in work.items()}
        for client, work in figures.items()
    }
    return {
        "benchmark": "nats_clients",
        "python": platform.python_version(),
        "rounds": rounds,
        "kv_puts": puts,
        "catch_up_messages": count,
        "seconds_median": medians,
        "nats_py_over_ours": {
            k: round(medians["nats-py"][k] / medians["ours"][k], 2) for k in ("kv_puts", "catch_up")
        },
        "seconds_all": {
            client: {k: [round(x, 4) for x in v] for k, v in work.items()}
            for client, work in figures.items()
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--puts", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    print(json.dumps(trio.run(main, args.rounds, args.puts, args.messages), indent=2))
