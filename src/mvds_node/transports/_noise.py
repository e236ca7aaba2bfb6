"""Our thin wrapper around ``noiseprotocol`` 0.3.1: XX handshake, session, one-way sealing.

Theory of operation
-------------------
A node's identity is an X25519 static :class:`Keypair`. Two nodes with a live byte stream run
``Noise_XX_25519_ChaChaPoly_SHA256``: three handshake messages (32, 96 and 64 bytes with the
empty payloads we send), after which each side holds a pair of ChaCha20-Poly1305 cipher states
and knows the static public key the other *proved*. That key is the peer's identity; nothing else
on the connection names the peer. :class:`NoiseHandshake` drives the handshake sans-IO (messages
in, messages out) and :class:`NoiseSession` encrypts and decrypts afterwards; the Trio stream on
top is ``_noise_stream.NoiseStream``.

The wrapper exists to contain the library's sharp edges (reference/STACK.md §2), in one place:

* ``write_message``/``read_message`` return ``bytearray`` but ``encrypt``/``decrypt`` refuse one,
  so everything crossing the boundary goes through ``bytes()``.
* ``encrypt`` checks the *plaintext* against 65535 bytes, so a 65535-byte plaintext produces a
  65551-byte ciphertext that no peer accepts, after the sender's nonce has advanced: the channel
  is desynchronised. We cap plaintext at :data:`MAX_PLAINTEXT` (65535 - 16) and refuse more.
* When the handshake finishes the library deletes ``handshake_state``; the XX responder learns
  the initiator's static key only from message 3, i.e. in the call that deletes it. We keep our
  own reference to the handshake state from the start and read ``rs`` from it after every message.
* Library and ``cryptography`` errors (``InvalidTag``, ``ValueError`` for short or low-order keys,
  its own ``Noise*Error`` classes) are mapped once to :class:`NoiseError`, a
  :class:`~mvds_node.errors.RemoteProtocolError`, when we read a message *and* when we write
  one: the responder computes its first Diffie-Hellman (``ee``) while *writing* message 2, from
  the ephemeral key the initiator sent in message 1. Misuse by our caller is
  :class:`~mvds_node.errors.LocalProtocolError`.
* The library checks no public key it receives. A low-order X25519 point (0, 1, the points of
  order 4 and 8, ``p-1``, ``p``, ``p+1``, and each with the unused top bit set) makes every
  Diffie-Hellman with it all zeros: ``cryptography`` raises, and a handshake that went on would
  have no secret in it. We refuse such a key as soon as it arrives: the ephemeral key of
  messages 1 and 2 before the library reads the message, the static key once it is decrypted.
  The check is a lookup in libsodium's list of such points, which the tests hold against the
  definition (a Diffie-Hellman with the key gives zero): it costs nothing, where a trial
  Diffie-Hellman would cost a stranger's connection one more X25519 operation.

The handshake payloads must be empty: the prologue (``mvds-node/1``) already binds the protocol
version, and a peer that stuffs data into them is refused rather than ignored.

One-way carriers (a file carried by hand, a multicast datagram) cannot run a handshake. For them
:func:`seal_to` uses the one-way pattern ``Noise_N`` (anonymous sender) or ``Noise_X`` (the sender
proves its static key) to the recipient's static key, and :func:`open_sealed` reverses it. The
blob is self-delimiting and authenticated end to end, including against truncation; its layout is
in ``docs/wire.md``. One-way patterns have no forward secrecy for the recipient: whoever later
steals the recipient's static private key can open every blob ever sealed to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from noise.connection import Keypair as _NoiseKey
from noise.connection import NoiseConnection
from noise.constants import Empty as _Empty
from noise.exceptions import (
    NoiseHandshakeError,
    NoiseInvalidMessage,
    NoiseMaxNonceError,
    NoiseValidationError,
    NoiseValueError,
)

from mvds_node.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "KEY_SIZE",
    "MAX_NOISE_MESSAGE",
    "MAX_PLAINTEXT",
    "PROLOGUE",
    "PROTOCOL_NAME",
    "Keypair",
    "NoiseError",
    "NoiseHandshake",
    "NoiseSession",
    "PeerRefused",
    "Unsealed",
    "length_prefixed",
    "open_sealed",
    "seal_to",
]

PROTOCOL_NAME: Final = b"Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE: Final = b"mvds-node/1"
KEY_SIZE: Final = 32
MAX_NOISE_MESSAGE: Final = 65535
"""The Noise spec's bound on any message; it is also what a u16 length prefix can say."""
TAG_SIZE: Final = 16
MAX_PLAINTEXT: Final = MAX_NOISE_MESSAGE - TAG_SIZE
"""65519: the largest plaintext whose ciphertext is still a legal Noise message."""

_U16: Final = struct.Struct(">H")

# Everything noiseprotocol and cryptography raise on bad input. ValueError covers short keys and
# low-order points (cryptography's "Error computing shared key").
_CRYPTO_ERRORS: Final = (
    InvalidTag,
    ValueError,
    NoiseValueError,
    NoiseInvalidMessage,
    NoiseHandshakeError,
    NoiseMaxNonceError,
    NoiseValidationError,
)


_P: Final = 2**255 - 19
_LOW_ORDER: Final = frozenset(
    {
        0,
        1,
        # The two points of order 8.
        0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
        0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F,
        _P - 1,
        _P,
        _P + 1,
    }
)
"""Every u < 2**255 that is a point of order 1, 2, 4 or 8 (canonical or not): with these, and
only these, an X25519 Diffie-Hellman gives all zeros, whatever the private key (libsodium's
list; the tests check it against the Diffie-Hellman itself)."""
_U_MASK: Final = (1 << 255) - 1  # X25519 ignores the top bit of a public key


def _usable_public(key: bytes) -> bool:
    """Whether ``key`` is a 32-byte X25519 public key with which a Diffie-Hellman has a secret
    (not a low-order point in any of its encodings). A set lookup, not a Diffie-Hellman: a
    stranger's bytes cost us nothing before we refuse them."""
    return len(key) == KEY_SIZE and int.from_bytes(key, "little") & _U_MASK not in _LOW_ORDER


class NoiseError(RemoteProtocolError):
    """Noise data from a peer was refused: a bad handshake message, a failed authentication tag,
    or a malformed sealed blob."""


class PeerRefused(NoiseError):
    """The peer proved a static key that we do not accept.

    Attributes:
        remote_static: the 32-byte X25519 public key the peer proved.
    """

    def __init__(self, remote_static: bytes, detail: str = "peer's static key refused") -> None:
        super().__init__(f"{detail}: {remote_static.hex()}")
        self.remote_static = remote_static


@final
@dataclass(frozen=True, slots=True, repr=False)
class Keypair:
    """An X25519 static key pair: a node's transport identity.

    The public half is the peer ID everywhere in the transports. ``repr`` shows only the public
    half, so a key pair in a log line or a traceback does not leak the private one.
    """

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> Keypair:
        """Make a fresh key pair from the OS random source."""
        return cls.from_private_bytes(
            X25519PrivateKey.generate().private_bytes(
                Encoding.Raw, PrivateFormat.Raw, NoEncryption()
            )
        )

    @classmethod
    def from_private_bytes(cls, private: bytes) -> Keypair:
        """Rebuild a key pair from its 32-byte private key.

        Raises:
            LocalProtocolError: not a 32-byte key.
        """
        if len(private) != KEY_SIZE:
            raise LocalProtocolError(
                f"an X25519 private key is {KEY_SIZE} bytes, got {len(private)}"
            )
        public = X25519PrivateKey.from_private_bytes(bytes(private)).public_key()
        return cls(bytes(private), public.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def __repr__(self) -> str:
        return f"Keypair(public={self.public.hex()})"


def length_prefixed(message: bytes) -> bytes:
    """Prefix one Noise message with its u16 big-endian length, as it travels on a stream.

    Raises:
        LocalProtocolError: longer than :data:`MAX_NOISE_MESSAGE`.
    """
    if len(message) > MAX_NOISE_MESSAGE:
        raise LocalProtocolError(f"a Noise message is at most {MAX_NOISE_MESSAGE} bytes")
    return _U16.pack(len(message)) + message


def _remote_static(handshake_state: Any) -> bytes | None:
    rs = handshake_state.rs
    if isinstance(rs, _Empty):
        return None
    return bytes(rs.public_bytes)


@final
class NoiseSession:
    """The transport phase of a finished handshake: encrypt and decrypt one message at a time.

    Messages must be decrypted in the order they were encrypted (the nonce is implicit), so this
    suits a reliable, ordered stream. After a decryption failure the session stays failed.
    """

    def __init__(self, connection: Any, remote_static: bytes, handshake_hash: bytes) -> None:
        # Built only by NoiseHandshake.session().
        self._conn = connection
        self._failed = False
        self.remote_static: Final = remote_static
        """The 32-byte X25519 public key the peer proved."""
        self.handshake_hash: Final = handshake_hash
        """Unique to this session on both sides (channel binding)."""

    def encrypt(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Encrypt one message.

        Raises:
            LocalProtocolError: more than :data:`MAX_PLAINTEXT` bytes (split it first).
        """
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(
                f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT}; split it first"
            )
        return bytes(self._conn.encrypt(bytes(plaintext)))

    def decrypt(self, ciphertext: bytes | bytearray | memoryview) -> bytes:
        """Decrypt and authenticate the next message.

        Raises:
            NoiseError: the message fails authentication (tampered, replayed, reordered, or not
                from this session), or an earlier one did.
        """
        if self._failed:
            raise NoiseError("session failed earlier")
        if len(ciphertext) > MAX_NOISE_MESSAGE:
            self._failed = True
            raise NoiseError(f"a Noise message is at most {MAX_NOISE_MESSAGE} bytes")
        try:
            return bytes(self._conn.decrypt(bytes(ciphertext)))
        except _CRYPTO_ERRORS as exc:
            self._failed = True
            raise NoiseError("message failed authentication") from exc


@final
class NoiseHandshake:
    """Sans-IO ``Noise_XX_25519_ChaChaPoly_SHA256``: call :meth:`write_message` and
    :meth:`read_message` in turn until :attr:`complete`, then take :meth:`session`.

    The initiator writes messages 1 and 3 and reads 2; it learns the responder's key from message
    2, so it can refuse the responder before revealing its own identity in message 3. The
    responder learns the initiator's key from message 3.
    """

    MESSAGES: Final = 3

    def __init__(self, static: Keypair, *, initiator: bool, prologue: bytes = PROLOGUE) -> None:
        """Start a handshake.

        Args:
            static: our identity.
            initiator: True on the side that opened the connection.
            prologue: bytes both sides must agree on (bound into the handshake hash).
        """
        conn = NoiseConnection.from_name(PROTOCOL_NAME)
        conn.set_prologue(bytes(prologue))
        conn.set_keypair_from_private_bytes(_NoiseKey.STATIC, static.private)
        if initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.start_handshake()
        self._conn = conn
        # The library deletes noise_protocol.handshake_state when the handshake finishes, which is
        # also the moment the responder learns ``rs``: hold our own reference from the start.
        self._state = conn.noise_protocol.handshake_state
        self._initiator = initiator
        self._step = 0
        self._failed = False
        self._remote_static: bytes | None = None

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def complete(self) -> bool:
        """All three messages have gone through."""
        return self._step == self.MESSAGES

    @property
    def our_turn(self) -> bool:
        """True if the next call must be :meth:`write_message`."""
        return not self.complete and (self._step % 2 == 0) == self._initiator

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key once it has been proved (initiator: after message 2;
        responder: after message 3), else None."""
        return self._remote_static

    def _check(self, *, writing: bool) -> None:
        if self._failed:
            raise LocalProtocolError("the handshake failed earlier")
        if self.complete:
            raise LocalProtocolError("the handshake is complete")
        if self.our_turn != writing:
            raise LocalProtocolError("not our turn to " + ("write" if writing else "read"))

    def write_message(self) -> bytes:
        """Produce the next handshake message (with an empty payload).

        Raises:
            NoiseError: a key the peer sent earlier leaves this message no shared secret (the
                responder's ``ee`` in message 2 is computed here). :meth:`read_message` refuses
                such keys first, so this is the crypto library's own refusal, mapped.
            LocalProtocolError: it is the peer's turn, or the handshake is over.
        """
        self._check(writing=True)
        try:
            message = bytes(self._conn.write_message(b""))
        except _CRYPTO_ERRORS as exc:
            self._failed = True
            raise NoiseError(f"handshake message {self._step + 1} cannot be made") from exc
        self._step += 1
        return message

    def read_message(self, message: bytes | bytearray | memoryview) -> None:
        """Consume the peer's next handshake message.

        Raises:
            NoiseError: the message is malformed, fails authentication, or carries a payload.
            LocalProtocolError: it is our turn to write, or the handshake is over.
        """
        self._check(writing=False)
        message = bytes(message)
        # Messages 1 and 2 open with the sender's ephemeral key in clear (the ``e`` token).
        if self._step < 2 and not _usable_public(message[:KEY_SIZE]):
            self._failed = True
            raise NoiseError(
                f"handshake message {self._step + 1}: the ephemeral key is not a usable X25519 "
                "key (short, or a low-order point)"
            )
        try:
            payload = self._conn.read_message(message)
        except _CRYPTO_ERRORS as exc:
            self._failed = True
            raise NoiseError(f"handshake message {self._step + 1} rejected") from exc
        self._step += 1
        if payload:
            self._failed = True
            raise NoiseError(f"handshake message {self._step} carries a payload")
        remote = _remote_static(self._state)
        if remote is not None and not _usable_public(remote):
            # The library's own Diffie-Hellman with it fails first today; this does not depend
            # on that.
            self._failed = True
            raise NoiseError(f"handshake message {self._step}: the static key is a low-order point")
        self._remote_static = remote

    def session(self) -> NoiseSession:
        """The transport phase.

        Raises:
            LocalProtocolError: the handshake is not complete.
        """
        if not self.complete or self._failed or self._remote_static is None:
            raise LocalProtocolError("the handshake is not complete")
        return NoiseSession(self._conn, self._remote_static, bytes(self._conn.get_handshake_hash()))


# --- one-way sealing -------------------------------------------------------------------------

_SEAL_MAGIC: Final = b"MS"
_SEAL_VERSION: Final = 1
_PATTERN_N: Final = ord("N")
_PATTERN_X: Final = ord("X")
_SEAL_HEADER_SIZE: Final = 4
_LAST: Final = 0x01
_MORE: Final = 0x00
# Every chunk's plaintext (flag byte + data) must fit in the *handshake* message of Noise_X too:
# 65535 - 32 (e) - 48 (encrypted s) - 16 (payload tag) = 65439, minus the flag byte.
_SEAL_CHUNK: Final = MAX_NOISE_MESSAGE - 32 - 48 - TAG_SIZE - 1


@final
@dataclass(frozen=True, slots=True)
class Unsealed:
    """What :func:`open_sealed` recovered."""

    plaintext: bytes
    sender: bytes | None
    """The sender's static public key if it sealed with one (``Noise_X``): proved, not claimed.
    None for an anonymous (``Noise_N``) blob."""


def _one_way(pattern: int) -> NoiseConnection:
    return NoiseConnection.from_name(f"Noise_{chr(pattern)}_25519_ChaChaPoly_SHA256".encode())


def seal_to(
    recipient_pub: bytes, plaintext: bytes, *, sender_static: Keypair | None = None
) -> bytes:
    """Encrypt ``plaintext`` so that only the holder of ``recipient_pub``'s private key can read it.

    Without ``sender_static`` the blob is anonymous (``Noise_N``); with it, the recipient learns
    and can trust the sender's static public key (``Noise_X``). Either way a fresh ephemeral key
    is used per blob, so sealing the same plaintext twice gives unrelated blobs.

    Args:
        recipient_pub: the recipient's 32-byte X25519 public key.
        plaintext: any length; it is cut into authenticated chunks.
        sender_static: our identity, to prove it to the recipient.

    Returns:
        The blob (layout in ``docs/wire.md``).

    Raises:
        LocalProtocolError: ``recipient_pub`` is not a usable X25519 public key.
    """
    if len(recipient_pub) != KEY_SIZE:
        raise LocalProtocolError(
            f"recipient key must be {KEY_SIZE} bytes, got {len(recipient_pub)}"
        )
    pattern = _PATTERN_N if sender_static is None else _PATTERN_X
    header = _SEAL_MAGIC + bytes([_SEAL_VERSION, pattern])
    conn = _one_way(pattern)
    conn.set_prologue(header)
    conn.set_as_initiator()
    try:
        conn.set_keypair_from_public_bytes(_NoiseKey.REMOTE_STATIC, bytes(recipient_pub))
        if sender_static is not None:
            conn.set_keypair_from_private_bytes(_NoiseKey.STATIC, sender_static.private)
        conn.start_handshake()
        chunks = [plaintext[i : i + _SEAL_CHUNK] for i in range(0, len(plaintext), _SEAL_CHUNK)]
        chunks = chunks or [b""]
        flags = [_MORE] * (len(chunks) - 1) + [_LAST]
        out = [header, length_prefixed(bytes(conn.write_message(bytes([flags[0]]) + chunks[0])))]
        for flag, chunk in zip(flags[1:], chunks[1:], strict=True):
            out.append(length_prefixed(bytes(conn.encrypt(bytes([flag]) + chunk))))
    except _CRYPTO_ERRORS as exc:
        raise LocalProtocolError("recipient key is not a usable X25519 public key") from exc
    return b"".join(out)


def open_sealed(own_static: Keypair, blob: bytes | bytearray | memoryview) -> Unsealed:
    """Open a blob made by :func:`seal_to` for our key.

    Args:
        own_static: our key pair (the recipient's).
        blob: the sealed bytes.

    Returns:
        The plaintext and, for a ``Noise_X`` blob, the sender's proved static key.

    Raises:
        NoiseError: the blob is not sealed to this key, was altered, truncated or extended, or is
            not a sealed blob at all.
    """
    data = memoryview(bytes(blob))
    if len(data) < _SEAL_HEADER_SIZE or bytes(data[:2]) != _SEAL_MAGIC:
        raise NoiseError("not a sealed blob")
    if data[2] != _SEAL_VERSION:
        raise NoiseError(f"sealed blob version {data[2]} not supported")
    pattern = data[3]
    if pattern not in (_PATTERN_N, _PATTERN_X):
        raise NoiseError(f"sealed blob pattern 0x{pattern:02x} not supported")
    conn = _one_way(pattern)
    conn.set_prologue(bytes(data[:_SEAL_HEADER_SIZE]))
    conn.set_as_responder()
    conn.set_keypair_from_private_bytes(_NoiseKey.STATIC, own_static.private)
    conn.start_handshake()
    state = conn.noise_protocol.handshake_state  # deleted by the library once read (see above)
    offset = _SEAL_HEADER_SIZE
    parts: list[bytes] = []
    first = True
    while True:
        if len(data) - offset < _U16.size:
            raise NoiseError("sealed blob is truncated")
        (size,) = _U16.unpack(data[offset : offset + _U16.size])
        offset += _U16.size
        if len(data) - offset < size:
            raise NoiseError("sealed blob is truncated")
        message = bytes(data[offset : offset + size])
        offset += size
        try:
            chunk = bytes(conn.read_message(message) if first else conn.decrypt(message))
        except _CRYPTO_ERRORS as exc:
            raise NoiseError("sealed blob is not for this key, or was altered") from exc
        first = False
        if not chunk or chunk[0] not in (_MORE, _LAST):
            raise NoiseError("sealed blob chunk has no valid flag")
        parts.append(chunk[1:])
        if chunk[0] == _LAST:
            break
    if offset != len(data):
        raise NoiseError(f"{len(data) - offset} bytes after the last sealed chunk")
    sender = _remote_static(state) if pattern == _PATTERN_X else None
    return Unsealed(b"".join(parts), sender)
