"""One test per bug of the Go reference (REPORT.md §3) showing that our engine does not have it.

The trace replays in ``test_go_traces.py`` show most of these against the Go code's own traffic;
the tests here isolate each behaviour with a minimal setup.
"""

from __future__ import annotations

from collections.abc import Callable

from mvds_node.sim import Net
from mvds_node.sync import (
    DeliveryMode,
    Engine,
    MemoryStore,
    MessageAcked,
    MessageDelivered,
    Mode,
    PayloadRejected,
    RecordType,
    ReferenceBackoff,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)
from mvds_node.sync._config import Limits

G = bytes(range(1, 33))
A, B = b"A" * 32, b"B" * 32
CFG = SyncConfig(epoch_seconds=1.0, backoff=ReferenceBackoff())


def pair(
    mode_a: Mode = Mode.BATCH,
    mode_b: Mode = Mode.BATCH,
    *,
    config: SyncConfig = CFG,
    drop: Callable[[int, bytes, bytes], bool] | None = None,
) -> tuple[Net, Engine, Engine]:
    net = Net(record=True, drop=drop)
    a = net.add(A, Engine(MemoryStore(), config=config, now=0.0))
    b = net.add(B, Engine(MemoryStore(), config=config, now=0.0))
    a.add_group(G)
    b.add_group(G)
    a.add_peer(G, B, mode=mode_a)
    b.add_peer(G, A, mode=mode_b)
    return net, a, b


def delivered(net: Net, node: bytes) -> list[bytes]:
    return [e.message_id for e in net.events[node] if isinstance(e, MessageDelivered)]


def test_1_no_empty_payload_ping_pong() -> None:
    net, a, _ = pair()
    a.send(G, b"m1", now=0.0, timestamp=1)
    net.run(100)
    assert net.log, "the message went out"
    assert all(t.payload for t in net.log)
    # Once acknowledged, nothing at all is sent: the Go code sends an empty payload every epoch.
    assert max(t.round for t in net.log) == 1
    assert net.quiet()


def test_2_offer_replaced_by_request() -> None:
    net, a, _ = pair(Mode.INTERACTIVE, Mode.INTERACTIVE)
    mid = a.send(G, b"m1", now=0.0, timestamp=1)
    net.run(2)  # OFFER at round 0, REQUEST back at round 1
    record = a.store_view.get_record(mid, B)
    assert record is not None and record.type is RecordType.MESSAGE
    net.run(10)
    offers = [t for t in net.log if decode_payload(t.payload, Limits()).offers]
    assert len(offers) == 1


def test_3_message_without_metadata_is_fine_in_interactive_mode() -> None:
    # A pre-4/MVDS-META peer (Status) sends no metadata; the Go code dereferences nil and dies.
    _, _, b = pair(Mode.INTERACTIVE, Mode.INTERACTIVE)
    wire = encode_message(G, 7, b"no metadata", with_metadata=False)
    b.receive_payload(A, encode_payload(messages=[wire]), now=0.0)
    events = b.events()
    assert [type(e) for e in events] == [MessageDelivered]
    assert isinstance(events[0], MessageDelivered) and events[0].parents == ()
    out = b.payloads_to_send(now=0.0)
    assert decode_payload(out[0][1], Limits()).acks == [message_id(G, 7, b"no metadata")]


def test_4_ephemeral_sent_once_even_unacked() -> None:
    net, a, _ = pair(drop=lambda r, s, d: True)  # everything is lost
    a.send(G, b"typing...", now=0.0, timestamp=1, ephemeral=True)
    net.run(50)
    assert len(net.log) == 1
    assert a.store_view.message_count() == 0 and a.store_view.record_count() == 0
    assert a.next_deadline() is None


def test_5_ephemeral_never_a_parent() -> None:
    _, a, _ = pair()
    m1 = a.send(G, b"m1", now=0.0, timestamp=1)
    a.send(G, b"eph", now=0.0, timestamp=2, ephemeral=True)
    m2 = a.send(G, b"m2", now=0.0, timestamp=3)
    stored = a.store_view.get_message(m2)
    assert stored is not None and stored.parents == (m1,)


def test_6_no_duplicate_delivery() -> None:
    _, _, b = pair()
    wire = encode_message(G, 1, b"m1")
    payload = encode_payload(messages=[wire])
    for _ in range(3):
        b.receive_payload(A, payload, now=0.0)
    assert [type(e) for e in b.events()] == [MessageDelivered]
    assert b.statistics().duplicates_received == 2
    # Every copy is acknowledged (the sender may have lost our first ACK).
    assert decode_payload(b.payloads_to_send(now=0.0)[0][1], Limits()).acks == [
        message_id(G, 1, b"m1")
    ]


def test_7_one_record_per_message_and_peer() -> None:
    # Retransmitted OFFERs must not create a second REQUEST (nor a REQUEST a second MESSAGE).
    _, a, b = pair(Mode.INTERACTIVE, Mode.INTERACTIVE)
    mid = message_id(G, 1, b"m1")
    for now in (0.0, 1.0, 2.0):
        b.receive_payload(A, encode_payload(offers=[mid]), now=now)
    assert [(r.type, r.peer) for r in b.store_view.records_for_message(mid)] == [
        (RecordType.REQUEST, A)
    ]
    a.send(G, b"m1", now=0.0, timestamp=1)
    for now in (0.0, 1.0):
        a.receive_payload(B, encode_payload(requests=[mid]), now=now)
    assert [(r.type, r.peer) for r in a.store_view.records_for_message(mid)] == [
        (RecordType.MESSAGE, B)
    ]


def test_8_bad_ids_do_not_abort_the_rest_of_a_list() -> None:
    # The Go SQLite store stops at the first ACK for an unknown record, and at the first REQUEST
    # for an unknown message, losing the rest of the payload.
    _, a, _ = pair()
    m1 = a.send(G, b"m1", now=0.0, timestamp=1)
    m2 = a.send(G, b"m2", now=0.0, timestamp=2)
    a.payloads_to_send(now=0.0)
    unknown = bytes(32)
    a.receive_payload(B, encode_payload(acks=[unknown, m1], requests=[unknown, m2]), now=1.0)
    events = a.events()
    assert MessageAcked(m1, B) in events
    assert any(isinstance(e, PayloadRejected) and not e.whole for e in events)
    record = a.store_view.get_record(m2, B)
    assert record is not None and record.send_epoch == 1  # answered in the next payload


def test_9_consistent_mode_delivers_parents_first() -> None:
    config = SyncConfig(epoch_seconds=1.0, delivery=DeliveryMode.CONSISTENT)
    _, _, b = pair(config=config)
    p = encode_message(G, 1, b"parent")
    pid = message_id(G, 1, b"parent")
    c = encode_message(G, 2, b"child", parents=[pid])
    cid = message_id(G, 2, b"child")
    b.receive_payload(A, encode_payload(messages=[c]), now=0.0)
    assert not any(isinstance(e, MessageDelivered) for e in b.events())
    b.receive_payload(A, encode_payload(messages=[p]), now=1.0)
    assert [e.message_id for e in b.events() if isinstance(e, MessageDelivered)] == [pid, cid]
