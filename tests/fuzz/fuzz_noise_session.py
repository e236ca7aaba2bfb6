"""Target: Noise transport messages (``NoiseSession.decrypt``) and one-way sealed blobs.

A session from a real handshake decrypts a sequence of messages: each is either the fuzzer's
bytes, or the peer's real encryption of the fuzzer's plaintext, maybe altered, dropped or sent
twice. A message that decrypts must be what the peer encrypted, in order; after a failure the
session must stay failed. The rest of the input is opened as a sealed blob (``open_sealed``),
raw or as a real blob of the fuzzer's plaintext, maybe altered. Only :class:`NoiseError` may
come out.
"""

from __future__ import annotations

from mvds_node.transports._noise import NoiseError, NoiseHandshake, open_sealed, seal_to
from tests.fuzz._support import Input, keypair

MAX_LEN = 4096
OURS = keypair("node")
THEIRS = keypair("peer")


def _alter(fdp: Input, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        if out:
            out[fdp.ConsumeIntInRange(0, len(out) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
    if fdp.ConsumeBool():
        out = out[: fdp.ConsumeIntInRange(0, len(out))]
    return bytes(out)


def _sessions() -> tuple[object, object]:
    ours = NoiseHandshake(OURS, initiator=False)
    peer = NoiseHandshake(THEIRS, initiator=True)
    ours.read_message(peer.write_message())
    peer.read_message(ours.write_message())
    ours.read_message(peer.write_message())
    return ours.session(), peer.session()


def TestOneInput(data: bytes) -> None:
    fdp = Input(data)
    ours, peer = _sessions()
    failed = False
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        plain = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
        honest = fdp.ConsumeBool()
        message = peer.encrypt(plain) if honest else plain  # type: ignore[attr-defined]
        if honest and fdp.ConsumeBool():
            message = _alter(fdp, message)
        try:
            got = ours.decrypt(message)  # type: ignore[attr-defined]
        except NoiseError:
            failed = True
            continue
        if failed:
            raise AssertionError("a failed session decrypted a later message")
        if got != plain:
            raise AssertionError("decrypt returned other bytes than the peer encrypted")
    plain = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1024))
    if fdp.ConsumeBool():
        blob = seal_to(OURS.public, plain, sender_static=THEIRS if fdp.ConsumeBool() else None)
        blob = _alter(fdp, blob)
    else:
        blob = plain + fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        opened = open_sealed(OURS, blob)
    except NoiseError:
        return
    if opened.sender not in (None, THEIRS.public):
        raise AssertionError("open_sealed names a sender that did not seal")
