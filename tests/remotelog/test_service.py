"""The node's remote-log service: a backend that is down, and a kick when we come back online."""

from __future__ import annotations

from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.node._remotelog import RemoteLogService
from mvds_node.remotelog import LogSettings, LogWriter, MemoryBackend
from mvds_node.remotelog._format import public_key
from mvds_node.sync import Limits, decode_payload, encode_message, message_id

G = b"G" * 32
PEER = b"P" * 32


async def test_backend_down_then_kick_reads_at_once(tmp_path: Path) -> None:
    backend = MemoryBackend()
    theirs, ours = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    fed: list[bytes] = []
    fed_event = trio.Event()

    stored: set[bytes] = set()

    async def feed(peer: bytes, payload: bytes) -> None:
        await trio.lowlevel.checkpoint()
        messages = decode_payload(payload, Limits()).messages
        fed.extend(m.body for m in messages)
        stored.update(m.id for m in messages)
        fed_event.set()

    service = RemoteLogService(
        backend=backend,
        data_dir=tmp_path,
        signing=ours,
        our_key=b"O" * 32,
        groups=[("chat", G, None, [(PEER, public_key(theirs))])],
        settings=LogSettings(page_size=4, inline=2),
        poll_seconds=1000.0,  # only kicks can bring a read within this test
        has_message=stored.__contains__,
        feed=feed,
        refused=lambda peer, reason, detail: None,
    )
    backend.down = True
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                await trio.testing.wait_all_tasks_blocked()
                (reader_status,) = [s for s in service.status.values() if not s.mine]
                assert reader_status.error.startswith("backend unreachable")
                backend.down = False
                body = b"written while we were away"
                await LogWriter(backend, theirs, G).append(
                    [(message_id(G, 1, body), encode_message(G, 1, body))]
                )
                service.kick()  # e.g. a peer connected: we are back online
                await fed_event.wait()
                await trio.testing.wait_all_tasks_blocked()  # the poll finishes
                assert fed == [body]
                assert reader_status.error == ""
                assert (reader_status.fetched, reader_status.behind) == (1, 1)
                nursery.cancel_scope.cancel()
    finally:
        service.close()
