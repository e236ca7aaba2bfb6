"""``Engine.send_many`` and ``Store.add_messages``: a batch of sends written a table at a time
must leave exactly what the same sends one by one inside ``Engine.batch`` leave."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvds_node.errors import LocalProtocolError
from mvds_node.sync import (
    Engine,
    MemoryStore,
    Mode,
    SQLiteStore,
    Store,
    StoredMessage,
    SyncConfig,
)
from mvds_node.sync.store._sqlite import EXTERNAL_MIN

G = b"G" * 32
B, C = b"B" * 32, b"C" * 32


def make(kind: str, path: Path) -> Store:
    return MemoryStore() if kind == "memory" else SQLiteStore(path)


def engine(store: Store, *, reliable: bool) -> Engine:
    e = Engine(store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
    e.add_group(G)
    e.add_peer(G, B)
    e.add_peer(G, C, mode=Mode.INTERACTIVE)
    if reliable:
        e.set_peer_reliable(B, True, now=0.0)
    return e


def state(e: Engine, store: Store, ids: list[bytes]) -> object:
    messages = [store.get_message(i) for i in ids]
    records = sorted(
        (r.message_id, r.peer, r.type, r.send_count, r.send_epoch, r.first_epoch)
        for peer in (B, C)
        for r in store.records_for_peer(peer)
    )
    payloads = e.payloads_to_send(now=0.5)
    return messages, records, payloads, e.next_deadline()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("reliable", [False, True])
def test_send_many_equals_sends_in_a_batch(tmp_path: Path, kind: str, reliable: bool) -> None:
    bodies = [b"small %d" % i for i in range(5)] + [b"L" * (EXTERNAL_MIN + 1), b"last"]
    one = make(kind, tmp_path / "one.db")
    many = make(kind, tmp_path / "many.db")
    try:
        e1, e2 = engine(one, reliable=reliable), engine(many, reliable=reliable)
        for e in (e1, e2):
            e.send(G, b"before", now=0.0, timestamp=1)
        with e1.batch():
            ids1 = [e1.send(G, b, now=0.2, timestamp=7) for b in bodies]
        ids2 = e2.send_many(G, bodies, now=0.2, timestamp=7)
        assert ids1 == ids2
        assert state(e1, one, ids1) == state(e2, many, ids2)
    finally:
        one.close()
        many.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_batch_with_a_stored_or_repeated_message_falls_back(tmp_path: Path, kind: str) -> None:
    one = make(kind, tmp_path / "one.db")
    many = make(kind, tmp_path / "many.db")
    try:
        e1, e2 = engine(one, reliable=False), engine(many, reliable=False)
        for e in (e1, e2):
            e.send(G, b"old", now=0.0, timestamp=7)
        bodies = [b"new", b"old", b"newer", b"new"]
        with e1.batch():
            ids1 = [e1.send(G, b, now=0.2, timestamp=7) for b in bodies]
        assert e2.send_many(G, bodies, now=0.2, timestamp=7) == ids1
        assert state(e1, one, ids1) == state(e2, many, ids1)
        assert many.message_count() == 3
    finally:
        one.close()
        many.close()


def big(n: int) -> StoredMessage:
    wire = (b"wire %d " % n).ljust(EXTERNAL_MIN + 5, b".")
    return StoredMessage(bytes([n]) * 32, G, n, wire, ())


def test_add_messages_takes_all_or_none(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        assert store.add_messages([big(1)])
        end = store._seg_end
        assert not store.add_messages([big(2), big(1), big(3)]), "big(1) is stored"
        assert store._seg_end == end, "the bodies written for nothing are overwritten next"
        assert store.get_message(big(2).id) is None
        assert store.add_messages([big(2), big(3)])
        assert store.get_wires([big(n).id for n in (1, 2, 3)]) == {
            big(n).id: big(n).wire for n in (1, 2, 3)
        }
        assert store.message_count() == 3
        with pytest.raises(LocalProtocolError, match="parent"):
            store.add_messages([StoredMessage(b"x" * 32, G, 1, b"w", (b"short",))])
        assert not store.has_message(b"x" * 32)
