"""The ``Store`` contract, run against both stores, then what only the SQLite store promises.

The memory store defines the semantics; every contract test runs on it and on a fresh
:class:`SQLiteStore` file. Records from the memory store are live objects, so the tests change a
record and then write it back with ``put_records``, as the engine does.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mvds_node.errors import LocalProtocolError, StoreError
from mvds_node.sim import Net
from mvds_node.sync import (
    Engine,
    MemoryStore,
    MessageDelivered,
    Record,
    RecordType,
    Store,
    StoredMessage,
    SyncConfig,
)
from mvds_node.sync.store._sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore

G = bytes(range(1, 33))
H = bytes(range(33, 65))
P, Q = b"P" * 32, b"Q" * 32
MESSAGE, OFFER, REQUEST = RecordType.MESSAGE, RecordType.OFFER, RecordType.REQUEST


def mid(n: int) -> bytes:
    return hashlib.sha256(b"id %d" % n).digest()


def msg(
    n: int,
    *parents: int,
    group: bytes = G,
    expires_at: int = 0,
    delivered: bool = True,
) -> StoredMessage:
    return StoredMessage(
        mid(n),
        group,
        1_700_000_000_000 + n,
        b"wire %d" % n,
        tuple(mid(p) for p in parents),
        expires_at,
        delivered,
    )


def rec(n: int, peer: bytes = P, kind: RecordType = MESSAGE, epoch: int = 0) -> Record:
    return Record(mid(n), peer, kind, G, 0, epoch)


def keys(records: list[Record]) -> list[tuple[bytes, bytes]]:
    return [r.key for r in records]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


# ---------------------------------------------------------------------- contract: messages


def test_new_store_is_empty(store: Store) -> None:
    assert store.message_count() == 0
    assert store.record_count() == 0
    assert store.load_groups() == {}
    assert store.get_epoch() == 0
    assert store.next_expiry() is None
    assert store.min_due_epoch() is None
    assert store.frontier(G) == []
    assert store.undelivered() == []
    assert store.due_records(10**9, 100) == []
    assert store.expired(10**15, 100) == []
    assert not store.has_message(mid(1))
    assert store.get_message(mid(1)) is None
    assert store.get_record(mid(1), P) is None
    assert store.records_for_message(mid(1)) == []
    assert store.records_for_peer(P) == []
    assert store.get_wires([mid(1)]) == {}
    assert not store.is_parent(mid(1))


def test_add_and_read_messages(store: Store) -> None:
    root, child, multi = msg(1), msg(2, 1), msg(3, 1, 2, expires_at=5, delivered=False)
    with store.transaction():
        assert store.add_message(root)
        assert store.add_message(child)
        assert store.add_message(multi)
    assert store.get_message(mid(1)) == root
    assert store.get_message(mid(2)) == child
    assert store.get_message(mid(3)) == multi
    assert store.has_message(mid(3))
    assert not store.has_message(mid(4))
    assert store.message_count() == 3
    assert store.get_wires([mid(3), mid(4), mid(1)]) == {mid(3): b"wire 3", mid(1): b"wire 1"}


def test_get_wires_many_ids_in_any_form(store: Store) -> None:
    with store.transaction():
        for n in range(150):
            store.add_message(msg(n))
    wanted = [mid(n) for n in range(0, 300, 2)] + [mid(4), mid(4)]
    expect = {mid(n): b"wire %d" % n for n in range(0, 150, 2)}
    assert store.get_wires(wanted) == expect
    assert store.get_wires(iter(wanted)) == expect
    assert store.get_wires(mid(n) for n in range(3)) == {mid(n): b"wire %d" % n for n in range(3)}
    assert store.get_wires([]) == {}


@pytest.mark.parametrize("n", [1, 63, 64, 65, 129])
def test_get_wires_of_any_count(store: Store, n: int) -> None:
    # Lookups go in chunks of up to 64 IDs; a last chunk of one ID is a chunk too.
    with store.transaction():
        for i in range(n):
            store.add_message(msg(i))
    assert store.get_wires([mid(i) for i in range(n)]) == {mid(i): b"wire %d" % i for i in range(n)}


def test_duplicate_add_changes_nothing(store: Store) -> None:
    first = msg(2, 1, delivered=False)
    assert store.add_message(first)
    again = StoredMessage(mid(2), H, 7, b"other", (mid(9),), 99, True)
    assert not store.add_message(again)
    assert store.get_message(mid(2)) == first
    assert store.message_count() == 1
    assert store.undelivered() == [first]
    assert not store.is_parent(mid(9))
    assert store.next_expiry() is None
    # The duplicate did not add a second reference to the parent either.
    store.delete_message(mid(2))
    assert not store.is_parent(mid(1))


def test_delete_message_deletes_its_records_and_parent_links(store: Store) -> None:
    with store.transaction():
        store.add_message(msg(1))
        store.add_message(msg(2, 1))
        store.add_message(msg(3, 1, 2))
        store.put_records([rec(3, P), rec(3, Q), rec(2, P)])
    store.delete_message(mid(3))
    assert not store.has_message(mid(3))
    assert store.get_message(mid(3)) is None
    assert store.records_for_message(mid(3)) == []
    assert store.get_record(mid(3), Q) is None
    assert keys(store.records_for_message(mid(2))) == [(mid(2), P)]
    assert store.record_count() == 1
    assert store.message_count() == 2
    assert not store.is_parent(mid(2))
    assert store.is_parent(mid(1)), "message 2 still names it"
    assert store.frontier(G) == [mid(2)]
    store.delete_message(mid(3))  # absent: nothing happens
    assert store.message_count() == 2


def test_delete_message_deletes_records_of_a_message_not_held(store: Store) -> None:
    store.put_records([Record(mid(5), P, REQUEST, b"")])
    store.delete_message(mid(5))
    assert store.record_count() == 0


def test_is_parent_until_the_last_child_goes(store: Store) -> None:
    with store.transaction():
        store.add_message(msg(2, 1))  # the parent itself is not stored
        store.add_message(msg(3, 1))
    assert store.is_parent(mid(1))
    assert not store.is_parent(mid(2))
    store.delete_message(mid(2))
    assert store.is_parent(mid(1))
    store.delete_message(mid(3))
    assert not store.is_parent(mid(1))


def test_frontier_rules(store: Store) -> None:
    with store.transaction():
        store.add_message(msg(1))
        store.add_message(msg(2, 1))
        store.add_message(msg(3, 1))
        store.add_message(msg(4, expires_at=10))  # expiring: never on the frontier
        store.add_message(msg(5, 4))  # names an expiring parent
        store.add_message(msg(6, delivered=False))  # held back
        store.add_message(msg(7, group=H))  # another group
        store.add_message(msg(8, 3, delivered=False))  # held, but hides its parent
    assert store.frontier(G) == sorted([mid(2), mid(5)])
    assert store.frontier(H) == [mid(7)]
    assert store.frontier(b"nope") == []
    store.mark_delivered(mid(6))
    assert store.frontier(G) == sorted([mid(2), mid(5), mid(6)])
    store.delete_message(mid(8))
    assert store.frontier(G) == sorted([mid(2), mid(3), mid(5), mid(6)])
    # A parent named from another group still counts as named.
    store.add_message(msg(9, 2, group=H))
    assert mid(2) not in store.frontier(G)


def test_expiring_children_are_never_parents(store: Store) -> None:
    with store.transaction():
        store.add_message(msg(1))
        store.add_message(msg(2))
        store.add_message(msg(3, 1, 2, expires_at=10))  # names 1 and 2, but expires
        store.add_message(msg(4, 2, expires_at=10, delivered=False))
    assert not store.is_parent(mid(1)) and not store.is_parent(mid(2))
    assert store.frontier(G) == sorted([mid(1), mid(2)])
    store.add_message(msg(5, 2))  # a lasting child hides its parent
    assert store.is_parent(mid(2)) and not store.is_parent(mid(1))
    assert store.frontier(G) == sorted([mid(1), mid(5)])
    store.delete_message(mid(5))
    assert not store.is_parent(mid(2))
    assert store.frontier(G) == sorted([mid(1), mid(2)])


def test_frontier_is_sorted(store: Store) -> None:
    with store.transaction():
        for n in range(40):
            store.add_message(msg(n))
    assert store.frontier(G) == sorted(mid(n) for n in range(40))


def test_mark_delivered_and_undelivered(store: Store) -> None:
    held = [msg(n, delivered=False) for n in (5, 1, 3)]
    with store.transaction():
        store.add_message(msg(2))
        for m in held:
            store.add_message(m)
    assert store.undelivered() == held, "in the order they were stored"
    store.mark_delivered(mid(1))
    store.mark_delivered(mid(1))
    store.mark_delivered(mid(2))  # already delivered
    store.mark_delivered(mid(99))  # unknown
    assert store.undelivered() == [held[0], held[2]]
    assert store.get_message(mid(1)) == StoredMessage(
        mid(1), G, held[1].timestamp, b"wire 1", (), 0, True
    )


def test_expired_and_next_expiry(store: Store) -> None:
    with store.transaction():
        store.add_message(msg(1, expires_at=300))
        store.add_message(msg(2, expires_at=100))
        store.add_message(msg(3))
        store.add_message(msg(4, expires_at=200))
        store.add_message(msg(5, expires_at=100))
    assert store.next_expiry() == 100
    assert store.expired(99, 10) == []
    assert [m.id for m in store.expired(100, 10)] == [mid(2), mid(5)], "at or before, stable"
    assert [m.id for m in store.expired(250, 10)] == [mid(2), mid(5), mid(4)]
    assert [m.id for m in store.expired(10**6, 2)] == [mid(2), mid(5)]
    assert [m.id for m in store.expired(10**6, 10)] == [mid(2), mid(5), mid(4), mid(1)]
    assert store.expired(10**6, 10)[0] == msg(2, expires_at=100)
    store.delete_message(mid(2))
    store.delete_message(mid(5))
    assert store.next_expiry() == 200
    store.delete_message(mid(4))
    store.delete_message(mid(1))
    assert store.next_expiry() is None
    assert store.expired(10**6, 10) == []


def test_message_count_follows_adds_and_deletes(store: Store) -> None:
    for n in range(5):
        store.add_message(msg(n))
    store.add_message(msg(0))
    store.delete_message(mid(1))
    store.delete_message(mid(1))
    assert store.message_count() == 4
    store.add_message(msg(1))
    assert store.message_count() == 5


# -------------------------------------------------------------------- contract: membership


def test_groups_and_members(store: Store) -> None:
    store.put_group(G)
    store.put_group(G)
    assert store.load_groups() == {G: {}}
    store.put_member(G, P, "batch")
    store.put_member(H, Q, "interactive")  # creates the group
    assert store.load_groups() == {G: {P: "batch"}, H: {Q: "interactive"}}
    store.put_member(G, P, "interactive")
    store.put_member(G, Q, "batch")
    assert store.load_groups()[G] == {P: "interactive", Q: "batch"}
    store.delete_member(G, P)
    store.delete_member(G, P)
    store.delete_member(b"nope", P)
    assert store.load_groups() == {G: {Q: "batch"}, H: {Q: "interactive"}}
    store.delete_group(H)
    store.delete_group(H)
    assert store.load_groups() == {G: {Q: "batch"}}
    store.put_group(H)
    assert store.load_groups()[H] == {}, "a deleted group's members went with it"


def test_load_groups_returns_a_copy(store: Store) -> None:
    store.put_member(G, P, "batch")
    groups = store.load_groups()
    groups[G][Q] = "batch"
    groups[H] = {}
    assert store.load_groups() == {G: {P: "batch"}}


# ----------------------------------------------------------------------- contract: records


def test_put_and_get_records(store: Store) -> None:
    a = Record(mid(1), P, MESSAGE, G, 3, 7, 2, False)
    b = Record(mid(1), Q, OFFER, G, 0, 4)
    c = Record(mid(2), P, REQUEST, b"", 1, 9, 8, True)
    store.put_records([a, b, c])
    assert store.get_record(mid(1), P) == a
    assert store.get_record(mid(2), P) == c
    assert store.get_record(mid(2), Q) is None
    assert sorted(keys(store.records_for_message(mid(1)))) == sorted([a.key, b.key])
    assert sorted(store.records_for_peer(P), key=lambda r: r.message_id) == sorted(
        [a, c], key=lambda r: r.message_id
    )
    assert store.records_for_peer(Q) == [b]
    assert store.record_count() == 3
    assert (store.record_count(P), store.record_count(Q), store.record_count(b"R" * 32)) == (
        2,
        1,
        0,
    )
    got = store.get_record(mid(2), P)
    assert got is not None
    assert got.type is REQUEST
    assert got.parked is True


def test_put_records_replaces_by_key(store: Store) -> None:
    store.put_records([rec(1, epoch=5)])
    r = store.get_record(mid(1), P)
    assert r is not None
    r.type = OFFER
    r.send_count = 2
    r.send_epoch = 9
    r.first_epoch = 5
    store.put_records([r])
    assert store.get_record(mid(1), P) == Record(mid(1), P, OFFER, G, 2, 9, 5, False)
    assert store.record_count() == 1
    assert store.due_records(8, 10) == []
    assert keys(store.due_records(9, 10)) == [(mid(1), P)]
    assert store.min_due_epoch() == 9
    # A fresh object with the same key replaces it too.
    store.put_records([Record(mid(1), P, MESSAGE, G, 0, 1)])
    assert store.min_due_epoch() == 1
    assert store.record_count() == 1


def test_due_records_order_limit_and_parked(store: Store) -> None:
    store.put_records(
        [
            rec(1, epoch=5),
            rec(2, epoch=1),
            rec(3, epoch=3),
            rec(4, epoch=1, peer=Q),
            Record(mid(5), P, MESSAGE, G, 0, 0, parked=True),
            rec(6, epoch=2),
        ]
    )
    due = store.due_records(3, 100)
    assert [r.send_epoch for r in due] == [1, 1, 2, 3]
    assert sorted(keys(due[:2])) == sorted([(mid(2), P), (mid(4), Q)])
    assert store.due_records(3, 100) == due, "stable"
    assert keys(store.due_records(3, 2)) == keys(due[:2])
    assert keys(store.due_records(3, 3)) == keys(due[:3])
    assert store.due_records(0, 100) == []
    assert len(store.due_records(10, 100)) == 5, "the parked record is never due"
    assert store.min_due_epoch() == 1


def test_due_records_keep_creation_order_within_an_epoch(store: Store) -> None:
    # Records created in causal order (parents first) go out in that order.
    order = [7, 3, 9, 1, 5, 2]
    for n in order:
        store.put_records([rec(n, epoch=4)])
    store.put_records([rec(n, epoch=4, peer=Q) for n in order])
    assert keys(store.due_records(4, 100)) == [(mid(n), P) for n in order] + [
        (mid(n), Q) for n in order
    ]


def test_engine_style_drain_reschedules(store: Store) -> None:
    store.put_records([rec(n, epoch=0) for n in range(10)])
    drained = 0
    with store.transaction():
        while due := store.due_records(0, 3):
            for r in due:
                r.send_count += 1
                r.first_epoch = 0
                r.send_epoch = 4
            store.put_records(due)
            drained += len(due)
    assert drained == 10
    assert store.min_due_epoch() == 4
    assert {r.send_count for r in store.due_records(4, 100)} == {1}


def test_min_due_epoch_follows_updates_parking_and_deletes(store: Store) -> None:
    store.put_records([rec(1, epoch=2), rec(2, epoch=6), rec(3, epoch=2)])
    assert store.min_due_epoch() == 2
    first = store.get_record(mid(1), P)
    assert first is not None
    first.send_epoch = 8
    store.put_records([first])
    assert store.min_due_epoch() == 2, "record 3 is still due at 2"
    third = store.get_record(mid(3), P)
    assert third is not None
    third.parked = True
    store.put_records([third])
    assert store.min_due_epoch() == 6
    store.delete_records([(mid(2), P)])
    assert store.min_due_epoch() == 8
    store.delete_records([(mid(1), P)])
    assert store.min_due_epoch() is None, "only a parked record is left"
    assert store.record_count() == 1
    third.parked = False
    third.send_epoch = 1
    store.put_records([third])
    assert store.min_due_epoch() == 1
    assert keys(store.due_records(1, 10)) == [(mid(3), P)]


def test_delete_records(store: Store) -> None:
    store.put_records([rec(n) for n in range(5)] + [rec(0, peer=Q)])
    store.delete_records([(mid(0), P), (mid(9), P), (mid(0), P)])
    store.delete_records(iter([(mid(1), P)]))
    store.delete_records([])
    assert store.record_count() == 4
    assert store.get_record(mid(0), P) is None
    assert store.get_record(mid(0), Q) is not None
    assert sorted(keys(store.records_for_peer(P))) == sorted((mid(n), P) for n in (2, 3, 4))
    store.put_records([])
    store.put_records(iter([rec(1)]))
    assert store.record_count() == 5


def test_delete_acked(store: Store) -> None:
    store.put_records(
        [rec(n) for n in range(100)]
        + [rec(0, peer=Q), rec(100, kind=REQUEST), rec(101, kind=OFFER)]
    )
    acked = [mid(n) for n in (*range(0, 100, 2), 100, 101, 102)]
    done = store.delete_acked([*acked, mid(0)], P, frozenset({MESSAGE, OFFER}))
    assert done == {mid(n) for n in (*range(0, 100, 2), 101)}, "not the REQUEST, not unknown"
    assert store.get_record(mid(0), P) is None
    assert store.get_record(mid(0), Q) is not None, "another peer's record stays"
    assert store.get_record(mid(100), P) is not None
    assert store.get_record(mid(1), P) is not None
    assert store.record_count() == 103 - len(done)
    assert store.delete_acked([], P, frozenset({MESSAGE})) == set()
    assert store.delete_acked([mid(1)], P, frozenset()) == set()
    assert store.delete_acked(iter([mid(1)]), P, frozenset({MESSAGE})) == {mid(1)}
    # Every type at once, none left out.
    everything = frozenset(RecordType)
    assert store.delete_acked([mid(100), mid(3)], P, everything) == {mid(100), mid(3)}


def test_epoch(store: Store) -> None:
    store.set_epoch(41)
    store.set_epoch(42)
    assert store.get_epoch() == 42


def test_transaction_commits_its_writes(store: Store) -> None:
    with store.transaction():
        store.add_message(msg(1))
        store.put_records([rec(1)])
        store.set_epoch(3)
        with store.transaction():
            store.put_group(G)
    assert store.has_message(mid(1))
    assert store.record_count() == 1
    assert store.get_epoch() == 3
    assert store.load_groups() == {G: {}}


# ------------------------------------------------------------------------- SQLite only


def fill(store: SQLiteStore) -> None:
    with store.transaction():
        store.put_member(G, P, "batch")
        store.put_group(H)
        store.add_message(msg(1))
        store.add_message(msg(2, 1))
        store.add_message(msg(3, 1, delivered=False))
        store.add_message(msg(4, expires_at=50))
        store.put_records([rec(2, epoch=4), Record(mid(9), Q, REQUEST, b"", 2, 6, 1, True)])
        store.set_epoch(17)


def test_data_survives_close_and_reopen(db: Path) -> None:
    with SQLiteStore(db) as store:
        fill(store)
    with SQLiteStore(db) as store:
        assert store.get_epoch() == 17
        assert store.load_groups() == {G: {P: "batch"}, H: {}}
        assert store.message_count() == 4
        assert store.get_message(mid(2)) == msg(2, 1)
        assert store.undelivered() == [msg(3, 1, delivered=False)]
        assert store.is_parent(mid(1))
        assert not store.is_parent(mid(2))
        assert store.frontier(G) == [mid(2)], "3 is held, 4 expires, 1 is a parent"
        assert store.next_expiry() == 50
        assert store.get_record(mid(9), Q) == Record(mid(9), Q, REQUEST, b"", 2, 6, 1, True)
        assert keys(store.due_records(10, 10)) == [(mid(2), P)]
        # New records come after the old ones of the same epoch.
        store.put_records([rec(0, epoch=4)])
        assert keys(store.due_records(4, 10)) == [(mid(2), P), (mid(0), P)]


def test_a_single_call_outside_a_transaction_is_committed(db: Path) -> None:
    store = SQLiteStore(db)
    store.add_message(msg(1, 7))
    store.put_records([rec(1), rec(1, peer=Q)])
    store.put_records([rec(2)])
    store.delete_records([(mid(1), Q)])
    store.set_epoch(5)
    store.put_member(G, P, "batch")
    store.close()  # closing would roll back anything not committed
    with SQLiteStore(db) as store:
        assert store.has_message(mid(1))
        assert store.is_parent(mid(7))
        assert sorted(keys(store.records_for_peer(P))) == sorted([(mid(1), P), (mid(2), P)])
        assert store.record_count() == 2
        assert store.get_epoch() == 5
        assert store.load_groups() == {G: {P: "batch"}}


def test_a_transaction_that_raises_is_rolled_back_entirely(db: Path) -> None:
    with SQLiteStore(db) as store:
        fill(store)

        def fail_halfway() -> None:
            with store.transaction():
                store.add_message(msg(10, 1))
                store.delete_message(mid(2))
                store.put_records([rec(10)])
                store.delete_records([(mid(9), Q)])
                store.mark_delivered(mid(3))
                store.put_member(H, Q, "interactive")
                store.delete_group(G)
                store.set_epoch(99)
                assert store.message_count() == 4
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_halfway()
        assert store.message_count() == 4
        assert not store.has_message(mid(10))
        assert store.get_message(mid(2)) == msg(2, 1)
        assert store.get_record(mid(10), P) is None
        assert store.get_record(mid(9), Q) is not None
        assert store.undelivered() == [msg(3, 1, delivered=False)]
        assert store.load_groups() == {G: {P: "batch"}, H: {}}
        assert store.get_epoch() == 17
        # Still usable, and the next transaction commits.
        with store.transaction():
            store.add_message(msg(11))
    with SQLiteStore(db) as store:
        assert store.has_message(mid(11))
        assert not store.has_message(mid(10))
        assert store.message_count() == 5


def test_a_nested_transaction_joins_the_outer_one(db: Path) -> None:
    with SQLiteStore(db) as store:

        def fail_after_inner() -> None:
            with store.transaction():
                store.add_message(msg(1))
                with store.transaction():
                    store.add_message(msg(2))
                    store.put_records([rec(2)])
                # The inner block ended without committing: the outer failure undoes it too.
                raise KeyError("later")

        def fail_inside_inner() -> None:
            with store.transaction(), store.transaction():
                store.add_message(msg(5))
                raise ValueError("inner")

        with pytest.raises(KeyError, match="later"):
            fail_after_inner()
        assert store.message_count() == 0
        assert store.record_count() == 0
        with store.transaction():
            with store.transaction():
                store.add_message(msg(3))
            with store.transaction():
                store.add_message(msg(4))
        with pytest.raises(ValueError, match="inner"):
            fail_inside_inner()
    with SQLiteStore(db) as store:
        assert {m for m in (1, 2, 3, 4, 5) if store.has_message(mid(m))} == {3, 4}


@pytest.mark.parametrize("content", [b"garbage " * 1000, b"x" * 50, bytes(range(256)) * 64])
def test_a_file_that_is_not_a_database_is_refused(db: Path, content: bytes) -> None:
    db.write_bytes(content)
    with pytest.raises(StoreError, match="not a database"):
        SQLiteStore(db)
    assert db.read_bytes() == content, "left as it was"


def test_another_applications_database_is_refused(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not an mvds-node store"):
        SQLiteStore(db)
    assert db.read_bytes() == before


def test_a_newer_schema_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(db)


def test_a_corrupt_store_raises_store_error(db: Path) -> None:
    with SQLiteStore(db) as store:
        fill(store)
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 2 * page
    data[page:] = b"\xa5" * (len(data) - page)  # every page but the header page
    db.write_bytes(bytes(data))

    def use() -> None:
        with SQLiteStore(db) as store:
            store.message_count()
            store.due_records(100, 10)
            store.get_message(mid(1))

    with pytest.raises(StoreError, match="corrupt"):
        use()


def test_a_store_in_use_is_refused(db: Path) -> None:
    with SQLiteStore(db) as store:
        store.add_message(msg(1))
        with pytest.raises(StoreError, match="in use"):
            SQLiteStore(db)
        assert store.has_message(mid(1))


def test_a_closed_store_raises_store_error(db: Path) -> None:
    store = SQLiteStore(db)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.has_message(mid(1))
    with pytest.raises(StoreError, match="closed"):
        store.put_records([rec(1)])
    with pytest.raises(StoreError, match="closed"):
        store.put_records([])
    with pytest.raises(StoreError, match="closed"):
        store.delete_records([])
    with pytest.raises(StoreError, match="closed"):
        store.get_wires([])
    with pytest.raises(StoreError, match="closed"), store.transaction():
        pass


def test_the_file_is_in_wal_mode(db: Path) -> None:
    SQLiteStore(db).close()
    header = db.read_bytes()[:100]
    assert header[:16] == b"SQLite format 3\x00"
    assert header[18:20] == b"\x02\x02", "WAL read and write versions"


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_synchronous_setting(db: Path, synchronous: str) -> None:
    with SQLiteStore(db, synchronous=synchronous) as store:  # type: ignore[arg-type]
        level = store._con.execute("PRAGMA synchronous").fetchone()[0]
        assert level == {"normal": 1, "full": 2}[synchronous]
        store.add_message(msg(1))
    with pytest.raises(LocalProtocolError):
        SQLiteStore(db, synchronous="off")  # type: ignore[arg-type]


def test_parents_must_be_ids(db: Path) -> None:
    with SQLiteStore(db) as store:
        for parents in ((b"short",), (mid(1), b"x" * 33)):
            with pytest.raises(LocalProtocolError):
                store.add_message(StoredMessage(mid(2), G, 1, b"w", parents))
        assert store.message_count() == 0


def test_in_memory_store() -> None:
    with SQLiteStore.memory() as store:
        fill(store)
        assert store.frontier(G) == [mid(2)]


def test_engines_sync_over_sqlite_stores_and_restart(tmp_path: Path) -> None:
    a_id, b_id = b"A" * 32, b"B" * 32
    config = SyncConfig(epoch_seconds=1.0)
    stores = [SQLiteStore(tmp_path / "a.db"), SQLiteStore(tmp_path / "b.db")]
    try:
        net = Net()
        a = net.add(a_id, Engine(stores[0], config=config, now=0.0))
        b = net.add(b_id, Engine(stores[1], config=config, now=0.0))
        for engine, other in ((a, b_id), (b, a_id)):
            engine.add_group(G)
            engine.add_peer(G, other)
        sent = [a.send(G, b"hello %d" % i, now=0.0, timestamp=i) for i in range(20)]
        net.run_until(lambda: stores[0].record_count() == 0, max_rounds=20)
        got = [e.message_id for e in net.events[b_id] if isinstance(e, MessageDelivered)]
        assert got == sent
        stores[0].close()
        stores[0] = SQLiteStore(tmp_path / "a.db")
        a = Engine(stores[0], config=config, now=net.now)
        assert a.groups() == {G: {b_id: b.groups()[G][a_id]}}
        last = a.send(G, b"after restart", now=net.now, timestamp=99)
        stored = stores[0].get_message(last)
        assert stored is not None
        assert stored.parents == (sent[-1],), "the frontier survived"
    finally:
        for s in stores:
            s.close()


def test_page_size_is_chosen_at_creation(tmp_path: Path) -> None:
    from mvds_node.errors import LocalProtocolError
    from mvds_node.sync import SQLiteStore

    store = SQLiteStore(tmp_path / "big.db", page_size=65536)
    assert store._con.execute("PRAGMA page_size").fetchone()[0] == 65536
    store.close()
    again = SQLiteStore(tmp_path / "big.db")  # an existing store keeps its page size
    assert again._con.execute("PRAGMA page_size").fetchone()[0] == 65536
    again.close()
    with pytest.raises(LocalProtocolError, match="power of two"):
        SQLiteStore(tmp_path / "bad.db", page_size=1000)
