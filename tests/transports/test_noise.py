"""The sans-IO Noise wrapper: XX handshake, session limits, and one-way sealing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvds_node.errors import LocalProtocolError, RemoteProtocolError
from mvds_node.transports import (
    MAX_PLAINTEXT,
    Keypair,
    NoiseError,
    NoiseHandshake,
    NoiseSession,
    open_sealed,
    seal_to,
)
from mvds_node.transports._noise import _SEAL_CHUNK, length_prefixed

ALICE = Keypair.generate()
BOB = Keypair.generate()


def run_handshake(
    initiator: Keypair = ALICE,
    responder: Keypair = BOB,
    *,
    prologues: tuple[bytes, bytes] = (b"mvds-node/1", b"mvds-node/1"),
) -> tuple[NoiseHandshake, NoiseHandshake, list[bytes]]:
    i = NoiseHandshake(initiator, initiator=True, prologue=prologues[0])
    r = NoiseHandshake(responder, initiator=False, prologue=prologues[1])
    messages = []
    sides = [(i, r), (r, i), (i, r)]
    for writer, reader in sides:
        message = writer.write_message()
        messages.append(message)
        reader.read_message(message)
    return i, r, messages


def _remote(handshake: NoiseHandshake) -> bytes | None:
    return handshake.remote_static


def test_xx_handshake_sizes_and_keys() -> None:
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    assert i.our_turn and not r.our_turn
    m1 = i.write_message()
    r.read_message(m1)
    assert i.remote_static is None and r.remote_static is None
    m2 = r.write_message()
    i.read_message(m2)
    assert _remote(i) == BOB.public  # the initiator knows after message 2
    assert r.remote_static is None
    m3 = i.write_message()
    r.read_message(m3)
    # The responder learns the key from message 3, the call in which the library deletes its
    # handshake state (the STACK.md pitfall).
    assert _remote(r) == ALICE.public
    assert [len(m1), len(m2), len(m3)] == [32, 96, 64]
    assert i.complete and r.complete
    si, sr = i.session(), r.session()
    assert si.handshake_hash == sr.handshake_hash
    assert si.remote_static == BOB.public and sr.remote_static == ALICE.public


def test_session_both_directions() -> None:
    i, r, _ = run_handshake()
    si, sr = i.session(), r.session()
    for n in range(5):
        assert sr.decrypt(si.encrypt(b"ping %d" % n)) == b"ping %d" % n
        assert si.decrypt(sr.encrypt(bytearray(b"pong"))) == b"pong"


def test_plaintext_cap_is_65519() -> None:
    i, r, _ = run_handshake()
    si, sr = i.session(), r.session()
    biggest = b"\xaa" * MAX_PLAINTEXT
    ciphertext = si.encrypt(biggest)
    assert len(ciphertext) == 65535
    assert sr.decrypt(ciphertext) == biggest
    with pytest.raises(LocalProtocolError, match="split it first"):
        si.encrypt(b"\xaa" * (MAX_PLAINTEXT + 1))
    # The refusal did not advance the nonce: the channel still works.
    assert sr.decrypt(si.encrypt(memoryview(b"after"))) == b"after"


def test_session_refuses_tampering_and_replay_and_stays_failed() -> None:
    i, r, _ = run_handshake()
    si, sr = i.session(), r.session()
    first = si.encrypt(b"one")
    assert sr.decrypt(first) == b"one"
    with pytest.raises(NoiseError):
        sr.decrypt(first)  # replay
    with pytest.raises(NoiseError, match="failed earlier"):
        sr.decrypt(si.encrypt(b"two"))
    _, r2, _ = run_handshake()
    other = r2.session()
    with pytest.raises(NoiseError):
        other.decrypt(bytes(70000))
    assert isinstance(NoiseError("x"), RemoteProtocolError)


def test_tampered_ciphertext_refused() -> None:
    i, r, _ = run_handshake()
    ciphertext = bytearray(i.session().encrypt(b"hello"))
    ciphertext[0] ^= 1
    with pytest.raises(NoiseError):
        r.session().decrypt(ciphertext)


def test_prologue_mismatch_fails_the_handshake() -> None:
    with pytest.raises(NoiseError):
        run_handshake(prologues=(b"mvds-node/1", b"mvds-node/2"))


def test_tampered_handshake_message_fails() -> None:
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    r.read_message(i.write_message())
    m2 = bytearray(r.write_message())
    m2[40] ^= 0x80  # inside the encrypted static key
    with pytest.raises(NoiseError, match="message 2"):
        i.read_message(m2)
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        i.write_message()


def test_handshake_payloads_must_be_empty() -> None:
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    # Message 1 is `e` then the payload in clear: extra bytes are a payload.
    with pytest.raises(NoiseError, match="carries a payload"):
        r.read_message(i.write_message() + b"extra")


def test_turn_misuse_is_local_error() -> None:
    i = NoiseHandshake(ALICE, initiator=True)
    with pytest.raises(LocalProtocolError, match="not our turn"):
        i.read_message(b"x" * 32)
    with pytest.raises(LocalProtocolError, match="not complete"):
        i.session()
    done, _, _ = run_handshake()
    with pytest.raises(LocalProtocolError, match="complete"):
        done.write_message()


def test_keypair() -> None:
    again = Keypair.from_private_bytes(ALICE.private)
    assert again == ALICE
    assert len(ALICE.public) == 32
    assert ALICE.private.hex() not in repr(ALICE)
    assert ALICE.public.hex() in repr(ALICE)
    with pytest.raises(LocalProtocolError):
        Keypair.from_private_bytes(b"short")


def test_length_prefix() -> None:
    assert length_prefixed(b"abc") == b"\x00\x03abc"
    with pytest.raises(LocalProtocolError):
        length_prefixed(bytes(65536))


@settings(max_examples=300)
@given(st.integers(0, 2), st.binary(max_size=200))
def test_fuzz_handshake_messages_only_raise_noise_error(step: int, garbage: bytes) -> None:
    """Random bytes at any point of the handshake are refused with NoiseError, nothing else."""
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    sequence = [(i, r), (r, i), (i, r)]
    for n, (writer, reader) in enumerate(sequence):
        message = writer.write_message()
        if n == step:
            try:
                reader.read_message(garbage)
            except NoiseError:
                return
            # Message 1 is a public key in clear: any 32 bytes are a valid one.
            assert n == 0 and len(garbage) == 32
            return
        reader.read_message(message)


# --- sealing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 1000, _SEAL_CHUNK - 1, _SEAL_CHUNK, _SEAL_CHUNK + 1, 300_000]
)
@pytest.mark.parametrize("signed", [False, True])
def test_seal_round_trip(size: int, signed: bool) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sender = ALICE if signed else None
    blob = seal_to(BOB.public, plaintext, sender_static=sender)
    assert blob[:4] == b"MS\x01" + (b"X" if signed else b"N")
    opened = open_sealed(BOB, blob)
    assert opened.plaintext == plaintext
    assert opened.sender == (ALICE.public if signed else None)


def test_seal_uses_fresh_ephemeral_keys() -> None:
    assert seal_to(BOB.public, b"same") != seal_to(BOB.public, b"same")


def test_sealed_blob_only_opens_for_its_recipient() -> None:
    blob = seal_to(BOB.public, b"secret", sender_static=ALICE)
    with pytest.raises(NoiseError, match="not for this key"):
        open_sealed(ALICE, blob)


def test_sealed_blob_tampering_anywhere_is_detected() -> None:
    blob = seal_to(BOB.public, b"x" * 100, sender_static=ALICE)
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(NoiseError):
            open_sealed(BOB, bytes(tampered))


def test_sealed_blob_truncation_and_extension_are_detected() -> None:
    blob = seal_to(BOB.public, b"y" * (2 * _SEAL_CHUNK + 10))
    with pytest.raises(NoiseError, match="truncated"):
        open_sealed(BOB, blob[:-1])
    # Cut exactly at a message boundary: the last message (with the "last" flag) is missing.
    last_message = 2 + (10 + 1 + 16)
    with pytest.raises(NoiseError, match="truncated"):
        open_sealed(BOB, blob[:-last_message])
    with pytest.raises(NoiseError, match="after the last"):
        open_sealed(BOB, blob + b"\x00")


@pytest.mark.parametrize(
    "blob",
    [b"", b"MS", b"XX\x01N" + bytes(60), b"MS\x02N" + bytes(60), b"MS\x01K" + bytes(60)],
)
def test_not_a_sealed_blob(blob: bytes) -> None:
    with pytest.raises(NoiseError):
        open_sealed(BOB, blob)


def test_seal_to_bad_recipient_key() -> None:
    with pytest.raises(LocalProtocolError):
        seal_to(b"short", b"x")
    with pytest.raises(LocalProtocolError):
        seal_to(bytes(32), b"x")  # a low-order point: no shared secret


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_open_sealed_only_raises_noise_error(garbage: bytes) -> None:
    with pytest.raises(NoiseError):
        open_sealed(BOB, b"MS\x01" + garbage)


def test_session_type_is_exported() -> None:
    i, _, _ = run_handshake()
    assert isinstance(i.session(), NoiseSession)
