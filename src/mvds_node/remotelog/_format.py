"""The remote log's records: pages, signed heads, sealing, and the checks a reader makes.

Decisions the spec leaves open (``docs/remote-log.md`` explains them):

* **Addresses** are SHA-256 of the stored bytes (32 bytes), so a reader checks every object it
  fetches against the address it asked for: a helper cannot swap content.
* **tail** is the CAS address of the previous page, empty on the first page. Pages do not
  overlap: a message is in exactly one page.
* **Names**: a writer's log for a group is ``mvds/<writer key hex>/<group tag hex>``.
* **Heads** are :class:`SignedHead` records: the writer's Ed25519 key signs the name, a sequence
  number and the head page, so a forged head fails and a rolled-back one (lower sequence) is
  noticed.
* **Sealing**: with a group key, every page and CAS object is ChaCha20-Poly1305 ciphertext (the
  helper stores what it cannot read). Without one, records are the spec's messages as they are.
* **Acknowledgement records** say, per writer, up to which head sequence the publisher has read
  that writer's log completely: one 40-byte entry per member, whatever the history's length.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.message import DecodeError

from mvds_node.errors import RemoteProtocolError
from mvds_node.remotelog.proto import remotelog_pb2

__all__ = [
    "ACKS_V1",
    "ACK_ENTRY_BYTES",
    "MAX_ACKS",
    "MAX_ACK_ENTRIES",
    "MAX_OBJECT_BYTES",
    "MAX_SEQ",
    "Acks",
    "Head",
    "LogError",
    "Page",
    "acks_name",
    "address_of",
    "decode_acks",
    "encode_acks",
    "log_name",
    "open_head",
    "parse_page",
    "seal",
    "sign_head",
    "unseal",
]

MAX_OBJECT_BYTES: Final = 8 * 1024 * 1024
"""A page or CAS object: a page of inline messages at the engine's body limit stays far below."""
MAX_PAIRS_PER_PAGE: Final = 100_000
MAX_SEQ: Final = 2**63 - 1
"""The highest head sequence (and acknowledged position) we accept or write: the wire allows
64 bits, but cursors and positions are kept in SQLite, whose integers are signed 64-bit. A
record beyond it is refused when decoded, so no such number reaches the store."""
_HEAD_CONTEXT: Final = b"mvds-node remote log head\x00"
_SEAL_CONTEXT: Final = b"mvds-node remote log seal\x00"
_NONCE: Final = 12


class LogError(RemoteProtocolError):
    """Something fetched from a CAS or NS is not what it should be (forged, swapped, rolled
    back, oversized, undecodable); the message says which and where."""


def address_of(data: bytes) -> bytes:
    """The CAS address of ``data``."""
    return hashlib.sha256(data).digest()


def log_name(writer: bytes, group_id: bytes) -> str:
    """The NS name of ``writer``'s log for a group (the group appears only as a hash)."""
    tag = hashlib.sha256(b"mvds-node remote log group\x00" + group_id).digest()[:8]
    return f"mvds/{writer.hex()}/{tag.hex()}"


def _seal_key(group_key: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(hashlib.sha256(_SEAL_CONTEXT + group_key).digest())


def seal(group_key: bytes, data: bytes) -> bytes:
    """Encrypt ``data`` with the group key (random nonce ahead of the ciphertext)."""
    nonce = os.urandom(_NONCE)
    return nonce + _seal_key(group_key).encrypt(nonce, data, None)


def unseal(group_key: bytes, data: bytes, where: str) -> bytes:
    try:
        return _seal_key(group_key).decrypt(data[:_NONCE], data[_NONCE:], None)
    except (InvalidTag, ValueError):
        raise LogError(f"{where}: sealed object fails authentication") from None


@dataclass(frozen=True, slots=True)
class Pair:
    message_id: bytes
    address: bytes
    """CAS address of the message bytes, or empty when ``data`` holds them."""
    data: bytes


@dataclass(frozen=True, slots=True)
class Page:
    pairs: tuple[Pair, ...]
    """Newest first."""
    tail: bytes

    def encode(self) -> bytes:
        pb = remotelog_pb2.RemoteLog(tail=self.tail)
        for p in self.pairs:
            pb.pair.add(remoteHash=p.message_id, localHash=p.address, data=p.data)
        return pb.SerializeToString(deterministic=True)


def parse_page(data: bytes, where: str) -> Page:
    """Decode and check a page (a ``RemoteLog``).

    Raises:
        LogError: oversized, undecodable, or a pair that is not exactly one of (address, data).
    """
    if len(data) > MAX_OBJECT_BYTES:
        raise LogError(f"{where}: page of {len(data)} bytes is over the limit")
    try:
        pb = remotelog_pb2.RemoteLog.FromString(data)
    except DecodeError:
        raise LogError(f"{where}: not a remote log page") from None
    if len(pb.pair) > MAX_PAIRS_PER_PAGE:
        raise LogError(f"{where}: page of {len(pb.pair)} entries is over the limit")
    if pb.tail and len(pb.tail) != 32:
        raise LogError(f"{where}: tail is not a 32-byte address")
    pairs = []
    for p in pb.pair:
        if len(p.remoteHash) != 32:
            raise LogError(f"{where}: a message ID is not 32 bytes")
        if bool(p.localHash) == bool(p.data) or (p.localHash and len(p.localHash) != 32):
            raise LogError(f"{where}: an entry needs exactly one of a 32-byte address or data")
        pairs.append(Pair(p.remoteHash, p.localHash, p.data))
    return Page(tuple(pairs), pb.tail)


def acks_name(writer: bytes, group_id: bytes) -> str:
    """The NS name of ``writer``'s acknowledgement record for a group: how far it has read the
    logs of the group's members."""
    return log_name(writer, group_id) + "/acks"


ACKS_V1: Final = 0x01
"""First byte of an acknowledgement record: positions, 40-byte entries."""
ACK_ENTRY_BYTES: Final = 40
"""A writer's log key (32 bytes) and the head sequence read completely (8 bytes, big endian)."""
MAX_ACK_ENTRIES: Final = 1024
"""Entries in one record: one per member whose log the publisher reads (41 KiB at most)."""
MAX_ACKS: Final = 100_000
"""IDs in a record of the old format (a bare list of IDs), still accepted when read."""


@dataclass(frozen=True, slots=True)
class Acks:
    """A decoded acknowledgement record."""

    positions: dict[bytes, int]
    """Writer log key -> the head sequence of that writer's log that the publisher has read
    completely: it holds every message the writer published up to that sequence."""
    ids: tuple[bytes, ...] = ()
    """Message IDs the publisher holds, from a record of the old format (no positions)."""


def encode_acks(positions: dict[bytes, int]) -> bytes:
    """An acknowledgement record: ``ACKS_V1``, then one entry per writer, sorted by key.

    Raises:
        ValueError: more than :data:`MAX_ACK_ENTRIES` entries, a key that is not 32 bytes, or a
            sequence outside 0..2**64-1 (a reader refuses one over :data:`MAX_SEQ`).
    """
    if len(positions) > MAX_ACK_ENTRIES:
        raise ValueError(f"{len(positions)} acknowledgement entries (at most {MAX_ACK_ENTRIES})")
    out = bytearray([ACKS_V1])
    for key in sorted(positions):
        if len(key) != 32:
            raise ValueError("a writer key is not 32 bytes")
        out += key + struct.pack(">Q", positions[key])
    return bytes(out)


def decode_acks(data: bytes, where: str, *, members: frozenset[bytes] | None = None) -> Acks:
    """Decode and check an acknowledgement record.

    A record of the new format has an odd length (1 + 40 n); one of the old format is a bare
    list of 32-byte IDs (an even length), so the two cannot be confused.

    Args:
        members: the log keys we care about (the group's members we know); entries for other
            keys are skipped: the publisher may read logs of members we were not told about.
            None: keep every entry.

    Raises:
        LogError: a bad tag or length, too many entries, entries out of order or repeated, or
            a position over :data:`MAX_SEQ`.
    """
    if len(data) % 32 == 0:  # the old format: IDs, newest first
        if len(data) > 32 * MAX_ACKS:
            raise LogError(
                f"{where}: acknowledgement record of {len(data)} bytes is over the limit"
            )
        return Acks({}, tuple(data[i : i + 32] for i in range(0, len(data), 32)))
    if len(data) > 1 + ACK_ENTRY_BYTES * MAX_ACK_ENTRIES:
        raise LogError(f"{where}: acknowledgement record of {len(data)} bytes is over the limit")
    if data[0] != ACKS_V1:
        raise LogError(f"{where}: acknowledgement record of unknown version {data[0]}")
    if (len(data) - 1) % ACK_ENTRY_BYTES:
        raise LogError(f"{where}: acknowledgement record of {len(data)} bytes is malformed")
    positions: dict[bytes, int] = {}
    previous = b""
    for i in range(1, len(data), ACK_ENTRY_BYTES):
        key = data[i : i + 32]
        if key <= previous:
            raise LogError(f"{where}: acknowledgement entries out of order or repeated")
        previous = key
        (position,) = struct.unpack(">Q", data[i + 32 : i + ACK_ENTRY_BYTES])
        if position > MAX_SEQ:  # even for a log we skip: the record is malformed
            raise LogError(f"{where}: acknowledged position {position} is over {MAX_SEQ}")
        if members is not None and key not in members:
            continue
        positions[key] = position
    return Acks(positions)


def _signed_bytes(name: str, seq: int, log: bytes, sealed: bool) -> bytes:
    return _HEAD_CONTEXT + name.encode() + b"\x00" + struct.pack(">Q", seq) + log + bytes([sealed])


def public_key(signing: Ed25519PrivateKey) -> bytes:
    return signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signed_seq(record: bytes) -> int | None:
    """The sequence number of a signed head, or None for another record (a plain log's bare
    RemoteLog), which backends then store without a sequence check. A sequence over
    :data:`MAX_SEQ` comes back as it is: the caller refuses it."""
    try:
        pb = remotelog_pb2.SignedHead.FromString(record)
    except DecodeError:
        return None
    if len(pb.writer) != 32 or len(pb.signature) != 64:
        return None
    return int(pb.seq)


def sign_head(signing: Ed25519PrivateKey, name: str, seq: int, log: bytes, sealed: bool) -> bytes:
    """The NS record for ``name``: the head page ``log`` at sequence ``seq`` (0..2**64-1; a
    reader refuses one over :data:`MAX_SEQ`), signed."""
    pb = remotelog_pb2.SignedHead(
        writer=public_key(signing),
        seq=seq,
        log=log,
        sealed=sealed,
        signature=signing.sign(_signed_bytes(name, seq, log, sealed)),
    )
    return pb.SerializeToString(deterministic=True)


@dataclass(frozen=True, slots=True)
class Head:
    writer: bytes
    seq: int
    log: bytes
    sealed: bool


def open_head(record: bytes, name: str, writer: bytes) -> Head:
    """Check an NS record: ours to read, from ``writer``, for ``name``, signature valid.

    Raises:
        LogError: oversized, undecodable, another writer's, a bad signature (forged), or a
            sequence over :data:`MAX_SEQ` (checked after the signature, so the message says
            whether the writer itself signed it).
    """
    if len(record) > MAX_OBJECT_BYTES:
        raise LogError(f"{name}: head record of {len(record)} bytes is over the limit")
    try:
        pb = remotelog_pb2.SignedHead.FromString(record)
    except DecodeError:
        raise LogError(f"{name}: head record is not a signed head") from None
    if pb.writer != writer:
        raise LogError(f"{name}: head record is signed by another key")
    try:
        Ed25519PublicKey.from_public_bytes(writer).verify(
            pb.signature, _signed_bytes(name, pb.seq, pb.log, pb.sealed)
        )
    except (InvalidSignature, ValueError):
        raise LogError(f"{name}: head record has a bad signature (forged or altered)") from None
    if pb.seq > MAX_SEQ:
        raise LogError(f"{name}: head sequence {pb.seq} is over {MAX_SEQ}")
    return Head(pb.writer, pb.seq, pb.log, pb.sealed)
