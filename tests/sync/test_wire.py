"""The wire format, both ways, against golden vectors made by the Go reference.

``data/vectors.json`` is a copy of ``reference/mvds/vectors.json``: bytes printed by the Go code
itself (``Message.ID()`` and ``proto.Marshal``), so a bug shared by our encoder and our decoder
cannot hide here. Variant ``spec_5001`` is the numbering of the current specs and of the Status
app, and every ID, message and payload of it must come out of our encoders byte for byte and
decode to the values it was built from. The Status fork (``status_im_fork_5001``) adds a
``group_offers`` field we do not know: its payloads must still be accepted whole.

The tables below rebuild each vector from its parts as the vector's ``note`` describes it, so
the tests check our encoders against Go's bytes, not Go's bytes against themselves.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvds_node.sync import (
    Engine,
    Limits,
    MemoryStore,
    MessageDelivered,
    Mode,
    PayloadRejected,
    SyncConfig,
    decode_payload,
    encode_message,
    encode_payload,
    message_id,
)
from mvds_node.sync.proto import mvds_pb2

VECTORS_PATH = Path(__file__).resolve().parent / "data" / "vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text())
SPEC: dict[str, Any] = VECTORS["variants"]["spec_5001"]
FORK: dict[str, Any] = VECTORS["variants"]["status_im_fork_5001"]


@dataclass(frozen=True)
class Msg:
    """One message vector: its parts and the bytes Go produced for it."""

    name: str
    group_id: bytes
    timestamp: int
    body: bytes
    preimage: bytes
    id: bytes
    wire: bytes


def load_messages(variant: dict[str, Any]) -> dict[str, Msg]:
    return {
        v["name"]: Msg(
            v["name"],
            bytes.fromhex(v["group_id_hex"]),
            v["timestamp"],
            bytes.fromhex(v["body_hex"]),
            bytes.fromhex(v["id_preimage_hex"]),
            bytes.fromhex(v["message_id_hex"]),
            bytes.fromhex(v["message_serialized_hex"]),
        )
        for v in variant["messages"]
    }


MESSAGES = load_messages(SPEC)
FORK_MESSAGES = load_messages(FORK)
META = {v["name"]: v for v in SPEC["messages_with_metadata"]}
SPEC_PAYLOADS = {v["name"]: v for v in SPEC["payloads"]}
FORK_PAYLOADS = {v["name"]: v for v in FORK["payloads"]}


def mid(name: str) -> bytes:
    return MESSAGES[name].id


# The metadata vectors as their notes describe them: (base message, parents, ephemeral).
METADATA_TABLE: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "m01_meta_empty": ("m01", (), False),
    "m04_meta_parents": ("m04", ("m01", "m02"), False),
    "m05_meta_ephemeral": ("m05", (), True),
    "m09_meta_both": ("m09", ("m03",), True),
}


def meta_wire(name: str) -> bytes:
    base, parents, ephemeral = METADATA_TABLE[name]
    m = MESSAGES[base]
    return encode_message(
        m.group_id, m.timestamp, m.body, parents=[mid(p) for p in parents], ephemeral=ephemeral
    )


def plain_wire(name: str) -> bytes:
    m = MESSAGES[name]
    return encode_message(m.group_id, m.timestamp, m.body, with_metadata=False)


@dataclass(frozen=True)
class PayloadSpec:
    acks: tuple[str, ...] = ()
    offers: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()
    # Messages by vector name: a metadata vector name means "with that metadata", a plain
    # message name means "Metadata absent" (field 6004 not on the wire).
    messages: tuple[str, ...] = ()

    def encode(self) -> bytes:
        wires = [meta_wire(n) if n in METADATA_TABLE else plain_wire(n) for n in self.messages]
        return encode_payload(
            [mid(n) for n in self.acks],
            [mid(n) for n in self.offers],
            [mid(n) for n in self.requests],
            wires,
        )

    def message_ids(self) -> list[bytes]:
        return [mid(METADATA_TABLE[n][0] if n in METADATA_TABLE else n) for n in self.messages]


PAYLOAD_TABLE: dict[str, PayloadSpec] = {
    "p0_empty": PayloadSpec(),
    "p1_acks_only": PayloadSpec(acks=("m01", "m02")),
    "p2_offers_requests": PayloadSpec(offers=("m01", "m02"), requests=("m03",)),
    "p3_messages_metadata": PayloadSpec(messages=("m04_meta_parents", "m05_meta_ephemeral")),
    "p4_mixed": PayloadSpec(
        acks=("m03",), offers=("m04",), requests=("m05",), messages=("m01_meta_empty", "m02")
    ),
    "p5_messages_plain": PayloadSpec(messages=("m01", "m03", "m07")),
}
FORK_PAYLOAD_TABLE: dict[str, PayloadSpec] = {
    "p0_empty": PayloadSpec(),
    "p1_acks_only": PAYLOAD_TABLE["p1_acks_only"],
    "p2_offers_requests": PAYLOAD_TABLE["p2_offers_requests"],
    "p4_mixed_no_metadata": PayloadSpec(
        acks=("m03",), offers=("m04",), requests=("m05",), messages=("m01", "m02")
    ),
    "p5_messages_plain": PAYLOAD_TABLE["p5_messages_plain"],
    # group_offers (field 5005) only: nothing we know of.
    "p6_group_offers": PayloadSpec(),
}


def test_tables_cover_every_vector() -> None:
    # A vector added to the file must not be skipped silently by the tables above.
    assert set(METADATA_TABLE) == set(META)
    assert set(PAYLOAD_TABLE) == set(SPEC_PAYLOADS)
    assert set(FORK_PAYLOAD_TABLE) == set(FORK_PAYLOADS)
    assert len(MESSAGES) == 10


# ------------------------------------------------------------------------------ message IDs


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_id(name: str) -> None:
    m = MESSAGES[name]
    # The preimage Go hashed: prefix, raw group ID, LE64 timestamp, raw body, nothing between.
    assert m.preimage == b"MESSAGE_ID" + m.group_id + struct.pack("<q", m.timestamp) + m.body
    assert hashlib.sha256(m.preimage).digest() == m.id
    assert message_id(m.group_id, m.timestamp, m.body) == m.id


def test_message_ids_tell_near_identical_messages_apart() -> None:
    # m10 is m01 plus one byte; the empty-group m06 has m01's timestamp.
    ids = {m.id for m in MESSAGES.values()}
    assert len(ids) == len(MESSAGES)


def test_fork_messages_have_the_same_ids_and_bytes() -> None:
    # The Status fork and the spec agree on messages without metadata: one ID space.
    assert FORK_MESSAGES == MESSAGES


# ------------------------------------------------------------------------- message encoding


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_plain_message_encodes_byte_for_byte(name: str) -> None:
    m = MESSAGES[name]
    assert plain_wire(name) == m.wire
    # The generated classes parse our bytes back to the same parts.
    pb = mvds_pb2.Message.FromString(m.wire)
    assert (pb.group_id, pb.timestamp, pb.body) == (m.group_id, m.timestamp, m.body)
    assert not pb.HasField("metadata")


@pytest.mark.parametrize("name", sorted(set(MESSAGES) - {"m06"}))
def test_plain_message_decodes_to_its_parts(name: str) -> None:
    m = MESSAGES[name]
    decoded = decode_payload(encode_payload(messages=[m.wire]), Limits())
    assert not decoded.dropped
    (d,) = decoded.messages
    assert (d.id, d.group_id, d.timestamp, d.body) == (m.id, m.group_id, m.timestamp, m.body)
    # No metadata on the wire (Status, pre-4/MVDS-META Go): durable, no parents.
    assert (d.parents, d.ephemeral, d.expires_at) == ((), False, 0)
    # We keep and relay the canonical form: the same message with an empty Metadata.
    assert d.wire == m.wire + b"\xa2\xf7\x02\x00"


def test_empty_group_id_encodes_but_is_refused_on_receipt() -> None:
    # Go encodes it (m06); no real group has an empty ID, and one would collide with "no group".
    m = MESSAGES["m06"]
    assert m.group_id == b""
    decoded = decode_payload(encode_payload(messages=[m.wire]), Limits())
    assert decoded.messages == []
    assert decoded.dropped == {"group id of 0 bytes (want 1..64)": 1}
    assert not decoded.whole_payload_rejected


@pytest.mark.parametrize("name", sorted(METADATA_TABLE))
def test_metadata_variant_round_trips(name: str) -> None:
    vector = META[name]
    expected = bytes.fromhex(vector["message_serialized_hex"])
    base, parents, ephemeral = METADATA_TABLE[name]
    assert meta_wire(name) == expected
    # The metadata is the message's last field, and it is not covered by the ID.
    meta = bytes.fromhex(vector["metadata_serialized_hex"])
    assert expected.endswith(meta)
    assert bytes.fromhex(vector["message_id_hex"]) == mid(base)
    decoded = decode_payload(encode_payload(messages=[expected]), Limits())
    assert not decoded.dropped
    (d,) = decoded.messages
    assert d.id == mid(base)
    assert d.parents == tuple(mid(p) for p in parents)
    assert d.ephemeral is ephemeral
    # With metadata present, our canonical form is Go's form exactly.
    assert d.wire == expected


def test_empty_metadata_is_written_as_an_empty_submessage() -> None:
    # What Go's AppendMessage produces for a root message, and what we produce for ours.
    assert meta_wire("m01_meta_empty") == MESSAGES["m01"].wire + b"\xa2\xf7\x02\x00"


# ------------------------------------------------------------------------------- payloads


@pytest.mark.parametrize("name", sorted(PAYLOAD_TABLE))
def test_payload_encodes_byte_for_byte(name: str) -> None:
    expected = bytes.fromhex(SPEC_PAYLOADS[name]["payload_serialized_hex"])
    assert PAYLOAD_TABLE[name].encode() == expected


@pytest.mark.parametrize("name", sorted(PAYLOAD_TABLE))
def test_payload_decodes_to_its_records(name: str) -> None:
    vector = SPEC_PAYLOADS[name]
    spec = PAYLOAD_TABLE[name]
    decoded = decode_payload(bytes.fromhex(vector["payload_serialized_hex"]), Limits())
    assert not decoded.whole_payload_rejected
    assert decoded.dropped == {}
    assert decoded.acks == [mid(n) for n in spec.acks]
    assert decoded.offers == [mid(n) for n in spec.offers]
    assert decoded.requests == [mid(n) for n in spec.requests]
    assert [m.id for m in decoded.messages] == spec.message_ids()
    # Go's IsValid(): at least one record. The empty payload is zero bytes and carries nothing.
    records = decoded.acks + decoded.offers + decoded.requests + decoded.messages
    assert bool(records) is vector["is_valid"]


def test_decoded_payload_reencodes_to_the_same_bytes() -> None:
    # Where every message carries metadata, Go's bytes are already canonical: decode -> encode
    # gives them back unchanged.
    data = bytes.fromhex(SPEC_PAYLOADS["p3_messages_metadata"]["payload_serialized_hex"])
    d = decode_payload(data, Limits())
    assert encode_payload(d.acks, d.offers, d.requests, [m.wire for m in d.messages]) == data


@pytest.mark.parametrize("name", sorted(FORK_PAYLOAD_TABLE))
def test_status_fork_payload_decodes_whole(name: str) -> None:
    data = bytes.fromhex(FORK_PAYLOADS[name]["payload_serialized_hex"])
    spec = FORK_PAYLOAD_TABLE[name]
    decoded = decode_payload(data, Limits())
    assert not decoded.whole_payload_rejected
    assert decoded.dropped == {}
    assert decoded.acks == [mid(n) for n in spec.acks]
    assert decoded.offers == [mid(n) for n in spec.offers]
    assert decoded.requests == [mid(n) for n in spec.requests]
    assert [m.id for m in decoded.messages] == spec.message_ids()
    # Where the fork has no extra fields, its bytes are ours.
    if name != "p6_group_offers":
        assert spec.encode() == data


def test_status_fork_group_offers_are_skipped_as_an_unknown_field() -> None:
    data = bytes.fromhex(FORK_PAYLOADS["p6_group_offers"]["payload_serialized_hex"])
    assert data[:3] == b"\xea\xb8\x02"  # field 5005, length-delimited
    decoded = decode_payload(data, Limits())
    assert (decoded.acks, decoded.offers, decoded.requests, decoded.messages) == ([], [], [], [])
    assert decoded.dropped == {} and not decoded.whole_payload_rejected


@pytest.mark.parametrize("name", sorted(FORK_PAYLOAD_TABLE))
def test_engine_accepts_status_fork_payloads(name: str) -> None:
    # A Status peer in every group the fork's messages use: nothing it sends is refused, its
    # messages (which carry no metadata) are delivered, and what it requests goes out to it.
    peer = b"S" * 65  # an uncompressed secp256k1 key, as Status uses
    spec = FORK_PAYLOAD_TABLE[name]
    engine = Engine(MemoryStore(), config=SyncConfig(epoch_seconds=1.0), now=0.0)
    for m in MESSAGES.values():
        if m.group_id and m.group_id not in engine.groups():
            engine.add_group(m.group_id)
            engine.add_peer(m.group_id, peer, mode=Mode.INTERACTIVE)
    for n in spec.requests:
        m = MESSAGES[n]
        assert engine.send(m.group_id, m.body, now=0.0, timestamp=m.timestamp) == m.id
    engine.payloads_to_send(now=0.0)  # our OFFERs
    engine.receive_payload(
        peer, bytes.fromhex(FORK_PAYLOADS[name]["payload_serialized_hex"]), now=1.0
    )
    events = engine.events()
    assert [e for e in events if isinstance(e, PayloadRejected)] == []
    delivered = [e.message_id for e in events if isinstance(e, MessageDelivered)]
    assert delivered == spec.message_ids()
    out = [decode_payload(data, Limits()) for to, data in engine.payloads_to_send(now=1.0)]
    sent = [m.id for p in out for m in p.messages]
    assert sent == [mid(n) for n in spec.requests]


# --------------------------------------------------------- our encoders vs generated classes

ID = st.binary(min_size=32, max_size=32)
G4 = MESSAGES["m04"].group_id
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, int, bytes, tuple[bytes, ...], bool, int, bool]:
    group = draw(st.binary(min_size=1, max_size=64))
    ts = draw(st.one_of(INT64, st.sampled_from([0, 1, -1, 127, 128, 2**63 - 1, -(2**63)])))
    # Bodies around the one-, two- and three-byte length varints (127/128, 16383/16384).
    pad = draw(st.sampled_from([0, 0, 0, 16_300]))
    body = draw(st.binary(max_size=140)) + b"\x5a" * pad
    parents = tuple(draw(st.lists(ID, max_size=5)))
    ephemeral = draw(st.booleans())
    expires_at = draw(st.one_of(st.just(0), st.integers(min_value=1, max_value=2**63 - 1)))
    with_metadata = draw(st.booleans())
    if not with_metadata:
        parents, ephemeral, expires_at = (), False, 0
    return group, ts, body, parents, ephemeral, expires_at, with_metadata


@settings(max_examples=200, deadline=None)
@given(
    acks=st.lists(ID, max_size=4),
    offers=st.lists(ID, max_size=4),
    requests=st.lists(ID, max_size=4),
    msgs=st.lists(messages(), max_size=4),
)
def test_hand_encoder_matches_generated_classes(
    acks: list[bytes],
    offers: list[bytes],
    requests: list[bytes],
    msgs: list[tuple[bytes, int, bytes, tuple[bytes, ...], bool, int, bool]],
) -> None:
    wires = []
    pb_messages = []
    for group, ts, body, parents, ephemeral, expires_at, with_metadata in msgs:
        wire = encode_message(
            group,
            ts,
            body,
            parents=parents,
            ephemeral=ephemeral,
            expires_at=expires_at,
            with_metadata=with_metadata,
        )
        pb = mvds_pb2.Message(group_id=group, timestamp=ts, body=body)
        if with_metadata:
            pb.metadata.CopyFrom(
                mvds_pb2.Metadata(parents=parents, ephemeral=ephemeral, expires_at=expires_at)
            )
        assert wire == pb.SerializeToString(deterministic=True)
        wires.append(wire)
        pb_messages.append(pb)
    ours = encode_payload(acks, offers, requests, wires)
    theirs = mvds_pb2.Payload(acks=acks, offers=offers, requests=requests, messages=pb_messages)
    assert ours == theirs.SerializeToString(deterministic=True)
    assert mvds_pb2.Payload.FromString(ours) == theirs

    # decode(encode(x)) == x, with IDs computed and the canonical form kept.
    decoded = decode_payload(ours, Limits())
    assert decoded.dropped == {} and not decoded.whole_payload_rejected
    assert (decoded.acks, decoded.offers, decoded.requests) == (acks, offers, requests)
    assert len(decoded.messages) == len(msgs)
    for d, (group, ts, body, parents, ephemeral, expires_at, _) in zip(
        decoded.messages, msgs, strict=True
    ):
        assert (d.group_id, d.timestamp, d.body) == (group, ts, body)
        assert (d.parents, d.ephemeral, d.expires_at) == (parents, ephemeral, expires_at)
        assert d.id == message_id(group, ts, body)
        assert d.wire == encode_message(
            group, ts, body, parents=parents, ephemeral=ephemeral, expires_at=expires_at
        )


def test_length_prefixes_at_varint_boundaries() -> None:
    # Body and message lengths each cross 127/128 and 16383/16384 somewhere in these ranges.
    parents = [bytes([7]) * 32]
    for body_len in [*range(40, 140), *range(16_280, 16_400)]:
        body = bytes(range(256)) * (body_len // 256) + bytes(body_len % 256)
        ours = encode_payload(messages=[encode_message(G4, body_len, body, parents=parents)])
        pb = mvds_pb2.Message(group_id=G4, timestamp=body_len, body=body)
        pb.metadata.parents.extend(parents)
        expected = mvds_pb2.Payload(messages=[pb]).SerializeToString(deterministic=True)
        assert ours == expected, body_len
        (d,) = decode_payload(ours, Limits()).messages
        assert d.body == body, body_len


@settings(max_examples=200, deadline=None)
@given(msg=messages())
def test_field_order_on_the_wire_does_not_change_the_message(
    msg: tuple[bytes, int, bytes, tuple[bytes, ...], bool, int, bool],
) -> None:
    # Protobuf lets a sender write fields in any order; we still compute the same ID and keep
    # (and relay) the canonical bytes, so two copies of one message are one message.
    group, ts, body, parents, ephemeral, expires_at, with_metadata = msg
    canonical = encode_message(
        group,
        ts,
        body,
        parents=parents,
        ephemeral=ephemeral,
        expires_at=expires_at,
        with_metadata=with_metadata,
    )
    pb = mvds_pb2.Message.FromString(canonical)
    fields = [
        mvds_pb2.Message(body=body).SerializeToString(),
        mvds_pb2.Message(timestamp=ts).SerializeToString(),
        mvds_pb2.Message(group_id=group).SerializeToString(),
    ]
    if with_metadata:
        only_meta = mvds_pb2.Message()
        only_meta.metadata.SetInParent()
        only_meta.metadata.MergeFrom(pb.metadata)
        fields.insert(1, only_meta.SerializeToString())
    shuffled = b"".join(fields)
    assert mvds_pb2.Message.FromString(shuffled) == pb
    (a,) = decode_payload(encode_payload(messages=[canonical]), Limits()).messages
    (b,) = decode_payload(encode_payload(messages=[shuffled]), Limits()).messages
    assert a == b
