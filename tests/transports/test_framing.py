"""Framing: round trips, every refusal reason, the incremental decoder, and fuzzing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvds_node.errors import LocalProtocolError, RemoteProtocolError
from mvds_node.transports import (
    AVAILABLE_ALWAYS,
    DEFAULT_LIMITS,
    HEADER_SIZE,
    Author,
    Capability,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorReason,
    FrameLimits,
    Hello,
    NoSyncFrame,
    Ping,
    Pong,
    SyncFrame,
    UnknownControl,
    decode_frame,
    encode_frame,
)
from mvds_node.transports._framing import check_frame

SMALL = FrameLimits(max_body_bytes=64, max_group_id_bytes=8)

FRAMES: list[Frame] = [
    SyncFrame(b""),
    SyncFrame(b"\x0a\x00payload"),
    NoSyncFrame(b"g", b""),
    NoSyncFrame(b"G" * 64, b"body" * 10),
    Ping(0),
    Ping(2**64 - 1),
    Pong(12345),
    Hello(),
    Hello(
        version=255,
        capabilities=Capability(0xFFFFFFFF),
        available_until_ms=AVAILABLE_ALWAYS,
        max_frame_bytes=2**32 - 1,
    ),
    Author(bytes(range(32)), bytes(range(64))),
    UnknownControl(0x00, b""),
    UnknownControl(0xFF, b"future"),
]


@pytest.mark.parametrize("frame", FRAMES, ids=repr)
def test_round_trip(frame: Frame) -> None:
    packet = encode_frame(frame)
    assert packet[:2] == b"MV"
    assert packet[2] == 1
    assert int.from_bytes(packet[4:8], "big") == len(packet) - HEADER_SIZE
    assert decode_frame(packet) == frame
    assert decode_frame(bytearray(packet)) == frame
    assert decode_frame(memoryview(packet)) == frame


def test_unknown_capability_bits_survive() -> None:
    hello = Hello(capabilities=Capability(0x8000_0001))
    decoded = decode_frame(encode_frame(hello))
    assert isinstance(decoded, Hello)
    assert int(decoded.capabilities) == 0x8000_0001
    assert Capability.SYNC in decoded.capabilities


@pytest.mark.parametrize(
    ("frame", "limits"),
    [
        (SyncFrame(b"x" * 65), SMALL),
        (NoSyncFrame(b"", b"body"), SMALL),
        (NoSyncFrame(b"g" * 9, b""), SMALL),
        (NoSyncFrame(b"g" * 8, b"b" * 56), SMALL),  # 1 + 8 + 56 = 65 > 64
        (Ping(-1), SMALL),
        (Pong(2**64), SMALL),
        (Hello(version=256), SMALL),
        (Hello(available_until_ms=2**64), SMALL),
        (Hello(max_frame_bytes=-1), SMALL),
        (Author(bytes(31), bytes(64)), DEFAULT_LIMITS),
        (Author(bytes(32), bytes(65)), DEFAULT_LIMITS),
        (Author(bytes(32), bytes(64), key_type=2), DEFAULT_LIMITS),
        (UnknownControl(0x04, b""), SMALL),  # AUTHOR's kind
        (UnknownControl(0x01, b""), SMALL),  # PING's kind: would not decode as UnknownControl
        (UnknownControl(256, b""), SMALL),
        (Frame(), SMALL),
    ],
    ids=repr,
)
def test_encode_refuses_bad_frames(frame: Frame, limits: FrameLimits) -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(frame, limits=limits)


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        FrameLimits(max_body_bytes=0)
    with pytest.raises(ValueError, match="max_group_id_bytes"):
        FrameLimits(max_group_id_bytes=256)
    assert SMALL.max_frame_bytes == 72


def header(version: int = 1, mode: int = 1, length: int = 0) -> bytes:
    return b"MV" + bytes([version, mode]) + length.to_bytes(4, "big")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", FrameErrorReason.TRUNCATED),
        (b"M", FrameErrorReason.TRUNCATED),
        (b"X", FrameErrorReason.BAD_MAGIC),
        (b"MX", FrameErrorReason.BAD_MAGIC),
        (b"GET / HTTP/1.1\r\n", FrameErrorReason.BAD_MAGIC),
        (b"MV\x00", FrameErrorReason.UNKNOWN_VERSION),
        (header(version=2), FrameErrorReason.UNKNOWN_VERSION),
        (header(mode=0), FrameErrorReason.UNKNOWN_MODE),
        (header(mode=4), FrameErrorReason.UNKNOWN_MODE),
        (header(length=65), FrameErrorReason.LENGTH_OVER_LIMIT),
        (header(length=2**32 - 1), FrameErrorReason.LENGTH_OVER_LIMIT),
        (header(length=10) + b"x" * 9, FrameErrorReason.TRUNCATED),
        (header(length=1) + b"xy", FrameErrorReason.TRAILING_BYTES),
        (header(length=0) + b"x" * 70, FrameErrorReason.OVERSIZED),
        (header(mode=2, length=0), FrameErrorReason.MALFORMED_BODY),
        (header(mode=2, length=1) + b"\x00", FrameErrorReason.MALFORMED_BODY),
        (header(mode=2, length=1) + b"\x09", FrameErrorReason.MALFORMED_BODY),  # > 8
        (header(mode=2, length=3) + b"\x04ab", FrameErrorReason.MALFORMED_BODY),
        (header(mode=3, length=0), FrameErrorReason.MALFORMED_BODY),
        (header(mode=3, length=8) + b"\x01" + b"\x00" * 7, FrameErrorReason.MALFORMED_BODY),
        (header(mode=3, length=10) + b"\x02" + b"\x00" * 9, FrameErrorReason.MALFORMED_BODY),
        (header(mode=3, length=17) + b"\x03" + b"\x00" * 16, FrameErrorReason.MALFORMED_BODY),
    ],
)
@pytest.mark.parametrize("decode", [decode_frame, check_frame])
def test_decode_refusals(
    data: bytes, reason: FrameErrorReason, decode: Callable[..., object]
) -> None:
    with pytest.raises(FrameError) as info:
        decode(data, limits=SMALL)
    assert info.value.reason is reason
    assert isinstance(info.value, RemoteProtocolError)
    assert str(info.value).startswith(reason.value)


@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_fuzz_check_frame_agrees_with_decode_frame(data: bytes) -> None:
    reason = None
    try:
        decode_frame(data, limits=SMALL)
    except FrameError as e:
        reason = e.reason
    if reason is None:
        check_frame(data, limits=SMALL)
    else:
        with pytest.raises(FrameError) as info:
            check_frame(data, limits=SMALL)
        assert info.value.reason is reason


def test_decoder_splits_a_stream_at_every_byte() -> None:
    packets = [encode_frame(frame) for frame in FRAMES]
    stream = b"".join(packets)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = []
        for piece in (stream[:cut], stream[cut:]):
            decoder.receive_data(piece)
            while (packet := decoder.next_packet()) is not None:
                got.append(packet)
        decoder.receive_eof()
        assert decoder.next_packet() is None
        assert got == packets
        assert decoder.buffered == 0


def test_decoder_byte_by_byte_gives_frames() -> None:
    decoder = FrameDecoder()
    frames = []
    for byte in b"".join(encode_frame(frame) for frame in FRAMES):
        decoder.receive_data(bytes([byte]))
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert frames == FRAMES


def test_decoder_refuses_lying_length_before_the_body_arrives() -> None:
    decoder = FrameDecoder(limits=SMALL)
    decoder.receive_data(header(length=1_000_000))
    with pytest.raises(FrameError) as info:
        decoder.next_packet()
    assert info.value.reason is FrameErrorReason.LENGTH_OVER_LIMIT
    assert decoder.buffered == HEADER_SIZE  # nothing more was held for the claimed body


def test_decoder_refuses_garbage_after_two_bytes() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"GE")
    with pytest.raises(FrameError) as info:
        decoder.next_packet()
    assert info.value.reason is FrameErrorReason.BAD_MAGIC


def test_decoder_truncated_at_close() -> None:
    decoder = FrameDecoder()
    packet = encode_frame(SyncFrame(b"abcdef"))
    decoder.receive_data(packet + packet[:-1])
    assert decoder.next_packet() == packet
    assert decoder.next_packet() is None  # partial: wait for more
    decoder.receive_eof()
    with pytest.raises(FrameError) as info:
        decoder.next_packet()
    assert info.value.reason is FrameErrorReason.TRUNCATED


def test_decoder_truncated_header_at_close() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"MV\x01")
    assert decoder.next_packet() is None
    decoder.receive_eof()
    with pytest.raises(FrameError) as info:
        decoder.next_packet()
    assert info.value.reason is FrameErrorReason.TRUNCATED


def test_decoder_stays_failed() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(header(mode=9))
    with pytest.raises(FrameError) as first:
        decoder.next_packet()
    with pytest.raises(FrameError) as second:
        decoder.next_packet()
    assert second.value is first.value
    with pytest.raises(FrameError):
        decoder.receive_data(encode_frame(Ping(1)))


def test_decoder_bad_body_is_fatal_and_not_returned() -> None:
    decoder = FrameDecoder()
    good = encode_frame(Ping(7))
    decoder.receive_data(good + header(mode=3, length=1) + b"\x01" + good)
    assert decoder.next_frame() == Ping(7)
    with pytest.raises(FrameError) as info:
        decoder.next_frame()
    assert info.value.reason is FrameErrorReason.MALFORMED_BODY


def test_decoder_buffer_is_bounded() -> None:
    decoder = FrameDecoder(limits=SMALL)
    assert decoder._max_buffer == 2 * SMALL.max_frame_bytes
    decoder.receive_data(b"MV\x01\x01\x00\x00\x00\x40" + b"x" * 10)  # a 64-byte body, partial
    with pytest.raises(LocalProtocolError, match="exceeds"):
        decoder.receive_data(b"x" * (2 * SMALL.max_frame_bytes))
    with pytest.raises(ValueError, match="at least one whole frame"):
        FrameDecoder(limits=SMALL, max_buffer_bytes=SMALL.max_frame_bytes - 1)


def test_decoder_refuses_data_after_eof() -> None:
    decoder = FrameDecoder()
    decoder.receive_eof()
    assert decoder.next_packet() is None
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"MV")


def test_decoder_many_small_frames_in_one_feed() -> None:
    packet = encode_frame(Ping(1))
    decoder = FrameDecoder()
    decoder.receive_data(packet * 5000)
    count = 0
    while decoder.next_packet() is not None:
        count += 1
    assert count == 5000


# --- fuzzing -----------------------------------------------------------------------------------

frames = st.one_of(
    st.builds(SyncFrame, st.binary(max_size=40)),
    st.builds(NoSyncFrame, st.binary(min_size=1, max_size=8), st.binary(max_size=20)),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(0, 2**64 - 1)),
    st.builds(
        Hello,
        version=st.integers(0, 255),
        capabilities=st.integers(0, 2**32 - 1).map(Capability),
        available_until_ms=st.integers(0, 2**64 - 1),
        max_frame_bytes=st.integers(0, 2**32 - 1),
    ),
    st.builds(UnknownControl, st.integers(5, 255), st.binary(max_size=20)),
)


def _control(body: bytes) -> bytes:
    return b"MV\x01\x03" + len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "body",
    [
        b"\x04",  # the kind alone
        b"\x04\x01" + bytes(95),  # one byte short
        b"\x04\x01" + bytes(97),  # one byte over
        b"\x04\x02" + bytes(96),  # not Ed25519
        b"\x04\x00" + bytes(96),
    ],
    ids=["kind-only", "short", "long", "key-type-2", "key-type-0"],
)
def test_malformed_author_is_refused(body: bytes) -> None:
    with pytest.raises(FrameError) as caught:
        decode_frame(_control(body))
    assert caught.value.reason is FrameErrorReason.MALFORMED_BODY
    decoder = FrameDecoder()
    decoder.receive_data(_control(body))
    with pytest.raises(FrameError):
        decoder.next_frame()


@settings(max_examples=300)
@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
    st.lists(st.integers(0, 105), max_size=4),
    st.lists(st.integers(0, 255), max_size=4),
    st.integers(0, 120),
)
def test_fuzz_author_frames(
    key: bytes, signature: bytes, positions: list[int], values: list[int], cut: int
) -> None:
    """An AUTHOR frame, mutated or cut short, decodes to exactly its bytes or is refused."""
    data = mutate(encode_frame(Author(key, signature)), positions, values)[:cut]
    try:
        decoded = decode_frame(data)
    except FrameError:
        return
    assert encode_frame(decoded) == data


def pieces(data: bytes, size: int) -> list[bytes]:
    """Cut ``data`` into feeds of at most ``size`` bytes (the decoder's bound assumes this)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def mutate(data: bytes, positions: list[int], values: list[int]) -> bytes:
    out = bytearray(data)
    for pos, value in zip(positions, values, strict=False):
        if out:
            out[pos % len(out)] = value
    return bytes(out)


@settings(max_examples=500)
@given(st.binary(max_size=100))
def test_fuzz_decode_frame_random_bytes(data: bytes) -> None:
    try:
        frame = decode_frame(data, limits=SMALL)
    except FrameError:
        return
    assert encode_frame(frame, limits=SMALL) == data  # decoding is strict: canonical bytes


@settings(max_examples=500)
@given(frames, st.lists(st.integers(0, 200)), st.lists(st.integers(0, 255)))
def test_fuzz_decode_frame_mutated_frames(
    frame: Frame, positions: list[int], values: list[int]
) -> None:
    data = mutate(encode_frame(frame, limits=SMALL), positions, values)
    try:
        decoded = decode_frame(data, limits=SMALL)
    except FrameError:
        return
    assert encode_frame(decoded, limits=SMALL) == data


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=50), max_size=10), st.booleans())
def test_fuzz_decoder_random_chunks(chunks: list[bytes], eof: bool) -> None:
    decoder = FrameDecoder(limits=SMALL)
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while (packet := decoder.next_packet()) is not None:
                assert decode_frame(packet, limits=SMALL) is not None
        if eof:
            decoder.receive_eof()
            assert decoder.next_packet() is None
    except FrameError:
        pass


@settings(max_examples=300)
@given(st.lists(frames, max_size=8), st.data())
def test_fuzz_decoder_valid_stream_any_split(frame_list: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(frame, limits=SMALL) for frame in frame_list)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = FrameDecoder(limits=SMALL)
    got: list[Frame] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        for piece in pieces(stream[previous:cut], SMALL.max_frame_bytes):
            decoder.receive_data(piece)
            while (frame := decoder.next_frame()) is not None:
                got.append(frame)
        previous = cut
    decoder.receive_eof()
    assert decoder.next_frame() is None
    assert got == frame_list


@settings(max_examples=300)
@given(
    st.lists(frames, min_size=1, max_size=4),
    st.lists(st.integers(0, 500)),
    st.lists(st.integers(0, 255)),
)
def test_fuzz_decoder_mutated_stream(
    frame_list: list[Frame], positions: list[int], values: list[int]
) -> None:
    stream = mutate(b"".join(encode_frame(f, limits=SMALL) for f in frame_list), positions, values)
    decoder = FrameDecoder(limits=SMALL)
    try:
        for piece in pieces(stream, SMALL.max_frame_bytes):
            decoder.receive_data(piece)
            while decoder.next_packet() is not None:
                pass
        decoder.receive_eof()
        decoder.next_packet()
    except FrameError:
        pass
