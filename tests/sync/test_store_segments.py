"""What only the SQLite store does: large bodies in segment files, and schema migration.

A message whose wire encoding reaches ``EXTERNAL_MIN`` bytes lives in a segment file beside the
database; the row says where. These tests check that such messages read back through every
method that returns wires, survive a reopen, that bytes a transaction wrote but did not commit
are never referred to (and are cut off when the store opens), and that a segment file goes away
with its last message. Then a store written with schema 1 is opened and migrated.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from mvds_node.errors import StoreError
from mvds_node.sync import Record, RecordType, StoredMessage
from mvds_node.sync.store import _sqlite
from mvds_node.sync.store._sqlite import EXTERNAL_MIN, SCHEMA_VERSION, SQLiteStore

G = bytes(range(1, 33))
P = b"P" * 32


def big(n: int, *, size: int = EXTERNAL_MIN + 10, expires_at: int = 0) -> StoredMessage:
    wire = (b"wire %d " % n).ljust(size, b"x")
    return StoredMessage(hashlib.sha256(wire).digest(), G, n, wire, (), expires_at)


def segments(db: Path) -> list[str]:
    folder = Path(str(db) + ".bodies")
    return sorted(os.listdir(folder)) if folder.exists() else []


def aborted(store: SQLiteStore, action: Callable[[], object]) -> None:
    """Run ``action`` in a transaction that then fails (and rolls back)."""
    with store.transaction():
        action()
        raise RuntimeError("abort")


def test_large_bodies_live_in_a_segment_and_read_back_everywhere(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    small = StoredMessage(b"s" * 32, G, 1, b"small wire", ())
    large = big(1)
    held = StoredMessage(b"h" * 32, G, 2, big(2).wire, (large.id,), 0, False)
    doomed = big(3, expires_at=5)
    with SQLiteStore(db) as store:
        for m in (small, large, held, doomed):
            assert store.add_message(m)
        assert segments(db) == ["00000001.seg"]
        con = store._con
        stored = dict(con.execute("SELECT id, length(wire) FROM messages").fetchall())
        assert stored[small.id] == len(small.wire)
        assert stored[large.id] == 0, "a large wire is not in the database"
    with SQLiteStore(db) as store:
        assert store.get_message(large.id) == large
        assert store.get_wires([large.id]) == {large.id: large.wire}
        ids = [small.id, large.id, held.id, doomed.id]
        assert store.get_wires(ids) == {m.id: m.wire for m in (small, large, held, doomed)}
        assert store.undelivered() == [held]
        assert store.expired(10, 10) == [doomed]


def test_a_duplicate_or_a_rollback_leaves_no_hole(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        first = big(1)
        assert store.add_message(first)
        end = store._seg_end
        assert not store.add_message(first), "already stored"
        assert store._seg_end == end
        with pytest.raises(RuntimeError):
            aborted(store, lambda: store.add_message(big(2)))
        assert store._seg_end == end, "the rolled-back body is overwritten next"
        second = big(3)
        store.add_message(second)
        assert store.get_wires([first.id, second.id]) == {
            first.id: first.wire,
            second.id: second.wire,
        }
        assert store.get_message(big(2).id) is None


def test_bytes_a_crash_left_after_the_last_body_are_cut_off(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        store.add_message(big(1))
        end = store._seg_end
    segment = Path(str(db) + ".bodies") / "00000001.seg"
    with segment.open("ab") as f:
        f.write(b"half a body that never committed")
    with SQLiteStore(db) as store:
        assert segment.stat().st_size == end
        store.add_message(big(2))
        assert store.get_message(big(2).id) == big(2)
        assert store.get_message(big(1).id) == big(1)


def test_a_segment_goes_once_its_last_message_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "_SEGMENT_BYTES", 2 * EXTERNAL_MIN)
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        messages = [big(n) for n in range(5)]
        for m in messages:
            store.add_message(m)  # each its own transaction: a new segment every two
        assert segments(db) == ["00000001.seg", "00000002.seg", "00000003.seg"]
        store.delete_message(messages[0].id)
        assert len(segments(db)) == 3, "segment 1 still holds a message"
        with pytest.raises(RuntimeError):
            aborted(store, lambda: store.delete_message(messages[1].id))
        assert len(segments(db)) == 3, "the delete was rolled back"
        store.delete_message(messages[1].id)
        assert segments(db) == ["00000002.seg", "00000003.seg"]
        for m in messages[2:]:
            store.delete_message(m.id)
        assert segments(db) == ["00000003.seg"], "the segment being appended to stays"
        store.add_message(big(7))
        assert store.get_message(big(7).id) == big(7)
        store.add_message(big(8))  # segment 3 is full now
        store.add_message(big(9))
        assert segments(db) == ["00000003.seg", "00000004.seg"]
    with SQLiteStore(db) as store:
        assert [store.get_message(big(n).id) for n in (7, 8, 9)] == [big(7), big(8), big(9)]


def test_a_missing_body_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        store.add_message(big(1))
    with SQLiteStore(db) as store:
        os.truncate(Path(str(db) + ".bodies") / "00000001.seg", 10)
        with pytest.raises(StoreError, match="shorter"):
            store.get_message(big(1).id)


def test_a_memory_database_keeps_large_bodies_inline() -> None:
    with SQLiteStore.memory() as store:
        store.add_message(big(1))
        assert store.get_message(big(1).id) == big(1)
        assert store._seg == 0


# The schema-1 tables, exactly as that version created them.
_V1 = (
    """CREATE TABLE messages (id BLOB NOT NULL, group_id BLOB NOT NULL,
        timestamp INTEGER NOT NULL, wire BLOB NOT NULL, parents BLOB NOT NULL,
        expires_at INTEGER NOT NULL, delivered INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX messages_id ON messages (id)",
    "CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at > 0",
    "CREATE INDEX messages_held ON messages (delivered) WHERE delivered = 0",
    "CREATE INDEX messages_group ON messages (group_id) WHERE delivered = 1 AND expires_at = 0",
    """CREATE TABLE parents (parent BLOB NOT NULL, child BLOB NOT NULL,
        PRIMARY KEY (parent, child)) WITHOUT ROWID""",
    "CREATE TABLE groups (group_id BLOB NOT NULL PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE members (group_id BLOB NOT NULL, peer BLOB NOT NULL, mode TEXT NOT NULL,
        PRIMARY KEY (group_id, peer)) WITHOUT ROWID""",
    """CREATE TABLE records (message_id BLOB NOT NULL, peer BLOB NOT NULL,
        type INTEGER NOT NULL, group_id BLOB NOT NULL, send_count INTEGER NOT NULL,
        send_epoch INTEGER NOT NULL, first_epoch INTEGER NOT NULL, parked INTEGER NOT NULL,
        seq INTEGER NOT NULL, PRIMARY KEY (message_id, peer)) WITHOUT ROWID""",
    "CREATE INDEX records_due ON records (send_epoch, seq) WHERE parked = 0",
    "CREATE INDEX records_peer ON records (peer)",
    "CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value) WITHOUT ROWID",
    f"PRAGMA application_id = {_sqlite.APPLICATION_ID}",
    "PRAGMA user_version = 1",
)


def test_a_schema_1_store_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    for statement in _V1:
        con.execute(statement)
    old = big(1)  # schema 1 kept every wire inline, large or not
    con.execute(
        "INSERT INTO messages VALUES (?, ?, ?, ?, ?, 0, 1)",
        (old.id, G, old.timestamp, old.wire, b""),
    )
    con.execute("INSERT INTO groups VALUES (?)", (G,))
    con.execute("INSERT INTO members VALUES (?, ?, 'batch')", (G, P))
    # Records in creation order 7, 9 (not by message ID), one parked.
    con.execute("INSERT INTO records VALUES (?, ?, 2, ?, 1, 4, 2, 0, 9)", (b"\x01" * 32, P, G))
    con.execute("INSERT INTO records VALUES (?, ?, 2, ?, 0, 4, -1, 0, 7)", (old.id, P, G))
    con.execute("INSERT INTO records VALUES (?, ?, 0, ?, 5, 1, 0, 1, 8)", (b"\x02" * 32, P, G))
    con.execute("INSERT INTO meta VALUES ('epoch', 41)")
    con.commit()
    con.close()

    with SQLiteStore(db) as store:
        assert store._con.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert store.get_message(old.id) == old
        assert store.get_epoch() == 41
        assert store.load_groups() == {G: {P: "batch"}}
        assert [r.message_id for r in store.records_for_peer(P)] == [
            old.id,
            b"\x02" * 32,
            b"\x01" * 32,
        ]
        assert [r.message_id for r in store.due_records(10, 10)] == [old.id, b"\x01" * 32]
        parked = store.get_record(b"\x02" * 32, P)
        assert parked == Record(b"\x02" * 32, P, RecordType.OFFER, G, 5, 1, 0, True)
        # New records come after the migrated ones; new large bodies go to a segment.
        store.put_records([Record(b"\x03" * 32, P, RecordType.MESSAGE, G, 0, 4)])
        assert [r.message_id for r in store.due_records(10, 10)][-1] == b"\x03" * 32
        store.add_message(big(2))
    assert segments(db) == ["00000001.seg"]
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()
