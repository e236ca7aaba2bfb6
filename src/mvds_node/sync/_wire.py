"""MVDS wire format: message IDs, and the encoding and validation of payloads.

Theory of operation: encoding is done by hand, because a payload is a flat concatenation of
length-delimited fields and the engine already keeps every message in its encoded form; building
protobuf objects only to serialise them again would double the work on the hot path. The output
is byte-for-byte what protobuf (and the Go reference) produce: fields in field-number order,
defaults omitted. Decoding goes through the protobuf runtime (upb, in C), then every field is
checked against :class:`~mvds_node.sync.Limits` before the engine sees it, so that the engine
only ever handles well-formed values. Decoding never raises on remote input: it returns what was
valid and the reasons for what was not.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Final, cast

from google.protobuf.message import DecodeError

from mvds_node.sync._config import Limits
from mvds_node.sync._reasons import RejectReason
from mvds_node.sync.proto import mvds_pb2

__all__ = [
    "ID_SIZE",
    "DecodedMessage",
    "DecodedPayload",
    "decode_payload",
    "decode_stored",
    "encode_message",
    "encode_payload",
    "message_id",
]

ID_SIZE: Final = 32
_ID_PREFIX: Final = b"MESSAGE_ID"
_LE64: Final = struct.Struct("<q")

# Tags (field number << 3 | wire type) as varint bytes, precomputed.
_TAG_ACK: Final = b"\xca\xb8\x02"  # Payload.acks = 5001, bytes
_TAG_OFFER: Final = b"\xd2\xb8\x02"  # Payload.offers = 5002
_TAG_REQUEST: Final = b"\xda\xb8\x02"  # Payload.requests = 5003
_TAG_MESSAGE: Final = b"\xe2\xb8\x02"  # Payload.messages = 5004
_TAG_GROUP: Final = b"\x8a\xf7\x02"  # Message.group_id = 6001
_TAG_TIMESTAMP: Final = b"\x90\xf7\x02"  # Message.timestamp = 6002, varint
_TAG_BODY: Final = b"\x9a\xf7\x02"  # Message.body = 6003
_TAG_METADATA: Final = b"\xa2\xf7\x02"  # Message.metadata = 6004
_TAG_PARENT: Final = b"\x0a"  # Metadata.parents = 1
_EPHEMERAL_TRUE: Final = b"\x10\x01"  # Metadata.ephemeral = 2, true
_TAG_EXPIRES: Final = b"\xc8\x3e"  # Metadata.expires_at = 1001, varint
_ID_FIELD_HEADS: Final = {
    tag: tag + b"\x20" for tag in (_TAG_ACK, _TAG_OFFER, _TAG_REQUEST, _TAG_PARENT)
}


def message_id(group_id: bytes, timestamp: int, body: bytes) -> bytes:
    """Return the 32-byte MVDS message ID.

    ``sha256(b"MESSAGE_ID" || group_id || LE64(timestamp) || body)``, exactly as 2/MVDS and the Go
    reference compute it: no separators, the group ID as given, the timestamp as 8 little-endian
    two's-complement bytes. Metadata is not covered.
    """
    return hashlib.sha256(_ID_PREFIX + group_id + _LE64.pack(timestamp) + body).digest()


@functools.lru_cache(maxsize=4096)
def _varint(value: int) -> bytes:
    # Cached: the values repeat (lengths of same-sized messages, the one timestamp of a batch of
    # sends), and the loop below costs microseconds per call.
    if value < 0:
        value += 1 << 64  # int64 fields encode negatives as ten-byte two's complement
    if value < 0x80:
        return _SMALL_VARINTS[value]
    # Seven bits per byte, least significant first, continuation bit on all but the last.
    n = (value.bit_length() + 6) // 7
    out = bytearray(n)
    for i in range(n - 1):
        out[i] = (value & 0x7F) | 0x80
        value >>= 7
    out[n - 1] = value
    return bytes(out)


_SMALL_VARINTS: Final = tuple(bytes((i,)) for i in range(0x80))


def _delimited(tag: bytes, data: bytes) -> bytes:
    n = len(data)
    return tag + (bytes((n,)) if n < 0x80 else _varint(n)) + data


def encode_message(
    group_id: bytes,
    timestamp: int,
    body: bytes,
    *,
    parents: tuple[bytes, ...] | list[bytes] = (),
    ephemeral: bool = False,
    expires_at: int = 0,
    with_metadata: bool = True,
) -> bytes:
    """Serialise one ``Message``; ``with_metadata=False`` omits field 6004 (pre-4/MVDS-META peers).

    With metadata, an empty ``Metadata`` is still written (``a2 f7 02 00``), as the Go reference
    does for every message it appends.
    """
    parts = []
    if group_id:
        parts.append(_delimited(_TAG_GROUP, group_id))
    if timestamp:
        parts.append(_TAG_TIMESTAMP + _varint(timestamp))
    if body:
        parts.append(_delimited(_TAG_BODY, body))
    if with_metadata:
        head = _ID_FIELD_HEADS[_TAG_PARENT]
        meta = b"".join([head + p for p in parents])
        if ephemeral:
            meta += _EPHEMERAL_TRUE
        if expires_at:
            meta += _TAG_EXPIRES + _varint(expires_at)
        parts.append(_delimited(_TAG_METADATA, meta))
    return b"".join(parts)


def encode_payload(
    acks: list[bytes] | tuple[bytes, ...] = (),
    offers: list[bytes] | tuple[bytes, ...] = (),
    requests: list[bytes] | tuple[bytes, ...] = (),
    messages: list[bytes] | tuple[bytes, ...] = (),
) -> bytes:
    """Serialise a ``Payload`` from 32-byte IDs and already-encoded messages."""
    parts: list[bytes] = []
    for tag, ids in ((_TAG_ACK, acks), (_TAG_OFFER, offers), (_TAG_REQUEST, requests)):
        if ids:
            head = _ID_FIELD_HEADS[tag]
            parts.extend([head + i for i in ids])
    if messages:
        parts.extend([_delimited(_TAG_MESSAGE, m) for m in messages])
    return b"".join(parts)


def payload_overhead(message_len: int) -> int:
    """Bytes a message of ``message_len`` encoded bytes takes inside a payload."""
    return len(_TAG_MESSAGE) + len(_varint(message_len)) + message_len


ID_RECORD_SIZE: Final = len(_TAG_ACK) + 1 + ID_SIZE
"""Bytes one ACK, OFFER or REQUEST record takes inside a payload."""


@dataclass(slots=True)
class DecodedMessage:
    """A message that passed validation, with its ID computed and its canonical encoding."""

    id: bytes
    group_id: bytes
    timestamp: int
    body: bytes
    parents: tuple[bytes, ...]
    ephemeral: bool
    expires_at: int
    wire: bytes


@dataclass(slots=True)
class DecodedPayload:
    """The valid part of a payload, and why the rest was dropped."""

    acks: list[bytes] = field(default_factory=list)
    offers: list[bytes] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    messages: list[DecodedMessage] = field(default_factory=list)
    # reason -> number of records dropped for it; a payload dropped whole has one entry.
    dropped: dict[str, int] = field(default_factory=dict)
    whole_payload_rejected: bool = False

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


def _valid_ids(ids: object, out: list[bytes], result: DecodedPayload, kind: str) -> None:
    for raw in ids:  # type: ignore[attr-defined]
        if len(raw) == ID_SIZE:
            out.append(raw)
        else:
            result.drop(f"{kind} id of {len(raw)} bytes (want {ID_SIZE})")


def decode_payload(data: bytes | bytearray | memoryview, limits: Limits) -> DecodedPayload:
    """Parse and validate a payload received from a peer. Never raises.

    Oversized or unparsable payloads are rejected whole. Otherwise each record is checked on its own
    and invalid ones are dropped with a reason; valid ones are kept, so that one bad record does not
    cost a peer the rest of its payload.
    """
    result = DecodedPayload()
    if len(data) > limits.max_payload_bytes:
        result.drop(f"payload of {len(data)} bytes exceeds {limits.max_payload_bytes}")
        result.whole_payload_rejected = True
        return result
    try:
        # The runtime (upb) parses any buffer; its stubs only say bytes.
        pb = mvds_pb2.Payload.FromString(cast(bytes, data))
    except DecodeError as exc:
        result.drop(f"not a protobuf payload: {exc}")
        result.whole_payload_rejected = True
        return result
    n_records = len(pb.acks) + len(pb.offers) + len(pb.requests) + len(pb.messages)
    if n_records > limits.max_records_per_payload:
        result.drop(f"{n_records} records exceed {limits.max_records_per_payload} per payload")
        result.whole_payload_rejected = True
        return result
    _valid_ids(pb.acks, result.acks, result, "ack")
    _valid_ids(pb.offers, result.offers, result, "offer")
    _valid_ids(pb.requests, result.requests, result, "request")
    if not pb.messages:
        return result
    sha256 = hashlib.sha256
    pack = _LE64.pack
    max_group = limits.max_group_id_bytes
    max_body = limits.max_body_bytes
    max_parents = limits.max_parents
    for m in pb.messages:
        group_id = m.group_id
        body = m.body
        if not 0 < len(group_id) <= max_group:
            result.drop(f"group id of {len(group_id)} bytes (want 1..{max_group})")
            continue
        if len(body) > max_body:
            result.drop(f"body of {len(body)} bytes exceeds {max_body}")
            continue
        ts = m.timestamp
        if m.HasField("metadata"):
            meta = m.metadata
            parents = tuple(meta.parents)
            ephemeral = meta.ephemeral
            expires_at = meta.expires_at
            if len(parents) > max_parents:
                result.drop(f"{len(parents)} parents exceed {max_parents}")
                continue
            if any(len(p) != ID_SIZE for p in parents):
                result.drop(RejectReason.PARENT_ID_SIZE)
                continue
            if expires_at < 0:
                result.drop(RejectReason.NEGATIVE_EXPIRY)
                continue
        else:
            # Peers without 4/MVDS-META (Status, the Go code before MDF) send no metadata: the
            # message is durable and has no parents. (The Go reference crashes here.)
            parents, ephemeral, expires_at = (), False, 0
        mid = sha256(_ID_PREFIX + group_id + pack(ts) + body).digest()
        if mid in parents:
            result.drop(RejectReason.SELF_PARENT)
            continue
        wire = encode_message(
            group_id, ts, body, parents=parents, ephemeral=ephemeral, expires_at=expires_at
        )
        result.messages.append(
            DecodedMessage(mid, group_id, ts, body, parents, ephemeral, expires_at, wire)
        )
    return result


def decode_stored(wire: bytes) -> DecodedMessage:
    """Decode a message from its canonical encoding, as the store keeps it (trusted input)."""
    m = mvds_pb2.Message.FromString(wire)
    meta = m.metadata
    return DecodedMessage(
        message_id(m.group_id, m.timestamp, m.body),
        m.group_id,
        m.timestamp,
        m.body,
        tuple(meta.parents),
        meta.ephemeral,
        meta.expires_at,
        wire,
    )
