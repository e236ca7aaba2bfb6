"""The packet header: a fixed binary layout ahead of every packet a transport carries.

Theory of operation
-------------------
Every packet is one *frame*: an 8-byte header, then a body of the length the header declares::

    offset  size  field
    0       2     magic    0x4D 0x56 ("MV")
    2       1     version  0x01
    3       1     mode     0x01 SYNC, 0x02 NOSYNC, 0x03 CONTROL
    4       4     length   u32 big-endian, bytes of body that follow the header
    8       n     body     depends on the mode

``SYNC`` carries an MVDS payload for the sync engine, opaque here. ``NOSYNC`` carries an ephemeral
application message for a group (u8 group-id length, the group id, then the body); it never
enters the engine. ``CONTROL`` carries one control message: a kind byte and a fixed layout per
kind (ping, pong, hello, author). ``docs/wire.md`` documents every byte, with examples that a
test checks against this module.

The header is fixed binary rather than protobuf because a receiver must classify a packet, and on
a stream find where it ends, before trusting any of it: field order is not a header. The magic
lets a datagram transport tell our packets from stray traffic; the version lets a later format
coexist on the same carrier. Each check runs on as many bytes as have arrived, so a stream that
starts with ``GET /`` is refused after two bytes, not after the body it pretends to announce.

Everything here is sans-IO and pure. :func:`encode_frame` and :func:`decode_frame` handle one
whole packet (a datagram, a file). :class:`FrameDecoder` cuts a byte stream into packets: it
buffers at most a bounded amount, parses with a commit/rollback cursor (a partial frame leaves
the buffer untouched), and refuses a declared length over the limit as soon as the header
arrives, without waiting for the body. Errors from the peer's bytes are :class:`FrameError` (a
:class:`~mvds_node.errors.RemoteProtocolError`) with a :class:`FrameErrorReason`; errors in the
caller's own frames are :class:`~mvds_node.errors.LocalProtocolError`. Decoding is strict: a
frame that decodes re-encodes to the same bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Final, final

from mvds_node.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AVAILABLE_ALWAYS",
    "AVAILABLE_UNKNOWN",
    "DEFAULT_LIMITS",
    "HEADER_SIZE",
    "MAGIC",
    "WIRE_VERSION",
    "Capability",
    "Author",
    "ControlKind",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameErrorReason",
    "FrameLimits",
    "Hello",
    "FrameMode",
    "NoSyncFrame",
    "Ping",
    "Pong",
    "SyncFrame",
    "UnknownControl",
    "check_frame",
    "decode_checked",
    "decode_frame",
    "encode_frame",
]

MAGIC: Final = b"MV"
WIRE_VERSION: Final = 1
HEADER_SIZE: Final = 8
_HEADER: Final = struct.Struct(">2sBBI")

AVAILABLE_UNKNOWN: Final = 0
"""``Hello.available_until_ms`` when the sender gives no hint."""
AVAILABLE_ALWAYS: Final = 2**64 - 1
"""``Hello.available_until_ms`` when the sender plans no end (an always-on helper)."""

_U32_MAX: Final = 2**32 - 1
_U64_MAX: Final = 2**64 - 1


class FrameMode(enum.IntEnum):
    """The header's mode byte: what the body is."""

    SYNC = 0x01
    """An MVDS payload for the sync engine."""
    NOSYNC = 0x02
    """An ephemeral application message for a group; it bypasses the sync engine."""
    CONTROL = 0x03
    """A control message between the two carriers' ends (ping, pong, hello)."""


class ControlKind(enum.IntEnum):
    """The first body byte of a ``CONTROL`` frame."""

    PING = 0x01
    PONG = 0x02
    HELLO = 0x03
    AUTHOR = 0x04


class Capability(enum.IntFlag, boundary=enum.KEEP):
    """Bits of ``Hello.capabilities``; unknown bits are kept so they survive a round trip."""

    SYNC = 0x01
    """Runs an MVDS engine: send it SYNC frames."""
    NOSYNC = 0x02
    """Accepts NOSYNC (ephemeral) frames."""
    REMOTE_LOG = 0x04
    """Publishes a remote log, so its messages can be fetched while it is away."""
    RELAY = 0x08
    """Relays group messages to group peers it is not the origin of."""


class FrameErrorReason(enum.Enum):
    """Why a peer's bytes are not a frame we accept; values are stable tokens for events."""

    BAD_MAGIC = "bad-magic"
    """The first two bytes are not ``MV``: not our protocol at all."""
    UNKNOWN_VERSION = "unknown-version"
    """Our magic, but a version this node does not speak."""
    UNKNOWN_MODE = "unknown-mode"
    """A mode byte outside :class:`FrameMode`."""
    LENGTH_OVER_LIMIT = "length-over-limit"
    """The header declares a body longer than :attr:`FrameLimits.max_body_bytes`."""
    OVERSIZED = "oversized"
    """A whole packet (datagram) larger than :attr:`FrameLimits.max_frame_bytes`."""
    TRUNCATED = "truncated"
    """Fewer bytes than the header declares: a packet cut short, or a stream closed mid-frame."""
    TRAILING_BYTES = "trailing-bytes"
    """A packet longer than its header declares."""
    MALFORMED_BODY = "malformed-body"
    """The body does not have the layout its mode requires."""


class FrameError(RemoteProtocolError):
    """A peer's bytes are not an acceptable frame.

    Attributes:
        reason: which rule the bytes broke.
    """

    def __init__(self, reason: FrameErrorReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class FrameLimits:
    """Bounds on what a peer can make us buffer."""

    # The engine's largest payload (sync ``Limits.max_payload_bytes``, 4 MiB) must fit in one SYNC
    # frame; a bigger body buys nothing and costs memory on every connection that buffers it.
    max_body_bytes: int = 4 * 1024 * 1024
    # Group IDs are 32-byte hashes in practice; 64 matches the engine's limit, and a u8 length
    # caps it at 255 on the wire in any case.
    max_group_id_bytes: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.max_body_bytes <= _U32_MAX:
            raise ValueError("max_body_bytes must be in 1..2**32-1")
        if not 0 < self.max_group_id_bytes <= 255:
            raise ValueError("max_group_id_bytes must be in 1..255")

    @property
    def max_frame_bytes(self) -> int:
        """The largest whole packet, header included."""
        return HEADER_SIZE + self.max_body_bytes


DEFAULT_LIMITS: Final = FrameLimits()


class Frame:
    """Base of every decoded frame. Each subclass is one frozen, slotted dataclass."""

    __slots__ = ()


@final
@dataclass(frozen=True, slots=True)
class SyncFrame(Frame):
    """``SYNC``: an MVDS payload, opaque to this layer."""

    payload: bytes


@final
@dataclass(frozen=True, slots=True)
class NoSyncFrame(Frame):
    """``NOSYNC``: an ephemeral application message for a group, never stored or acknowledged."""

    group_id: bytes
    body: bytes


@final
@dataclass(frozen=True, slots=True)
class Ping(Frame):
    """``CONTROL``/``PING``: asks for a :class:`Pong` echoing ``nonce``."""

    nonce: int
    """u64, chosen by the sender to match the pong."""


@final
@dataclass(frozen=True, slots=True)
class Pong(Frame):
    """``CONTROL``/``PONG``: the answer to a :class:`Ping`."""

    nonce: int


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(Frame):
    """``CONTROL``/``HELLO``: what the sender speaks, and how long it expects to stay reachable."""

    version: int = WIRE_VERSION
    """The highest wire version the sender speaks (u8)."""
    capabilities: Capability = field(default=Capability.SYNC | Capability.NOSYNC)
    """What the sender does (u32 of :class:`Capability` bits)."""
    available_until_ms: int = AVAILABLE_UNKNOWN
    """Unix milliseconds until which the sender expects to be reachable on this carrier (u64);
    :data:`AVAILABLE_UNKNOWN` (0) for no hint, :data:`AVAILABLE_ALWAYS` for no planned end."""
    max_frame_bytes: int = DEFAULT_LIMITS.max_frame_bytes
    """The largest frame the sender accepts (u32), header included."""


AUTHOR_KEY_ED25519: Final = 0x01
"""``Author.key_type`` of an Ed25519 key, the only type there is."""


@final
@dataclass(frozen=True, slots=True)
class Author(Frame):
    """``CONTROL``/``AUTHOR``: the Ed25519 key that signs the sender's envelopes, bound to the
    sender's X25519 (Noise) static key by a signature over that key (``node/_envelope.py``
    makes and checks it; this layer reads only the bytes)."""

    signing_key: bytes
    """The sender's Ed25519 public key (32 bytes)."""
    signature: bytes
    """Its Ed25519 signature of the binding digest (64 bytes)."""
    key_type: int = AUTHOR_KEY_ED25519
    """The key's type (u8); only :data:`AUTHOR_KEY_ED25519` is accepted."""


@final
@dataclass(frozen=True, slots=True)
class UnknownControl(Frame):
    """A ``CONTROL`` frame of a kind this node does not know; a receiver ignores it.

    Control kinds may be added without a version bump, so an older node must not treat a newer
    kind as hostile.
    """

    kind: int
    """The kind byte (never one of :class:`ControlKind`)."""
    body: bytes
    """The bytes after the kind byte."""


_MODES: Final = frozenset(m.value for m in FrameMode)
_CONTROL_KINDS: Final = frozenset(k.value for k in ControlKind)
_NONCE: Final = struct.Struct(">BQ")
_HELLO: Final = struct.Struct(">BBIQI")
_AUTHOR: Final = struct.Struct(">BB32s64s")


def _encode_body(frame: Frame, limits: FrameLimits) -> tuple[FrameMode, bytes]:
    if isinstance(frame, SyncFrame):
        return FrameMode.SYNC, bytes(frame.payload)
    if isinstance(frame, NoSyncFrame):
        if not 0 < len(frame.group_id) <= limits.max_group_id_bytes:
            raise LocalProtocolError(
                f"group id must be 1..{limits.max_group_id_bytes} bytes, got {len(frame.group_id)}"
            )
        return FrameMode.NOSYNC, bytes([len(frame.group_id)]) + frame.group_id + frame.body
    if isinstance(frame, Ping | Pong):
        if not 0 <= frame.nonce <= _U64_MAX:
            raise LocalProtocolError("nonce must fit in 64 bits")
        kind = ControlKind.PING if isinstance(frame, Ping) else ControlKind.PONG
        return FrameMode.CONTROL, _NONCE.pack(kind, frame.nonce)
    if isinstance(frame, Hello):
        if not (
            0 <= frame.version <= 255
            and 0 <= frame.capabilities <= _U32_MAX
            and 0 <= frame.available_until_ms <= _U64_MAX
            and 0 <= frame.max_frame_bytes <= _U32_MAX
        ):
            raise LocalProtocolError(f"a Hello field is out of range: {frame!r}")
        body = _HELLO.pack(
            ControlKind.HELLO,
            frame.version,
            int(frame.capabilities),
            frame.available_until_ms,
            frame.max_frame_bytes,
        )
        return FrameMode.CONTROL, body
    if isinstance(frame, Author):
        if (
            frame.key_type != AUTHOR_KEY_ED25519
            or len(frame.signing_key) != 32
            or len(frame.signature) != 64
        ):
            raise LocalProtocolError(f"an Author field is out of range: {frame!r}")
        body = _AUTHOR.pack(ControlKind.AUTHOR, frame.key_type, frame.signing_key, frame.signature)
        return FrameMode.CONTROL, body
    if isinstance(frame, UnknownControl):
        if frame.kind in _CONTROL_KINDS or not 0 <= frame.kind <= 255:
            raise LocalProtocolError(
                f"UnknownControl kind must be an unused byte, got {frame.kind}"
            )
        return FrameMode.CONTROL, bytes([frame.kind]) + frame.body
    raise LocalProtocolError(f"not a frame: {frame!r}")


def encode_frame(frame: Frame, *, limits: FrameLimits = DEFAULT_LIMITS) -> bytes:
    """Encode one frame, header included.

    Args:
        frame: the frame to send.
        limits: the body must fit in ``limits.max_body_bytes``.

    Returns:
        The packet bytes.

    Raises:
        LocalProtocolError: the frame is too large, or a field is out of range.
    """
    mode, body = _encode_body(frame, limits)
    if len(body) > limits.max_body_bytes:
        raise LocalProtocolError(
            f"frame body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}"
        )
    return _HEADER.pack(MAGIC, WIRE_VERSION, mode, len(body)) + body


def _check_header_prefix(data: bytes | bytearray | memoryview, limits: FrameLimits) -> int | None:
    """Check as much of a header as ``data`` holds; return the body length once it is complete.

    Raises:
        FrameError: the bytes so far already break a rule.
    """
    n = len(data)
    if (n >= 1 and data[0] != MAGIC[0]) or (n >= 2 and data[1] != MAGIC[1]):
        raise FrameError(FrameErrorReason.BAD_MAGIC, f"starts with {bytes(data[:2]).hex()}")
    if n >= 3 and data[2] != WIRE_VERSION:
        raise FrameError(
            FrameErrorReason.UNKNOWN_VERSION, f"version {data[2]}, we speak {WIRE_VERSION}"
        )
    if n >= 4 and data[3] not in _MODES:
        raise FrameError(FrameErrorReason.UNKNOWN_MODE, f"mode 0x{data[3]:02x}")
    if n < HEADER_SIZE:
        return None
    length: int = int.from_bytes(data[4:8], "big")
    if length > limits.max_body_bytes:
        raise FrameError(
            FrameErrorReason.LENGTH_OVER_LIMIT,
            f"declares a {length}-byte body, the limit is {limits.max_body_bytes}",
        )
    return length


def _decode_body(mode: int, body: bytes, limits: FrameLimits) -> Frame:
    if mode == FrameMode.SYNC:
        return SyncFrame(body)
    if mode == FrameMode.NOSYNC:
        if not body:
            raise FrameError(FrameErrorReason.MALFORMED_BODY, "NOSYNC body is empty")
        size = body[0]
        if not 0 < size <= limits.max_group_id_bytes:
            raise FrameError(
                FrameErrorReason.MALFORMED_BODY,
                f"group id length {size} not in 1..{limits.max_group_id_bytes}",
            )
        if len(body) < 1 + size:
            raise FrameError(FrameErrorReason.MALFORMED_BODY, "group id runs past the body")
        return NoSyncFrame(body[1 : 1 + size], body[1 + size :])
    # CONTROL (the header check admitted no other mode).
    if not body:
        raise FrameError(FrameErrorReason.MALFORMED_BODY, "CONTROL body is empty")
    kind = body[0]
    if kind in (ControlKind.PING, ControlKind.PONG):
        if len(body) != _NONCE.size:
            raise FrameError(
                FrameErrorReason.MALFORMED_BODY,
                f"{ControlKind(kind).name} body must be {_NONCE.size} bytes, got {len(body)}",
            )
        _, nonce = _NONCE.unpack(body)
        return Ping(nonce) if kind == ControlKind.PING else Pong(nonce)
    if kind == ControlKind.HELLO:
        if len(body) != _HELLO.size:
            raise FrameError(
                FrameErrorReason.MALFORMED_BODY,
                f"HELLO body must be {_HELLO.size} bytes, got {len(body)}",
            )
        _, version, caps, until, max_frame = _HELLO.unpack(body)
        return Hello(
            version=version,
            capabilities=Capability(caps),
            available_until_ms=until,
            max_frame_bytes=max_frame,
        )
    if kind == ControlKind.AUTHOR:
        if len(body) != _AUTHOR.size:
            raise FrameError(
                FrameErrorReason.MALFORMED_BODY,
                f"AUTHOR body must be {_AUTHOR.size} bytes, got {len(body)}",
            )
        _, key_type, signing_key, signature = _AUTHOR.unpack(body)
        if key_type != AUTHOR_KEY_ED25519:
            raise FrameError(
                FrameErrorReason.MALFORMED_BODY, f"AUTHOR key type {key_type} is not Ed25519"
            )
        return Author(signing_key, signature, key_type)
    return UnknownControl(kind, body[1:])


def check_frame(
    data: bytes | bytearray | memoryview, *, limits: FrameLimits = DEFAULT_LIMITS
) -> None:
    """Check that ``data`` is exactly one acceptable frame, as :func:`decode_frame` would, without
    building the frame: a SYNC body is opaque here, so a large one is not copied.

    Raises:
        FrameError: the packet is not exactly one acceptable frame; ``reason`` says why.
    """
    if len(data) >= HEADER_SIZE and data[3] == FrameMode.SYNC:
        _check_whole(data, limits)
    else:
        decode_frame(data, limits=limits)


def _check_whole(data: bytes | bytearray | memoryview, limits: FrameLimits) -> int:
    """Check the header and the length of a whole packet; return where its body ends."""
    if len(data) > limits.max_frame_bytes:
        raise FrameError(
            FrameErrorReason.OVERSIZED,
            f"{len(data)}-byte packet, the limit is {limits.max_frame_bytes}",
        )
    length = _check_header_prefix(data, limits)
    if length is None:
        raise FrameError(FrameErrorReason.TRUNCATED, f"{len(data)} bytes, shorter than a header")
    end = HEADER_SIZE + length
    if len(data) < end:
        raise FrameError(
            FrameErrorReason.TRUNCATED,
            f"declares {length} body bytes, has {len(data) - HEADER_SIZE}",
        )
    if len(data) > end:
        raise FrameError(
            FrameErrorReason.TRAILING_BYTES, f"{len(data) - end} bytes after a {length}-byte body"
        )
    return end


def decode_frame(
    data: bytes | bytearray | memoryview, *, limits: FrameLimits = DEFAULT_LIMITS
) -> Frame:
    """Decode one whole packet (a datagram, a file): exactly one frame and nothing after it.

    Args:
        data: the packet.
        limits: bounds on sizes.

    Returns:
        The frame.

    Raises:
        FrameError: the packet is not exactly one acceptable frame; ``reason`` says why.
    """
    end = _check_whole(data, limits)
    return _decode_body(data[3], bytes(data[HEADER_SIZE:end]), limits)


def decode_checked(
    packet: bytes | bytearray | memoryview, *, limits: FrameLimits = DEFAULT_LIMITS
) -> Frame:
    """Decode a packet whose header and length were already checked (by :class:`FrameDecoder`
    or :func:`check_frame`, as carriers do on receipt): only the body is read, so a packet's
    header is checked once on its way from the network.

    Raises:
        FrameError: the body is not acceptable for its mode (``malformed-body``).
    """
    return _decode_body(packet[3], bytes(packet[HEADER_SIZE:]), limits)


@final
class FrameDecoder:
    """Cut a byte stream into packets.

    Feed bytes with :meth:`receive_data` and the end of the stream with :meth:`receive_eof`, and
    after each feed drain :meth:`next_packet` (or :meth:`next_frame`) until it returns ``None``.
    A partial frame stays buffered; a complete one is validated (header and body) before it is
    returned. After a :class:`FrameError` the stream cannot be resynchronised: the decoder stays
    failed and raises the same error again.

    Memory is bounded: a frame is refused as soon as its header declares more than the limit, so
    the buffer of a caller that drains after every feed never holds more than one frame's worth
    plus the last feed. The hard bound, ``max_buffer_bytes``, catches a caller that does not drain.
    """

    def __init__(
        self, *, limits: FrameLimits = DEFAULT_LIMITS, max_buffer_bytes: int | None = None
    ) -> None:
        """Create a decoder.

        Args:
            limits: bounds on sizes.
            max_buffer_bytes: most bytes buffered at once; default twice ``limits.max_frame_bytes``
                (one frame in progress plus one feed of up to a frame's size).
        """
        self._limits = limits
        self._max_buffer = (
            2 * limits.max_frame_bytes if max_buffer_bytes is None else max_buffer_bytes
        )
        if self._max_buffer < limits.max_frame_bytes:
            raise ValueError("max_buffer_bytes must hold at least one whole frame")
        self._buffer = bytearray()
        # Commit/rollback cursor over the buffer: ``_start`` is where the first unreturned frame
        # begins, ``_cursor`` how far parsing has read. A complete frame commits (``_start`` moves
        # past it); a partial one rolls ``_cursor`` back, so the next feed parses from the frame's
        # start. Committed bytes are dropped in one move on the next feed, not once per frame.
        self._start = 0
        self._cursor = 0
        self._eof = False
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as packets."""
        return len(self._buffer) - self._start

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes from the stream.

        Raises:
            FrameError: the decoder already failed.
            LocalProtocolError: after :meth:`receive_eof`, or the buffer bound would be exceeded
                (drain :meth:`next_packet` after every feed).
        """
        if self._error is not None:
            raise self._error
        if self._eof:
            raise LocalProtocolError("receive_data after receive_eof")
        if self.buffered + len(data) > self._max_buffer:
            raise LocalProtocolError(
                f"buffering {self.buffered + len(data)} bytes exceeds {self._max_buffer}; "
                "drain next_packet() after each receive_data()"
            )
        del self._buffer[: self._start]
        self._start = self._cursor = 0
        self._buffer += data

    def receive_eof(self) -> None:
        """Mark the end of the stream; a partial frame left then is an error on the next drain."""
        self._eof = True

    def _take(self, n: int) -> bytes | None:
        if len(self._buffer) - self._cursor < n:
            return None
        # One copy, through a view (slicing the bytearray first would copy twice); the view is
        # released before the buffer is resized again.
        with memoryview(self._buffer) as view:
            chunk = bytes(view[self._cursor : self._cursor + n])
        self._cursor += n
        return chunk

    def _rollback(self) -> None:
        self._cursor = self._start

    def _commit(self) -> None:
        self._start = self._cursor

    def _fail(self, error: FrameError) -> FrameError:
        self._error = error
        return error

    def _next(self, *, build: bool = True) -> tuple[bytes, Frame | None] | None:
        """The next packet, validated, and its frame if ``build`` (a SYNC body is opaque here:
        checking it needs no copy of it)."""
        if self._error is not None:
            raise self._error
        try:
            header = self._buffer[self._start : self._start + HEADER_SIZE]
            length = _check_header_prefix(header, self._limits)
        except FrameError as exc:
            raise self._fail(exc) from None
        packet = None if length is None else self._take(HEADER_SIZE + length)
        if packet is None:
            self._rollback()
            if self._eof and self.buffered:
                raise self._fail(
                    FrameError(
                        FrameErrorReason.TRUNCATED,
                        f"stream ended {self.buffered} bytes into a frame",
                    )
                )
            return None
        frame = None
        if build or packet[3] != FrameMode.SYNC:
            try:
                frame = _decode_body(packet[3], packet[HEADER_SIZE:], self._limits)
            except FrameError as exc:
                raise self._fail(exc) from None
        self._commit()
        return packet, frame

    def next_packet(self) -> bytes | None:
        """Return the next complete, validated packet (header included), or ``None`` for more data.

        Returns:
            One frame's bytes, exactly as :func:`decode_frame` accepts them; ``None`` when the
            buffer holds no complete frame (or nothing, after a clean end of stream).

        Raises:
            FrameError: the stream broke a framing rule, or ended inside a frame.
        """
        item = self._next(build=False)
        return None if item is None else item[0]

    def next_frame(self) -> Frame | None:
        """Like :meth:`next_packet`, but return the decoded frame."""
        item = self._next()
        return None if item is None else item[1]
