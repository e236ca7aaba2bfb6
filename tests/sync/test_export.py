"""The engine's side of one-way carriers: the two-phase export (``export_snapshot``, then
``commit_export`` once the carrier holds it; dropping the snapshot is the abort) and the
all-or-nothing import (``receive_payloads``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mvds_node.sync import (
    DeliveryMode,
    Engine,
    GiveUpPolicy,
    MemoryStore,
    MessageAcked,
    MessageDelivered,
    Mode,
    PayloadRejected,
    RecordType,
    SQLiteStore,
    Store,
    SyncConfig,
    decode_payload,
    encode_payload,
)
from mvds_node.sync._wire import decode_stored

G = b"G" * 32
A, B, C = b"A" * 32, b"B" * 32, b"C" * 32
DAYS = 24 * 3600.0
LIMITS = SyncConfig().limits


def engine(*peers: bytes, store: Store | None = None, mode: Mode = Mode.BATCH, **kw: Any) -> Engine:
    e = Engine(
        store if store is not None else MemoryStore(),
        config=SyncConfig(epoch_seconds=1.0, **kw),
        now=0.0,
    )
    e.add_group(G)
    for p in peers:
        e.add_peer(G, p, mode=mode)
    return e


def state(e: Engine, peer: bytes) -> list[tuple[bytes, RecordType, int, int, bool]]:
    return sorted(
        (r.message_id, r.type, r.send_count, r.send_epoch, r.parked)
        for r in e.store_view.records_for_peer(peer)
    )


def delivered(e: Engine) -> list[bytes]:
    return [ev.body for ev in e.events() if isinstance(ev, MessageDelivered)]


def carry(snapshot_messages: Sequence[bytes], acks: tuple[bytes, ...] = ()) -> bytes:
    """One payload with what a snapshot holds (as a bundle reader would receive it)."""
    return encode_payload(acks, (), (), list(snapshot_messages))


# --------------------------------------------------------------------------- snapshot


def test_snapshot_changes_nothing_and_dropping_it_is_the_abort() -> None:
    a = engine(B)
    ids = [a.send(G, f"m{i}".encode(), now=0.0, timestamp=i + 1) for i in range(5)]
    before, deadline = state(a, B), a.next_deadline()
    snap = a.export_snapshot([B], now=0.0)
    assert snap.peers == (B,)
    assert [decode_payload(carry(snap.messages), LIMITS).messages[i].id for i in range(5)] == ids
    assert (state(a, B), a.next_deadline()) == (before, deadline)
    del snap  # abort: the live carrier still sends everything
    ((peer, payload),) = a.payloads_to_send(now=0.0)
    assert peer == B and len(decode_payload(payload, LIMITS).messages) == 5


def test_snapshot_holds_ids_and_sizes_and_reads_bodies_a_slice_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    reads: list[int] = []
    get_wires = store.get_wires

    def counting(ids: Iterable[bytes]) -> dict[bytes, bytes]:
        found = get_wires(ids)
        reads.append(len(found))
        return found

    a = engine(B, store=store)
    bodies = [i.to_bytes(2, "big") * 2500 for i in range(600)]
    ids = [a.send(G, body, now=0.0, timestamp=i + 1) for i, body in enumerate(bodies)]
    monkeypatch.setattr(store, "get_wires", counting)
    snap = a.export_snapshot([B], now=0.0)
    # Taking it read every body once, a chunk at a time, and kept none of them.
    assert reads and max(reads) <= 256 and sum(reads) == 600
    assert snap.messages.ids == tuple(ids) and len(snap.messages) == 600
    assert all(size > 5000 for size in snap.messages.sizes)
    reads.clear()
    ten = snap.messages[100:110]
    assert reads == [10]
    assert [decode_stored(w).body for w in ten] == bodies[100:110]
    assert [decode_stored(w).id for w in snap.messages] == ids
    # A message gone from the store since (expired) is left out of the slice that names it.
    store.delete_message(ids[101])
    assert [decode_stored(w).id for w in snap.messages[100:103]] == [ids[100], ids[102]]
    with pytest.raises(LookupError, match="no longer in the store"):
        snap.messages[101]


def test_snapshot_takes_full_messages_for_interactive_peers_and_records_not_yet_due() -> None:
    a = engine(B, mode=Mode.INTERACTIVE)
    a.send(G, b"one", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0)  # offered once: the record is not due for a while
    a.send(G, b"two", now=0.0, timestamp=2)
    snap = a.export_snapshot([B], now=0.0)
    bodies = [m.body for m in decode_payload(carry(snap.messages), LIMITS).messages]
    assert bodies == [b"one", b"two"]  # a file cannot wait for a REQUEST


def test_snapshot_lists_parents_it_does_not_carry_as_prerequisites() -> None:
    a, b = engine(B), engine(A)
    first = a.send(G, b"parent", now=0.0, timestamp=1)
    ((_, payload),) = a.payloads_to_send(now=0.0)
    b.receive_payload(A, payload, now=0.0)
    ((_, ack),) = b.payloads_to_send(now=0.0)
    a.receive_payload(B, ack, now=0.0)  # B holds the parent now: no record left for it
    a.send(G, b"child", now=1.0, timestamp=2)
    snap = a.export_snapshot([B], now=1.0)
    assert len(snap.messages) == 1 and snap.prerequisites == (first,)


def test_snapshot_carries_acks_and_requests() -> None:
    a, b = engine(B), engine(A, mode=Mode.INTERACTIVE)
    a.send(G, b"from a", now=0.0, timestamp=1)
    ((_, payload),) = a.payloads_to_send(now=0.0)
    b.receive_payload(A, payload, now=0.0)  # b owes a an ACK
    b.receive_payload(A, encode_payload((), [b"X" * 32]), now=0.0)  # and asks for X
    snap = b.export_snapshot([A], now=0.0)
    assert snap.acks == {A: (decode_payload(payload, LIMITS).messages[0].id,)}
    assert snap.requests == (b"X" * 32,) and snap.messages == ()


def test_group_snapshot_covers_every_member() -> None:
    a = engine(B, C)
    a.send(G, b"all", now=0.0, timestamp=1)
    snap = a.export_snapshot([B, C, B], now=0.0)
    assert snap.peers == (B, C) and len(snap.messages) == 1 and len(snap.records) == 2


# --------------------------------------------------------------------------- commit


def test_commit_counts_it_sent_with_the_carriers_latency() -> None:
    a = engine(B)
    for i in range(3):
        a.send(G, f"m{i}".encode(), now=0.0, timestamp=i + 1)
    snap = a.export_snapshot([B], now=10.0)
    a.commit_export(snap, now=10.0, latency_seconds=3 * DAYS)
    # Twice the latency, in whole epochs from epoch 10: no retransmission for six days.
    assert a.next_deadline() == 10.0 + 6 * DAYS
    assert {(t, n, e) for _, t, n, e, _ in state(a, B)} == {
        (RecordType.MESSAGE, 1, 10 + int(6 * DAYS))
    }
    a.handle_timer(now=10.0 + 6 * DAYS - 1)
    assert a.payloads_to_send(now=10.0 + 6 * DAYS - 1) == []
    ((_, payload),) = a.payloads_to_send(now=10.0 + 6 * DAYS)
    assert len(decode_payload(payload, LIMITS).messages) == 3


def test_commit_leaves_records_that_changed_meanwhile() -> None:
    a, b = engine(B), engine(A)
    a.send(G, b"one", now=0.0, timestamp=1)
    snap = a.export_snapshot([B], now=0.0)
    ((_, payload),) = a.payloads_to_send(now=0.0)  # the live carrier got there first
    b.receive_payload(A, payload, now=0.0)
    ((_, ack),) = b.payloads_to_send(now=0.0)
    a.receive_payload(B, ack, now=0.0)
    assert any(isinstance(e, MessageAcked) for e in a.events())
    a.commit_export(snap, now=1.0, latency_seconds=DAYS)
    assert state(a, B) == [] and a.next_deadline() is None


def test_commit_takes_the_acks_out_of_the_queue() -> None:
    a, b = engine(B), engine(A)
    a.send(G, b"one", now=0.0, timestamp=1)
    ((_, payload),) = a.payloads_to_send(now=0.0)
    b.receive_payload(A, payload, now=0.0)
    b.commit_export(b.export_snapshot([A], now=0.0), now=0.0, latency_seconds=DAYS)
    assert b.payloads_to_send(now=0.0) == [] and b.next_deadline() is None


def test_commit_unparks_records_that_gave_up_and_reset_peer_rearms_them() -> None:
    a = engine(B, give_up=GiveUpPolicy(max_attempts=1, max_age_epochs=None))
    a.send(G, b"one", now=0.0, timestamp=1)
    a.payloads_to_send(now=0.0)
    a.handle_timer(now=100.0)
    a.payloads_to_send(now=100.0)
    assert [p for *_, p in state(a, B)] == [True]  # parked
    snap = a.export_snapshot([B], now=100.0)
    assert len(snap.messages) == 1  # parked records still travel by hand
    a.commit_export(snap, now=100.0, latency_seconds=DAYS)
    assert [p for *_, p in state(a, B)] == [False]
    assert a.next_deadline() == 100.0 + 2 * DAYS
    # The peer shows up on a live carrier: no need to wait out the file's latency.
    assert a.reset_peer(B, now=101.0) == 1
    assert a.next_deadline() == 101.0


def test_commit_is_durable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    a = engine(B, store=store)
    a.send(G, b"one", now=0.0, timestamp=1)
    a.commit_export(a.export_snapshot([B], now=0.0), now=0.0, latency_seconds=DAYS)
    store.close()
    store = SQLiteStore(tmp_path / "a.db")
    again = Engine(store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
    assert again.next_deadline() == 2 * DAYS
    assert again.payloads_to_send(now=0.0) == []
    store.close()


# --------------------------------------------------------------------------- receive_payloads


def bundle_payloads(n: int, per_payload: int = 10) -> tuple[Engine, list[bytes]]:
    """A sender with ``n`` messages for B, cut into payloads as a bundle would carry them."""
    a = engine(B)
    for i in range(n):
        a.send(G, f"m{i}".encode(), now=0.0, timestamp=i + 1)
    msgs = a.export_snapshot([B], now=0.0).messages
    return a, [
        encode_payload((), (), (), msgs[i : i + per_payload]) for i in range(0, n, per_payload)
    ]


def failing(payloads: list[bytes], after: int) -> Iterator[bytes]:
    yield from payloads[:after]
    raise OSError(5, "Input/output error")  # the stick was pulled half-way


def test_receive_payloads_applies_everything_in_order() -> None:
    _, payloads = bundle_payloads(30)
    b = engine(A, store=None)
    b.receive_payloads(A, iter(payloads), now=0.0)
    assert delivered(b) == [f"m{i}".encode() for i in range(30)]
    ((_, out),) = b.payloads_to_send(now=0.0)
    assert len(decode_payload(out, LIMITS).acks) == 30


def test_receive_payloads_that_fail_half_way_change_nothing(tmp_path: Path) -> None:
    _, payloads = bundle_payloads(50)
    store = SQLiteStore(tmp_path / "b.db")
    b = engine(A, store=store)
    b.receive_payload(A, encode_payload((), (), (), ()), now=0.0)
    before_stats = (b.statistics().messages_received, b.statistics().messages_delivered)
    with pytest.raises(OSError, match="Input/output"):
        b.receive_payloads(A, failing(payloads, 3), now=0.0)
    assert b.store_view.message_count() == 0
    assert b.events() == []  # no delivery of what the store rolled back
    # Above all, no ACK: the sender would drop messages we do not hold.
    assert b.payloads_to_send(now=0.0) == [] and b.next_deadline() is None
    assert (b.statistics().messages_received, b.statistics().messages_delivered) == before_stats
    # Applied again, whole, everything arrives once.
    b.receive_payloads(A, payloads, now=1.0)
    assert sorted(delivered(b)) == sorted(f"m{i}".encode() for i in range(50))
    b.receive_payloads(A, payloads, now=2.0)
    assert delivered(b) == []
    store.close()


def test_receive_payloads_keep_events_queued_before() -> None:
    _, payloads = bundle_payloads(20)
    c = engine(A)
    c.receive_payload(A, payloads[0], now=0.0)
    with pytest.raises(OSError, match="Input/output"):
        c.receive_payloads(A, failing(payloads, 2), now=0.0)
    # The memory store cannot roll back: it keeps what was applied, and so does the engine,
    # once: the first payload was a duplicate the second time.
    assert delivered(c) == [f"m{i}".encode() for i in range(20)]
    ((_, out),) = c.payloads_to_send(now=0.0)
    assert len(decode_payload(out, LIMITS).acks) == 20


def test_receive_payloads_undo_requests_and_relay(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    b = engine(A, C, store=store, mode=Mode.INTERACTIVE)
    offer = encode_payload((), [b"X" * 32])
    _, payloads = bundle_payloads(3)
    with pytest.raises(OSError, match="Input/output"):
        b.receive_payloads(A, failing([offer, *payloads], 2), now=0.0)
    assert b.outstanding().requests == 0 and b.store_view.record_count() == 0
    assert b.next_deadline() is None and b.payloads_to_send(now=0.0) == []
    store.close()


def test_receive_payloads_undo_consistent_delivery_holds(tmp_path: Path) -> None:
    a = engine(B)
    a.send(G, b"parent", now=0.0, timestamp=1)
    a.send(G, b"child", now=0.0, timestamp=2)
    parent, child = a.export_snapshot([B], now=0.0).messages
    store = SQLiteStore(tmp_path / "b.db")
    b = engine(A, store=store, delivery=DeliveryMode.CONSISTENT)
    with pytest.raises(OSError, match="Input/output"):
        b.receive_payloads(A, failing([carry((child,))], 1), now=0.0)
    assert (b.outstanding().held, b.outstanding().missing_parents) == (0, 0)
    assert b.events() == [] and b.store_view.message_count() == 0
    b.receive_payloads(A, [carry((child,)), carry((parent,))], now=1.0)
    assert delivered(b) == [b"parent", b"child"]
    store.close()


def test_receive_payloads_undo_when_the_store_fails_at_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mvds_node.errors import StoreError

    _, payloads = bundle_payloads(10)
    store = SQLiteStore(tmp_path / "b.db")
    b = engine(A, store=store)
    commit = store._commit

    def disk_full() -> None:
        store._rollback()
        raise StoreError("database or disk is full")

    monkeypatch.setattr(store, "_commit", disk_full)
    with pytest.raises(StoreError, match="disk is full"):
        b.receive_payloads(A, payloads, now=0.0)
    monkeypatch.setattr(store, "_commit", commit)
    try:
        assert store.message_count() == 0 and b.events() == []
        assert b.payloads_to_send(now=0.0) == []
    finally:
        store.close()


def test_receive_payloads_drop_rejections_of_the_undone_block() -> None:
    b = engine(A)
    with pytest.raises(OSError, match="Input/output"):
        b.receive_payloads(A, failing([b"not protobuf \xff"], 1), now=0.0)
    assert b.events() == []
    b.receive_payloads(A, [b"not protobuf \xff"], now=0.0)
    assert [type(e) for e in b.events()] == [PayloadRejected]
