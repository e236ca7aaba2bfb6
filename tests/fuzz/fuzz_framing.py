"""Target: the packet header (``transports/_framing.py``), whole packets and streams.

A whole packet goes through :func:`decode_frame` and :func:`check_frame`, which must agree, and
a frame that decodes must re-encode to the same bytes (decoding is strict). The same bytes, cut
where the fuzzer says (and at most a frame's size per feed, as a carrier reads), go through a
:class:`FrameDecoder` with the default or small limits, drained after every feed as the TCP
carrier does. Only :class:`FrameError` may come out.
"""

from __future__ import annotations

from mvds_node.transports._framing import (
    FrameDecoder,
    FrameError,
    FrameLimits,
    check_frame,
    decode_frame,
    encode_frame,
)
from tests.fuzz._support import Input

MAX_LEN = 4096
_SMALL = FrameLimits(max_body_bytes=512, max_group_id_bytes=16)


def _whole(packet: bytes, limits: FrameLimits) -> None:
    try:
        frame = decode_frame(packet, limits=limits)
    except FrameError as exc:
        try:
            check_frame(packet, limits=limits)
        except FrameError:
            return
        # check_frame skips a SYNC body (opaque), so only a SYNC packet may pass it here.
        if packet[3:4] != b"\x01":
            raise AssertionError(f"check_frame accepts what decode_frame refuses: {exc}") from None
        return
    check_frame(packet, limits=limits)
    if encode_frame(frame, limits=limits) != packet:
        raise AssertionError(f"{frame!r} does not re-encode to the bytes it came from")


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    small = fdp.ConsumeBool()
    cuts = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    packet = fdp.ConsumeBytes(fdp.remaining_bytes())
    limits = _SMALL if small else FrameLimits()
    _whole(packet, limits)
    decoder = FrameDecoder(limits=limits)
    # Feeds as a carrier makes them: where the fuzzer cuts, then at most one frame's size each
    # (the decoder's buffer bound assumes that, and says so), draining after every feed.
    step = limits.max_frame_bytes
    ends = sorted({min(len(packet), sum(cuts[: i + 1])) for i in range(len(cuts))})
    ends += range(ends[-1] + step if ends else step, len(packet) + step, step)
    offset = 0
    try:
        for end in ends:
            while offset < min(end, len(packet)):
                piece = packet[offset : min(end, len(packet), offset + step)]
                decoder.receive_data(piece)
                offset += len(piece)
                while decoder.next_frame() is not None:
                    pass
        decoder.receive_eof()
        while decoder.next_frame() is not None:
            pass
    except FrameError:
        pass
