"""The node's remote-log service: cursors kept across restarts, acknowledgement records of
positions, and hostile records."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.node._remotelog import RemoteLogService
from mvds_node.remotelog import LogSettings, LogWriter, MemoryBackend, log_name
from mvds_node.remotelog._format import (
    ACKS_V1,
    LogError,
    acks_name,
    decode_acks,
    encode_acks,
    public_key,
    sign_head,
)
from mvds_node.remotelog._log import Cursor
from mvds_node.sync import Limits, decode_payload, encode_message, message_id

G = b"G" * 32
A, B = b"A" * 32, b"B" * 32  # the members' node keys
SETTINGS = LogSettings(page_size=4, inline=2)


def batch(n: int, start: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        body = f"message {i}".encode()
        out.append((message_id(G, i + 1, body), encode_message(G, i + 1, body)))
    return out


@dataclass
class Engine:
    """What the service feeds: stored messages and the ACKs it was given, per peer."""

    stored: set[bytes] = field(default_factory=set)
    acked: list[bytes] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def feed(self, peer: bytes, payload: bytes) -> None:
        await trio.lowlevel.checkpoint()
        decoded = decode_payload(payload, Limits())
        self.stored.update(m.id for m in decoded.messages)
        self.acked.extend(decoded.acks)


def service(
    backend: MemoryBackend, data: Path, ours: Ed25519PrivateKey, member: bytes, theirs: bytes
) -> tuple[RemoteLogService, Engine]:
    engine = Engine()
    data.mkdir(exist_ok=True)
    s = RemoteLogService(
        backend=backend,
        data_dir=data,
        signing=ours,
        our_key=A if member == B else B,
        groups=[("chat", G, None, [(member, theirs)])],
        settings=SETTINGS,
        poll_seconds=1000.0,  # reads happen when the test asks
        has_message=engine.stored.__contains__,
        feed=engine.feed,
        refused=lambda peer, reason, detail: engine.refused.append(detail),
    )
    return s, engine


@asynccontextmanager
async def running(s: RemoteLogService) -> AsyncIterator[None]:
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(s.run)
                await trio.testing.wait_all_tasks_blocked()
                yield
                nursery.cancel_scope.cancel()
    finally:
        s.close()


async def upload(s: RemoteLogService, items: list[tuple[bytes, bytes]]) -> None:
    s.enqueue(G, items)
    await trio.testing.wait_all_tasks_blocked()  # one append: one head sequence


async def test_the_cursor_survives_a_restart_and_so_does_rollback_detection(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    writer_key, reader_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    writer = LogWriter(backend, writer_key, G, settings=SETTINGS)
    await writer.append(batch(10, 0))
    name = log_name(public_key(writer_key), G)
    old_head = backend.ns[name]
    await writer.append(batch(2, 10))
    s, engine = service(backend, tmp_path / "b", reader_key, A, public_key(writer_key))
    async with running(s):
        await s.poll_now()
        (reader, _) = s.readers[0]
        cursor = reader.cursor
        assert cursor == Cursor(2, batch(12, 0)[-1][0])
    assert len(engine.stored) == 12
    await writer.append(batch(1, 12))
    again, engine = service(backend, tmp_path / "b", reader_key, A, public_key(writer_key))
    assert again.readers[0][0].cursor == cursor and again.readers[0][0].seq == 2
    async with running(again):
        await again.poll_now()  # nothing is known to this engine: the cursor alone stops it
        assert engine.stored == {batch(13, 0)[-1][0]}
    backend.ns[name] = old_head  # a helper serves an older head after our restart
    third, engine = service(backend, tmp_path / "b", reader_key, A, public_key(writer_key))
    async with running(third):
        await third.poll_now()
        assert "rollback" in engine.refused[0]


async def test_a_message_the_engine_did_not_store_is_fetched_again(tmp_path: Path) -> None:
    backend = MemoryBackend()
    writer_key = Ed25519PrivateKey.generate()
    await LogWriter(backend, writer_key, G, settings=SETTINGS).append(batch(3, 0))
    s, engine = service(backend, tmp_path, Ed25519PrivateKey.generate(), A, public_key(writer_key))
    lost = batch(3, 0)[1][0]

    async def feed(peer: bytes, payload: bytes) -> None:
        await trio.lowlevel.checkpoint()
        decoded = decode_payload(payload, Limits())
        engine.stored.update(m.id for m in decoded.messages if m.id != lost)

    s._feed = feed
    async with running(s):
        await s.poll_now()
        (reader, _) = s.readers[0]
        assert not reader.cursor and "not stored" in s.status[reader.name].error
        s._feed = engine.feed
        await s.poll_now()
        assert lost in engine.stored and reader.cursor is not None
        assert s.status[reader.name].error == ""
    (saved,) = sqlite3.connect(tmp_path / "remotelog.sqlite").execute("SELECT seq FROM cursors")
    assert saved == (1,)


async def test_acks_are_exactly_the_messages_published_up_to_the_readers_position(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    a_key, b_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a, a_engine = service(backend, tmp_path / "a", a_key, B, public_key(b_key))
    b, b_engine = service(backend, tmp_path / "b", b_key, A, public_key(a_key))
    async with running(a), running(b):
        first, second, third = batch(3, 0), batch(2, 3), batch(4, 5)
        await upload(a, first)  # A's head 1
        await upload(a, second)  # A's head 2
        await b.poll_now()  # B reads both: its record says "A up to 2"
        record = backend.ns[acks_name(public_key(b_key), G)]
        assert len(record) > 1 + 40  # signed; the entries themselves are 41 bytes
        await upload(a, third)  # A's head 3, which B has not read
        await a.poll_now()
        assert sorted(a_engine.acked) == sorted(m for m, _ in first + second)
        a_engine.acked.clear()
        await a.poll_now()  # the same record again: nothing new
        assert a_engine.acked == []
        await b.poll_now()
        await a.poll_now()
        assert sorted(a_engine.acked) == sorted(m for m, _ in third)
        # Every member whose log A reads has read past heads 1..3: A forgets them.
        db = sqlite3.connect(tmp_path / "a" / "remotelog.sqlite")
        assert db.execute("SELECT count(*) FROM published").fetchone() == (0,)
        assert b_engine.acked == []  # A published nothing B could acknowledge
        # Nothing of A's awaits B's acknowledgement: A reads B's log head, not B's record.
        fetches = backend.statistics().ns_fetch
        await a.poll_now()
        assert backend.statistics().ns_fetch == fetches + 1
        await upload(a, batch(1, 9))
        await a.poll_now()
        assert backend.statistics().ns_fetch == fetches + 3


def hostile(key: Ed25519PrivateKey, data: bytes, seq: int = 1) -> bytes:
    name = acks_name(public_key(key), G)
    return sign_head(key, name, seq, data, False)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes([ACKS_V1]) + b"\x00" * 40 * 1025, "over the limit"),
        (bytes([2]) + b"\x00" * 40, "unknown version"),
        (bytes([ACKS_V1]) + b"\x00" * 41, "malformed"),
        (b"\x00" * (32 * 100_001), "over the limit"),
    ],
)
async def test_a_hostile_acks_record_is_refused_and_changes_nothing(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    backend = MemoryBackend()
    a_key, b_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a, a_engine = service(backend, tmp_path / "a", a_key, B, public_key(b_key))
    async with running(a):
        await upload(a, batch(3, 0))
        backend.ns[acks_name(public_key(b_key), G)] = hostile(b_key, data)
        await a.poll_now()
        assert a_engine.acked == []
        assert reason in a_engine.refused[0]
        (reader, _) = a.readers[0]
        assert reason in a.status[reader.name].error
        db = sqlite3.connect(tmp_path / "a" / "remotelog.sqlite")
        assert db.execute("SELECT count(*) FROM acked").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM published").fetchone() == (3,)


async def test_an_old_format_record_is_read_as_the_ids_it_lists(tmp_path: Path) -> None:
    backend = MemoryBackend()
    a_key, b_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a, a_engine = service(backend, tmp_path / "a", a_key, B, public_key(b_key))
    ids = [m for m, _ in batch(3, 0)]
    async with running(a):
        backend.ns[acks_name(public_key(b_key), G)] = hostile(b_key, b"".join(ids))
        await a.poll_now()
        assert a_engine.acked == ids and a_engine.refused == []


def test_acks_record_bytes() -> None:
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    data = encode_acks({k2: 7, k1: 2**63 - 1})
    assert data == bytes([ACKS_V1]) + k1 + b"\x7f" + b"\xff" * 7 + k2 + (7).to_bytes(8, "big")
    assert decode_acks(data, "x").positions == {k1: 2**63 - 1, k2: 7}
    assert decode_acks(data, "x", members=frozenset([k1, k2])).ids == ()
    # An entry for a log the reader does not know is skipped, not an error: members need not
    # all know each other's log keys.
    assert decode_acks(data, "x", members=frozenset([k1])).positions == {k1: 2**63 - 1}
    # A position past what the store keeps (signed 64-bit) is refused, even for a skipped log.
    for position in (2**63, 2**64 - 1):
        with pytest.raises(LogError, match="over"):
            decode_acks(encode_acks({k1: position, k2: 7}), "x", members=frozenset([k2]))
    swapped = bytes([ACKS_V1]) + data[41:] + data[1:41]
    with pytest.raises(LogError, match="out of order"):
        decode_acks(swapped, "x")
    assert decode_acks(b"", "x").positions == {}  # an empty record of the old format
    with pytest.raises(ValueError, match="at most 1024"):
        encode_acks({bytes([i % 256, i // 256]) + b"\x00" * 30: 1 for i in range(1025)})


async def test_the_cursor_keeps_its_page_across_a_restart(tmp_path: Path) -> None:
    backend = MemoryBackend()
    settings = LogSettings(page_size=4, head_size=0, inline=4)
    writer_key, reader_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    writer = LogWriter(backend, writer_key, G, settings=settings)
    await writer.append(batch(3, 0))
    s, engine = service(backend, tmp_path, reader_key, A, public_key(writer_key))
    async with running(s):
        await s.poll_now()
        cursor = s.readers[0][0].cursor
    assert cursor == Cursor(1, batch(3, 0)[-1][0], writer.tail)
    await writer.append(batch(2, 3))
    again, engine = service(backend, tmp_path, reader_key, A, public_key(writer_key))
    assert again.readers[0][0].cursor == cursor
    gets = backend.statistics().cas_get
    async with running(again):
        await again.poll_now()
    assert engine.stored == {m for m, _ in batch(2, 3)}
    assert backend.statistics().cas_get == gets + 1  # the new page; the cursor's is not read again


async def test_cursors_saved_without_a_page_address_are_read(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "remotelog.sqlite")
    db.execute(
        "CREATE TABLE cursors (name TEXT PRIMARY KEY, seen INTEGER NOT NULL, seq INTEGER, "
        "newest BLOB, resume_seq INTEGER, resume_newest BLOB, resume_tail BLOB)"
    )
    writer_key = Ed25519PrivateKey.generate()
    name = log_name(public_key(writer_key), G)
    db.execute("INSERT INTO cursors VALUES (?, 3, 2, ?, NULL, NULL, NULL)", (name, b"n" * 32))
    db.commit()
    db.close()
    s, _ = service(
        MemoryBackend(), tmp_path, Ed25519PrivateKey.generate(), A, public_key(writer_key)
    )
    try:
        reader = s.readers[0][0]
        assert (reader.seq, reader.cursor) == (3, Cursor(2, b"n" * 32))
        reader.cursor = Cursor(4, b"m" * 32, b"p" * 32)
        s._save_cursor(reader)
    finally:
        s.close()
    again, _ = service(
        MemoryBackend(), tmp_path, Ed25519PrivateKey.generate(), A, public_key(writer_key)
    )
    try:
        assert again.readers[0][0].cursor == Cursor(4, b"m" * 32, b"p" * 32)
    finally:
        again.close()


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1])
async def test_a_head_sequence_past_the_store_range_is_refused(tmp_path: Path, seq: int) -> None:
    """A member signs a head whose sequence SQLite cannot hold: the poll refuses it and says
    why; the service keeps running and the next good head is read."""
    backend = MemoryBackend()
    writer_key = Ed25519PrivateKey.generate()
    name = log_name(public_key(writer_key), G)
    s, engine = service(backend, tmp_path, Ed25519PrivateKey.generate(), A, public_key(writer_key))
    async with running(s):
        backend.ns[name] = sign_head(writer_key, name, seq, b"", False)
        await s.poll_now()
        assert len(engine.refused) == 1 and f"sequence {seq} is over" in engine.refused[0]
        (reader, _) = s.readers[0]
        assert reader.seq == 0 and reader.cursor is None
        del backend.ns[name]  # the writer's own log starts over
        await LogWriter(backend, writer_key, G, settings=SETTINGS).append(batch(2, 0))
        await s.poll_now()
        assert engine.stored == {m for m, _ in batch(2, 0)}
        assert s.status[reader.name].error == ""
    db = sqlite3.connect(tmp_path / "remotelog.sqlite")
    assert db.execute("SELECT seen, seq FROM cursors").fetchall() == [(1, 1)]


@pytest.mark.parametrize("position", [2**63, 2**64 - 1])
async def test_an_acknowledged_position_past_the_store_range_is_refused(
    tmp_path: Path, position: int
) -> None:
    backend = MemoryBackend()
    a_key, b_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    a, a_engine = service(backend, tmp_path / "a", a_key, B, public_key(b_key))
    async with running(a):
        await upload(a, batch(3, 0))
        data = encode_acks({public_key(a_key): position})
        backend.ns[acks_name(public_key(b_key), G)] = hostile(b_key, data)
        await a.poll_now()
        assert a_engine.acked == []
        assert f"position {position} is over" in a_engine.refused[0]
        db = sqlite3.connect(tmp_path / "a" / "remotelog.sqlite")
        assert db.execute("SELECT count(*) FROM acked").fetchone() == (0,)
        # The member then publishes a good record: it is read.
        data = encode_acks({public_key(a_key): 1})
        backend.ns[acks_name(public_key(b_key), G)] = hostile(b_key, data, seq=2)
        await a.poll_now()
        assert sorted(a_engine.acked) == sorted(m for m, _ in batch(3, 0))
