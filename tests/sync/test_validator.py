"""The engine's validator: a message it refuses is not stored, acknowledged, relayed or
delivered, and is reported with the validator's reason; what it accepts goes on as before."""

from __future__ import annotations

from mvds_node.sync import (
    Engine,
    Limits,
    MemoryStore,
    MessageDelivered,
    PayloadRejected,
    RejectReason,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)

GROUP = b"g" * 32
ALICE, BOB, CAROL = b"A" * 32, b"B" * 32, b"C" * 32


def engine(seen: list[tuple[bytes, bytes, int, bytes, bool]]) -> Engine:
    def validate(group: bytes, peer: bytes, ts: int, body: bytes, direct: bool) -> str | None:
        seen.append((group, peer, ts, body, direct))
        return RejectReason.BAD_SIGNATURE if body.startswith(b"forged") else None

    e = Engine(MemoryStore(), now=0.0, validate=validate)
    e.add_group(GROUP)
    e.add_peer(GROUP, BOB)
    e.add_peer(GROUP, CAROL)
    return e


def test_a_refused_message_is_neither_stored_nor_acked_nor_relayed() -> None:
    seen: list[tuple[bytes, bytes, int, bytes, bool]] = []
    e = engine(seen)
    forged = encode_message(GROUP, 5, b"forged by bob")
    good = encode_message(GROUP, 6, b"hello")
    e.receive_payload(BOB, encode_payload(messages=[forged, good]), now=0.0, direct=True)
    assert [s[3] for s in seen] == [b"forged by bob", b"hello"]
    assert seen[0][:3] == (GROUP, BOB, 5) and seen[0][4] is True
    events = e.events()
    assert [ev.body for ev in events if isinstance(ev, MessageDelivered)] == [b"hello"]
    rejected = [ev for ev in events if isinstance(ev, PayloadRejected)]
    assert [(r.peer, r.reason, r.dropped, r.whole) for r in rejected] == [
        (BOB, "bad-signature", 1, False)
    ]
    assert not e.has_message(message_id(GROUP, 5, b"forged by bob"))
    assert e.has_message(message_id(GROUP, 6, b"hello"))
    out = dict(e.payloads_to_send(now=1.0))
    to_bob = decode_payload(out[BOB], Limits())
    assert to_bob.acks == [message_id(GROUP, 6, b"hello")]  # the forged one is not acked
    to_carol = decode_payload(out[CAROL], Limits())
    assert [m.body for m in to_carol.messages] == [b"hello"]  # nor relayed
    assert e.statistics().records_rejected == 1


def test_the_carrier_says_whether_the_peer_is_proved() -> None:
    seen: list[tuple[bytes, bytes, int, bytes, bool]] = []
    e = engine(seen)
    e.receive_payloads(BOB, [encode_payload(messages=[encode_message(GROUP, 1, b"a")])], now=0.0)
    assert seen[-1][4] is False  # the default: not proved (a bundle, a log, multicast)


def test_a_relayed_copy_of_a_message_we_hold_is_not_checked_again() -> None:
    seen: list[tuple[bytes, bytes, int, bytes, bool]] = []
    e = engine(seen)
    payload = encode_payload(messages=[encode_message(GROUP, 1, b"a")])
    e.receive_payload(BOB, payload, now=0.0)
    e.receive_payload(CAROL, payload, now=0.0)
    assert len(seen) == 1
    assert e.statistics().duplicates_received == 1
