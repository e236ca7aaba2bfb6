"""NATS NKeys and ``.creds`` files: what a client needs to answer a server's nonce.

An NKey is an Ed25519 key written in base32 (RFC 4648, no padding) with a one-byte prefix that
says what it is (``U`` a user, ``A`` an account, ``O`` an operator; a seed starts with ``S`` and
the kind's letter) and a CRC-16 (XMODEM, little-endian) at the end. A ``.creds`` file holds a
user's JWT and its seed between ``-----BEGIN ...-----`` lines.

We decode seeds ourselves (the standard library's base32 and ``binascii.crc_hqx``, which is the
XMODEM CRC) and sign with ``cryptography``, which the project already uses for its own keys. The
``nkeys`` package on PyPI (0.2.1, last released 2024) would add PyNaCl, a second binding of a
whole cryptography library, for the 40 lines below. nats-server checks our work: it decodes the
public keys we compute and verifies the signatures we send.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mvds_node.remotelog._secrets import SecretError, read_secret_file

__all__ = ["NKey", "decode_seed", "encode_public", "encode_seed", "read_creds", "read_nkey"]

_SEED: Final = 18 << 3
"""The first five bits of a seed's first byte ("S")."""
PREFIXES: Final = {"user": 20 << 3, "account": 0, "operator": 14 << 3}
"""The kinds of key a client meets, by their prefix byte ("U", "A", "O")."""
_MAX_JWT: Final = 16 * 1024
"""A user JWT is a few hundred bytes; a longer line is not one."""


def _crc16(data: bytes) -> bytes:
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


def _b32decode(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


@final
@dataclass(frozen=True, slots=True)
class NKey:
    """A user's key pair, decoded from its seed; prints without the seed."""

    public: str
    """The public key as NATS writes it (``U...``)."""
    _key: Ed25519PrivateKey = field(repr=False, compare=False)

    def sign(self, nonce: str) -> str:
        """The signature of a server's nonce, as CONNECT's ``sig`` (base64url, no padding)."""
        signature = self._key.sign(nonce.encode())
        return base64.urlsafe_b64encode(signature).decode().rstrip("=")


def encode_public(kind: str, raw: bytes) -> str:
    """A 32-byte Ed25519 public key as NATS writes it."""
    body = bytes([PREFIXES[kind]]) + raw
    return _b32encode(body + _crc16(body))


def encode_seed(kind: str, raw: bytes) -> str:
    """A 32-byte Ed25519 private key as an NKey seed (``SU...`` for a user)."""
    prefix = PREFIXES[kind]
    body = bytes([_SEED | prefix >> 5, (prefix & 31) << 3]) + raw
    return _b32encode(body + _crc16(body))


def decode_seed(text: str, *, what: str) -> NKey:
    """The key pair of a user's seed (``SU...``).

    Raises:
        SecretError: not a seed, a wrong checksum, or not a user's (the message never shows it).
    """
    text = text.strip()
    try:
        if not (text.isascii() and 50 <= len(text) <= 64):
            raise ValueError
        raw = _b32decode(text)
    except (ValueError, binascii.Error):
        raise SecretError(f"{what}: not an NKey seed (SU...)") from None
    if len(raw) != 36 or _crc16(raw[:-2]) != raw[-2:]:
        raise SecretError(f"{what}: not an NKey seed (its checksum is wrong)")
    if raw[0] & 0xF8 != _SEED:
        raise SecretError(f"{what}: not an NKey seed (it does not start with S)")
    kind = (raw[0] & 7) << 5 | raw[1] >> 3
    if kind != PREFIXES["user"]:
        raise SecretError(f"{what}: not a user's NKey seed (SU...)")
    key = Ed25519PrivateKey.from_private_bytes(raw[2:34])
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return NKey(encode_public("user", public), key)


def read_nkey(path: Path, *, what: str) -> NKey:
    """A user's seed from a file (the file may hold other lines, as ``nsc`` writes them)."""
    text = read_secret_file(path, what=what)
    for line in text.splitlines():
        if line.strip().startswith("S"):
            return decode_seed(line, what=f"{what} {path}")
    raise SecretError(f"{what}: {path} holds no NKey seed (a line SU...)")


_BLOCK: Final = re.compile(r"-{3,}[^\n]*BEGIN ([A-Z ]+?)-{3,}\r?\n\s*([\w.=-]+)\s*\r?\n-{3,}")


def read_creds(path: Path, *, what: str) -> tuple[str, NKey]:
    """The user JWT and key pair of a ``.creds`` file.

    Raises:
        SecretError: it cannot be read, or lacks the JWT or the seed.
    """
    text = read_secret_file(path, what=what)
    blocks = {kind.strip(): body for kind, body in _BLOCK.findall(text)}
    jwt = next((body for kind, body in blocks.items() if kind.endswith("JWT")), None)
    seed = next((body for kind, body in blocks.items() if kind.endswith("SEED")), None)
    if jwt is None or seed is None:
        raise SecretError(f"{what}: {path} is not a .creds file (a user JWT and an NKey seed)")
    if len(jwt) > _MAX_JWT or jwt.count(".") != 2:
        raise SecretError(f"{what}: {path}: its JWT is malformed")
    return jwt, decode_seed(seed, what=f"{what} {path}")
