"""``SQLiteStore.retain`` (``[retention]``): the same rules for the messages this node sent as
for the ones it received. Real engines on SQLite stores, payloads handed across by hand."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mvds_node.sync import Engine, Mode, SQLiteStore, SyncConfig, encode_payload

G = b"G" * 32
A, B = b"A" * 32, b"B" * 32
DAY_MS = 86_400_000


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[SQLiteStore, SQLiteStore]]:
    a, b = SQLiteStore(tmp_path / "a.db"), SQLiteStore(tmp_path / "b.db")
    yield a, b
    a.close()
    b.close()


def engine(store: SQLiteStore, peer: bytes) -> Engine:
    e = Engine(store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
    e.add_group(G)
    e.add_peer(G, peer, mode=Mode.BATCH)
    return e


def test_our_sends_go_once_acked_and_off_the_frontier(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    store, _ = stores
    a = engine(store, B)
    ids = [a.send(G, b"m%d" % i, now=0.0, timestamp=i + 1) for i in range(4)]
    a.payloads_to_send(now=0.0)
    # Each names the one before as parent; B acknowledged none yet: every one is awaited.
    assert store.retain(store.inbox_end(), max_messages=1) == []
    a.receive_payload(B, encode_payload(acks=ids[:3]), now=1.0)
    assert [p for p, _, _ in store.acks_for_message(ids[0])] == [B]
    assert store.retain(store.inbox_end(), max_messages=1) == ids[:3]
    assert store.has_message(ids[3])  # awaited by B, and on the frontier besides
    a.receive_payload(B, encode_payload(acks=ids[3:]), now=2.0)
    assert store.retain(store.inbox_end(), older_than=DAY_MS) == []  # the frontier stays
    # The acknowledgement facts went with their messages: the last one's row is all that is left.
    store.close()
    con = sqlite3.connect(store.path)
    assert con.execute("SELECT message_id FROM acks").fetchall() == [(ids[3],)]
    con.close()


def test_a_received_message_waits_for_the_cursor_while_our_own_do_not(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    store, theirs = stores
    a, b = engine(store, B), engine(theirs, A)
    received = [b.send(G, b"r%d" % i, now=0.0, timestamp=i + 1) for i in range(2)]
    for _, payload in b.payloads_to_send(now=0.0):
        a.receive_payload(B, payload, now=0.0, direct=True)
    mine = [a.send(G, b"s%d" % i, now=0.0, timestamp=10 + i) for i in range(2)]
    for _, payload in a.payloads_to_send(now=0.0):
        b.receive_payload(A, payload, now=0.0, direct=True)
    for _, payload in b.payloads_to_send(now=1.0):
        a.receive_payload(B, payload, now=1.0, direct=True)
    assert store.record_count() == 0  # every one of ours acknowledged
    # Everything is older than "now + a day"; no cursor has passed the received ones.
    old = 100 * DAY_MS
    assert store.retain(0, older_than=old) == [mine[0]]
    assert store.has_message(received[0]) and store.has_message(received[1])
    # Every cursor passed them: the first received goes too. The second no longer has a
    # stored child (mine[0], which named it, is gone): on the frontier, it stays, as the
    # last of ours does.
    assert store.retain(store.inbox_end(), older_than=old) == [received[0]]
    assert store.has_message(received[1]) and store.has_message(mine[1])
