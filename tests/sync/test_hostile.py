"""A hostile or broken peer never breaks the engine (STYLE.md rule 8).

``Engine.receive_payload`` never raises on remote input. What it cannot use it drops and reports
as ``PayloadRejected``, with the rule documented in ``_wire.decode_payload``:

* a payload over ``Limits.max_payload_bytes``, with more than ``Limits.max_records_per_payload``
  records, that does not parse, or from a peer in no group, is refused *whole*: nothing of it is
  applied;
* otherwise each record stands on its own: a bad ID, an invalid message, a message for a group
  we do not sync (or from a peer outside it), a REQUEST for a message we do not hold or that the
  peer may not see, is dropped and counted, and every valid record beside it still applies.

The world used here: we are A. B and D share group G with us, C shares only group H, STRANGER
shares nothing. A holds one message in each group. After any input, A must still work (a valid
message from B is delivered and acknowledged) and must never send a peer a message of a group
that peer is not in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvds_node.sync import (
    DeliveryMode,
    Engine,
    Event,
    Limits,
    MemoryStore,
    MessageAcked,
    MessageDelivered,
    PayloadRejected,
    ReferenceBackoff,
    SQLiteStore,
    Store,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)
from mvds_node.sync._wire import DecodedPayload
from mvds_node.sync.proto import mvds_pb2

G, H = b"G" * 32, b"H" * 32
UNKNOWN_GROUP = b"U" * 32
A, B, C, D = b"A" * 32, b"B" * 32, b"C" * 32, b"D" * 32
STRANGER = b"S" * 32
MEMBERS = {B: {G}, D: {G}, C: {H}}
SECRET_BODY, H_BODY = b"for G only", b"for H only"
SECRET = message_id(G, 1, SECRET_BODY)
H_MESSAGE = message_id(H, 2, H_BODY)
HELD = {SECRET: G, H_MESSAGE: H}
LIMITS = Limits(
    max_payload_bytes=1200,
    max_records_per_payload=12,
    max_body_bytes=200,
    max_group_id_bytes=64,
    max_parents=4,
)
# ReferenceBackoff: a record first sent at epoch 0 is next due at epoch 2, so anything that goes
# out at epoch 1 was caused by the input under test.
CONFIG = SyncConfig(epoch_seconds=1.0, limits=LIMITS, backoff=ReferenceBackoff())
HOSTILE_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

StoreFactory = Callable[[], Store]
STORES: dict[str, StoreFactory] = {"memory": MemoryStore, "sqlite": SQLiteStore.memory}


@dataclass
class World:
    store: Store
    a: Engine
    b: Engine
    """B's own engine: a well-behaved member of G, to show that A still works."""
    counter: list[int] = field(default_factory=lambda: [10_000])

    def close(self) -> None:
        self.store.close()


def make_world(store: Store | None = None, *, config: SyncConfig = CONFIG) -> World:
    store = MemoryStore() if store is None else store
    a = Engine(store, config=config, now=0.0)
    a.add_group(G)
    a.add_peer(G, B)
    a.add_peer(G, D)
    a.add_group(H)
    a.add_peer(H, C)
    assert a.send(G, SECRET_BODY, now=0.0, timestamp=1) == SECRET
    assert a.send(H, H_BODY, now=0.0, timestamp=2) == H_MESSAGE
    sent = {peer for peer, _ in a.payloads_to_send(now=0.0)}  # first transmission, epoch 0
    assert sent == {B, C, D}
    b = Engine(MemoryStore(), config=config, now=0.0)
    b.add_group(G)
    b.add_peer(G, A)
    return World(store, a, b)


T = TypeVar("T", bound=Event)


def of(kind: type[T], events: list[Event]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def state(w: World) -> tuple[int, int]:
    return (w.store.message_count(), w.store.record_count())


def outbox(w: World, start: int, stop: int) -> list[tuple[int, bytes, bytes]]:
    """Every payload A sends in epochs ``start`` to ``stop - 1``: (epoch, peer, payload)."""
    out: list[tuple[int, bytes, bytes]] = []
    for epoch in range(start, stop):
        out.extend((epoch, peer, data) for peer, data in w.a.payloads_to_send(now=float(epoch)))
    return out


def assert_no_leak(out: list[tuple[int, bytes, bytes]]) -> None:
    """No peer gets a message of a group it is not in; peers in no group get nothing."""
    for _, peer, data in out:
        assert peer in MEMBERS, f"a payload went to {peer!r}"
        for m in decode_payload(data, Limits()).messages:
            assert m.group_id in MEMBERS[peer], f"{peer!r} got a message of {m.group_id!r}"


def still_works(w: World, now: float) -> None:
    """A valid message from B is delivered by A, and A's ACK reaches B."""
    w.counter[0] += 1
    body = b"still alive %d" % w.counter[0]
    mid = w.b.send(G, body, now=now, timestamp=w.counter[0])
    for peer, data in w.b.payloads_to_send(now=now):
        assert peer == A
        w.a.receive_payload(B, data, now=now)
    delivered = of(MessageDelivered, w.a.events())
    assert [(e.message_id, e.body, e.sender) for e in delivered] == [(mid, body, B)]
    for peer, data in w.a.payloads_to_send(now=now + 1):
        if peer == B:
            w.b.receive_payload(A, data, now=now + 1)
    assert MessageAcked(mid, A) in w.b.events()


def merged(payloads: Iterable[bytes]) -> DecodedPayload:
    """One peer's payloads of an epoch (a large one is split), decoded as one."""
    out = DecodedPayload()
    for data in payloads:
        p = decode_payload(data, Limits())
        assert not p.dropped
        out.acks += p.acks
        out.offers += p.offers
        out.requests += p.requests
        out.messages += p.messages
    return out


def single_rejection(events: list[Event]) -> PayloadRejected:
    assert len(events) == 1, events
    (e,) = events
    assert isinstance(e, PayloadRejected)
    return e


# ---------------------------------------------------------------------------- random bytes

TAGS = [
    b"\xca\xb8\x02",  # acks
    b"\xd2\xb8\x02",  # offers
    b"\xda\xb8\x02",  # requests
    b"\xe2\xb8\x02",  # messages
    b"\xea\xb8\x02",  # group_offers (Status fork)
    b"\x8a\xf7\x02",  # group_id
    b"\x90\xf7\x02",  # timestamp
    b"\x9a\xf7\x02",  # body
    b"\xa2\xf7\x02",  # metadata
    b"\x0a",  # parents
    b"\x10",  # ephemeral
    b"\x20",  # a length of 32
    b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # the longest varint
]
PIECES = [
    encode_payload(acks=[SECRET]),
    encode_payload(requests=[SECRET, H_MESSAGE]),
    encode_payload(offers=[b"o" * 32]),
    encode_payload(messages=[encode_message(G, 7, b"valid", parents=[SECRET])]),
    encode_payload(messages=[encode_message(H, 8, b"valid in H")]),
    encode_payload(messages=[encode_message(G, 9, b"eph", ephemeral=True)]),
]
NEAR_PAYLOADS = st.lists(
    st.one_of(st.binary(max_size=40), st.sampled_from(TAGS), st.sampled_from(PIECES)),
    max_size=12,
).map(b"".join)
SENDERS = [B, C, D, STRANGER, b"", b"x", b"P" * 200]


@pytest.mark.parametrize("store_kind", sorted(STORES))
@HOSTILE_SETTINGS
@given(data=st.one_of(st.binary(max_size=1400), NEAR_PAYLOADS), sender=st.sampled_from(SENDERS))
def test_random_bytes_never_raise(store_kind: str, data: bytes, sender: bytes) -> None:
    w = make_world(STORES[store_kind]())
    try:
        before = state(w)
        w.a.receive_payload(sender, data, now=0.5)
        events = w.a.events()
        for e in of(PayloadRejected, events):
            assert e.peer == sender and e.dropped >= 1 and e.reason
        decoded = decode_payload(data, LIMITS)
        if sender not in MEMBERS:
            assert events == [PayloadRejected(sender, "peer is not a member of any group", 1, True)]
            assert state(w) == before
        elif decoded.whole_payload_rejected:
            # Nothing of it is used: only whole-payload rejections, and no state change.
            assert all(isinstance(e, PayloadRejected) and e.whole for e in events)
            assert sum(e.dropped for e in of(PayloadRejected, events)) == sum(
                decoded.dropped.values()
            )
            assert state(w) == before
        else:
            assert not any(e.whole for e in of(PayloadRejected, events))
            # At least what the decoder refused is reported; the engine may refuse more.
            assert sum(e.dropped for e in of(PayloadRejected, events)) >= sum(
                decoded.dropped.values()
            )
            for d in of(MessageDelivered, events):
                assert d.sender == sender and d.group_id in MEMBERS[sender]
        assert_no_leak(outbox(w, 1, 8))
        still_works(w, 9.0)
    finally:
        w.close()


# -------------------------------------------------- valid protobuf, hostile content (oracle)

ANY_ID = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=32, max_size=32),
    st.sampled_from([SECRET, H_MESSAGE]),
)
# Weighted towards IDs and groups that may pass, so that both sides of every rule are seen.
PARENT_ID = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.sampled_from([SECRET, H_MESSAGE]),
    st.binary(max_size=40),
)
GROUPS = st.one_of(
    st.sampled_from([G, H]),
    st.sampled_from([G, H, UNKNOWN_GROUP, b"", b"g", b"L" * 64, b"L" * 65]),
)
# Small, around the body limit, and big enough to take a payload over its limit.
BODIES = st.one_of(
    st.binary(max_size=40),
    st.binary(min_size=195, max_size=205),
    st.binary(min_size=350, max_size=450),
)


@dataclass(frozen=True)
class Hostile:
    """A message as a hostile peer may write it, and what our Limits make of it."""

    group: bytes
    timestamp: int
    body: bytes
    parents: tuple[bytes, ...]
    ephemeral: bool
    expires_at: int
    with_metadata: bool

    @property
    def id(self) -> bytes:
        return message_id(self.group, self.timestamp, self.body)

    def pb(self) -> mvds_pb2.Message:
        m = mvds_pb2.Message(group_id=self.group, timestamp=self.timestamp, body=self.body)
        if self.with_metadata:
            m.metadata.SetInParent()
            m.metadata.parents.extend(self.parents)
            m.metadata.ephemeral = self.ephemeral
            m.metadata.expires_at = self.expires_at
        return m

    def invalid(self) -> bool:
        """Whether the decoder must drop it, by the documented Limits."""
        if not 0 < len(self.group) <= LIMITS.max_group_id_bytes:
            return True
        if len(self.body) > LIMITS.max_body_bytes:
            return True
        if not self.with_metadata:
            return False
        return (
            len(self.parents) > LIMITS.max_parents
            or any(len(p) != 32 for p in self.parents)
            or self.expires_at < 0
            or self.id in self.parents
        )

    def delivered_parents(self) -> tuple[bytes, ...]:
        return () if self.ephemeral or not self.with_metadata else self.parents


@st.composite
def hostile_messages(draw: st.DrawFn) -> list[Hostile]:
    out = []
    for i in range(draw(st.integers(min_value=0, max_value=4))):
        with_metadata = draw(st.booleans())
        out.append(
            Hostile(
                group=draw(GROUPS),
                timestamp=1000 + i,  # distinct IDs within a payload
                body=draw(BODIES),
                parents=tuple(draw(st.lists(PARENT_ID, max_size=5))) if with_metadata else (),
                ephemeral=with_metadata and draw(st.booleans()),
                expires_at=draw(st.sampled_from([0, 0, 1, -1, 2**62])) if with_metadata else 0,
                with_metadata=with_metadata,
            )
        )
    return out


@pytest.mark.parametrize("store_kind", sorted(STORES))
@HOSTILE_SETTINGS
@given(
    sender=st.sampled_from([B, C]),
    acks=st.lists(ANY_ID, max_size=4),
    offers=st.lists(ANY_ID, max_size=3),
    offer_own_messages=st.booleans(),
    requests=st.lists(ANY_ID, max_size=4),
    msgs=hostile_messages(),
)
def test_hostile_records_apply_exactly_as_documented(
    store_kind: str,
    sender: bytes,
    acks: list[bytes],
    offers: list[bytes],
    offer_own_messages: bool,
    requests: list[bytes],
    msgs: list[Hostile],
) -> None:
    if offer_own_messages:
        # The Go reference OFFERs a message again in the payload that carries it (REPORT §3.1).
        offers = offers + [m.id for m in msgs][:1]
    data = mvds_pb2.Payload(
        acks=acks, offers=offers, requests=requests, messages=[m.pb() for m in msgs]
    ).SerializeToString()
    w = make_world(STORES[store_kind]())
    try:
        before = state(w)
        w.a.receive_payload(sender, data, now=0.5)
        events = w.a.events()

        # Refused whole: over a limit. Nothing applies.
        n_records = len(acks) + len(offers) + len(requests) + len(msgs)
        whole_reason = None
        if len(data) > LIMITS.max_payload_bytes:
            whole_reason = f"payload of {len(data)} bytes exceeds {LIMITS.max_payload_bytes}"
        elif n_records > LIMITS.max_records_per_payload:
            whole_reason = (
                f"{n_records} records exceed {LIMITS.max_records_per_payload} per payload"
            )
        if whole_reason is not None:
            assert events == [PayloadRejected(sender, whole_reason, 1, True)]
            assert state(w) == before
            assert outbox(w, 1, 2) == []  # no ACK, no REQUEST, no answer
            still_works(w, 3.0)
            return

        # Record by record.
        groups = MEMBERS[sender]
        valid = [m for m in msgs if not m.invalid()]
        decoded_ids = {m.id for m in valid}
        drops = sum(len(i) != 32 for i in acks + offers + requests) + len(msgs) - len(valid)
        answered = {r for r in requests if len(r) == 32 and HELD.get(r) in groups}
        drops += sum(len(r) == 32 and r not in answered for r in requests)
        delivered = [m for m in valid if m.group in groups]
        drops += len(valid) - len(delivered)

        rejected = of(PayloadRejected, events)
        assert all(e.peer == sender and not e.whole for e in rejected)
        assert sum(e.dropped for e in rejected) == drops
        assert [
            (e.message_id, e.body, e.parents, e.ephemeral, e.sender)
            for e in of(MessageDelivered, events)
        ] == [(m.id, m.body, m.delivered_parents(), m.ephemeral, sender) for m in delivered]
        own_record = {SECRET: B, H_MESSAGE: C}
        assert of(MessageAcked, events) == [
            MessageAcked(i, sender) for i in dict.fromkeys(acks) if own_record.get(i) == sender
        ]
        durable = [m for m in delivered if not m.ephemeral]
        assert w.store.message_count() == before[0] + len(durable)

        # What A sends in the next epoch, caused by this payload alone.
        out = outbox(w, 1, 2)
        got = merged(data for _, peer, data in out if peer == sender)
        # Requested messages the sender may see, and nothing else.
        assert sorted(m.id for m in got.messages) == sorted(answered)
        # ACKs: every durable message it sent us, and every held message it offered.
        held_offers = {o for o in offers if o in HELD}
        assert set(got.acks) == {m.id for m in durable} | held_offers
        # REQUESTs: offered IDs we lack (but not those the payload carried), and missing parents.
        arriving = decoded_ids if len(valid) > 1 else set()
        wanted = {o for o in offers if len(o) == 32 and o not in HELD and o not in decoded_ids}
        wanted |= {p for m in durable for p in m.parents if p not in HELD and p not in arriving}
        assert set(got.requests) == wanted
        assert not got.offers
        # Relay: the other G member gets what B sent in G; nobody gets what C sent in H.
        relayed = merged(data for _, peer, data in out if peer == D).messages
        assert sorted(m.id for m in relayed) == sorted(m.id for m in durable if sender == B)
        assert not any(peer == C for _, peer, _ in out if sender == B)

        assert_no_leak(out + outbox(w, 2, 12))
        still_works(w, 13.0)
    finally:
        w.close()


# ----------------------------------------------------------------------------- truncation


def test_truncated_payloads_apply_only_complete_records() -> None:
    m1 = encode_message(G, 11, b"first", parents=[SECRET])
    m2 = encode_message(G, 12, b"second, no metadata", with_metadata=False)
    m3 = encode_message(G, 13, b"third" * 20)
    records = [
        encode_payload(acks=[SECRET]),
        encode_payload(offers=[b"o" * 32]),
        encode_payload(messages=[m1]),
        encode_payload(messages=[m2]),
        encode_payload(messages=[m3]),
    ]
    ids: list[bytes | None] = [None, None, message_id(G, 11, b"first")]
    ids += [message_id(G, 12, b"second, no metadata"), message_id(G, 13, b"third" * 20)]
    payload = b"".join(records)
    ends = [sum(len(r) for r in records[: i + 1]) for i in range(len(records))]
    for cut in range(len(payload)):
        w = make_world()
        w.a.receive_payload(B, payload[:cut], now=0.5)
        events = w.a.events()
        complete = [i for i, end in enumerate(ends) if end <= cut]
        if cut == 0 or cut in ends:
            # A prefix ending on a record boundary is a valid, shorter payload.
            assert of(PayloadRejected, events) == [], cut
            assert [e.message_id for e in of(MessageDelivered, events)] == [
                ids[i] for i in complete if ids[i] is not None
            ], cut
            assert (of(MessageAcked, events) != []) is (0 in complete), cut
        else:
            rej = single_rejection(events)
            assert rej.whole and rej.reason.startswith("not a protobuf payload"), cut
            assert w.store.get_record(SECRET, B) is not None  # the ACK did not apply
        still_works(w, 3.0)


# ------------------------------------------------------------------ limits, whole payloads


def test_record_count_limit_is_inclusive() -> None:
    good = encode_message(G, 20, b"good")
    filler = [bytes([i]) * 32 for i in range(LIMITS.max_records_per_payload)]
    # At the limit: everything applies, the unknown ACKs are no-ops.
    w = make_world()
    at_limit = encode_payload(acks=[SECRET, *filler[:-2]], messages=[good])
    w.a.receive_payload(B, at_limit, now=0.5)
    events = w.a.events()
    assert of(PayloadRejected, events) == []
    assert MessageAcked(SECRET, B) in events
    assert [e.body for e in of(MessageDelivered, events)] == [b"good"]
    # One more: refused whole, even the valid ACK and message in it.
    w = make_world()
    over = encode_payload(acks=[SECRET, *filler[:-1]], messages=[good])
    w.a.receive_payload(B, over, now=0.5)
    n = LIMITS.max_records_per_payload + 1
    assert w.a.events() == [
        PayloadRejected(
            B, f"{n} records exceed {LIMITS.max_records_per_payload} per payload", 1, True
        )
    ]
    assert w.store.get_record(SECRET, B) is not None
    assert not w.a.has_message(message_id(G, 20, b"good"))
    assert outbox(w, 1, 2) == []  # not even an ACK for the message
    still_works(w, 3.0)


def test_payload_size_limit_is_inclusive() -> None:
    limits = Limits(max_payload_bytes=1200, max_body_bytes=4096)
    config = SyncConfig(epoch_seconds=1.0, limits=limits, backoff=ReferenceBackoff())

    def payload_of(size: int) -> bytes:
        body_len = size
        while len(p := encode_payload(messages=[encode_message(G, 30, b"x" * body_len)])) > size:
            body_len -= 1
        assert len(p) == size
        return p

    w = make_world(config=config)
    w.a.receive_payload(B, payload_of(1200), now=0.5)
    assert [type(e) for e in w.a.events()] == [MessageDelivered]
    w = make_world(config=config)
    too_big = payload_of(1201)
    w.a.receive_payload(B, too_big, now=0.5)
    assert w.a.events() == [PayloadRejected(B, "payload of 1201 bytes exceeds 1200", 1, True)]
    assert w.store.message_count() == 2
    still_works(w, 3.0)


@pytest.mark.parametrize("sender", [STRANGER, b"", b"P" * 1000])
def test_peer_in_no_group_is_refused_whole(sender: bytes) -> None:
    w = make_world()
    before = state(w)
    payload = encode_payload(
        acks=[SECRET],
        offers=[b"o" * 32],
        requests=[SECRET, H_MESSAGE],
        messages=[encode_message(G, 40, b"from nowhere")],
    )
    w.a.receive_payload(sender, payload, now=0.5)
    assert w.a.events() == [PayloadRejected(sender, "peer is not a member of any group", 1, True)]
    assert state(w) == before
    assert w.store.get_record(SECRET, B) is not None
    out = outbox(w, 1, 20)
    assert_no_leak(out)
    assert not any(peer == sender for _, peer, _ in out)
    still_works(w, 21.0)


# ------------------------------------------------------------- records dropped one by one


def test_wrong_length_ids_are_dropped_and_the_rest_applies() -> None:
    w = make_world()
    unknown = b"u" * 32
    good = encode_message(G, 50, b"good")
    pb = mvds_pb2.Payload(
        acks=[b"short", SECRET],
        offers=[b"o" * 33, unknown],
        requests=[b"", SECRET],
        messages=[mvds_pb2.Message.FromString(good)],
    )
    w.a.receive_payload(B, pb.SerializeToString(), now=0.5)
    events = w.a.events()
    assert {(e.reason, e.dropped, e.whole) for e in of(PayloadRejected, events)} == {
        ("ack id of 5 bytes (want 32)", 1, False),
        ("offer id of 33 bytes (want 32)", 1, False),
        ("request id of 0 bytes (want 32)", 1, False),
    }
    assert MessageAcked(SECRET, B) in events
    assert [e.body for e in of(MessageDelivered, events)] == [b"good"]
    got = merged(data for _, peer, data in outbox(w, 1, 2) if peer == B)
    assert got.requests == [unknown]  # the valid offer
    assert [m.id for m in got.messages] == [SECRET]  # the valid request, answered at once
    assert got.acks == [message_id(G, 50, b"good")]  # the valid message


def test_peer_outside_the_group_cannot_fetch_its_messages() -> None:
    w = make_world()
    w.a.receive_payload(C, encode_payload(requests=[SECRET]), now=0.5)
    rej = single_rejection(w.a.events())
    assert (rej.peer, rej.reason, rej.dropped, rej.whole) == (
        C,
        "request from a peer outside the message's group",
        1,
        False,
    )
    out = outbox(w, 1, 40)
    assert_no_leak(out)
    assert not any(peer == C and SECRET_BODY in data for _, peer, data in out)
    # A member asking for the same message gets it in its next payload.
    w.a.receive_payload(D, encode_payload(requests=[SECRET]), now=40.5)
    got = merged(data for _, peer, data in outbox(w, 41, 42) if peer == D)
    assert [m.id for m in got.messages] == [SECRET]


def test_peer_outside_the_group_cannot_cancel_a_members_delivery() -> None:
    # C knows SECRET's ID; its ACK or OFFER of it says nothing about B.
    w = make_world()
    w.a.receive_payload(C, encode_payload(acks=[SECRET], offers=[SECRET]), now=0.5)
    assert of(MessageAcked, w.a.events()) == []
    record = w.store.get_record(SECRET, B)
    assert record is not None and record.send_epoch == 2
    out = outbox(w, 1, 3)
    assert sorted(p for e, p, data in out if e == 2 and SECRET_BODY in data) == [B, D]


def test_messages_outside_our_groups_are_dropped_not_acked() -> None:
    w = make_world()
    foreign = encode_message(UNKNOWN_GROUP, 60, b"not ours")
    other_group = encode_message(H, 61, b"B is not in H")
    ours = encode_message(G, 62, b"ours")
    w.a.receive_payload(B, encode_payload(messages=[foreign, other_group, ours]), now=0.5)
    events = w.a.events()
    assert [e.body for e in of(MessageDelivered, events)] == [b"ours"]
    assert {(e.reason, e.dropped) for e in of(PayloadRejected, events)} == {
        ("message for a group we do not sync", 1),
        ("message from a peer outside its group", 1),
    }
    assert not w.a.has_message(message_id(UNKNOWN_GROUP, 60, b"not ours"))
    assert not w.a.has_message(message_id(H, 61, b"B is not in H"))
    out = outbox(w, 1, 2)
    assert merged(data for _, peer, data in out if peer == B).acks == [message_id(G, 62, b"ours")]
    # Only "ours" is relayed (to D); C, in H, gets nothing.
    assert sorted(o[1] for o in out) == [B, D]
    assert [m.body for m in merged(data for _, peer, data in out if peer == D).messages] == [
        b"ours"
    ]
    assert_no_leak(out)


def hostile_message(
    *,
    group: bytes = G,
    timestamp: int = 70,
    body: bytes = b"hostile",
    parents: list[bytes] | None = None,
    expires_at: int = 0,
    self_parent: bool = False,
) -> mvds_pb2.Message:
    m = mvds_pb2.Message(group_id=group, timestamp=timestamp, body=body)
    m.metadata.parents.extend(parents or [])
    if self_parent:
        m.metadata.parents.append(message_id(group, timestamp, body))
    m.metadata.expires_at = expires_at
    return m


WIDE_GROUP = b"W" * 64
MessageFactory = Callable[[], mvds_pb2.Message]
INVALID: dict[str, tuple[MessageFactory, str]] = {
    "empty group id": (lambda: hostile_message(group=b""), "group id of 0 bytes (want 1..64)"),
    "long group id": (
        lambda: hostile_message(group=b"L" * 65),
        "group id of 65 bytes (want 1..64)",
    ),
    "body over the limit": (
        lambda: hostile_message(body=b"b" * 201),
        "body of 201 bytes exceeds 200",
    ),
    "too many parents": (
        lambda: hostile_message(parents=[bytes([i]) * 32 for i in range(5)]),
        "5 parents exceed 4",
    ),
    "short parent": (
        lambda: hostile_message(parents=[SECRET, b"p" * 31]),
        "parent id not 32 bytes",
    ),
    "long parent": (lambda: hostile_message(parents=[b"p" * 33]), "parent id not 32 bytes"),
    "negative expiry": (lambda: hostile_message(expires_at=-5), "negative expiry"),
    "own parent": (
        lambda: hostile_message(self_parent=True),
        "message names itself as parent",
    ),
}
AT_LIMITS: dict[str, MessageFactory] = {
    "group id at the limit": lambda: hostile_message(group=WIDE_GROUP),
    "body at the limit": lambda: hostile_message(body=b"b" * 200),
    "parents at the limit": lambda: hostile_message(parents=[bytes([i]) * 32 for i in range(4)]),
    "int64 extremes": lambda: hostile_message(timestamp=-(2**63), expires_at=2**63 - 1),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_message_is_dropped_alone(case: str) -> None:
    make, reason = INVALID[case]
    w = make_world()
    ok = hostile_message(timestamp=71, body=b"fine")
    w.a.receive_payload(B, mvds_pb2.Payload(messages=[make(), ok]).SerializeToString(), now=0.5)
    events = w.a.events()
    assert of(PayloadRejected, events) == [PayloadRejected(B, reason, 1, False)]
    assert [e.body for e in of(MessageDelivered, events)] == [b"fine"]
    assert w.store.message_count() == 3
    to_b = merged(data for _, peer, data in outbox(w, 1, 2) if peer == B)
    assert to_b.acks == [message_id(G, 71, b"fine")]


@pytest.mark.parametrize("case", sorted(AT_LIMITS))
def test_message_at_the_limits_is_accepted(case: str) -> None:
    w = make_world()
    w.a.add_group(WIDE_GROUP)
    w.a.add_peer(WIDE_GROUP, B)
    m = AT_LIMITS[case]()
    w.a.receive_payload(B, mvds_pb2.Payload(messages=[m]).SerializeToString(), now=0.5)
    events = w.a.events()
    assert of(PayloadRejected, events) == []
    (e,) = of(MessageDelivered, events)
    assert (e.group_id, e.timestamp, e.body, list(e.parents)) == (
        m.group_id,
        m.timestamp,
        m.body,
        list(m.metadata.parents),
    )
    assert w.a.has_message(e.message_id)


def test_metadata_garbage_refuses_the_payload() -> None:
    w = make_world()
    garbage = encode_message(G, 80, b"x", with_metadata=False) + b"\xa2\xf7\x02\x03\xff\xff\xff"
    w.a.receive_payload(B, encode_payload(acks=[SECRET], messages=[garbage]), now=0.5)
    rej = single_rejection(w.a.events())
    assert rej.whole and rej.reason.startswith("not a protobuf payload")
    assert w.store.get_record(SECRET, B) is not None
    still_works(w, 3.0)


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def test_unknown_fields_anywhere_are_ignored() -> None:
    # Newer or forked peers add fields (Status: group_offers = 5005); they must not cost us
    # the records we know.
    w = make_world()
    plain = encode_message(G, 81, b"x", with_metadata=False)
    unknown_in_meta = varint(99 << 3) + b"\x01"  # Metadata field 99 = 1
    wire = plain + b"\xa2\xf7\x02" + varint(len(unknown_in_meta)) + unknown_in_meta
    wire += varint(7007 << 3) + b"\x07"  # Message field 7007 = 7
    group_offer = b"\x0a\x01G"
    payload = encode_payload(messages=[wire]) + b"\xea\xb8\x02" + varint(3) + group_offer
    w.a.receive_payload(B, payload, now=0.5)
    events = w.a.events()
    assert of(PayloadRejected, events) == []
    (e,) = of(MessageDelivered, events)
    assert e.message_id == message_id(G, 81, b"x")
    # What we store and relay is the canonical message, without the fields we do not know.
    (relayed,) = merged(data for _, peer, data in outbox(w, 1, 2) if peer == D).messages
    assert relayed.wire == encode_message(G, 81, b"x")


def test_ephemeral_message_with_parents_is_delivered_without_them() -> None:
    w = make_world()
    m = hostile_message(timestamp=90, body=b"typing", parents=[SECRET])
    m.metadata.ephemeral = True
    payload = mvds_pb2.Payload(messages=[m, m]).SerializeToString()
    w.a.receive_payload(B, payload, now=0.5)
    w.a.receive_payload(B, payload, now=0.6)
    events = w.a.events()
    assert of(PayloadRejected, events) == []
    (e,) = of(MessageDelivered, events)  # once, however many copies
    assert (e.body, e.ephemeral, e.parents) == (b"typing", True, ())
    assert not w.a.has_message(e.message_id)
    assert outbox(w, 1, 2) == []  # never acknowledged, never relayed


# ------------------------------------------------------------- regressions and cycles


def test_offer_and_message_in_one_payload_then_offered_again() -> None:
    # The Go reference keeps its OFFER beside the MESSAGE (REPORT §3.1), so one payload carries
    # both and the OFFER comes again later. We used to ask for the message we had just stored,
    # and the second OFFER (or a REQUEST) of it raised KeyError.
    w = make_world()
    wire = encode_message(G, 100, b"go style")
    mid = message_id(G, 100, b"go style")
    w.a.receive_payload(B, encode_payload(offers=[mid], messages=[wire]), now=0.5)
    assert [e.message_id for e in of(MessageDelivered, w.a.events())] == [mid]
    assert [(r.peer, r.type.name) for r in w.store.records_for_message(mid)] == [(D, "MESSAGE")]
    w.a.receive_payload(B, encode_payload(offers=[mid]), now=0.7)
    w.a.receive_payload(B, encode_payload(requests=[mid]), now=0.8)
    assert of(PayloadRejected, w.a.events()) == []
    got = merged(data for _, peer, data in outbox(w, 1, 2) if peer == B)
    assert got.requests == []
    assert got.acks == [mid]
    assert [m.id for m in got.messages] == [mid]


def test_offer_from_elsewhere_of_a_message_we_then_send() -> None:
    # C (in H) offers an ID before we send a message with that ID in G: the REQUEST to C is
    # stale once we hold it, and C offering it again must not break anything.
    w = make_world()
    mid = message_id(G, 110, b"predictable")
    w.a.receive_payload(C, encode_payload(offers=[mid]), now=0.5)
    assert w.a.send(G, b"predictable", now=0.6, timestamp=110) == mid
    w.a.receive_payload(C, encode_payload(offers=[mid]), now=0.7)
    w.a.receive_payload(C, encode_payload(requests=[mid]), now=0.8)
    events = w.a.events()
    assert [e.reason for e in of(PayloadRejected, events)] == [
        "request from a peer outside the message's group"
    ]
    out = outbox(w, 1, 10)
    assert_no_leak(out)
    to_c = [decode_payload(data, Limits()) for _, peer, data in out if peer == C]
    assert all(mid not in p.requests for p in to_c)
    still_works(w, 11.0)


def test_ack_of_an_id_we_are_asking_for_changes_nothing() -> None:
    # MessageAcked means a peer has one of the messages we were sending it. An ACK for an ID we
    # are requesting from that peer is nonsense: we keep asking, and tell the app nothing.
    w = make_world()
    wanted = b"w" * 32
    w.a.receive_payload(B, encode_payload(offers=[wanted]), now=0.5)
    w.a.receive_payload(B, encode_payload(acks=[wanted]), now=0.6)
    assert w.a.events() == []
    to_b = merged(data for _, peer, data in outbox(w, 1, 2) if peer == B)
    assert to_b.requests == [wanted]


def test_duplicate_acks_give_one_event() -> None:
    w = make_world()
    w.a.receive_payload(B, encode_payload(acks=[SECRET, SECRET, SECRET]), now=0.5)
    assert w.a.events() == [MessageAcked(SECRET, B)]


def test_parent_cycle_in_consistent_mode_holds_without_breaking() -> None:
    # Metadata is not covered by the ID, so a peer can make two messages name each other.
    config = SyncConfig(
        epoch_seconds=1.0,
        limits=LIMITS,
        backoff=ReferenceBackoff(),
        delivery=DeliveryMode.CONSISTENT,
    )
    w = make_world(config=config)
    id1, id2 = message_id(G, 120, b"one"), message_id(G, 121, b"two")
    m1 = hostile_message(timestamp=120, body=b"one", parents=[id2])
    m2 = hostile_message(timestamp=121, body=b"two", parents=[id1])
    for order in ([m1, m2], [m2, m1]):
        w.a.receive_payload(B, mvds_pb2.Payload(messages=order).SerializeToString(), now=0.5)
    # No causal order exists: neither is handed to the application, nothing is refused.
    assert w.a.events() == []
    assert w.a.has_message(id1) and w.a.has_message(id2)
    assert_no_leak(outbox(w, 1, 10))
    still_works(w, 11.0)


def test_flood_of_offers_is_bounded_per_payload() -> None:
    # Offers make us ask; a payload may carry at most the record limit of them.
    w = make_world()
    offers = [bytes([i]) * 32 for i in range(LIMITS.max_records_per_payload)]
    w.a.receive_payload(B, encode_payload(offers=offers), now=0.5)
    assert w.a.events() == []
    to_b = merged(data for _, peer, data in outbox(w, 1, 2) if peer == B)
    assert sorted(to_b.requests) == sorted(offers)
    w.a.receive_payload(B, encode_payload(offers=[*offers, b"x" * 32]), now=1.5)
    assert single_rejection(w.a.events()).whole
    still_works(w, 3.0)


def test_what_we_send_a_peer_with_our_limits_accepts() -> None:
    # Our payloads are cut to our own limits, in records as well as in bytes: a backlog of
    # small messages used to go out as one payload over the record limit, which a peer
    # configured like us refused whole, epoch after epoch.
    w = make_world()
    sent = [w.a.send(G, b"%d" % i, now=0.5, timestamp=200 + i) for i in range(30)]
    to_b = [data for _, peer, data in outbox(w, 1, 2) if peer == B]
    assert len(to_b) > 1
    for data in to_b:
        decoded = decode_payload(data, LIMITS)
        assert not decoded.whole_payload_rejected and not decoded.dropped
        assert len(decoded.messages) <= LIMITS.max_records_per_payload
        w.b.receive_payload(A, data, now=1.0)
    events = w.b.events()
    assert of(PayloadRejected, events) == []
    assert sorted(e.message_id for e in of(MessageDelivered, events)) == sorted(sent)
