"""Target: the Noise XX handshake (``transports/_noise.py``), as a stranger over TCP drives it.

Two roles, chosen by the fuzzer. As the *responder*, we read message 1 (the fuzzer's bytes, or a
real initiator's message 1 it may alter), write message 2, and read message 3 (again the
fuzzer's, or the real initiator's answer to our message 2, maybe altered). As the *initiator*,
we write message 1 and read the fuzzer's message 2. Only :class:`NoiseError` may come out of
``read_message``; a handshake that completes must give a session that names the peer's key.
"""

from __future__ import annotations

from mvds_node.transports._noise import NoiseError, NoiseHandshake
from tests.fuzz._support import Input, keypair

MAX_LEN = 1024
OURS = keypair("node")
THEIRS = keypair("peer")


def _message(fdp: Input, real: bytes | None) -> bytes:
    """The fuzzer's own message, or ``real`` with a few bytes changed (or none)."""
    if real is None or fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    out = bytearray(real)
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        if out:
            out[fdp.ConsumeIntInRange(0, len(out) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
    return bytes(out[: fdp.ConsumeIntInRange(0, len(out))] if fdp.ConsumeBool() else out)


def _responder(fdp: Input) -> None:
    peer = NoiseHandshake(THEIRS, initiator=True) if fdp.ConsumeBool() else None
    ours = NoiseHandshake(OURS, initiator=False)
    ours.read_message(_message(fdp, peer.write_message() if peer else None))
    second = ours.write_message()
    third: bytes | None = None
    if peer is not None:
        try:
            peer.read_message(second)
            third = peer.write_message()
        except NoiseError:
            third = None
    ours.read_message(_message(fdp, third))
    session = ours.session()
    if session.remote_static is None or len(session.remote_static) != 32:
        raise AssertionError("a complete handshake names no 32-byte peer key")


def _initiator(fdp: Input) -> None:
    ours = NoiseHandshake(OURS, initiator=True)
    first = ours.write_message()
    peer = NoiseHandshake(THEIRS, initiator=False)
    peer.read_message(first)
    ours.read_message(_message(fdp, peer.write_message() if fdp.ConsumeBool() else None))
    if ours.remote_static is None:
        raise AssertionError("message 2 was accepted without proving the responder's key")
    ours.write_message()
    ours.session()


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    try:
        if fdp.ConsumeBool():
            _responder(fdp)
        else:
            _initiator(fdp)
    except NoiseError:
        pass
