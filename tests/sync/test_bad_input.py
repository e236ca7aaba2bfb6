"""Remote input never makes the engine raise: it drops what it must, keeps the rest, and says why.

Random bytes, truncated protobuf, wrong-length IDs, unknown groups, a peer outside the group
asking for our messages, absurd counts. After each, the engine (and its store) still works: a
valid message sent next is delivered.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvds_node.sync import (
    Engine,
    Limits,
    MemoryStore,
    MessageDelivered,
    Mode,
    PayloadRejected,
    SyncConfig,
    encode_message,
    encode_payload,
    message_id,
)
from mvds_node.sync.proto import mvds_pb2

G = b"G" * 32
OTHER_GROUP = b"O" * 32
A, B, STRANGER = b"A" * 32, b"B" * 32, b"S" * 32
LIMITS = Limits(max_payload_bytes=64 * 1024, max_records_per_payload=100, max_parents=4)
CONFIG = SyncConfig(epoch_seconds=1.0, limits=LIMITS)


def engines() -> tuple[Engine, Engine]:
    a = Engine(MemoryStore(), config=CONFIG, now=0.0)
    b = Engine(MemoryStore(), config=CONFIG, now=0.0)
    a.add_group(G)
    a.add_peer(G, B, mode=Mode.BATCH)
    b.add_group(G)
    b.add_peer(G, A, mode=Mode.BATCH)
    return a, b


def rejections(engine: Engine) -> list[PayloadRejected]:
    return [e for e in engine.events() if isinstance(e, PayloadRejected)]


def still_works(a: Engine, b: Engine, now: float) -> None:
    """A valid message from B reaches A after whatever A was fed."""
    mid = b.send(G, b"still alive", now=now, timestamp=424242)
    for peer, payload in b.payloads_to_send(now=now + 1):
        assert peer == A
        a.receive_payload(B, payload, now=now + 1)
    delivered = [e for e in a.events() if isinstance(e, MessageDelivered)]
    assert [e.message_id for e in delivered] == [mid]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048), sender=st.sampled_from([B, STRANGER, b"", b"x" * 100]))
def test_random_bytes_never_raise(data: bytes, sender: bytes) -> None:
    a, b = engines()
    a.receive_payload(sender, data, now=0.0)
    a.payloads_to_send(now=0.0)
    a.events()
    still_works(a, b, 1.0)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=1, max_value=400))
def test_truncated_protobuf_is_rejected_whole(cut: int) -> None:
    a, b = engines()
    wire = encode_message(G, 7, b"x" * 100, parents=(b"p" * 32,))
    payload = encode_payload([b"k" * 32], [], [], [wire, wire])
    truncated = payload[: min(cut, len(payload) - 1)]
    a.receive_payload(B, truncated, now=0.0)
    delivered = [e for e in a.events() if isinstance(e, MessageDelivered)]
    # Either the prefix still parses (then only whole records in it count), or it is refused.
    assert len(delivered) <= 1
    still_works(a, b, 1.0)


def test_peer_outside_every_group_is_refused() -> None:
    a, b = engines()
    a.receive_payload(STRANGER, encode_payload([], [], [], [encode_message(G, 1, b"x")]), now=0.0)
    (rej,) = rejections(a)
    assert rej.peer == STRANGER and rej.whole and "not a member" in rej.reason
    assert a.statistics.messages_delivered == 0
    still_works(a, b, 1.0)


def test_wrong_length_ids_are_dropped_and_the_rest_kept() -> None:
    a, _b = engines()
    good = encode_message(G, 1, b"good")
    pb = mvds_pb2.Payload(
        acks=[b"short", b"z" * 33],
        offers=[b"o" * 31],
        requests=[b""],
        messages=[mvds_pb2.Message.FromString(good)],
    )
    a.receive_payload(B, pb.SerializeToString(), now=0.0)
    events = a.events()
    dropped = sum(e.dropped for e in events if isinstance(e, PayloadRejected))
    assert dropped == 4
    assert all(not e.whole for e in events if isinstance(e, PayloadRejected))
    assert [e.body for e in events if isinstance(e, MessageDelivered)] == [b"good"]


def test_messages_for_unknown_groups_are_dropped() -> None:
    a, _b = engines()
    foreign = encode_message(OTHER_GROUP, 1, b"not ours")
    ours = encode_message(G, 1, b"ours")
    a.receive_payload(B, encode_payload([], [], [], [foreign, ours]), now=0.0)
    events = a.events()
    assert [e.body for e in events if isinstance(e, MessageDelivered)] == [b"ours"]
    (rej,) = [e for e in events if isinstance(e, PayloadRejected)]
    assert "group we do not sync" in rej.reason
    assert a._store.get_message(message_id(OTHER_GROUP, 1, b"not ours")) is None


def test_peer_outside_the_group_cannot_fetch_its_messages() -> None:
    a, _ = engines()
    a.add_group(OTHER_GROUP)
    a.add_peer(OTHER_GROUP, STRANGER, mode=Mode.BATCH)
    secret = a.send(G, b"for B only", now=0.0, timestamp=1)
    # STRANGER shares a group with A, but not G; it asks for G's message by ID.
    a.receive_payload(STRANGER, encode_payload([], [], [secret], []), now=0.0)
    for peer, payload in a.payloads_to_send(now=5.0):
        if peer == STRANGER:
            assert b"for B only" not in payload
    assert any(isinstance(e, PayloadRejected) for e in a.events())


def test_absurd_record_counts_reject_the_payload_whole() -> None:
    a, b = engines()
    flood = encode_payload(
        [bytes([i % 256]) * 32 for i in range(LIMITS.max_records_per_payload + 1)]
    )
    a.receive_payload(B, flood, now=0.0)
    (rej,) = rejections(a)
    assert rej.whole and "records exceed" in rej.reason
    still_works(a, b, 1.0)


def test_oversized_payload_is_rejected_before_parsing() -> None:
    a, b = engines()
    a.receive_payload(B, b"\x00" * (LIMITS.max_payload_bytes + 1), now=0.0)
    (rej,) = rejections(a)
    assert rej.whole and "exceeds" in rej.reason
    still_works(a, b, 1.0)


def test_bad_parents_drop_only_that_message() -> None:
    a, _b = engines()
    wrong_length = mvds_pb2.Message(group_id=G, timestamp=1, body=b"bad parent")
    wrong_length.metadata.parents.append(b"p" * 20)
    too_many = mvds_pb2.Message(group_id=G, timestamp=2, body=b"too many parents")
    too_many.metadata.parents.extend([bytes([i]) * 32 for i in range(LIMITS.max_parents + 1)])
    self_parent = mvds_pb2.Message(group_id=G, timestamp=3, body=b"own parent")
    self_parent.metadata.parents.append(message_id(G, 3, b"own parent"))
    ok = mvds_pb2.Message(group_id=G, timestamp=4, body=b"fine")
    pb = mvds_pb2.Payload(messages=[wrong_length, too_many, self_parent, ok])
    a.receive_payload(B, pb.SerializeToString(), now=0.0)
    events = a.events()
    assert [e.body for e in events if isinstance(e, MessageDelivered)] == [b"fine"]
    assert sum(e.dropped for e in events if isinstance(e, PayloadRejected)) == 3


def test_metadata_garbage_is_refused() -> None:
    a, b = engines()
    # Field 6004 (metadata) holding bytes that are not a Metadata message.
    garbage = encode_message(G, 1, b"x", with_metadata=False) + b"\xa2\xf7\x02\x03\xff\xff\xff"
    a.receive_payload(B, b"\xe2\xb8\x02" + bytes([len(garbage)]) + garbage, now=0.0)
    assert a.statistics.messages_delivered == 0
    assert rejections(a)
    still_works(a, b, 1.0)


ID = st.binary(min_size=0, max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    acks=st.lists(ID, max_size=5),
    offers=st.lists(ID, max_size=5),
    requests=st.lists(ID, max_size=5),
    groups=st.lists(st.sampled_from([G, OTHER_GROUP, b"", b"g" * 70]), max_size=4),
    bodies=st.lists(st.binary(max_size=64), max_size=4),
    parents=st.lists(ID, max_size=6),
    sender=st.sampled_from([B, STRANGER]),
)
def test_valid_protobuf_hostile_content_never_raises(
    acks: list[bytes],
    offers: list[bytes],
    requests: list[bytes],
    groups: list[bytes],
    bodies: list[bytes],
    parents: list[bytes],
    sender: bytes,
) -> None:
    a, b = engines()
    a.send(G, b"ours", now=0.0, timestamp=1)
    messages = []
    for i, (group, body) in enumerate(zip(groups, bodies, strict=False)):
        m = mvds_pb2.Message(group_id=group, timestamp=i, body=body)
        m.metadata.parents.extend(parents)
        messages.append(m)
    pb = mvds_pb2.Payload(acks=acks, offers=offers, requests=requests, messages=messages)
    a.receive_payload(sender, pb.SerializeToString(), now=0.0)
    a.payloads_to_send(now=1.0)
    delivered = [e for e in a.events() if isinstance(e, MessageDelivered)]
    for e in delivered:
        assert e.group_id == G and sender == B
        assert all(len(p) == 32 for p in e.parents)
    still_works(a, b, 2.0)
