"""The signed envelope: who wrote an application message, inside its MVDS body.

Theory of operation
-------------------
MVDS names no author: a message relayed by a member, carried in a group bundle, heard over
multicast or read from a sealed log proves membership of the group, not which member wrote it.
So in a group with ``envelope = "signed"`` (the default) the node puts every application body
in an envelope before the engine sees it: the author's Ed25519 public key (the identity's
signing key, :class:`~._identity.Identity`) and a signature over a domain-separated hash of
(group ID, timestamp, inner body). The MVDS wire is unchanged: the envelope is the MVDS body,
so the message ID covers it, and a plain MVDS peer relays it as opaque bytes.

The bytes (``docs/wire.md`` has them with an example a test checks)::

    offset  size  field
    0       3     magic "mve" (6d 76 65)
    3       1     version, 0x01
    4       1     key type, 0x01 = Ed25519
    5       32    author's Ed25519 public key
    37      64    Ed25519 signature
    101     1     depth k, 0..16: 0, the signature covers this message's digest; k > 0, it
                  covers the root of a batch of up to 2^k messages (``seal_batch``)
    102     2     index in the batch, u16 big-endian, below 2^k (0 when k = 0)
    104     32k   the Merkle path: the sibling hashes from the leaf up
    104+32k 4     inner body length n, u32 big-endian (the rest of the body, exactly)
    108+32k n     inner body

    digest = SHA-256("mvds-node envelope v1" 0x00 || u16 len(group) || group
                     || i64 timestamp || u32 n || inner body)     (all big-endian)
    leaf   = SHA-256(0x00 || digest); node = SHA-256(0x01 || left || right);
             a batch is padded to 2^k leaves with SHA-256(0x02)
    batch  = SHA-256("mvds-node envelope batch v1" 0x00 || u8 k || root)

Signing costs about 34 µs, so :meth:`Node.send_many` signs batches: one signature per
:data:`BATCH` messages, over the root of their Merkle tree, as Hypercore signs one tree root per
append. Each message still carries its whole proof (the root's signature and its path, 32
bytes per level), so a relayed message is checked alone, wherever it comes from; a reader
that checked a root's signature once remembers it (:class:`Authors`), so a relayed batch costs
one signature check, not one per message (and a copy that comes again, none).

:func:`open_envelope` bounds everything it reads (fixed sizes, the length equal to what is
left and at most the body limit) and raises only :class:`EnvelopeError`.

:class:`Authors` is the node's check (the engine's validator, :data:`~mvds_node.sync.Validator`):
the author must be a member of the group (its ``log_key`` under ``[[peers]]``) or this node,
and the signature must verify, except for a message that came straight from its author over
a Noise session: the session proved the peer, and the peer's Ed25519 key is its ``log_key``
(configured, or learned from its ``AUTHOR`` frame), so the signature check (about 109 µs)
is skipped then. Relays, bundles, multicast and remote logs are verified.

Messages stored before envelopes existed, and every message of a ``raw`` group, have no
envelope: they open as :func:`unwrap` says, with no author.

A member added by its Noise key alone (no ``log_key``) teaches its Ed25519 key when it
connects: it sends an ``AUTHOR`` control frame on every carrier that proves the peer, with its
Ed25519 key and a signature of :func:`binding_digest` of its own X25519 key
(:func:`sign_binding`). The receiver checks the signature against the X25519 key the session
proved (:func:`verify_binding`), so the frame binds the two keys of one identity: a relay, a
bundle or multicast cannot teach it, and a peer cannot claim another's signing key (it could
not sign our binding digest with it). The node adopts the key (``Node``), trust on first use.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mvds_node.sync import RejectReason

__all__ = [
    "ENVELOPE_OVERHEAD",
    "Authors",
    "EnvelopeError",
    "Opened",
    "binding_digest",
    "open_envelope",
    "seal",
    "seal_batch",
    "sign_binding",
    "signing_digest",
    "unwrap",
    "verify_binding",
]

MAGIC: Final = b"mve"
VERSION: Final = 1
KEY_ED25519: Final = 1
_HEADER: Final = struct.Struct(">3sBB32s64sBH")
_LENGTH: Final = struct.Struct(">I")
ENVELOPE_OVERHEAD: Final = _HEADER.size + _LENGTH.size
"""Bytes an envelope signed alone adds to a body (108); a batch's adds 32 per level."""
MAX_DEPTH: Final = 16
BATCH: Final = 64
"""Messages per signature in :func:`seal_batch` (a path of 6 hashes, 192 bytes)."""
_DOMAIN: Final = b"mvds-node envelope v1\x00"
_BATCH_DOMAIN: Final = b"mvds-node envelope batch v1\x00"
_BINDING_DOMAIN: Final = b"mvds-node author binding v1\x00"
_PAD: Final = hashlib.sha256(b"\x02").digest()
MAX_INNER_BYTES: Final = 1024 * 1024
"""The largest inner body :func:`open_envelope` accepts (the engine's body limit)."""


class EnvelopeError(ValueError):
    """Bytes that start like an envelope but are not a well-formed one."""


@final
@dataclass(frozen=True, slots=True)
class Opened:
    """An envelope's fields, as read (not yet verified)."""

    author: bytes
    signature: bytes
    body: bytes
    index: int = 0
    path: tuple[bytes, ...] = ()
    """The Merkle path of a batch-signed message (empty: signed alone)."""

    def signed_bytes(self, group_id: bytes, timestamp: int) -> bytes:
        """What the signature covers, for this message in ``group_id`` at ``timestamp``."""
        digest = signing_digest(group_id, timestamp, self.body)
        if not self.path:
            return digest
        node = _leaf(digest)
        for level, sibling in enumerate(self.path):
            left, right = (sibling, node) if self.index >> level & 1 else (node, sibling)
            node = _node(left, right)
        return _batch_root(len(self.path), node)


def signing_digest(group_id: bytes, timestamp: int, body: bytes) -> bytes:
    """The SHA-256 digest an envelope's signature covers (one signed alone), or its leaf."""
    h = hashlib.sha256(_DOMAIN)
    h.update(struct.pack(">H", len(group_id)))
    h.update(group_id)
    h.update(struct.pack(">qI", timestamp, len(body)))
    h.update(body)
    return h.digest()


def binding_digest(noise_key: bytes) -> bytes:
    """What an ``AUTHOR`` frame's signature covers: SHA-256 of the domain and the sender's
    X25519 static key (its Noise identity)."""
    return hashlib.sha256(_BINDING_DOMAIN + noise_key).digest()


def sign_binding(key: Ed25519PrivateKey, noise_key: bytes) -> bytes:
    """The signature that binds ``key``'s public key to the X25519 key ``noise_key``."""
    return key.sign(binding_digest(noise_key))


def verify_binding(signing_key: bytes, noise_key: bytes, signature: bytes) -> bool:
    """Whether ``signature`` by the Ed25519 key ``signing_key`` binds it to ``noise_key``;
    never raises (a malformed key or signature is ``False``)."""
    try:
        Ed25519PublicKey.from_public_bytes(signing_key).verify(signature, binding_digest(noise_key))
    except (InvalidSignature, ValueError):
        return False
    return True


def _leaf(digest: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + digest).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _batch_root(depth: int, root: bytes) -> bytes:
    return hashlib.sha256(_BATCH_DOMAIN + bytes([depth]) + root).digest()


def _encode(
    author: bytes, signature: bytes, index: int, path: list[bytes] | tuple[bytes, ...], body: bytes
) -> bytes:
    return b"".join(
        (
            _HEADER.pack(MAGIC, VERSION, KEY_ED25519, author, signature, len(path), index),
            *path,
            _LENGTH.pack(len(body)),
            body,
        )
    )


def seal(
    key: Ed25519PrivateKey, author: bytes, group_id: bytes, timestamp: int, body: bytes
) -> bytes:
    """``body`` in an envelope signed by ``key`` (whose public key is ``author``)."""
    signature = key.sign(signing_digest(group_id, timestamp, body))
    return _encode(author, signature, 0, (), body)


def seal_batch(
    key: Ed25519PrivateKey, author: bytes, group_id: bytes, timestamp: int, bodies: list[bytes]
) -> list[bytes]:
    """Each of ``bodies`` in an envelope, one signature per :data:`BATCH` of them (over the
    root of their Merkle tree); each envelope carries its own path, so it is checked alone."""
    out: list[bytes] = []
    for first in range(0, len(bodies), BATCH):
        chunk = bodies[first : first + BATCH]
        if len(chunk) == 1:
            out.append(seal(key, author, group_id, timestamp, chunk[0]))
            continue
        depth = (len(chunk) - 1).bit_length()
        levels = [[_leaf(signing_digest(group_id, timestamp, b)) for b in chunk]]
        levels[0] += [_PAD] * ((1 << depth) - len(chunk))
        while len(levels[-1]) > 1:
            below = levels[-1]
            levels.append([_node(below[i], below[i + 1]) for i in range(0, len(below), 2)])
        signature = key.sign(_batch_root(depth, levels[-1][0]))
        for i, body in enumerate(chunk):
            path = [levels[level][(i >> level) ^ 1] for level in range(depth)]
            out.append(_encode(author, signature, i, path, body))
    return out


def is_envelope(data: bytes | memoryview) -> bool:
    """Whether ``data`` starts as an envelope does (well-formed or not)."""
    return bytes(data[:3]) == MAGIC


def open_envelope(data: bytes | memoryview, *, max_body: int = MAX_INNER_BYTES) -> Opened:
    """Read an envelope's fields (without verifying the signature).

    Raises:
        EnvelopeError: not an envelope, an unknown version or key type, a depth over 16 or an
            index outside the batch, or a length that does not match the bytes (or exceeds
            ``max_body``).
    """
    if len(data) < ENVELOPE_OVERHEAD:
        raise EnvelopeError(f"envelope of {len(data)} bytes is shorter than its header")
    magic, version, kind, author, signature, depth, index = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EnvelopeError("not an envelope (no magic)")
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version} is not supported")
    if kind != KEY_ED25519:
        raise EnvelopeError(f"envelope key type {kind} is not supported")
    if depth > MAX_DEPTH:
        raise EnvelopeError(f"envelope batch depth {depth} exceeds {MAX_DEPTH}")
    if index >> depth:
        raise EnvelopeError(f"envelope index {index} is outside a batch of depth {depth}")
    at = _HEADER.size + 32 * depth
    if len(data) < at + _LENGTH.size:
        raise EnvelopeError(f"envelope of {len(data)} bytes is shorter than its path")
    path = tuple(bytes(data[i : i + 32]) for i in range(_HEADER.size, at, 32))
    (n,) = _LENGTH.unpack_from(data, at)
    at += _LENGTH.size
    if n > max_body:
        raise EnvelopeError(f"inner body of {n} bytes exceeds {max_body}")
    if n != len(data) - at:
        raise EnvelopeError(f"inner body length {n} does not match the {len(data) - at} bytes left")
    return Opened(author, signature, bytes(data[at:]), index, path)


def unwrap(data: bytes) -> tuple[bytes | None, bytes]:
    """(author, inner body) of a stored body: an envelope's author and body, or (None, data)
    for a body without one (a raw group's, or one stored before envelopes). The author is
    the one the node verified when it stored the message; it is not checked again."""
    # On every delivery: the fields :func:`open_envelope` checks, without building its path.
    if len(data) < ENVELOPE_OVERHEAD or data[:3] != MAGIC:
        return None, data
    _, version, kind, author, _, depth, index = _HEADER.unpack_from(data)
    at = _HEADER.size + 32 * depth
    if version != VERSION or kind != KEY_ED25519 or depth > MAX_DEPTH or index >> depth:
        return None, data
    if len(data) < at + _LENGTH.size:
        return None, data
    (n,) = _LENGTH.unpack_from(data, at)
    if n > MAX_INNER_BYTES or n != len(data) - at - _LENGTH.size:
        return None, data
    return author, data[at + _LENGTH.size :]


_VERIFIED_BATCHES: Final = 4096
"""Signatures (of batch roots, or of messages signed alone) a node remembers having checked:
a batch relayed whole, or a copy that comes again, costs no second check."""


@final
class Authors:
    """Who may write in each signed group, and the check of each received message.

    Args:
        me: our Ed25519 public key (our own messages, relayed back to us, are ours).
        signed: group ID -> the Ed25519 keys of its members, for each signed group; groups
            not in it are raw (no envelope expected).
        peer_keys: a member's X25519 key (its engine peer ID) -> its Ed25519 key.
        mismatch: called with (group ID, peer, what came) when a message shows that a peer's
            envelope setting differs from ours (``"raw"`` or ``"signed"``).
        legacy_before: Unix ms since which this node requires envelopes in signed groups: a
            member's message without one, timestamped before, was written before envelopes
            existed (stored by an earlier release, still on its way) and is taken without an
            author (``Message.author`` None, as for a raw group); after it, it is refused
            (``unsigned``). 0: every unsigned message is refused.
    """

    __slots__ = (
        "_batches",
        "_keys",
        "_legacy_before",
        "_me",
        "_mismatch",
        "_peer_keys",
        "_signed",
        "legacy",
        "trusted",
        "verified",
    )

    def __init__(
        self,
        me: bytes,
        signed: Mapping[bytes, frozenset[bytes]],
        peer_keys: Mapping[bytes, bytes],
        mismatch: Callable[[bytes, bytes, str], None] = lambda g, p, s: None,
        legacy_before: int = 0,
    ) -> None:
        self._me = me
        self._legacy_before = legacy_before
        self.legacy = 0
        """Messages without an envelope taken because they predate ``legacy_before``."""
        self._signed = dict(signed)
        self._peer_keys = dict(peer_keys)
        self._mismatch = mismatch
        self._keys: dict[bytes, Ed25519PublicKey] = {}
        # (author, what is signed, signature) checked, oldest first.
        self._batches: dict[bytes, None] = {}
        self.verified = 0
        """Signatures checked since the node started."""
        self.trusted = 0
        """Messages taken on the word of their author's Noise session, unchecked."""

    def update(
        self, signed: Mapping[bytes, frozenset[bytes]], peer_keys: Mapping[bytes, bytes]
    ) -> None:
        """The configuration changed: new groups, members or keys."""
        self._signed = dict(signed)
        self._peer_keys = dict(peer_keys)

    def is_signed(self, group_id: bytes) -> bool:
        return group_id in self._signed

    def __call__(
        self,
        group_id: bytes,
        peer: bytes,
        timestamp: int,
        body: bytes,
        direct: bool,
        *,
        ephemeral: bool = False,
    ) -> str | None:
        """The engine's validator (``ephemeral``: a NOSYNC message, which has no timestamp and
        no earlier release to come from: never taken without an envelope)."""
        members = self._signed.get(group_id)
        if members is None:  # a raw group: any body, no author
            if is_envelope(body):
                try:
                    open_envelope(body)
                except EnvelopeError:
                    pass
                else:
                    self._mismatch(group_id, peer, "signed")
            return None
        if not is_envelope(body):
            if not ephemeral and self._legacy_before and timestamp < self._legacy_before:
                self.legacy += 1  # written before envelopes: no author, and it says so
                return None
            self._mismatch(group_id, peer, "raw")
            return RejectReason.UNSIGNED
        author, _ = unwrap(body)  # the common case first: well-formed, from its author
        if author is None:
            return RejectReason.ENVELOPE_MALFORMED
        if author not in members and author != self._me:
            return RejectReason.UNKNOWN_AUTHOR
        if direct and self._peer_keys.get(peer) == author:
            self.trusted += 1  # the Noise session proved the peer, and the peer wrote it
            return None
        opened = open_envelope(body)  # well-formed: unwrap checked what this checks
        signed = opened.signed_bytes(group_id, timestamp)
        seen = author + signed + opened.signature
        if seen in self._batches:
            return None  # this signature was checked already (a batch's root, a copy)
        key = self._keys.get(author)
        if key is None:
            try:
                key = Ed25519PublicKey.from_public_bytes(author)
            except ValueError:
                return RejectReason.BAD_SIGNATURE
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[author] = key
        self.verified += 1
        try:
            key.verify(opened.signature, signed)
        except InvalidSignature:
            return RejectReason.BAD_SIGNATURE
        batches = self._batches
        if len(batches) >= _VERIFIED_BATCHES:
            del batches[next(iter(batches))]
        batches[seen] = None
        return None
