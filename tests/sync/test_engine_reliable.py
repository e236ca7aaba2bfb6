"""Peers on a reliable live connection (``Engine.set_peer_reliable``): a send writes its record
once, already counted as transmitted, and the first transmission goes out from memory.

What must hold: the payloads are the ones the usual path produces (one per peer per epoch unless
a full payload's worth is waiting, parents before children, the drain budget respected); the
record is written at the send and deleted at the ACK, never rewritten in between; and nothing is
lost when the first transmission never happens (the carrier refuses the payload, the connection
goes down, the process dies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mvds_node.sim import Net
from mvds_node.sync import (
    Engine,
    MemoryStore,
    MessageAcked,
    MessageDelivered,
    Mode,
    Record,
    RecordType,
    SQLiteStore,
    Store,
    SyncConfig,
    decode_payload,
    message_id,
)

G = b"G" * 32
A, B = b"A" * 32, b"B" * 32
LIMITS = SyncConfig().limits


def sender(store: Store | None = None, **kw: Any) -> Engine:
    e = Engine(
        store if store is not None else MemoryStore(),
        config=SyncConfig(epoch_seconds=1.0, **kw),
        now=0.0,
    )
    e.add_group(G)
    e.add_peer(G, B)
    e.set_peer_latency(B, 30.0)  # as the node does for a TCP peer: retransmit after 60 epochs
    e.set_peer_reliable(B, True, now=0.0)
    return e


class CountingStore(MemoryStore):  # type: ignore[misc]
    """A memory store that counts record writes."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put_records(self, records: Any) -> None:
        records = list(records)
        self.puts += len(records)
        super().put_records(records)


def bodies(payload: bytes) -> list[bytes]:
    return [m.body for m in decode_payload(payload, LIMITS).messages]


def test_the_record_is_written_once_and_the_message_goes_out_from_memory() -> None:
    store = CountingStore()
    a = sender(store)
    mid = a.send(G, b"one", now=0.2, timestamp=1)
    r = store.get_record(mid, B)
    assert r is not None and (r.send_count, r.first_epoch) == (1, 0)
    assert r.send_epoch >= 60, "due again only after the retransmission gap"
    assert a.next_deadline() == 0.0, "the first transmission is due now"
    (out,) = a.payloads_to_send(now=0.2)
    assert out[0] == B and bodies(out[1]) == [b"one"]
    assert store.puts == 1, "not rewritten when transmitted"
    assert a.payloads_to_send(now=0.5) == []
    # One payload per peer per epoch, as on the usual path.
    a.send(G, b"two", now=0.6, timestamp=2)
    assert a.payloads_to_send(now=0.6) == []
    assert a.next_deadline() == 1.0
    (out,) = a.payloads_to_send(now=1.0)
    assert bodies(out[1]) == [b"two"]
    # The ACK deletes the record.
    ack = Engine(MemoryStore(), config=SyncConfig(epoch_seconds=1.0), now=0.0)
    ack.add_group(G)
    ack.add_peer(G, A)
    ack.receive_payload(A, out[1], now=1.0)
    ((_, reply),) = ack.payloads_to_send(now=1.0)
    a.receive_payload(B, reply, now=1.1)
    assert store.get_record(message_id(G, 2, b"two"), B) is None
    assert any(isinstance(e, MessageAcked) for e in a.events())


def test_a_bulk_send_is_delivered_in_order_within_the_budget() -> None:
    net = Net()
    a = net.add(A, sender(drain_budget_bytes=4096))
    b = net.add(B, Engine(MemoryStore(), config=SyncConfig(epoch_seconds=1.0), now=0.0))
    b.add_group(G)
    b.add_peer(G, A)
    with a.batch():
        for i in range(100):
            a.send(G, b"m%03d" % i + b"." * 200, now=0.0, timestamp=i)
    net.record = True
    net.run_until(lambda: len(net.events[B]) >= 100, max_rounds=100)
    got = [e.body[:4] for e in net.events[B] if isinstance(e, MessageDelivered)]
    assert got == [b"m%03d" % i for i in range(100)]
    assert all(len(t.payload) < 4096 + 300 for t in net.log if t.sender == A)
    net.run_until(net.quiet, max_rounds=50)
    assert a.statistics().messages_sent == 100, "each sent once"


def test_a_payload_the_carrier_refuses_is_retried_soon() -> None:
    store = MemoryStore()
    a = sender(store)
    mid = a.send(G, b"refused", now=0.0, timestamp=1)
    ((_, payload),) = a.payloads_to_send(now=0.0)
    a.payload_not_sent(B, payload, now=0.0)
    r = store.get_record(mid, B)
    assert r is not None and (r.send_count, r.send_epoch) == (0, 1)
    (out,) = a.payloads_to_send(now=1.0)
    assert bodies(out[1]) == [b"refused"]


def test_a_connection_that_goes_down_re_arms_what_was_waiting() -> None:
    store = MemoryStore()
    a = sender(store)
    mid = a.send(G, b"waiting", now=0.0, timestamp=1)
    a.set_peer_reliable(B, False, now=0.5)
    r = store.get_record(mid, B)
    assert r == Record(mid, B, RecordType.MESSAGE, G, 0, 0, -1)
    # It goes out over whatever carries B now, as a usual record.
    (out,) = a.payloads_to_send(now=0.5)
    assert bodies(out[1]) == [b"waiting"]


def test_reset_peer_takes_over_from_memory_without_duplicates() -> None:
    a = sender()
    a.send(G, b"once", now=0.0, timestamp=1)
    assert a.reset_peer(B, now=0.0) == 1
    (out,) = a.payloads_to_send(now=0.0)
    assert bodies(out[1]) == [b"once"]
    assert a.payloads_to_send(now=1.0) == []


def test_a_crash_before_the_first_transmission_loses_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    a = sender(store)
    a.send(G, b"durable", now=0.0, timestamp=1)
    store.close()  # the process dies before the payload is drained
    store = SQLiteStore(tmp_path / "a.db")
    try:
        a = Engine(store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
        a.reset_peer(B, now=0.0)  # what the node does when the connection comes back
        (out,) = a.payloads_to_send(now=0.0)
        assert bodies(out[1]) == [b"durable"]
    finally:
        store.close()


def test_interactive_peers_get_the_offer_from_memory() -> None:
    a = Engine(MemoryStore(), config=SyncConfig(epoch_seconds=1.0), now=0.0)
    a.add_group(G)
    a.add_peer(G, B, mode=Mode.INTERACTIVE)
    a.set_peer_reliable(B, True, now=0.0)
    mid = a.send(G, b"offered", now=0.0, timestamp=1)
    ((_, payload),) = a.payloads_to_send(now=0.0)
    d = decode_payload(payload, LIMITS)
    assert (d.offers, d.messages) == ([mid], [])


def test_a_peer_that_left_the_group_gets_nothing() -> None:
    a = sender()
    a.send(G, b"too late", now=0.0, timestamp=1)
    a.remove_peer(G, B)
    assert a.payloads_to_send(now=0.0) == []
    assert a.payloads_to_send(now=100.0) == []


def test_a_full_payload_waiting_goes_out_within_the_epoch_a_smaller_one_waits() -> None:
    a = sender()
    a.send(G, b"small", now=0.1, timestamp=1)
    assert len(a.payloads_to_send(now=0.1)) == 1
    a.send(G, b"later", now=0.2, timestamp=2)
    assert a.payloads_to_send(now=0.2) == [], "one payload per epoch for what fits in one"
    assert a.next_deadline() == 1.0
    # A bulk sender stores a full payload's worth in the same epoch: it goes out at once.
    big = [bytes([i]) * (LIMITS.max_payload_bytes // 4) for i in range(5)]
    a.send_many(G, big, now=0.3, timestamp=3)
    assert a.next_deadline() == 0.0, "due now, not at the next epoch"
    out = a.payloads_to_send(now=0.3)
    sent = [b for _, p in out for b in bodies(p)]
    assert sent == [b"later", *big], "in order, the smaller send that waited first"
    a.send(G, b"after", now=0.4, timestamp=4)
    assert a.payloads_to_send(now=0.4) == [], "the epoch's rule holds again for small sends"
    assert [b for _, p in a.payloads_to_send(now=1.0) for b in bodies(p)] == [b"after"]


def test_sends_of_a_batch_that_rolled_back_never_go_out(tmp_path: Path) -> None:
    # Batch mode would offer the IDs first; an offer of a message that was never stored is
    # as wrong as the message itself.
    for mode in (Mode.INTERACTIVE, Mode.BATCH):
        store = SQLiteStore(tmp_path / f"{mode.value}.db")
        a = sender(store)
        a.add_peer(G, B, mode=mode)
        kept = a.send(G, b"kept", now=0.1, timestamp=1)
        try:
            with a.batch():
                a.send(G, b"undone", now=0.2, timestamp=2)
                a.send_many(G, [b"undone too", b"and this"], now=0.2, timestamp=3)
                raise RuntimeError("the application gave up")
        except RuntimeError:
            pass
        (out,) = a.payloads_to_send(now=0.3)
        payload = decode_payload(out[1], LIMITS)
        sent = [m.body for m in payload.messages] + [bytes(i) for i in payload.offers]
        assert sent in ([b"kept"], [kept]), mode
        store.close()
