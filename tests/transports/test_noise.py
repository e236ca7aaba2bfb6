"""The sans-IO Noise wrapper: XX handshake, session limits, and one-way sealing."""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
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
from mvds_node.transports._noise import _SEAL_CHUNK, _usable_public, length_prefixed

_P = 2**255 - 19
_CANONICAL_LOW_ORDER = [
    0,
    1,
    # The two points of order 8 (libsodium's blocklist; RFC 7748 section 6.1 says to check).
    int.from_bytes(
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"
    ),
    int.from_bytes(
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"
    ),
    _P - 1,  # u = -1
    _P,  # u = p, the non-canonical 0
    _P + 1,  # u = p + 1, the non-canonical 1
]
LOW_ORDER_POINTS = [
    (u | top).to_bytes(32, "little")
    for u in _CANONICAL_LOW_ORDER
    # X25519 ignores bit 255, so each point also travels with it set.
    for top in (0, 1 << 255)
]
"""Every encoding of an X25519 public key with which a Diffie-Hellman gives all zeros."""

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


def _reader_of_message(step: int) -> NoiseHandshake:
    """A handshake between Alice and Bob run up to message ``step`` (0, 1 or 2), which has just
    been written: the side that is to read it, for a test to hand it something else."""
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    for n, (writer, reader) in enumerate([(i, r), (r, i), (i, r)]):
        message = writer.write_message()
        if n == step:
            return reader
        reader.read_message(message)
    raise ValueError(f"the handshake has 3 messages, not {step + 1}")


@settings(max_examples=300)
@given(st.integers(0, 2), st.binary(max_size=200))
def test_fuzz_handshake_messages_only_raise_noise_error(step: int, garbage: bytes) -> None:
    """Random bytes at any point of the handshake are refused with NoiseError, nothing else."""
    reader = _reader_of_message(step)
    try:
        reader.read_message(garbage)
    except NoiseError:
        return
    # Message 1 is a public key in clear: any 32 bytes are a valid one.
    assert step == 0 and len(garbage) == 32


@settings(max_examples=300)
@given(st.integers(0, 2), st.binary(max_size=200))
def test_fuzz_handshake_after_garbage_only_noise_error(step: int, garbage: bytes) -> None:
    """A garbage message that is accepted must not blow up the *next* write either (message 1
    is accepted as any usable key; the responder's Diffie-Hellman with it runs while writing
    message 2)."""
    reader = _reader_of_message(step)
    with contextlib.suppress(NoiseError):
        reader.read_message(garbage)
        if not reader.complete:
            reader.write_message()


def _dh_has_a_secret(key: bytes) -> bool:
    """The definition: a Diffie-Hellman with ``key`` does not give all zeros."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(key))
    except ValueError:
        return False
    return True


def test_low_order_points_list_is_complete_for_the_test() -> None:
    assert len(set(LOW_ORDER_POINTS)) == 14
    assert bytes(32) in LOW_ORDER_POINTS and b"\x01" + bytes(31) in LOW_ORDER_POINTS
    assert not any(_dh_has_a_secret(p) for p in LOW_ORDER_POINTS)
    assert not any(_usable_public(p) for p in LOW_ORDER_POINTS)


@settings(max_examples=500)
@given(st.binary(min_size=32, max_size=32), st.sampled_from([*LOW_ORDER_POINTS, b""]))
def test_the_cheap_low_order_check_agrees_with_the_diffie_hellman(key: bytes, point: bytes) -> None:
    """The set lookup refuses exactly the keys whose Diffie-Hellman gives zero: random keys,
    and the low-order points with random bits flipped in their last byte."""
    assert _usable_public(key) == _dh_has_a_secret(key)
    if point:
        near = point[:31] + bytes([point[31] ^ (key[0] & 0x7F)])
        assert _usable_public(near) == _dh_has_a_secret(near)
    assert _usable_public(Keypair.generate().public)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:6] + p.hex()[-2:])
def test_responder_refuses_a_low_order_ephemeral_in_message_1(point: bytes) -> None:
    """The 34-byte stranger: message 1 is a bare ephemeral key; a low-order one is a
    NoiseError at once, never a ValueError from the crypto library on the reply."""
    r = NoiseHandshake(BOB, initiator=False)
    with pytest.raises(NoiseError, match="ephemeral key"):
        r.read_message(point)
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        r.write_message()


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:6] + p.hex()[-2:])
def test_initiator_refuses_a_low_order_ephemeral_in_message_2(point: bytes) -> None:
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    r.read_message(i.write_message())
    m2 = r.write_message()
    with pytest.raises(NoiseError, match="ephemeral key"):
        i.read_message(point + m2[32:])


def _lying_static(handshake: NoiseHandshake, point: bytes) -> None:
    """Make ``handshake`` announce ``point`` as its static key (what a hostile peer's own
    Noise code can do), keeping its real private key for its Diffie-Hellmans."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from noise.backends.default.keypairs import KeyPair25519

    state = handshake._state  # a hostile peer reaches into its own Noise state
    state.s = KeyPair25519(
        private=state.s.private,
        public=X25519PublicKey.from_public_bytes(point),
        public_bytes=point,
    )


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:6] + p.hex()[-2:])
def test_low_order_static_keys_are_refused_both_ways(point: bytes) -> None:
    # A responder that claims a low-order static key in message 2.
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    _lying_static(r, point)
    r.read_message(i.write_message())
    with pytest.raises(NoiseError):
        i.read_message(r.write_message())
    assert i.remote_static is None
    # An initiator that claims one in message 3.
    i = NoiseHandshake(ALICE, initiator=True)
    r = NoiseHandshake(BOB, initiator=False)
    _lying_static(i, point)
    r.read_message(i.write_message())
    i.read_message(r.write_message())
    with pytest.raises(NoiseError):
        r.read_message(i.write_message())
    assert r.remote_static is None


@pytest.mark.parametrize("size", [0, 1, 31])
def test_short_message_1_is_refused(size: int) -> None:
    r = NoiseHandshake(BOB, initiator=False)
    with pytest.raises(NoiseError):
        r.read_message(bytes(range(size)))


@pytest.mark.parametrize("point", LOW_ORDER_POINTS[:4], ids=lambda p: p.hex()[:6] + p.hex()[-2:])
def test_sealed_blob_with_a_low_order_ephemeral_is_refused(point: bytes) -> None:
    blob = bytearray(seal_to(BOB.public, b"hello", sender_static=ALICE))
    blob[6:38] = point  # header (4), u16 length (2), then the ephemeral key
    with pytest.raises(NoiseError):
        open_sealed(BOB, bytes(blob))


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
