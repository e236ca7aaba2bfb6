"""The sans-IO core of the acknowledgement records: no Trio, no backend, bytes in and out."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.errors import LocalProtocolError
from mvds_node.remotelog import (
    ACK_CHUNK,
    AckRecords,
    LogError,
    MemoryLedger,
    ack_payloads,
    public_key,
)
from mvds_node.remotelog._format import MAX_SEQ, acks_name, encode_acks, sign_head
from mvds_node.sync import Limits, decode_payload

G = b"G" * 32
KEY = b"K" * 32
A, B, C = b"A" * 32, b"B" * 32, b"C" * 32  # the members' node keys


def signing(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


SA, SB, SC = signing(1), signing(2), signing(3)
LA, LB, LC = public_key(SA), public_key(SB), public_key(SC)


def ids(*names: str) -> list[bytes]:
    return [n.encode().ljust(32, b".") for n in names]


def records(
    ours: Ed25519PrivateKey, readers: dict[bytes, bytes], *, key: bytes | None = None
) -> tuple[AckRecords, MemoryLedger]:
    ledger = MemoryLedger()
    return AckRecords(
        signing=ours, group_id=G, readers=readers, ledger=ledger, group_key=key, seq=0
    ), ledger


def publish(r: AckRecords, positions: dict[bytes, int]) -> bytes:
    pending = r.record_for(positions)
    assert pending is not None
    r.published(pending)
    return pending.record


def test_a_writer_acknowledges_what_the_readers_position_passed() -> None:
    alice, _ = records(SA, {B: LB})
    bob, _ = records(SB, {A: LA})
    alice.uploaded(1, ids("a1", "a2"))
    alice.uploaded(2, ids("a3"))
    assert alice.wants_record(B)  # never seen: always read
    assert alice.read_record(B, publish(bob, {LA: 1})) == ids("a1", "a2")
    assert alice.read_record(B, publish(bob, {LA: 2})) == ids("a3")
    assert not alice.wants_record(B)  # everything acknowledged: the record is not fetched
    alice.uploaded(3, ids("a4"))
    assert alice.wants_record(B)


def test_a_record_not_newer_than_the_last_read_gives_nothing() -> None:
    alice, _ = records(SA, {B: LB})
    bob, _ = records(SB, {A: LA})
    alice.uploaded(1, ids("a1"))
    record = publish(bob, {LA: 1})
    assert alice.read_record(B, record) == ids("a1")
    assert alice.read_record(B, record) == []


def test_publishing_needs_the_sequence_and_skips_unchanged_positions() -> None:
    ledger = MemoryLedger()
    bob = AckRecords(signing=SB, group_id=G, readers={A: LA}, ledger=ledger)
    assert bob.needs_sequence
    with pytest.raises(LocalProtocolError):
        bob.record_for({LA: 1})
    earlier, _ = records(SB, {A: LA})
    bob.resume(publish(earlier, {LA: 4}))  # what the NS holds: sequence 1
    assert bob.name == acks_name(LB, G)
    assert bob.record_for({}) is None
    pending = bob.record_for({LA: 5})
    assert pending is not None and pending.seq == 2
    bob.published(pending)
    assert bob.record_for({LA: 5}) is None  # nothing new to say
    assert bob.record_for({LA: 6}) is not None


def test_a_failed_publication_is_built_again() -> None:
    bob, _ = records(SB, {A: LA})
    first = bob.record_for({LA: 1})
    assert first is not None  # ... and the NS update failed: published() is not called
    again = bob.record_for({LA: 1})
    assert again is not None and again.seq == first.seq


def test_the_last_sequence_is_refused() -> None:
    bob = AckRecords(signing=SB, group_id=G, readers={A: LA}, ledger=MemoryLedger(), seq=MAX_SEQ)
    with pytest.raises(LogError, match="last sequence"):
        bob.record_for({LA: 1})


def test_sealed_records_need_the_group_key() -> None:
    alice, _ = records(SA, {B: LB}, key=KEY)
    bob, _ = records(SB, {A: LA}, key=KEY)
    alice.uploaded(1, ids("a1"))
    record = publish(bob, {LA: 1})
    assert encode_acks({LA: 1}) not in record  # the helper sees ciphertext
    plain, _ = records(SA, {B: LB})
    plain.uploaded(1, ids("a1"))
    with pytest.raises(LogError, match="no key"):
        plain.read_record(B, record)
    assert alice.read_record(B, record) == ids("a1")


def test_a_forged_record_changes_nothing() -> None:
    alice, ledger = records(SA, {B: LB})
    alice.uploaded(1, ids("a1"))
    name = acks_name(LB, G)
    forged = sign_head(SC, name, 1, encode_acks({LA: 1}), False)
    with pytest.raises(LogError, match="another key"):
        alice.read_record(B, forged)
    assert ledger.acked_through(B) == 0 and ledger.ids_between(0, 1) == ids("a1")
    assert alice.wants_record(B)


def test_a_record_of_the_old_format_acknowledges_its_ids() -> None:
    alice, ledger = records(SA, {B: LB})
    alice.uploaded(1, ids("a1"))
    old = sign_head(SB, acks_name(LB, G), 1, b"".join(ids("x", "y")), False)
    assert alice.read_record(B, old) == ids("x", "y")
    assert ledger.acked_through(B) == 0
    assert alice.wants_record(B)  # no positions from it yet: keep reading


def test_entries_for_unknown_writers_are_skipped() -> None:
    alice, _ = records(SA, {B: LB})
    bob, _ = records(SB, {A: LA})
    alice.uploaded(1, ids("a1"))
    stranger = public_key(signing(9))
    assert alice.read_record(B, publish(bob, {LA: 1, stranger: 7})) == ids("a1")


def test_a_position_that_went_back_is_taken_as_it_is() -> None:
    alice, ledger = records(SA, {B: LB, C: LC})  # carol reads nothing: no head is forgotten
    bob, _ = records(SB, {A: LA})
    alice.uploaded(1, ids("a1"))
    alice.uploaded(2, ids("a2"))
    assert alice.read_record(B, publish(bob, {LA: 1})) == ids("a1")
    assert alice.read_record(B, publish(bob, {LA: 0})) == []  # bob lost its state
    assert ledger.acked_through(B) == 0
    assert alice.read_record(B, publish(bob, {LA: 2})) == ids("a1", "a2")


def test_heads_are_forgotten_once_every_reader_passed_them() -> None:
    alice, ledger = records(SA, {B: LB, C: LC})
    bob, _ = records(SB, {A: LA})
    carol, _ = records(SC, {A: LA})
    alice.uploaded(1, ids("a1"))
    alice.uploaded(2, ids("a2"))
    alice.read_record(B, publish(bob, {LA: 2}))
    assert len(ledger) == 2  # carol has read nothing yet
    assert alice.read_record(C, publish(carol, {LA: 1})) == ids("a1")
    assert ledger.ids_between(0, 2) == ids("a2")
    assert alice.read_record(C, publish(carol, {LA: 2})) == ids("a2")
    assert len(ledger) == 0


def test_the_ledger_is_bounded() -> None:
    ledger = MemoryLedger()
    alice = AckRecords(
        signing=SA, group_id=G, readers={B: LB}, ledger=ledger, seq=0, max_published=3
    )
    for seq in range(1, 6):
        alice.uploaded(seq, ids(f"a{seq}"))
    assert len(ledger) == 3
    assert ledger.ids_between(0, 5) == ids("a3", "a4", "a5")


def test_ack_payloads_are_chunked() -> None:
    many = [i.to_bytes(32, "big") for i in range(ACK_CHUNK + 1)]
    payloads = list(ack_payloads(many))
    assert len(payloads) == 2
    got = [mid for p in payloads for mid in decode_payload(p, Limits()).acks]
    assert got == many
    assert list(ack_payloads([])) == []
