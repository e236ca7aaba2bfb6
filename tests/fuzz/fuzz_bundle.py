"""Target: bundle files (``transports/_file.py``: ``open_bundle``, then ``payloads()``).

The file is the fuzzer's bytes, or a bundle the target assembles around the fuzzer's header
plaintext, sealed the way a real sender seals it (to our key with ``Noise_X``, or with the
group key), so the header's JSON and the chunk checks behind the seal are reached too. When that
header names a usable content key, the chunks are real encryptions of the fuzzer's payloads
(maybe fewer or more than the header announces). Only :class:`BundleError` may come out.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from mvds_node.transports._file import (
    BUNDLE_MAGIC,
    BUNDLE_VERSION,
    KIND_GROUP,
    KIND_PEER,
    BundleError,
    group_key_tag,
    open_bundle,
)
from mvds_node.transports._noise import seal_to
from tests.fuzz._support import GROUP_ID, GROUP_KEY, Input, keypair, seed_bytes

MAX_LEN = 16384
OURS = keypair("node")
THEIRS = keypair("peer")
FILE_ID = seed_bytes("bundle-file-id", 16)
_SCRATCH = tempfile.mkdtemp(
    prefix="mvds-fuzz-bundle-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
)
PATH = Path(_SCRATCH) / "in.bundle"
GROUP_KEYS = {GROUP_ID: GROUP_KEY}


def _content_key(header: bytes) -> bytes | None:
    try:
        key = bytes.fromhex(json.loads(header)["content_key"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return key if len(key) == 32 else None


def assemble(fdp: Input) -> bytes:
    """A bundle around the fuzzer's header plaintext and payloads."""
    peer = fdp.ConsumeBool()
    header = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    if peer:
        kind = KIND_PEER
        sealed = seal_to(OURS.public, header, sender_static=THEIRS)
    else:
        kind = KIND_GROUP
        nonce = seed_bytes("bundle-nonce", 12)
        aad = BUNDLE_MAGIC + bytes([BUNDLE_VERSION, kind]) + FILE_ID
        sealed = group_key_tag(GROUP_KEY) + nonce
        sealed += ChaCha20Poly1305(GROUP_KEY).encrypt(nonce, header, aad)
    out = struct.pack(">8sBB16sI", BUNDLE_MAGIC, BUNDLE_VERSION, kind, FILE_ID, len(sealed))
    out += sealed
    key = _content_key(header)
    if key is None:
        return out + fdp.ConsumeBytes(fdp.remaining_bytes())
    aead = ChaCha20Poly1305(key)
    n = fdp.ConsumeIntInRange(0, 4)
    announced = n + fdp.ConsumeIntInRange(-1, 1)
    for index in range(n):
        payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
        aad = struct.pack(">16sQB", FILE_ID, index, index == announced - 1)
        chunk = aead.encrypt(b"\x00" * 4 + index.to_bytes(8, "big"), payload, aad)
        out += struct.pack(">I", len(chunk)) + chunk
    return out + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))


def TestOneInput(data: bytes) -> None:
    # First byte 0: the file as it is, byte for byte; else a bundle assembled around the rest.
    blob = data[1:] if data[:1] == b"\x00" else assemble(Input(data[1:]))
    PATH.write_bytes(blob)
    try:
        bundle = open_bundle(PATH, keypair=OURS, group_keys=GROUP_KEYS)
        for _ in bundle.payloads():
            pass
    except BundleError:
        pass
