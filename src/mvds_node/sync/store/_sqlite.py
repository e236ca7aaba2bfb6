"""The durable store: :class:`SQLiteStore`, the engine's default :class:`~mvds_node.sync.Store`.

Theory of operation: one SQLite file (stdlib :mod:`sqlite3`) in WAL mode, opened with
``isolation_level=None`` so that we, not the :mod:`sqlite3` module, decide where transactions begin
and end. :meth:`SQLiteStore.transaction` issues ``BEGIN IMMEDIATE`` / ``COMMIT`` / ``ROLLBACK``; a
nested ``transaction()`` joins the outer one. A method called outside any transaction is committed
before it returns, so a single call is as durable as a whole engine input; a method that runs
several statements wraps them in a transaction of its own, so it is atomic too.

The schema follows :class:`~mvds_node.sync.MemoryStore`, which defines the semantics:

* ``messages`` in arrival order (a rowid table: new rows append to the last page instead of
  landing on a random one, and ``undelivered()`` and expiry ties come back in arrival order, as
  from the memory store), with a unique index on the message ID. Parents are kept twice:
  concatenated in the row (32 bytes each), so that reading a message needs no join, and one row
  each in ``parents``, keyed ``(parent, child)``: that key is the index on parent that answers
  ``is_parent`` and the frontier. Deleting a message reads its ``parents`` column to find its rows,
  so ``parents`` needs no index by child. Partial indexes hold exactly what is asked for: expiring
  messages by expiry, held (undelivered) messages, and per group the delivered, non-expiring ones
  that may be on the frontier.
* ``groups`` and ``members`` (mode by name).
* ``records`` keyed ``(message_id, peer)``, with a partial index on ``(send_epoch, seq)`` over
  unparked records for ``due_records`` and ``min_due_epoch``, and an index on ``peer`` for
  ``records_for_peer``. ``seq`` numbers records in the order they were created, so that records
  due in the same epoch go out in that order, as from the memory store: a new message's record is
  created after its parents', and a payload that carries parents before children lets the peer
  deliver them without asking for the parents (ordering by message ID instead cost a quarter of
  the engine benchmark's throughput).
* ``meta``: the engine's epoch.
* ``inbox`` (schema 3): every message delivered to the application, in delivery order, keyed by
  an AUTOINCREMENT ``seq``; a row is written by ``record_delivery`` in the transaction that
  delivers the message, and stays (its message gone) when the message expires, so a reader
  that had not reached it can be told. ``cursors``: each durable cursor's name and the last
  ``seq`` its consumer confirmed. :meth:`SQLiteStore.retain` trims both ends of that story, and
  the messages this node sent (which are not in the inbox) by the same rules.
* ``acks`` and ``contacts`` (schema 4), ``messages.stored_at`` and ``records.carrier``: the facts
  ``Engine.trace`` and the status report (when a message was stored, the carrier each record's
  last transmission was handed to, when and over which carrier each peer acknowledged it, the
  last contact with each peer per carrier). A message's ``acks`` rows go with it (expiry,
  retention).

Large bodies: a message whose wire encoding is at least :data:`EXTERNAL_MIN` bytes is not kept in
the database. Its bytes are appended to a *segment file* (``<store>.bodies/00000001.seg``, ...),
and the row holds the segment, offset and length instead (``seg``, ``pos``, ``size``). In SQLite
such a body would be written twice (to the log, then at the checkpoint) through a chain of
overflow pages; in a segment it is written once, in whole pages that bypass the page cache
(:class:`~mvds_node.sync.store._segments.SegmentWriter`). The order of writes keeps the
store's guarantees: the bytes are written before the row that refers to them, and the segment is
flushed to the disk (``fdatasync``) before the transaction commits, so a committed row never
refers to bytes that a crash, even a power loss, could lose. Bytes written by a transaction that
did not commit (rolled back, or cut short by a crash) are referred to by nothing: the next write
overwrites them, and opening the store cuts the last segment back to the end of its last
committed body. A transaction writes to one segment; one that begins when the current segment
holds 256 MiB starts the next. A segment is deleted once the last message in it is (expiry):
messages expire roughly in the order they were stored, so segments empty out in that order too.
Space of deleted messages inside a segment that still holds others is not reused. The bodies
written last (up to 16 MiB) are also kept in memory, for the drain that sends them soon after.

The file says what it is with ``PRAGMA application_id`` and which schema it holds with ``PRAGMA
user_version``. A file of another application, of a newer schema, or not a database at all is
refused with :class:`~mvds_node.errors.StoreError` before anything is written to it. A store of
an older schema is migrated when it is opened, one transaction per version (``_MIGRATIONS``).

Speed: a small transaction costs mostly the pages it writes to the log (every b-tree a send
touches is at least one page, each a few microseconds of system calls, then copied again at the
checkpoint), so the schema has no index the engine does not query, and checkpoints are rare.
The connection holds the database lock for its whole life (``locking_mode=EXCLUSIVE``): no
shared-memory index and no file locking per transaction, and a second process (a second engine on
the same file, which would corrupt the retransmission state) is refused instead of interleaving.
Statements are prepared once and cached by the connection, batches go through ``executemany``, and
rows become objects in one comprehension without re-reading columns the caller passed in.

Every :mod:`sqlite3` error becomes a :class:`~mvds_node.errors.StoreError` once, here, with a
message that says what went wrong (corrupt file, disk full, read-only, locked by another process,
closed). A failed write leaves the store as it was before the transaction (SQLite rolls back, the
segment bytes written are referred to by nothing), so the next write can succeed once the cause
is gone: a full disk is not fatal. A store that cannot be written at all (a read-only file
system, no write permission) is refused when it is opened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Final, Literal, final

from mvds_node._files import fsync_directory
from mvds_node.errors import LocalProtocolError, StoreError
from mvds_node.sync._state import RecordType
from mvds_node.sync.store._protocol import InboxEntry, Record, StoredMessage
from mvds_node.sync.store._segments import SegmentWriter

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION: Final = 4
"""The schema this code writes (``PRAGMA user_version``); files with a newer one are refused,
older ones are migrated when opened (see ``_MIGRATIONS``)."""

APPLICATION_ID: Final = 0x4D564453
"""``PRAGMA application_id`` of an mvds-node store: ``b"MVDS"``."""

_ID_SIZE: Final = 32

EXTERNAL_MIN: Final = 4096
"""Wire encodings of at least this many bytes are kept in segment files, not in the database:
such a row would spill into overflow pages anyway, and a body written once to a file costs a
fraction of one written to the write-ahead log and again at the checkpoint."""
_SEGMENT_BYTES: Final = 256 * 1024 * 1024
"""A transaction that begins when the current segment holds this much starts a new one."""
_RECENT_BYTES: Final = 16 * 1024 * 1024
"""Bodies most recently written to segments, kept in memory up to this many bytes: the drain that
sends them reads them back soon after they are stored, and the segment writes bypass the page
cache (see :mod:`mvds_node.sync.store._segments`), so without these that read would go to the
disk."""
_WAL_BYTES: Final = 16 * 1024 * 1024
"""The write-ahead log is checkpointed once it holds this much, and cut back to this size after
a checkpoint that found it larger: a node on a small disk does not lose 40 MiB to a log of a few
MiB of data. Measured on 5,000 sends, 16 MiB keeps the throughput of the 40 MiB log (256-byte
sends lost a quarter of it at 4-8 MiB; 60 KB sends, whose bodies are in segments, nothing)."""
_INBOX_BATCH_BYTES: Final = 4 * 1024 * 1024
"""Bodies one read of the inbox brings into memory at most (beyond its first message): a reader
that reads ahead in batches holds a bounded amount, however large the messages."""
_MAX_OPEN_SEGMENTS: Final = 16
"""Segments kept open for reading at once (older ones are reopened when read)."""

# Records are a rowid table keyed by ``seq``, their creation order, with a unique index on
# (message_id, peer): a new record appends to the table's last page and to the peer and due
# indexes, and a transmission (which rewrites send_count and send_epoch) changes the row where it
# is and the due index, not an index ordered by random message IDs. Only the key index is random.
_RECORDS_TABLE: Final = """CREATE TABLE {name} (
        seq INTEGER PRIMARY KEY,
        message_id BLOB NOT NULL,
        peer BLOB NOT NULL,
        type INTEGER NOT NULL,
        group_id BLOB NOT NULL,
        send_count INTEGER NOT NULL,
        send_epoch INTEGER NOT NULL,
        first_epoch INTEGER NOT NULL,
        parked INTEGER NOT NULL
    )"""
_RECORDS_INDEXES: Final = (
    "CREATE UNIQUE INDEX records_key ON records (message_id, peer)",
    # Ordered by (send_epoch, seq): seq is the rowid every index entry ends with.
    "CREATE INDEX records_due ON records (send_epoch) WHERE parked = 0",
    "CREATE INDEX records_peer ON records (peer)",
)

# The application's inbox (schema 3): every message delivered to the application, in delivery
# order, numbered by ``seq`` (AUTOINCREMENT: a number is never reused, even after retention
# deleted the last rows), and the durable cursors that say how far each consumer has confirmed.
# A row is written by the engine in the transaction that delivers the message, so a message the
# node stored and acknowledged is in the inbox too: there is no window between the two.
_INBOX_SCHEMA: Final = (
    """CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id BLOB NOT NULL CHECK (length(message_id) = 32),
        group_id BLOB NOT NULL,
        sender BLOB,
        missing BLOB
    )""",
    "CREATE INDEX inbox_message ON inbox (message_id)",
    """CREATE TABLE cursors (
        name TEXT NOT NULL PRIMARY KEY,
        position INTEGER NOT NULL CHECK (typeof(position) = 'integer' AND position >= 0)
    ) WITHOUT ROWID""",
)

# Trace facts (``Engine.trace``, ``node.status``): when each message was stored (wall clock, Unix
# ms; 0 for messages stored before schema 4), the carrier of each record's last transmission,
# each peer's acknowledgement of each of our messages
# (when, and over which carrier: "tcp", "bundle", "remote-log" ...), and the last contact with each
# peer per carrier, in each direction. A store of schema 3 gains them in one migration step,
# ``_TRACE_MIGRATION``; a new store creates them with the rest of the schema.
# Acknowledgements are keyed by the message's ``stored_at`` first: a message is acknowledged soon
# after it is stored, so a transaction's ACKs land on the last pages of the table instead of one
# random page each (what a key by message ID would cost in log writes).
_TRACE_SCHEMA: Final = (
    "ALTER TABLE messages ADD COLUMN stored_at INTEGER NOT NULL DEFAULT 0",
    # The carrier each record's last transmission was handed to ('': never sent, or not known).
    "ALTER TABLE records ADD COLUMN carrier TEXT NOT NULL DEFAULT ''",
    """CREATE TABLE acks (
        stored_at INTEGER NOT NULL,
        message_id BLOB NOT NULL,
        peer BLOB NOT NULL,
        acked_at INTEGER NOT NULL,
        via TEXT NOT NULL,
        PRIMARY KEY (stored_at, message_id, peer)
    ) WITHOUT ROWID""",
    """CREATE TABLE contacts (
        peer BLOB NOT NULL,
        carrier TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (peer, carrier)
    ) WITHOUT ROWID""",
)
_TRACE_MIGRATION: Final = _TRACE_SCHEMA
"""3 -> 4: the trace facts (see ``_TRACE_SCHEMA``); every stored message and record is kept."""

# One statement per entry: executed in order in the transaction that creates a store.
_SCHEMA: Final = (
    """CREATE TABLE messages (
        id BLOB NOT NULL,
        group_id BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        wire BLOB NOT NULL,
        parents BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        delivered INTEGER NOT NULL,
        seg INTEGER,
        pos INTEGER,
        size INTEGER
    )""",
    "CREATE UNIQUE INDEX messages_id ON messages (id)",
    "CREATE INDEX messages_seg ON messages (seg) WHERE seg IS NOT NULL",
    "CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at > 0",
    "CREATE INDEX messages_held ON messages (delivered) WHERE delivered = 0",
    "CREATE INDEX messages_group ON messages (group_id) WHERE delivered = 1 AND expires_at = 0",
    """CREATE TABLE parents (
        parent BLOB NOT NULL,
        child BLOB NOT NULL,
        PRIMARY KEY (parent, child)
    ) WITHOUT ROWID""",
    "CREATE TABLE groups (group_id BLOB NOT NULL PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE members (
        group_id BLOB NOT NULL,
        peer BLOB NOT NULL,
        mode TEXT NOT NULL,
        PRIMARY KEY (group_id, peer)
    ) WITHOUT ROWID""",
    _RECORDS_TABLE.format(name="records"),
    *_RECORDS_INDEXES,
    "CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value) WITHOUT ROWID",
    *_INBOX_SCHEMA,
    *_TRACE_SCHEMA,
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# Version -> the statements that bring a store of that version to the next, in one transaction.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    # 1 -> 2: message bodies may live in segment files (seg, pos, size); records keyed by seq.
    1: (
        "ALTER TABLE messages ADD COLUMN seg INTEGER",
        "ALTER TABLE messages ADD COLUMN pos INTEGER",
        "ALTER TABLE messages ADD COLUMN size INTEGER",
        "CREATE INDEX messages_seg ON messages (seg) WHERE seg IS NOT NULL",
        _RECORDS_TABLE.format(name="records_v2"),
        # Renumbered in the old order, so that duplicates (never written, but not enforced by
        # schema 1) cannot break the copy.
        "INSERT INTO records_v2 (seq, message_id, peer, type, group_id, send_count, send_epoch, "
        "first_epoch, parked) SELECT row_number() OVER (ORDER BY seq, message_id, peer), "
        "message_id, peer, type, group_id, send_count, send_epoch, first_epoch, parked "
        "FROM records",
        "DROP TABLE records",
        "ALTER TABLE records_v2 RENAME TO records",
        *_RECORDS_INDEXES,
    ),
    # 2 -> 3: the application's inbox and its cursors. Messages delivered before are put in the
    # inbox in the order they were stored, with no sender (schema 2 did not keep it), so that an
    # application reading from a new cursor sees them: at least once, never lost.
    2: (
        *_INBOX_SCHEMA,
        "INSERT INTO inbox (message_id, group_id, sender, missing) "
        "SELECT id, group_id, NULL, NULL FROM messages WHERE delivered = 1 ORDER BY rowid",
    ),
    # 3 -> 4: trace facts.
    3: _TRACE_MIGRATION,
}

_BEGIN: Final = "BEGIN IMMEDIATE"
_SAVEPOINT: Final = "SAVEPOINT add_messages"
_ROLLBACK_TO_SAVEPOINT: Final = "ROLLBACK TO add_messages"
_RELEASE_SAVEPOINT: Final = "RELEASE add_messages"
_COMMIT: Final = "COMMIT"
_ROLLBACK: Final = "ROLLBACK"

_MESSAGE: Final = "id, group_id, timestamp, wire, parents, expires_at, delivered, seg, pos, size"
_ADD_MESSAGE: Final = (
    f"INSERT OR IGNORE INTO messages ({_MESSAGE}, stored_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADD_PARENT: Final = "INSERT OR IGNORE INTO parents (parent, child) VALUES (?, ?)"
_HAS_MESSAGE: Final = "SELECT 1 FROM messages WHERE id = ?"
# Message IDs that start with a prefix: a range of the unique index (``id < ?`` unless the prefix
# is all 0xff bytes).
_IDS_FROM: Final = "SELECT id FROM messages WHERE id >= ? ORDER BY id LIMIT ?"
_GET_MESSAGE: Final = (
    "SELECT group_id, timestamp, wire, parents, expires_at, delivered, seg, pos, size, "
    "stored_at FROM messages WHERE id = ?"
)
_GET_WIRE: Final = "SELECT wire, seg, pos, size FROM messages WHERE id = ?"
# Lookups by many IDs go in chunks (_padded_chunks); a chunk is padded to a power of two so that
# only a handful of statements are ever prepared.
_WIRES_CHUNK: Final = 64
_CHUNK_SIZES: Final = (1, 2, 4, 8, 16, 32, 64)
_GET_WIRES: Final = {
    n: f"SELECT id, wire, seg, pos, size FROM messages WHERE id IN ({', '.join('?' * n)})"
    for n in _CHUNK_SIZES
}
_KINDS: Final = len(RecordType)
"""Placeholders for record types in ``_DELETE_ACKED``: room for every type, so that a set of
types is never cut short (the unused ones repeat a type given, which IN (...) ignores)."""
_DELETE_ACKED: Final = {
    n: f"DELETE FROM records WHERE peer = ? AND type IN ({', '.join('?' * _KINDS)}) AND "
    f"message_id IN ({', '.join('?' * n)}) RETURNING message_id"
    for n in _CHUNK_SIZES
}
_GET_PEER_RECORDS: Final = {
    n: "SELECT message_id, type, group_id, send_count, send_epoch, first_epoch, parked, carrier "
    f"FROM records WHERE peer = ? AND message_id IN "
    f"({', '.join('?' * n)})"
    for n in _CHUNK_SIZES
}
_FIND_MESSAGE: Final = "SELECT rowid, parents, seg, stored_at FROM messages WHERE id = ?"
_SEGMENT_USED: Final = "SELECT 1 FROM messages WHERE seg = ? LIMIT 1"
_SEGMENT_END: Final = "SELECT max(pos + size) FROM messages WHERE seg = ?"
_DELETE_MESSAGE: Final = "DELETE FROM messages WHERE rowid = ?"
_DELETE_PARENT: Final = "DELETE FROM parents WHERE parent = ? AND child = ?"
_DELETE_MESSAGE_RECORDS: Final = "DELETE FROM records WHERE message_id = ?"
_DELETE_MESSAGE_ACKS: Final = "DELETE FROM acks WHERE stored_at = ? AND message_id = ?"
_MARK_DELIVERED: Final = "UPDATE messages SET delivered = 1 WHERE id = ? AND delivered = 0"
_UNDELIVERED: Final = f"SELECT {_MESSAGE} FROM messages WHERE delivered = 0 ORDER BY rowid"
# An expiring message is never a parent: only children that do not expire count.
_IS_PARENT: Final = (
    "SELECT 1 FROM parents AS p JOIN messages AS c ON c.id = p.child "
    "WHERE p.parent = ? AND c.expires_at = 0 LIMIT 1"
)
_FRONTIER: Final = (
    "SELECT id FROM messages AS m WHERE group_id = ? AND delivered = 1 AND expires_at = 0 "
    "AND NOT EXISTS (SELECT 1 FROM parents AS p JOIN messages AS c ON c.id = p.child "
    "WHERE p.parent = m.id AND c.expires_at = 0) ORDER BY id"
)
_PAGE_SIZES: Final = frozenset(1 << n for n in range(9, 17))
_REQUEST_IDS: Final = "SELECT DISTINCT message_id FROM records WHERE type = 1"
_RECENT_IDS: Final = (
    "SELECT id FROM messages WHERE group_id = ? AND delivered = 1 AND expires_at = 0 "
    "ORDER BY rowid DESC LIMIT ?"
)
_EXPIRED: Final = (
    f"SELECT {_MESSAGE} FROM messages WHERE expires_at > 0 AND expires_at <= ? "
    "ORDER BY expires_at, rowid LIMIT ?"
)
_NEXT_EXPIRY: Final = "SELECT min(expires_at) FROM messages WHERE expires_at > 0"
_COUNT_MESSAGES: Final = "SELECT count(*) FROM messages"

_PUT_GROUP: Final = "INSERT OR IGNORE INTO groups (group_id) VALUES (?)"
_PUT_MEMBER: Final = "INSERT OR REPLACE INTO members (group_id, peer, mode) VALUES (?, ?, ?)"

_RECORD: Final = (
    "message_id, peer, type, group_id, send_count, send_epoch, first_epoch, parked, carrier"
)
_STATE: Final = "type, group_id, send_count, send_epoch, first_epoch, parked, carrier"
# An upsert rewrites the row in place and touches only the indexes whose columns changed
# (send_epoch, parked); INSERT OR REPLACE would delete and re-insert every index entry.
_PUT_RECORD: Final = (
    f"INSERT INTO records ({_RECORD}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (message_id, peer) DO UPDATE SET type = excluded.type, "
    "group_id = excluded.group_id, send_count = excluded.send_count, "
    "send_epoch = excluded.send_epoch, first_epoch = excluded.first_epoch, "
    "parked = excluded.parked, carrier = excluded.carrier"
)
_DELETE_RECORD: Final = "DELETE FROM records WHERE message_id = ? AND peer = ?"
_GET_RECORD: Final = f"SELECT {_STATE} FROM records WHERE message_id = ? AND peer = ?"
_MESSAGE_RECORDS: Final = f"SELECT peer, {_STATE} FROM records WHERE message_id = ?"
_PEER_RECORDS: Final = f"SELECT message_id, {_STATE} FROM records WHERE peer = ? ORDER BY seq"
_DUE_RECORDS: Final = (
    f"SELECT {_RECORD} FROM records WHERE parked = 0 AND send_epoch <= ? "
    "ORDER BY send_epoch, seq LIMIT ?"
)
_MAX_SEQ: Final = "SELECT max(seq) FROM records"
_MIN_DUE: Final = "SELECT min(send_epoch) FROM records WHERE parked = 0"
_COUNT_RECORDS: Final = "SELECT count(*) FROM records"
_COUNT_PEER_RECORDS: Final = "SELECT count(*) FROM records WHERE peer = ?"

_M_MESSAGE: Final = ", ".join("m." + c for c in _MESSAGE.split(", "))
_RECORD_DELIVERY: Final = (
    "INSERT INTO inbox (message_id, group_id, sender, missing) VALUES (?, ?, ?, ?)"
)
_INBOX_AFTER: Final = (
    f"SELECT i.seq, i.message_id, i.group_id, i.sender, i.missing, {_M_MESSAGE} "
    "FROM inbox AS i LEFT JOIN messages AS m ON m.id = i.message_id "
    "WHERE i.seq > ? ORDER BY i.seq LIMIT ?"
)
_INBOX_END: Final = "SELECT seq FROM sqlite_sequence WHERE name = 'inbox'"
_INBOX_FIRST: Final = "SELECT min(seq) FROM inbox"
_HISTORY: Final = (
    f"SELECT m.rowid, coalesce(i.seq, 0), m.id, m.group_id, i.sender, i.missing, {_M_MESSAGE} "
    "FROM messages AS m LEFT JOIN inbox AS i ON i.message_id = m.id "
    "WHERE m.group_id = ? AND m.delivered = 1 AND m.timestamp >= ? "
)
_CURSORS: Final = "SELECT name, position FROM cursors ORDER BY name"
_SET_CURSOR: Final = "INSERT OR REPLACE INTO cursors (name, position) VALUES (?, ?)"
_DELETE_CURSOR: Final = "DELETE FROM cursors WHERE name = ?"
_BAD_CURSORS: Final = (
    "SELECT name, position FROM cursors WHERE typeof(name) != 'text' "
    "OR typeof(position) != 'integer' OR position < 0 OR position > ?"
)
_BAD_INBOX: Final = (
    "SELECT seq FROM inbox WHERE typeof(message_id) != 'blob' OR length(message_id) != 32 "
    "OR typeof(group_id) != 'blob' OR (sender IS NOT NULL AND typeof(sender) != 'blob') "
    "OR (missing IS NOT NULL AND (typeof(missing) != 'blob' OR length(missing) % 32 != 0)) "
    "LIMIT 1"
)
# Retention (see SQLiteStore.retain): every delivered message, oldest stored first (received ones,
# which are in the inbox, and the ones this node sent, which are not), with what decides whether
# it goes: its last inbox position (NULL: not in the inbox), its timestamp and size, whether a
# peer still waits for it (a record), and whether a stored message names it as parent (off the
# frontier). Then the inbox rows every cursor has passed whose message is gone (expired).
_RETAIN_CANDIDATES: Final = (
    "SELECT (SELECT max(i.seq) FROM inbox AS i WHERE i.message_id = m.id), m.id, m.timestamp, "
    "length(m.wire) + coalesce(m.size, 0), "
    "EXISTS (SELECT 1 FROM records AS r WHERE r.message_id = m.id), "
    "m.expires_at = 0 AND NOT EXISTS (SELECT 1 FROM parents AS p WHERE p.parent = m.id) "
    "FROM messages AS m WHERE m.delivered = 1 ORDER BY m.rowid"
)
_RETAIN_TOTALS: Final = (
    "SELECT count(*), coalesce(sum(length(wire) + coalesce(size, 0)), 0) "
    "FROM messages WHERE delivered = 1"
)
_DROP_ORPHAN_INBOX_ROWS: Final = (
    "DELETE FROM inbox WHERE seq <= ? AND NOT EXISTS "
    "(SELECT 1 FROM messages AS m WHERE m.id = inbox.message_id)"
)
_DELETE_INBOX_ROWS: Final = "DELETE FROM inbox WHERE message_id = ?"
# Only a stored message is acknowledged (an ACK ends only OFFER and MESSAGE records).
_PUT_ACK: Final = (
    "INSERT OR REPLACE INTO acks (stored_at, message_id, peer, acked_at, via) "
    "SELECT stored_at, id, ?2, ?3, ?4 FROM messages WHERE id = ?1"
)
# The ACKs of one payload (one peer, time and carrier), by chunks of IDs (_padded_chunks).
_PUT_ACKS: Final = {
    n: "INSERT OR REPLACE INTO acks (stored_at, message_id, peer, acked_at, via) "
    f"SELECT stored_at, id, ?, ?, ? FROM messages WHERE id IN ({', '.join('?' * n)})"
    for n in _CHUNK_SIZES
}
_MESSAGE_ACKS: Final = (
    "SELECT a.peer, a.acked_at, a.via FROM messages AS m JOIN acks AS a "
    "ON a.stored_at = m.stored_at AND a.message_id = m.id WHERE m.id = ? ORDER BY a.peer"
)
_PUT_CONTACT: Final = (
    "INSERT OR REPLACE INTO contacts (peer, carrier, sent_at, received_at) VALUES (?, ?, ?, ?)"
)
_CONTACTS: Final = "SELECT peer, carrier, sent_at, received_at FROM contacts"
# What a peer still needs from us: its records and how many are MESSAGEs (the peer index), and
# the bytes of up to a sample of those messages, the oldest (one lookup each by the messages'
# unique index).
_PEER_PENDING: Final = "SELECT count(*), coalesce(sum(type = 2), 0) FROM records WHERE peer = ?"
_PEER_PENDING_BYTES: Final = (
    "SELECT count(*), coalesce(sum(coalesce(m.size, length(m.wire))), 0) FROM "
    "(SELECT message_id FROM records WHERE peer = ? AND type = 2 ORDER BY seq LIMIT ?) AS r "
    "JOIN messages AS m ON m.id = r.message_id"
)

_GET_EPOCH: Final = "SELECT value FROM meta WHERE key = 'epoch'"
_SET_EPOCH: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)"

_TYPES: Final = {t.value: t for t in RecordType}


_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


def _uri_path(path: str) -> str:
    """``path`` for an SQLite ``file:`` URI: the characters a URI gives a meaning escaped."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _describe(e: sqlite3.Error) -> str:
    """Say in words what an SQLite error means for the store."""
    name = getattr(e, "sqlite_errorname", None) or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        what = (
            "the store file is corrupt or not a database: restore it from a backup, or move "
            "it aside to start with an empty store (peers send their messages again)"
        )
    elif name.startswith("SQLITE_FULL"):
        what = "disk full: no space left for the store"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        what = "the store is in use by another process"
    elif name.startswith("SQLITE_IOERR"):
        what = "I/O error on the store file"
    elif name.startswith("SQLITE_READONLY"):
        what = "the store file is read-only"
    elif name.startswith("SQLITE_CANTOPEN"):
        what = "cannot open the store file"
    elif name.startswith(("SQLITE_PERM", "SQLITE_AUTH")):
        what = "permission denied on the store file"
    else:
        what = "the store failed"
    return f"{what} ({e})"


def _describe_os(e: OSError) -> str:
    """Say in words what an OS error while writing message bodies means for the store."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full: no space left for message bodies ({e})"
    if e.errno == errno.EROFS:
        return f"the store is on a read-only file system ({e})"
    return f"cannot write message bodies ({e})"


def _read_only(path: str) -> bool:
    """Whether the store at ``path`` cannot be written: its file or, for the write-ahead log and
    the segments, its directory. ``access`` reports a read-only file system even to root."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return True
    if not os.path.isdir(directory):
        return False
    if not os.access(directory, os.W_OK):
        return True
    # A file system the kernel took read-only after a disk error (ext4's "emergency_ro") still
    # shows as writable to ``access``: only creating a file tells.
    probe = os.path.join(directory, ".write-probe")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as e:
        return e.errno == errno.EROFS
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return False


def _unknown_type(e: KeyError) -> StoreError:
    return StoreError(f"the store holds a record of unknown type {e.args[0]!r}")


def _split_ids(blob: bytes) -> tuple[bytes, ...]:
    n = len(blob)
    if n == _ID_SIZE:
        return (blob,)
    if not n:
        return ()
    if n % _ID_SIZE:
        raise StoreError(f"the store holds a parent list of {n} bytes (not whole IDs)")
    return tuple([blob[i : i + _ID_SIZE] for i in range(0, n, _ID_SIZE)])


def _padded_chunks(ids: list[bytes]) -> Iterator[tuple[int, list[bytes]]]:
    """``ids`` in chunks of up to ``_WIRES_CHUNK``, each padded to a size in ``_CHUNK_SIZES``
    by repeating its last ID (duplicates in ``IN (...)`` are harmless): ``(size, chunk)``."""
    for start in range(0, len(ids), _WIRES_CHUNK):
        chunk = ids[start : start + _WIRES_CHUNK]
        n = len(chunk)
        size = 1 << (n - 1).bit_length()
        if size != n:
            chunk = chunk + [chunk[-1]] * (size - n)
        yield size, chunk


_MessageRow = tuple[bytes, bytes, int, bytes, bytes, int, int, int | None, int | None, int | None]


@final
class _Transaction:
    """What :meth:`SQLiteStore.transaction` returns: one reusable context manager.

    Only the outermost block begins and ends the SQLite transaction; inner blocks join it.
    """

    __slots__ = ("_depth", "_store")

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._depth = 0

    def __enter__(self) -> None:
        if self._depth:
            self._depth += 1
            return
        self._store._begin()
        self._depth = 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth:
            return
        if exc_type is None:
            self._store._commit()
        else:
            self._store._rollback()


@final
class SQLiteStore:
    """A :class:`~mvds_node.sync.Store` in one SQLite file, in WAL mode.

    Durability: a transaction, or a call made outside one, is in the write-ahead log when it
    returns. With ``synchronous="normal"`` (the default) the log is flushed to the disk only at
    checkpoints, not at each commit: a crash of the process (``kill -9``, the OOM killer, an
    exception) loses nothing that was committed, while a power loss or an operating-system crash
    may lose the last commits before the most recent checkpoint (never corrupting the file).
    ``synchronous="full"`` flushes (fsyncs) the log at every commit, so that every commit also
    survives power loss, at the cost of one disk flush per engine input: on flash storage typically
    hundreds to a few thousand commits per second instead of tens of thousands.

    The write-ahead log grows to 16 MiB before it is folded into the database file, and is cut
    back to that size after a larger transaction (fewer, larger checkpoints make small commits
    cheaper; a bound keeps the log from filling a small disk). The store keeps one connection,
    holds the file's lock for as long as it is open (a second process opening the same file gets a
    :class:`~mvds_node.errors.StoreError`), and must be used from the thread that opened it. Close
    it with :meth:`close`, or use it as a context manager; a closed store raises
    :class:`~mvds_node.errors.StoreError`.

    Args:
        path: the database file, created with its schema if it does not exist. ``":memory:"``
            gives a private in-memory database (see :meth:`memory`).
        synchronous: ``"normal"`` (survives process crashes) or ``"full"`` (survives power loss).
        page_size: SQLite page size for a new store (an existing one keeps its own). 4096 suits
            a commit per message; 65536 roughly doubles bulk throughput (large bodies, batched
            sends) but makes each single commit several times dearer. See performance.md.

    Raises:
        StoreError: the file cannot be opened or locked, is not a database, belongs to another
            application, or holds a schema newer than this code understands.
        LocalProtocolError: ``synchronous`` is not one of the two modes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["normal", "full"] = "normal",
        page_size: int = 4096,
        read_only: bool = False,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise LocalProtocolError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        if page_size not in _PAGE_SIZES:
            raise LocalProtocolError("page_size must be a power of two from 512 to 65536")
        self._page_size = page_size
        self._path = os.fspath(path)
        self._closed = False
        self._message_count: int | None = None
        # Segment files (see "Large bodies" in the module docstring); none for a memory database.
        self._bodies: str | None = (
            None
            if self._path in ("", ":memory:") or self._path.startswith("file:")
            else self._path + ".bodies"
        )
        self._seg = 0
        self._seg_end = 0
        self._writer: SegmentWriter | None = None  # appends to segment self._seg
        self._readers: dict[int, int] = {}
        self._recent: dict[tuple[int, int], bytes] = {}  # (segment, offset): wire
        self._recent_bytes = 0
        self._tx_end = 0
        self._emptied: set[int] = set()
        self.read_only = read_only
        """Opened only to read (``mvds-node messages`` while no node runs): no lock held, no
        write, no migration; a store of an older schema is refused (a node migrates it)."""
        if read_only:
            self._open_read_only()
            return
        if self._bodies is not None and _read_only(self._path):
            # SQLite would open it read-only and fail later, at the first write, with a vague
            # "disk I/O error" (it cannot create the write-ahead log): say what it is, now.
            raise StoreError(
                f"{self._path}: the store is read-only (a read-only file system, or no write "
                "permission on the file or its directory); mvds-node must write its store"
            )
        try:
            # A process that holds the file: wait a moment (it may be exiting), then refuse.
            con = sqlite3.connect(
                self._path, isolation_level=None, cached_statements=256, timeout=1.0
            )
        except sqlite3.Error as e:
            raise StoreError(f"{self._path}: {_describe(e)}") from e
        try:
            self._setup(con, synchronous)
        except sqlite3.Error as e:
            con.close()
            raise StoreError(f"{self._path}: {_describe(e)}") from e
        except BaseException:
            con.close()
            raise
        self._con = con
        self._cur = con.cursor()
        self._tx = _Transaction(self)
        try:
            self._seq: int = con.execute(_MAX_SEQ).fetchone()[0] or 0
            self._open_segments()
        except sqlite3.Error as e:
            self.close()
            raise StoreError(f"{self._path}: {_describe(e)}") from e
        except OSError as e:
            self.close()
            raise StoreError(f"{self._path}: cannot open the body segments ({e})") from e

    @classmethod
    def memory(cls) -> SQLiteStore:
        """A store in a private in-memory SQLite database: the SQLite code, no durability."""
        return cls(":memory:")

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self._path!r}{' closed' if self._closed else ''}>"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _open_read_only(self) -> None:
        if not os.path.exists(self._path):
            raise StoreError(f"{self._path}: no store here (the node has never run)")
        try:
            con = sqlite3.connect(
                f"file:{_uri_path(os.path.abspath(self._path))}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=1.0,
            )
            (app_id,) = con.execute("PRAGMA application_id").fetchone()
            (version,) = con.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"{self._path}: {_describe(e)}") from e
        if app_id != APPLICATION_ID:
            con.close()
            raise StoreError(f"{self._path}: not an mvds-node store")
        if version != SCHEMA_VERSION:
            con.close()
            raise StoreError(
                f"{self._path}: the store has schema version {version}, not "
                f"{SCHEMA_VERSION}; open it read-write (run the node once) to migrate it"
            )
        self._con = con
        self._cur = con.cursor()
        self._tx = _Transaction(self)
        self._seq = 0

    def _setup(self, con: sqlite3.Connection, synchronous: str) -> None:
        # Before the first read: then SQLite never uses the shared-memory index or per-transaction
        # file locks, and keeps the lock until the connection closes.
        con.execute("PRAGMA locking_mode = EXCLUSIVE")
        # Takes effect only when the file is created (an existing store keeps its page size).
        con.execute(f"PRAGMA page_size = {self._page_size}")
        # The first read: a file that is not a database fails here, before anything is written.
        (app_id,) = con.execute("PRAGMA application_id").fetchone()
        (version,) = con.execute("PRAGMA user_version").fetchone()
        (objects,) = con.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        fresh = app_id == 0 and version == 0 and objects == 0
        if not fresh:
            if app_id != APPLICATION_ID:
                raise StoreError(f"{self._path}: not an mvds-node store")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._path}: the store has schema version {version}, newer than the "
                    f"{SCHEMA_VERSION} this mvds-node understands; upgrade mvds-node"
                )
            if version < SCHEMA_VERSION:
                self._migrate(con, version)
        # WAL: a commit appends to the log instead of rewriting pages in place.
        (mode,) = con.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode not in ("wal", "memory"):
            raise StoreError(f"{self._path}: cannot put the store in WAL mode (got {mode!r})")
        con.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        # Bound the write-ahead log (see _WAL_BYTES): checkpoint once it holds that much, and
        # cut it back to that size after a checkpoint that found it larger (a big transaction).
        (page_size,) = con.execute("PRAGMA page_size").fetchone()
        con.execute(f"PRAGMA wal_autocheckpoint = {max(1, _WAL_BYTES // page_size)}")
        con.execute(f"PRAGMA journal_size_limit = {_WAL_BYTES}")
        # 16 MiB of page cache keeps the indexes of a large store in memory.
        con.execute("PRAGMA cache_size = -16384")
        con.execute("PRAGMA temp_store = MEMORY")
        if fresh:
            con.execute(_BEGIN)
            try:
                for statement in _SCHEMA:
                    con.execute(statement)
            except BaseException:
                con.execute(_ROLLBACK)
                raise
            con.execute(_COMMIT)

    def _migrate(self, con: sqlite3.Connection, version: int) -> None:
        """Bring a store of an older schema to this one, in one transaction per version."""
        while version < SCHEMA_VERSION:
            steps = _MIGRATIONS.get(version)
            if steps is None:
                raise StoreError(f"{self._path}: unknown store schema version {version}")
            con.execute(_BEGIN)
            try:
                for statement in steps:
                    con.execute(statement)
                version += 1
                con.execute(f"PRAGMA user_version = {version}")
            except BaseException:
                con.execute(_ROLLBACK)
                raise
            con.execute(_COMMIT)

    # ------------------------------------------------------------------ segments

    def _segment_path(self, seg: int) -> str:
        assert self._bodies is not None
        return os.path.join(self._bodies, f"{seg:08d}.seg")

    def _open_segments(self) -> None:
        """Find the segment to append to, and cut off what a crash left after its last body."""
        if self._bodies is None or not os.path.isdir(self._bodies):
            return
        numbers = [
            int(name[:-4])
            for name in os.listdir(self._bodies)
            if name.endswith(".seg") and name[:-4].isdigit()
        ]
        if not numbers:
            return
        self._seg = max(numbers)
        end: int | None = self._con.execute(_SEGMENT_END, (self._seg,)).fetchone()[0]
        self._seg_end = end or 0
        # The writer cuts off what a transaction that never committed left after the end.
        self._writer = SegmentWriter(self._segment_path(self._seg), end=self._seg_end)

    def _append(self, wire: bytes) -> tuple[int, int]:
        """Write ``wire`` at the end of the current segment; return (segment, offset). The end
        moves only when the row that refers to it is written (see add_message)."""
        assert self._bodies is not None
        writer = self._writer
        if writer is None:
            if not self._seg:
                self._seg = 1
            os.makedirs(self._bodies, mode=0o700, exist_ok=True)
            self._seg_end = 0
            writer = self._writer = SegmentWriter(self._segment_path(self._seg))
            fsync_directory(self._bodies)  # the new file's name survives a power loss
        pos = self._seg_end
        writer.write(pos, wire)
        recent = self._recent
        key = (self._seg, pos)
        old = recent.pop(key, None)  # bytes of a rolled-back transaction, overwritten now
        if old is not None:
            self._recent_bytes -= len(old)
        recent[key] = wire
        self._recent_bytes += len(wire)
        while self._recent_bytes > _RECENT_BYTES:
            self._recent_bytes -= len(recent.pop(next(iter(recent))))
        return self._seg, pos

    def _read(self, seg: int, pos: int, size: int) -> bytes:
        data = self._recent.get((seg, pos))
        if data is not None and len(data) == size:
            return data
        end = pos + size
        staged = b""
        fd = self._readers.get(seg)
        try:
            if seg == self._seg and self._writer is not None:
                end, staged = self._writer.staged(pos, size)  # not written to the file yet
            if fd is None:
                if len(self._readers) >= _MAX_OPEN_SEGMENTS:
                    self._close_readers()
                fd = self._readers[seg] = os.open(self._segment_path(seg), os.O_RDONLY | _O_CLOEXEC)
            data = os.pread(fd, end - pos, pos) if end > pos else b""
        except OSError as e:
            raise StoreError(f"{self._path}: cannot read message body segment {seg} ({e})") from e
        if len(data) != end - pos:
            raise StoreError(
                f"{self._path}: message body segment {seg} is shorter than the store says "
                f"({pos + len(data)} < {pos + size} bytes)"
            )
        return data + staged if staged else data

    def _wire(self, wire: bytes, seg: int | None, pos: int | None, size: int | None) -> bytes:
        if seg is None:
            return wire
        assert pos is not None and size is not None
        return self._read(seg, pos, size)

    def _messages(self, rows: list[_MessageRow]) -> list[StoredMessage]:
        return [
            StoredMessage(m, g, t, self._wire(w, s, o, n), _split_ids(p), x, d != 0)
            for m, g, t, w, p, x, d, s, o, n in rows
        ]

    def _close_readers(self) -> None:
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()

    def _drop_empty_segments(self) -> None:
        """After a commit: remove the segments whose last message that commit deleted."""
        emptied, self._emptied = self._emptied, set()
        for seg in emptied:
            if seg == self._seg:
                continue  # still being appended to
            try:
                if self._cur.execute(_SEGMENT_USED, (seg,)).fetchone() is not None:
                    continue
                fd = self._readers.pop(seg, None)
                if fd is not None:
                    os.close(fd)
                os.unlink(self._segment_path(seg))
            except (sqlite3.Error, OSError):
                pass  # left for a later deletion in the same segment to remove

    def _error(self, e: sqlite3.Error) -> StoreError:
        if self._closed:
            return StoreError(f"{self._path}: the store is closed")
        name = getattr(e, "sqlite_errorname", None) or ""
        if name.startswith("SQLITE_IOERR") and self._bodies is not None and _read_only(self._path):
            # A file system remounted read-only under a running store fails its writes as I/O
            # errors: say why.
            return StoreError(f"{self._path}: the store became read-only ({e})")
        return StoreError(f"{self._path}: {_describe(e)}")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self._path}: the store is closed")

    # ------------------------------------------------------------- transactions

    def transaction(self) -> _Transaction:
        """Group writes: commit when the block ends, roll all of them back if it raises.

        A nested ``transaction()`` joins the outer one: only the outermost block commits or rolls
        back, so an exception that an inner block lets out undoes the whole outer block.

        Raises:
            StoreError: the transaction could not begin or commit (it is rolled back).
        """
        return self._tx

    def _begin(self) -> None:
        try:
            self._cur.execute(_BEGIN)
        except sqlite3.Error as e:
            raise self._error(e) from e
        if self._seg_end >= _SEGMENT_BYTES and self._writer is not None:
            # Start a new segment; one transaction writes to one segment only (every commit
            # flushed the full one).
            self._writer.close()
            self._writer = None
            self._seg += 1
            self._seg_end = 0
        self._tx_end = self._seg_end

    def _commit(self) -> None:
        try:
            if self._writer is not None:
                # Bodies reach the disk before the rows that refer to them can.
                self._writer.sync()
            self._cur.execute(_COMMIT)
        except OSError as e:
            self._rollback()
            raise StoreError(f"{self._path}: {_describe_os(e)}") from e
        except sqlite3.Error as e:
            # Disk full or an I/O error at commit: leave no transaction half open.
            self._message_count = None
            try:
                if self._con.in_transaction:
                    self._con.execute(_ROLLBACK)
            except sqlite3.Error:
                pass  # the commit's error is the one to report
            raise self._error(e) from e
        if self._emptied:
            self._drop_empty_segments()

    def _rollback(self) -> None:
        self._message_count = None  # recounted on demand
        # Bodies written since the transaction began are unreferenced: overwrite them next time.
        self._seg_end = self._tx_end
        self._emptied.clear()
        try:
            if self._con.in_transaction:
                self._cur.execute(_ROLLBACK)
        except sqlite3.Error as e:
            raise self._error(e) from e

    # ----------------------------------------------------------------- messages

    def has_message(self, message_id: bytes) -> bool:
        try:
            return self._cur.execute(_HAS_MESSAGE, (message_id,)).fetchone() is not None
        except sqlite3.Error as e:
            raise self._error(e) from e

    def ids_with_prefix(self, prefix: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` stored message IDs that start with ``prefix``, in order (a range of
        the ID index: no scan)."""
        try:
            out = []
            for (mid,) in self._cur.execute(_IDS_FROM, (prefix, limit)):
                if not mid.startswith(prefix):
                    break
                out.append(mid)
            return out
        except sqlite3.Error as e:
            raise self._error(e) from e

    def get_message(self, message_id: bytes) -> StoredMessage | None:
        try:
            row = self._cur.execute(_GET_MESSAGE, (message_id,)).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        if row is None:
            return None
        group_id, timestamp, wire, parents, expires_at, delivered, seg, pos, size, at = row
        return StoredMessage(
            message_id,
            group_id,
            timestamp,
            self._wire(wire, seg, pos, size),
            _split_ids(parents),
            expires_at,
            delivered != 0,
            at,
        )

    def get_wires(self, message_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        ids = message_ids if isinstance(message_ids, list) else list(message_ids)
        out: dict[bytes, bytes] = {}
        try:
            execute = self._cur.execute
            if len(ids) == 1:
                row = execute(_GET_WIRE, (ids[0],)).fetchone()
                if row is not None:
                    out[ids[0]] = self._wire(*row)
                return out
            if not ids:
                self._check_open()
                return out
            for size, chunk in _padded_chunks(ids):
                for mid, wire, seg, pos, length in execute(_GET_WIRES[size], chunk).fetchall():
                    out[mid] = wire if seg is None else self._read(seg, pos, length)
        except sqlite3.Error as e:
            raise self._error(e) from e
        return out

    def add_message(self, message: StoredMessage) -> bool:
        """Store ``message``; return False (and change nothing) if it is already stored.

        Raises:
            LocalProtocolError: a parent ID is not 32 bytes (the store keeps them concatenated).
        """
        parents = message.parents
        if len(parents) == 1:
            blob = parents[0]
            if len(blob) != _ID_SIZE:
                raise LocalProtocolError(f"parent IDs must be {_ID_SIZE} bytes, got {len(blob)}")
        elif parents:
            if any(len(p) != _ID_SIZE for p in parents):
                raise LocalProtocolError(f"parent IDs must be {_ID_SIZE} bytes")
            blob = b"".join(parents)
        else:
            blob = b""
        mid = message.id
        wire = message.wire
        size = len(wire)
        try:
            with self._tx:
                cur = self._cur
                if size >= EXTERNAL_MIN and self._bodies is not None:
                    seg: int | None
                    pos: int | None
                    seg, pos = self._append(wire)
                    wire = b""
                else:
                    seg = pos = None
                cur.execute(
                    _ADD_MESSAGE,
                    (
                        mid,
                        message.group_id,
                        message.timestamp,
                        wire,
                        blob,
                        message.expires_at,
                        message.delivered,
                        seg,
                        pos,
                        None if seg is None else size,
                        message.stored_at,
                    ),
                )
                if cur.rowcount != 1:
                    return False  # already stored (a body just written is overwritten next)
                if pos is not None:
                    self._seg_end = pos + size
                if len(parents) == 1:
                    cur.execute(_ADD_PARENT, (blob, mid))
                elif parents:
                    cur.executemany(_ADD_PARENT, [(p, mid) for p in parents])
        except sqlite3.Error as e:
            raise self._error(e) from e
        except OSError as e:
            raise StoreError(f"{self._path}: {_describe_os(e)}") from e
        if self._message_count is not None:
            self._message_count += 1
        return True

    def add_messages(self, messages: Sequence[StoredMessage]) -> bool:
        """Store all of ``messages`` (distinct IDs) with one statement per table, or none of
        them and return False if one is already stored.

        Raises:
            LocalProtocolError: a parent ID is not 32 bytes.
        """
        rows: list[tuple[object, ...]] = []
        links: list[tuple[bytes, bytes]] = []
        external = self._bodies is not None
        start = self._seg_end
        try:
            with self._tx:
                cur = self._cur
                cur.execute(_SAVEPOINT)
                try:
                    for m in messages:
                        parents = m.parents
                        if any(len(p) != _ID_SIZE for p in parents):
                            raise LocalProtocolError(f"parent IDs must be {_ID_SIZE} bytes")
                        mid = m.id
                        links.extend([(p, mid) for p in parents])
                        wire = m.wire
                        size = len(wire)
                        seg = pos = length = None
                        if size >= EXTERNAL_MIN and external:
                            seg, pos = self._append(wire)
                            self._seg_end = pos + size  # the next body goes after it
                            wire, length = b"", size
                        rows.append(
                            (
                                mid,
                                m.group_id,
                                m.timestamp,
                                wire,
                                b"".join(parents),
                                m.expires_at,
                                m.delivered,
                                seg,
                                pos,
                                length,
                                m.stored_at,
                            )
                        )
                    cur.executemany(_ADD_MESSAGE, rows)
                    stored = cur.rowcount == len(rows)
                    if stored and links:
                        cur.executemany(_ADD_PARENT, links)
                except BaseException:
                    cur.execute(_ROLLBACK_TO_SAVEPOINT)
                    cur.execute(_RELEASE_SAVEPOINT)
                    raise
                if not stored:  # one was there already: take none of them
                    cur.execute(_ROLLBACK_TO_SAVEPOINT)
                cur.execute(_RELEASE_SAVEPOINT)
        except BaseException as e:
            self._seg_end = start  # no row refers to the bodies written
            if isinstance(e, sqlite3.Error):
                raise self._error(e) from e
            if isinstance(e, OSError):
                raise StoreError(f"{self._path}: {_describe_os(e)}") from e
            raise
        if not stored:
            self._seg_end = start
            return False
        if self._message_count is not None:
            self._message_count += len(rows)
        return True

    def delete_message(self, message_id: bytes) -> None:
        try:
            with self._tx:
                cur = self._cur
                row = cur.execute(_FIND_MESSAGE, (message_id,)).fetchone()
                if row is not None:
                    rowid, parents, seg, stored_at = row
                    cur.execute(_DELETE_MESSAGE, (rowid,))
                    if seg is not None:
                        self._emptied.add(seg)
                    if parents:
                        cur.executemany(
                            _DELETE_PARENT, [(p, message_id) for p in _split_ids(parents)]
                        )
                    if self._message_count is not None:
                        self._message_count -= 1
                    cur.execute(_DELETE_MESSAGE_ACKS, (stored_at, message_id))
                cur.execute(_DELETE_MESSAGE_RECORDS, (message_id,))
        except sqlite3.Error as e:
            raise self._error(e) from e

    def mark_delivered(self, message_id: bytes) -> None:
        try:
            self._cur.execute(_MARK_DELIVERED, (message_id,))
        except sqlite3.Error as e:
            raise self._error(e) from e

    def record_delivery(
        self,
        message_id: bytes,
        group_id: bytes,
        sender: bytes,
        parents_missing: tuple[bytes, ...] = (),
    ) -> None:
        missing = b"".join(parents_missing) or None
        try:
            self._cur.execute(_RECORD_DELIVERY, (message_id, group_id, sender, missing))
        except sqlite3.Error as e:
            raise self._error(e) from e

    # ------------------------------------------------------------------ the inbox

    def _entries(self, rows: list[tuple[object, ...]]) -> list[InboxEntry]:
        out = []
        for seq, mid, gid, sender, missing, *m in rows:
            message = None
            if m[0] is not None:
                message = self._messages([tuple(m)])[0]  # type: ignore[list-item]
            gone = _split_ids(missing) if missing else ()  # type: ignore[arg-type]
            out.append(InboxEntry(seq, mid, gid, sender, message, gone))  # type: ignore[arg-type]
        return out

    def inbox_after(
        self, position: int, limit: int, *, max_bytes: int = _INBOX_BATCH_BYTES
    ) -> list[InboxEntry]:
        """Up to ``limit`` inbox entries after ``position``, in delivery order, and no more
        than ``max_bytes`` of message bodies (but at least one entry); an entry whose message
        has expired since has ``message=None``."""
        rows: list[tuple[object, ...]] = []
        total = 0
        try:
            cursor = self._cur.execute(_INBOX_AFTER, (position, limit))
            for row in cursor:
                # (..., wire, parents, expires_at, delivered, seg, pos, size): a body in a
                # segment counts its size, one in the row its length.
                wire, size = row[8], row[-1]
                total += size if size is not None else len(wire or b"")
                if rows and total > max_bytes:
                    break
                rows.append(row)
            return self._entries(rows)
        except sqlite3.Error as e:
            raise self._error(e) from e

    def inbox_end(self) -> int:
        """The number of the last message ever put in the inbox (0: none yet)."""
        try:
            row = self._cur.execute(_INBOX_END).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return int(row[0]) if row is not None else 0

    def inbox_start(self) -> int:
        """The position before the oldest message the inbox still holds (where a new cursor
        starts: it reads every message retention has kept)."""
        try:
            (first,) = self._cur.execute(_INBOX_FIRST).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return self.inbox_end() if first is None else int(first) - 1

    def history(
        self,
        group_id: bytes,
        *,
        since: int = 0,
        limit: int | None = None,
        sender: bytes | None = None,
    ) -> list[InboxEntry]:
        """The group's stored, delivered messages (received and sent) in the order they were
        stored; with ``since`` (Unix ms), those whose timestamp is not earlier; with ``limit``,
        the last ``limit`` of them; with ``sender``, those that came from that peer (``b""``:
        those this node sent)."""
        where = ""
        args: list[object] = [group_id, since]
        if sender == b"":
            where = "AND i.seq IS NULL "
        elif sender is not None:
            where = "AND i.sender = ? "
            args.append(sender)
        if limit is None:
            sql = f"{_HISTORY}{where}ORDER BY m.rowid"
        else:
            sql = f"SELECT * FROM ({_HISTORY}{where}ORDER BY m.rowid DESC LIMIT ?) ORDER BY 1"
            args.append(max(0, limit))
        try:
            rows = self._cur.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from e
        return self._entries([row[1:] for row in rows])

    def cursors(self) -> dict[str, int]:
        """Every durable cursor and its position (the last inbox message it confirmed)."""
        try:
            return {name: int(pos) for name, pos in self._cur.execute(_CURSORS).fetchall()}
        except sqlite3.Error as e:
            raise self._error(e) from e

    def set_cursor(self, name: str, position: int) -> None:
        """Create or move a cursor; committed before this returns."""
        try:
            with self._tx:
                self._cur.execute(_SET_CURSOR, (name, position))
        except sqlite3.Error as e:
            raise self._error(e) from e

    def delete_cursor(self, name: str) -> bool:
        """Delete a cursor; False if there was none of that name."""
        try:
            with self._tx:
                self._cur.execute(_DELETE_CURSOR, (name,))
                return self._cur.rowcount > 0
        except sqlite3.Error as e:
            raise self._error(e) from e

    def check_inbox(self) -> str | None:
        """What is wrong with the inbox or a cursor (a row that does not hold what the schema
        says, a cursor past the inbox's end), or None. Reading every row also finds damage in
        the pages they are on (SQLite then reports the file corrupt)."""
        try:
            end = self.inbox_end()
            bad = self._cur.execute(_BAD_CURSORS, (end,)).fetchone()
            if bad is not None:
                return (
                    f"cursor {bad[0]!r} is damaged (position {bad[1]!r}, the inbox ends at "
                    f"{end}); delete it with `mvds-node cursors delete {bad[0]}` (its reader "
                    "then starts again from the oldest stored message)"
                )
            row = self._cur.execute(_BAD_INBOX).fetchone()
            if row is not None:
                return (
                    f"inbox row {row[0]} is damaged; restore the store from a backup, or run "
                    '`sqlite3 <store> "DELETE FROM inbox WHERE seq = '
                    f'{row[0]}"` to drop that one entry'
                )
        except sqlite3.Error as e:
            return (
                f"{_describe(e)}; restore the store from a backup, or move it aside to start "
                "with an empty one (peers send their messages again)"
            )
        return None

    def retain(
        self,
        up_to: int,
        *,
        older_than: int | None = None,
        max_messages: int | None = None,
        max_bytes: int | None = None,
    ) -> list[bytes]:
        """Retention, over the delivered messages, received (in the inbox) and sent by this
        node alike: delete the oldest stored while they number more than ``max_messages`` or
        hold more than ``max_bytes`` bytes, and those whose timestamp is before ``older_than``
        (Unix ms). A received message goes only once it is at or before ``up_to`` in the inbox
        (the least position of the durable cursors, so never one a cursor has not passed). A
        message a peer still waits for (a record), or that no stored message names as parent
        (it is on the causal frontier), is kept. Inbox entries at or before ``up_to`` whose
        message is gone already (expired) are dropped too. Returns the deleted IDs."""
        deleted: list[bytes] = []
        try:
            count, size = self._cur.execute(_RETAIN_TOTALS).fetchone()
            rows = self._cur.execute(_RETAIN_CANDIDATES).fetchall()
            with self._tx:
                self._cur.execute(_DROP_ORPHAN_INBOX_ROWS, (up_to,))
                for seq, mid, timestamp, nbytes, pending, frontier in rows:
                    over = (
                        (max_messages is not None and count > max_messages)
                        or (max_bytes is not None and size > max_bytes)
                        or (older_than is not None and timestamp < older_than)
                    )
                    if not over:
                        if older_than is None:
                            break  # newer ones are not over a count or size either
                        continue
                    if pending or frontier or (seq is not None and seq > up_to):
                        continue
                    if seq is not None:
                        self._cur.execute(_DELETE_INBOX_ROWS, (mid,))
                    self.delete_message(mid)
                    count -= 1
                    size -= nbytes
                    deleted.append(mid)
        except sqlite3.Error as e:
            raise self._error(e) from e
        return deleted

    def undelivered(self) -> list[StoredMessage]:
        """Messages held back by consistent delivery, in the order they were stored."""
        try:
            return self._messages(self._cur.execute(_UNDELIVERED).fetchall())
        except sqlite3.Error as e:
            raise self._error(e) from e

    def is_parent(self, message_id: bytes) -> bool:
        try:
            return self._cur.execute(_IS_PARENT, (message_id,)).fetchone() is not None
        except sqlite3.Error as e:
            raise self._error(e) from e

    def frontier(self, group_id: bytes) -> list[bytes]:
        """Delivered, non-expiring messages of the group that no stored, non-expiring message
        names as parent.

        Sorted by ID. This reads every such message of the group: the engine asks once per group
        when it starts, and keeps the frontier itself from then on.
        """
        try:
            return [r[0] for r in self._cur.execute(_FRONTIER, (group_id,)).fetchall()]
        except sqlite3.Error as e:
            raise self._error(e) from e

    def request_ids(self) -> list[bytes]:
        """IDs with REQUEST records (one scan of the records; the engine asks at start-up)."""
        try:
            return [r[0] for r in self._cur.execute(_REQUEST_IDS).fetchall()]
        except sqlite3.Error as e:
            raise self._error(e) from e

    def recent_ids(self, group_id: bytes, limit: int) -> list[bytes]:
        """IDs of up to ``limit`` delivered, non-expiring messages of the group, newest first."""
        try:
            return [r[0] for r in self._cur.execute(_RECENT_IDS, (group_id, limit)).fetchall()]
        except sqlite3.Error as e:
            raise self._error(e) from e

    def expired(self, wall: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages whose expiry is at or before ``wall``, earliest first."""
        try:
            return self._messages(self._cur.execute(_EXPIRED, (wall, limit)).fetchall())
        except sqlite3.Error as e:
            raise self._error(e) from e

    def next_expiry(self) -> int | None:
        try:
            value: int | None = self._cur.execute(_NEXT_EXPIRY).fetchone()[0]
        except sqlite3.Error as e:
            raise self._error(e) from e
        return value

    def message_count(self) -> int:
        # Counting scans the table: count once, then keep the count as messages come and go
        # (forgotten on rollback, recounted when next asked).
        count = self._message_count
        if count is None:
            try:
                count = self._message_count = self._cur.execute(_COUNT_MESSAGES).fetchone()[0]
            except sqlite3.Error as e:
                raise self._error(e) from e
        return count

    # --------------------------------------------------------------- membership

    def load_groups(self) -> dict[bytes, dict[bytes, str]]:
        try:
            cur = self._cur
            groups: dict[bytes, dict[bytes, str]] = {
                g: {} for (g,) in cur.execute("SELECT group_id FROM groups").fetchall()
            }
            for g, peer, mode in cur.execute("SELECT group_id, peer, mode FROM members"):
                groups.setdefault(g, {})[peer] = mode
        except sqlite3.Error as e:
            raise self._error(e) from e
        return groups

    def put_group(self, group_id: bytes) -> None:
        try:
            self._cur.execute(_PUT_GROUP, (group_id,))
        except sqlite3.Error as e:
            raise self._error(e) from e

    def delete_group(self, group_id: bytes) -> None:
        """Forget a group and its members."""
        try:
            with self._tx:
                self._cur.execute("DELETE FROM members WHERE group_id = ?", (group_id,))
                self._cur.execute("DELETE FROM groups WHERE group_id = ?", (group_id,))
        except sqlite3.Error as e:
            raise self._error(e) from e

    def put_member(self, group_id: bytes, peer: bytes, mode: str) -> None:
        """Add or update a member, creating the group if needed."""
        try:
            with self._tx:
                self._cur.execute(_PUT_GROUP, (group_id,))
                self._cur.execute(_PUT_MEMBER, (group_id, peer, mode))
        except sqlite3.Error as e:
            raise self._error(e) from e

    def delete_member(self, group_id: bytes, peer: bytes) -> None:
        try:
            self._cur.execute(
                "DELETE FROM members WHERE group_id = ? AND peer = ?", (group_id, peer)
            )
        except sqlite3.Error as e:
            raise self._error(e) from e

    # ------------------------------------------------------------------ records
    #
    # Records are read into fresh objects: unlike the memory store's, changing one changes nothing
    # until it is written back with put_records (which the engine always does).

    def get_record(self, message_id: bytes, peer: bytes) -> Record | None:
        try:
            row = self._cur.execute(_GET_RECORD, (message_id, peer)).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        if row is None:
            return None
        kind, group, count, due, first, parked, carrier = row
        try:
            return Record(
                message_id, peer, _TYPES[kind], group, count, due, first, parked != 0, carrier
            )
        except KeyError as err:
            raise _unknown_type(err) from None

    def get_records(self, message_ids: Iterable[bytes], peer: bytes) -> dict[bytes, Record]:
        """The records for ``peer`` about each of ``message_ids`` that has one."""
        ids = message_ids if isinstance(message_ids, list) else list(message_ids)
        out: dict[bytes, Record] = {}
        if len(ids) == 1:
            r = self.get_record(ids[0], peer)
            if r is not None:
                out[ids[0]] = r
            return out
        self._check_open()
        types = _TYPES
        try:
            for size, chunk in _padded_chunks(ids):
                for m, kind, group, count, due, first, parked, c in self._cur.execute(
                    _GET_PEER_RECORDS[size], [peer, *chunk]
                ).fetchall():
                    out[m] = Record(m, peer, types[kind], group, count, due, first, parked != 0, c)
        except sqlite3.Error as e:
            raise self._error(e) from e
        except KeyError as err:
            raise _unknown_type(err) from None
        return out

    def records_for_message(self, message_id: bytes) -> list[Record]:
        try:
            rows = self._cur.execute(_MESSAGE_RECORDS, (message_id,)).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from e
        types = _TYPES
        try:
            return [
                Record(message_id, p, types[t], g, n, d, f, k != 0, c)
                for p, t, g, n, d, f, k, c in rows
            ]
        except KeyError as err:
            raise _unknown_type(err) from None

    def records_for_peer(self, peer: bytes) -> list[Record]:
        try:
            rows = self._cur.execute(_PEER_RECORDS, (peer,)).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from e
        types = _TYPES
        try:
            return [
                Record(m, peer, types[t], g, n, d, f, k != 0, c) for m, t, g, n, d, f, k, c in rows
            ]
        except KeyError as err:
            raise _unknown_type(err) from None

    def put_records(self, records: Iterable[Record]) -> None:
        # ``seq`` numbers new records in the order they are put; an update keeps the number, so
        # records due in the same epoch go out in the order they were created (parents first).
        seq = self._seq
        rows = [
            (
                r.message_id,
                r.peer,
                r.type,
                r.group_id,
                r.send_count,
                r.send_epoch,
                r.first_epoch,
                r.parked,
                r.carrier,
                seq + i,
            )
            for i, r in enumerate(records, 1)
        ]
        self._seq = seq + len(rows)
        try:
            if len(rows) == 1:
                self._cur.execute(_PUT_RECORD, rows[0])  # one statement: atomic on its own
            elif rows:
                with self._tx:
                    self._cur.executemany(_PUT_RECORD, rows)
            else:
                self._check_open()
        except sqlite3.Error as e:
            raise self._error(e) from e

    def delete_records(self, keys: Iterable[tuple[bytes, bytes]]) -> None:
        """Delete the records with these ``(message_id, peer)`` keys; absent keys are ignored."""
        rows = keys if isinstance(keys, list) else list(keys)
        try:
            if len(rows) == 1:
                self._cur.execute(_DELETE_RECORD, rows[0])
            elif rows:
                with self._tx:
                    self._cur.executemany(_DELETE_RECORD, rows)
            else:
                self._check_open()
        except sqlite3.Error as e:
            raise self._error(e) from e

    def delete_acked(
        self, message_ids: Iterable[bytes], peer: bytes, types: frozenset[RecordType]
    ) -> set[bytes]:
        """Delete ``peer``'s records of these ``types`` about ``message_ids``; return the IDs
        whose record was deleted. One statement per 64 IDs: an ACK needs no read first."""
        ids = list(dict.fromkeys(message_ids))
        kinds = [t.value for t in types]
        if not kinds or not ids:
            self._check_open()
            return set()
        kinds += [kinds[-1]] * (_KINDS - len(kinds))  # repeats in IN (...) are harmless
        done: set[bytes] = set()
        try:
            with self._tx:
                execute = self._cur.execute
                for size, chunk in _padded_chunks(ids):
                    done.update(r[0] for r in execute(_DELETE_ACKED[size], [peer, *kinds, *chunk]))
        except sqlite3.Error as e:
            raise self._error(e) from e
        return done

    def due_records(self, epoch: int, limit: int) -> list[Record]:
        """Up to ``limit`` unparked records with ``send_epoch <= epoch``.

        Ordered by send epoch, then by (message ID, peer).
        """
        try:
            rows = self._cur.execute(_DUE_RECORDS, (epoch, limit)).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from e
        types = _TYPES
        try:
            return [
                Record(m, p, types[t], g, n, d, f, k != 0, c) for m, p, t, g, n, d, f, k, c in rows
            ]
        except KeyError as err:
            raise _unknown_type(err) from None

    def min_due_epoch(self) -> int | None:
        try:
            value: int | None = self._cur.execute(_MIN_DUE).fetchone()[0]
        except sqlite3.Error as e:
            raise self._error(e) from e
        return value

    def record_count(self, peer: bytes | None = None) -> int:
        try:
            count: int = (
                self._cur.execute(_COUNT_RECORDS)
                if peer is None
                else self._cur.execute(_COUNT_PEER_RECORDS, (peer,))
            ).fetchone()[0]
        except sqlite3.Error as e:
            raise self._error(e) from e
        return count

    # ------------------------------------------------------------------ trace facts

    def put_acks(self, acks: Sequence[tuple[bytes, bytes, int, str]]) -> None:
        """Keep ``(message_id, peer, acked_at, via)`` for each acknowledgement (the last one
        of a pair replaces an earlier one). The ACKs of one payload share peer, time and
        carrier: one statement per 64 of them, each bound once."""
        try:
            if len(acks) == 1:
                self._cur.execute(_PUT_ACK, acks[0])
            elif acks:
                same: dict[tuple[bytes, int, str], list[bytes]] = {}
                for mid, peer, at, via in acks:
                    same.setdefault((peer, at, via), []).append(mid)
                with self._tx:
                    execute = self._cur.execute
                    for (peer, at, via), ids in same.items():
                        for size, chunk in _padded_chunks(ids):
                            execute(_PUT_ACKS[size], [peer, at, via, *chunk])
        except sqlite3.Error as e:
            raise self._error(e) from e

    def acks_for_message(self, message_id: bytes) -> list[tuple[bytes, int, str]]:
        """``(peer, acked_at, via)`` of each peer's acknowledgement of ``message_id``."""
        try:
            return list(self._cur.execute(_MESSAGE_ACKS, (message_id,)).fetchall())
        except sqlite3.Error as e:
            raise self._error(e) from e

    def put_contacts(self, contacts: Sequence[tuple[bytes, str, int, int]]) -> None:
        """Keep ``(peer, carrier, sent_at, received_at)``: the last contact with a peer over a
        carrier, each way (Unix ms, 0: never)."""
        try:
            if contacts:
                with self._tx:
                    self._cur.executemany(_PUT_CONTACT, contacts)
        except sqlite3.Error as e:
            raise self._error(e) from e

    def load_contacts(self) -> list[tuple[bytes, str, int, int]]:
        try:
            return list(self._cur.execute(_CONTACTS).fetchall())
        except sqlite3.Error as e:
            raise self._error(e) from e

    def pending(self, peer: bytes, sample: int) -> tuple[int, int, bool]:
        """``peer``'s records, and the bytes of the messages among them (what it still needs
        from us), exact up to ``sample`` messages, past it the oldest ``sample`` at their mean
        size: read through the peer index, without a scan of other peers' records."""
        try:
            count, kinds = self._cur.execute(_PEER_PENDING, (peer,)).fetchone()
            read, size = self._cur.execute(_PEER_PENDING_BYTES, (peer, sample)).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        if kinds <= sample:
            return int(count), int(size), True
        return int(count), int(size) * int(kinds) // max(1, int(read)), False

    # ------------------------------------------------------------------- engine

    def get_epoch(self) -> int:
        """The engine's epoch counter (0 in a new store)."""
        try:
            row = self._cur.execute(_GET_EPOCH).fetchone()
        except sqlite3.Error as e:
            raise self._error(e) from e
        if row is None:
            return 0
        value = row[0]
        if type(value) is not int:
            raise StoreError(f"{self._path}: the stored epoch is not an integer: {value!r}")
        return value

    def set_epoch(self, epoch: int) -> None:
        try:
            self._cur.execute(_SET_EPOCH, (epoch,))
        except sqlite3.Error as e:
            raise self._error(e) from e

    def close(self) -> None:
        """Close the database (a transaction still open is rolled back). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._recent.clear()
        self._close_readers()
        try:
            # A statement that failed last (a write on a disk gone read-only) is still active
            # on the cursor; SQLite would keep the file open after close() until it is reset.
            self._cur.close()
            self._con.close()
        except sqlite3.Error as e:
            raise StoreError(f"{self._path}: {_describe(e)}") from e
