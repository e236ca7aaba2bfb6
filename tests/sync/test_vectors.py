"""The MVDS wire format against the golden vectors of the reference implementation.

``data/vectors.json`` was produced by the Go reference (variant ``spec_5001``: the current field
numbers, Payload 5001-5004, Message 6001-6003, metadata 6004) and by the Status fork
(``status_im_fork_5001``, with an extra ``group_offers`` field). Every ID, message and payload of
the spec variant must come out of our encoders byte for byte; the fork's payloads must decode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvds_node.sync import Limits, decode_payload, encode_message, encode_payload, message_id
from mvds_node.sync.proto import mvds_pb2

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "data" / "vectors.json").read_text()
)
SPEC = VECTORS["variants"]["spec_5001"]
FORK = VECTORS["variants"]["status_im_fork_5001"]


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


@pytest.mark.parametrize("vector", SPEC["messages"], ids=ids(SPEC["messages"]))
def test_message_id_and_plain_encoding(vector: dict[str, Any]) -> None:
    group = bytes.fromhex(vector["group_id_hex"])
    body = bytes.fromhex(vector["body_hex"])
    ts = vector["timestamp"]
    assert message_id(group, ts, body).hex() == vector["message_id_hex"]
    wire = encode_message(group, ts, body, with_metadata=False)
    assert wire.hex() == vector["message_serialized_hex"]


@pytest.mark.parametrize(
    "vector", SPEC["messages_with_metadata"], ids=ids(SPEC["messages_with_metadata"])
)
def test_metadata_variants(vector: dict[str, Any]) -> None:
    wire = bytes.fromhex(vector["message_serialized_hex"])
    pb = mvds_pb2.Message.FromString(wire)
    assert pb.HasField("metadata")
    meta = pb.metadata
    ours = encode_message(
        pb.group_id,
        pb.timestamp,
        pb.body,
        parents=tuple(meta.parents),
        ephemeral=meta.ephemeral,
        expires_at=meta.expires_at,
    )
    assert ours.hex() == vector["message_serialized_hex"]
    assert meta.SerializeToString().hex() == vector["metadata_serialized_hex"]
    # Metadata is not covered by the ID.
    assert message_id(pb.group_id, pb.timestamp, pb.body).hex() == vector["message_id_hex"]


def reencode(data: bytes) -> bytes:
    """Rebuild a payload with our encoders from what protobuf parsed out of it."""
    pb = mvds_pb2.Payload.FromString(data)
    messages = []
    for m in pb.messages:
        meta = m.metadata
        messages.append(
            encode_message(
                m.group_id,
                m.timestamp,
                m.body,
                parents=tuple(meta.parents),
                ephemeral=meta.ephemeral,
                expires_at=meta.expires_at,
                with_metadata=m.HasField("metadata"),
            )
        )
    return encode_payload(list(pb.acks), list(pb.offers), list(pb.requests), messages)


@pytest.mark.parametrize("vector", SPEC["payloads"], ids=ids(SPEC["payloads"]))
def test_payload_round_trip(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["payload_serialized_hex"])
    assert reencode(data) == data
    decoded = decode_payload(data, Limits())
    assert not decoded.dropped and not decoded.whole_payload_rejected
    pb = mvds_pb2.Payload.FromString(data)
    assert decoded.acks == list(pb.acks)
    assert decoded.offers == list(pb.offers)
    assert decoded.requests == list(pb.requests)
    assert [m.id for m in decoded.messages] == [
        message_id(m.group_id, m.timestamp, m.body) for m in pb.messages
    ]
    # An empty payload is what the Go code calls invalid; it decodes to nothing at all.
    assert vector["is_valid"] == bool(data)


@pytest.mark.parametrize("vector", FORK["payloads"], ids=ids(FORK["payloads"]))
def test_status_fork_payloads_decode(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["payload_serialized_hex"])
    decoded = decode_payload(data, Limits())
    assert not decoded.dropped and not decoded.whole_payload_rejected
    records = decoded.acks + decoded.offers + decoded.requests + decoded.messages
    assert bool(records) or vector["name"] in ("p0_empty", "p6_group_offers")


def test_status_fork_group_offers_are_ignored_not_fatal() -> None:
    (vector,) = [v for v in FORK["payloads"] if v["name"] == "p6_group_offers"]
    decoded = decode_payload(bytes.fromhex(vector["payload_serialized_hex"]), Limits())
    assert not decoded.whole_payload_rejected


ID = st.binary(min_size=32, max_size=32)


@settings(max_examples=300, deadline=None)
@given(
    group=st.binary(min_size=1, max_size=64),
    ts=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    body=st.binary(max_size=300),
    parents=st.lists(ID, max_size=4),
    ephemeral=st.booleans(),
    expires_at=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_encoder_matches_protobuf(
    group: bytes, ts: int, body: bytes, parents: list[bytes], ephemeral: bool, expires_at: int
) -> None:
    pb = mvds_pb2.Message(group_id=group, timestamp=ts, body=body)
    pb.metadata.CopyFrom(
        mvds_pb2.Metadata(parents=parents, ephemeral=ephemeral, expires_at=expires_at)
    )
    ours = encode_message(
        group, ts, body, parents=tuple(parents), ephemeral=ephemeral, expires_at=expires_at
    )
    assert ours == pb.SerializeToString(deterministic=True)
    payload = encode_payload(parents, parents[:1], parents[1:2], [ours])
    expected = mvds_pb2.Payload(
        acks=parents, offers=parents[:1], requests=parents[1:2], messages=[pb]
    )
    assert payload == expected.SerializeToString(deterministic=True)
    decoded = decode_payload(payload, Limits())
    assert not decoded.dropped
    (m,) = decoded.messages
    assert (m.group_id, m.timestamp, m.body, list(m.parents), m.ephemeral, m.expires_at) == (
        group,
        ts,
        body,
        parents,
        ephemeral,
        expires_at,
    )
    assert m.wire == ours
    assert m.id == message_id(group, ts, body)
