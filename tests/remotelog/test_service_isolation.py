"""One log cannot hold up another: a helper that stalls, refuses or answers oversized for one
writer's log (its head, or its objects) still serves another log's messages promptly, at start,
on a kick and through ``poll_now``; the helper is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.node._remotelog import RemoteLogService
from mvds_node.remotelog import LogSettings, LogWriter, MemoryBackend, log_name
from mvds_node.remotelog._format import public_key
from mvds_node.remotelog._http import HttpBackend
from mvds_node.sync import Limits, decode_payload, encode_message, message_id

from .hostile import HostileServer, TwirpStore, response, twirp_error

G = b"G" * 32
SETTINGS = LogSettings(page_size=64, inline=0)  # every message is a CAS object of its own
PROMPT = 3.0
"""Seconds within which the good log's messages must arrive: far below every client timeout
(30 s to read, 30 s to wait for a pooled connection, 120 s a request)."""


def batch(n: int, start: int, writer: str) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        body = f"{writer} {i}".encode()
        out.append((message_id(G, i + 1, body), encode_message(G, i + 1, body)))
    return out


async def stall(route: str, request: Any) -> Any:
    await trio.sleep_forever()


async def oversized(route: str, request: Any) -> bytes:
    # Declares 9 MiB (over the client's 8 MiB + 1 KiB) and sends a little of it.
    await trio.lowlevel.checkpoint()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\n"
    return head + b"Content-Length: 9437184\r\n\r\n" + b"\x00" * 1024


async def refused(route: str, request: Any) -> bytes:
    await trio.lowlevel.checkpoint()
    return twirp_error(503, "unavailable", "busy with someone else")


async def truncated(route: str, request: Any) -> bytes:
    await trio.lowlevel.checkpoint()
    return response(200, b"\x00" * 100)[:-50]  # then the connection goes quiet


BEHAVIOURS: dict[str, Callable[[str, Any], Awaitable[Any]]] = {
    "stalls": stall,
    "answers oversized": oversized,
    "refuses": refused,
    "answers half and stalls": truncated,
}


@pytest.mark.parametrize("what", ["head", "objects"])
@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
async def test_a_log_the_helper_mistreats_does_not_delay_another(
    tmp_path: Path, nursery: trio.Nursery, what: str, behaviour: str
) -> None:
    # Both logs are written straight into the helper's memory.
    memory = MemoryBackend()
    slow_key, good_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    await LogWriter(memory, slow_key, G, settings=SETTINGS).append(batch(48, 0, "slow"))
    slow_objects = set(memory.cas)
    good_writer = LogWriter(memory, good_key, G, settings=SETTINGS)
    await good_writer.append(batch(3, 0, "good"))
    slow = public_key(slow_key)
    slow_name = log_name(slow, G)
    misbehaving = 0

    async def misbehave(route: str, request: Any) -> Any:
        nonlocal misbehaving
        if (what == "head" and route == "vac.ns.NS/Fetch" and request.name == slow_name) or (
            what == "objects" and route == "vac.cas.CAS/Get" and request.id in slow_objects
        ):
            misbehaving += 1
            return await BEHAVIOURS[behaviour](route, request)
        return ...

    store = TwirpStore(misbehave)
    store.cas, store.ns = memory.cas, memory.ns
    server = HostileServer(store.answer)
    backend = HttpBackend(await server.start(nursery))

    good_ids = {m for m, _ in batch(3, 0, "good")}
    stored: set[bytes] = set()
    arrived = trio.Event()
    wanted = set(good_ids)

    async def feed(peer: bytes, payload: bytes) -> None:
        await trio.lowlevel.checkpoint()
        nonlocal arrived
        stored.update(m.id for m in decode_payload(payload, Limits()).messages)
        if wanted <= stored:
            arrived.set()

    service = RemoteLogService(
        backend=backend,
        data_dir=tmp_path,
        signing=Ed25519PrivateKey.generate(),
        our_key=b"O" * 32,
        groups=[("chat", G, None, [(b"S" * 32, slow), (b"F" * 32, public_key(good_key))])],
        settings=SETTINGS,
        poll_seconds=3600.0,
        has_message=stored.__contains__,
        feed=feed,
        refused=lambda peer, reason, detail: None,
    )
    # The pool is shared fairly: the slow log may hold at most its share of the connections.
    assert backend.http.max_connections == 8
    assert {r.settings.fetch_concurrency for r, _ in service.readers} == {3}
    figures = {}
    try:
        async with trio.open_nursery() as inner:
            started = time.monotonic()
            with trio.fail_after(PROMPT):
                await inner.start(service.run)  # every log is read at start
                await arrived.wait()
            figures["at start"] = time.monotonic() - started
            assert misbehaving >= 1
            # A kick (a peer connected) reads the good log again at once.
            await good_writer.append(batch(2, 3, "good"))
            wanted.update(m for m, _ in batch(2, 3, "good"))
            arrived = trio.Event()
            started = time.monotonic()
            with trio.fail_after(PROMPT):
                service.kick()
                await arrived.wait()
            figures["on a kick"] = time.monotonic() - started
            # So does poll_now, which reads every log at once, though it waits for the slow one.
            await good_writer.append(batch(2, 5, "good"))
            wanted.update(m for m, _ in batch(2, 5, "good"))
            arrived = trio.Event()
            started = time.monotonic()
            with trio.fail_after(PROMPT):
                inner.start_soon(service.poll_now)
                await arrived.wait()
            figures["in poll_now"] = time.monotonic() - started
            inner.cancel_scope.cancel()
    finally:
        await service.aclose()
    assert stored.isdisjoint(m for m, _ in batch(48, 0, "slow"))
    print(what, behaviour, {k: round(v, 3) for k, v in figures.items()})
