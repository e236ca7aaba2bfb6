"""Bundle files: the sneakernet carrier. Sync payloads sealed into one file, carried by hand.

Theory of operation
-------------------
A bundle is written once and read once, with no way to ask back, so it cannot run a Noise
handshake. It is sealed instead, in one of two ways:

* **to a peer**: a small header is sealed to the recipient's static X25519 key with one-way
  ``Noise_X`` (:func:`~mvds_node.transports.seal_to`), which also proves the sender's static key
  to the reader;
* **to a group**: the header is encrypted with the group's 32-byte key (ChaCha20-Poly1305); any
  member can read it, and the sender named inside is as trustworthy as the members.

The header carries a fresh random *content key*, and the body is a sequence of chunks, each one
sync payload encrypted with that key. Each chunk is bound to the file (a random file ID), to its
index, and to whether it is the last one, all as associated data: a truncated, reordered,
spliced or altered file fails authentication. The layout, byte by byte, is in ``docs/wire.md``.

Writing is transactional: a temporary file in the target directory, fsync, rename, fsync of the
directory. Only then does the caller count the payloads as sent. Reading authenticates the whole
file before it yields the first payload, so a damaged bundle changes nothing. Every length read
from the file is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Final, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from mvds_node._files import fsync_directory
from mvds_node.errors import MvdsError
from mvds_node.transports._noise import Keypair, NoiseError, open_sealed, seal_to

__all__ = [
    "BUNDLE_MAGIC",
    "BundleError",
    "BundleHeader",
    "group_key_tag",
    "open_bundle",
    "write_bundle",
]

BUNDLE_MAGIC: Final = b"MVDSBNDL"
BUNDLE_VERSION: Final = 1
KIND_PEER: Final = 1
KIND_GROUP: Final = 2
_PREFIX: Final = struct.Struct(">8sBB16sI")  # magic, version, kind, file id, header length
_U32: Final = struct.Struct(">I")
_CHUNK_AAD: Final = struct.Struct(">16sQB")  # file id, index, last
_TAG_SIZE: Final = 16

MAX_HEADER_BYTES: Final = 1024 * 1024
"""A header holds keys, counts and the prerequisite IDs (capped); 1 MiB is far above it."""
MAX_CHUNK_BYTES: Final = 8 * 1024 * 1024 + _TAG_SIZE
"""A chunk is one sync payload (the engine's limit is 4 MiB); twice that leaves headroom."""
MAX_CHUNKS: Final = 1_000_000
"""About 4 TB of payloads at the chunk limit: no real bundle comes near it."""
MAX_PREREQUISITES: Final = 10_000
"""Prerequisite IDs listed in a header (hex); more are summarised by their count."""
MAX_HEADER_DEPTH: Final = 8
"""Nesting of the header's JSON (ours is 2: the object and its prerequisite list). Anyone with
our public key can seal a header to us, and :func:`json.loads` recurses once per level, so a
deeper one is refused before it is parsed."""
_JSON_SPECIAL: Final = re.compile(rb'[\\"\[\]{}]')

Progress = Callable[[int, int], None]


class BundleError(MvdsError):
    """A bundle cannot be written, or a file is not a bundle we can accept (the message says
    why, in one line: truncated, altered, not addressed to us, ...)."""


def group_key_tag(group_key: bytes) -> bytes:
    """8 bytes that name a group key without revealing it (to pick the key when reading)."""
    return hashlib.sha256(b"mvds-node bundle group key\x00" + group_key).digest()[:8]


@final
@dataclass(frozen=True, slots=True)
class BundleHeader:
    """What a bundle says about itself (authenticated, inside the encryption)."""

    sender: bytes
    """The exporter's static X25519 key: proved for peer bundles, claimed for group ones."""
    recipient: bytes | None
    """The peer it is for, or None for a group bundle."""
    group_id: bytes | None
    """The group it is for (group bundles), else None."""
    created_ms: int
    chunks: int
    messages: int
    acks: int
    requests: int
    prerequisites: tuple[bytes, ...]
    prerequisites_total: int

    def to_json(self, content_key: bytes) -> bytes:
        return json.dumps(
            {
                "sender": self.sender.hex(),
                "recipient": self.recipient.hex() if self.recipient else None,
                "group": self.group_id.hex() if self.group_id else None,
                "created_ms": self.created_ms,
                "chunks": self.chunks,
                "messages": self.messages,
                "acks": self.acks,
                "requests": self.requests,
                "prerequisites": [p.hex() for p in self.prerequisites[:MAX_PREREQUISITES]],
                "prerequisites_total": self.prerequisites_total,
                "content_key": content_key.hex(),
            }
        ).encode()

    @staticmethod
    def from_json(data: bytes) -> tuple[BundleHeader, bytes]:
        """The header and content key a decrypted header holds.

        Raises:
            BundleError: not JSON, nested over :data:`MAX_HEADER_DEPTH`, a field missing or of
                the wrong type or size, or a count out of range.
        """
        if _json_depth(data, MAX_HEADER_DEPTH) > MAX_HEADER_DEPTH:
            raise BundleError(f"bundle header is nested over {MAX_HEADER_DEPTH} deep")
        try:
            doc = json.loads(data)
            header = BundleHeader(
                sender=_hex(doc["sender"], 32),
                recipient=_hex(doc["recipient"], 32) if doc["recipient"] else None,
                group_id=_hex(doc["group"], None) if doc["group"] else None,
                created_ms=_int(doc["created_ms"]),
                chunks=_int(doc["chunks"]),
                messages=_int(doc["messages"]),
                acks=_int(doc["acks"]),
                requests=_int(doc["requests"]),
                prerequisites=tuple(_hex(p, 32) for p in doc["prerequisites"]),
                prerequisites_total=_int(doc["prerequisites_total"]),
            )
            key = _hex(doc["content_key"], 32)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise BundleError(f"bundle header is malformed ({str(e)[:200]})") from None
        if not 1 <= header.chunks <= MAX_CHUNKS:
            raise BundleError(f"bundle header announces {header.chunks} chunks")
        return header, key


def _json_depth(data: bytes, limit: int) -> int:
    """How deep arrays and objects nest in JSON ``data`` (brackets inside strings do not count),
    or any number up to ``limit`` when that is not over it; counting stops past ``limit``. One
    linear pass over the bytes that matter to it (about 0.4 s for 1 MiB of brackets)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return limit  # cannot nest deeper than it has brackets (every real header)
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the byte after a backslash inside a string is taken as it is
    for token in _JSON_SPECIAL.finditer(data):
        at, byte = token.start(), token.group()
        if at == escaped_at:
            continue
        if in_string:
            if byte == b"\\":
                escaped_at = at + 1
            elif byte == b'"':
                in_string = False
        elif byte == b'"':
            in_string = True
        elif byte in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif byte in (b"]", b"}"):
            depth -= 1
    return deepest


def _hex(value: Any, size: int | None) -> bytes:
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    if size is None and not 0 < len(raw) <= 64:
        raise ValueError("bad id length")
    return raw


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"not a count: {value!r}")
    return value


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + index.to_bytes(8, "big")


def write_bundle(
    path: str | os.PathLike[str],
    payloads: Iterable[bytes],
    header: BundleHeader,
    *,
    sender: Keypair,
    group_key: bytes | None = None,
    progress: Progress | None = None,
) -> int:
    """Write ``payloads`` as a bundle at ``path``, atomically; return the file's size.

    The bundle is sealed to ``header.recipient`` (a peer bundle), or with ``group_key`` (a group
    bundle, ``header.recipient`` None). ``header.chunks`` must be the number of payloads. The
    file appears complete and fsynced, or not at all.

    Raises:
        BundleError: the file cannot be written (the temporary file is removed).
    """
    target = Path(path)
    file_id = secrets.token_bytes(16)
    content_key = ChaCha20Poly1305.generate_key()
    plain = header.to_json(content_key)
    if header.recipient is not None:
        kind = KIND_PEER
        sealed = seal_to(header.recipient, plain, sender_static=sender)
    elif group_key is not None and len(group_key) == 32:
        kind = KIND_GROUP
        nonce = secrets.token_bytes(12)
        sealed = group_key_tag(group_key) + nonce
        aad = BUNDLE_MAGIC + bytes([BUNDLE_VERSION, kind]) + file_id
        sealed += ChaCha20Poly1305(group_key).encrypt(nonce, plain, aad)
    else:
        raise BundleError("a bundle needs a recipient key or a 32-byte group key")
    if len(sealed) > MAX_HEADER_BYTES:
        raise BundleError("too many prerequisites for one bundle header")
    aead = ChaCha20Poly1305(content_key)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    size = 0
    try:
        with open(tmp, "xb") as f:
            f.write(_PREFIX.pack(BUNDLE_MAGIC, BUNDLE_VERSION, kind, file_id, len(sealed)))
            f.write(sealed)
            written = 0
            for index, payload in enumerate(payloads):
                last = index == header.chunks - 1
                aad = _CHUNK_AAD.pack(file_id, index, last)
                chunk = aead.encrypt(_nonce(index), payload, aad)
                f.write(_U32.pack(len(chunk)))
                f.write(chunk)
                written += 1
                if progress is not None:
                    progress(written, header.chunks)
            if written != header.chunks:
                raise BundleError(f"header says {header.chunks} chunks, wrote {written}")
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, target)
        fsync_directory(target.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise BundleError(f"{target}: cannot write bundle: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return size


@final
@dataclass(frozen=True, slots=True)
class OpenedBundle:
    """A bundle whose every byte was authenticated; :meth:`payloads` reads them again."""

    path: Path
    header: BundleHeader
    sender_proved: bool
    """True for a peer bundle (Noise_X proved the sender's key)."""
    size: int
    _content_key: bytes
    _file_id: bytes
    _body_offset: int

    def payloads(self) -> Iterator[bytes]:
        """The payloads, in order (the file is read and authenticated again as it goes).

        Raises:
            BundleError: the file changed since it was opened, or can no longer be read.
        """
        try:
            with open(self.path, "rb") as f:
                f.seek(self._body_offset)
                yield from _chunks(f, self)
        except OSError as e:
            raise BundleError(f"{self.path}: cannot read: {e.strerror or e}") from None


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise BundleError(f"bundle is truncated (in {what})")
    return data


def _chunks(f: BinaryIO, bundle: OpenedBundle) -> Iterator[bytes]:
    aead = ChaCha20Poly1305(bundle._content_key)
    total = bundle.header.chunks
    for index in range(total):
        (length,) = _U32.unpack(_read_exact(f, _U32.size, f"chunk {index}"))
        if not _TAG_SIZE <= length <= MAX_CHUNK_BYTES:
            raise BundleError(f"bundle chunk {index} claims {length} bytes")
        chunk = _read_exact(f, length, f"chunk {index}")
        aad = _CHUNK_AAD.pack(bundle._file_id, index, index == total - 1)
        try:
            yield aead.decrypt(_nonce(index), chunk, aad)
        except InvalidTag:
            raise BundleError(f"bundle chunk {index} was altered or belongs elsewhere") from None
    if f.read(1):
        raise BundleError(f"bundle has bytes after its last chunk ({total})")


def open_bundle(
    path: str | os.PathLike[str],
    *,
    keypair: Keypair,
    group_keys: Mapping[bytes, bytes] | None = None,
    progress: Progress | None = None,
) -> OpenedBundle:
    """Open and authenticate the whole bundle at ``path``; nothing is applied yet.

    Args:
        keypair: our static key (peer bundles are sealed to it).
        group_keys: group ID -> group key, for group bundles.
        progress: called with (chunks verified, chunks in all).

    Raises:
        BundleError: not a bundle, a newer version, not for us, truncated, altered.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return _open(f, p, keypair, group_keys, progress)
    except OSError as e:
        raise BundleError(f"{p}: cannot read: {e.strerror or e}") from None


def _open(
    f: BinaryIO,
    p: Path,
    keypair: Keypair,
    group_keys: Mapping[bytes, bytes] | None,
    progress: Progress | None,
) -> OpenedBundle:
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or not prefix.startswith(BUNDLE_MAGIC):
        raise BundleError(f"{p}: not an mvds-node bundle")
    _, version, kind, file_id, header_len = _PREFIX.unpack(prefix)
    if version != BUNDLE_VERSION:
        raise BundleError(f"{p}: bundle version {version} is not supported")
    if not 0 < header_len <= MAX_HEADER_BYTES:
        raise BundleError(f"{p}: bundle header claims {header_len} bytes")
    sealed = _read_exact(f, header_len, "the header")
    if kind == KIND_PEER:
        try:
            opened = open_sealed(keypair, sealed)
        except NoiseError:
            raise BundleError(
                f"{p}: not addressed to this node (or its header was altered)"
            ) from None
        header, content_key = BundleHeader.from_json(opened.plaintext)
        if opened.sender != header.sender or header.recipient != keypair.public:
            raise BundleError(f"{p}: bundle header does not match its seal")
        proved = True
    elif kind == KIND_GROUP:
        tag, nonce, box = sealed[:8], sealed[8:20], sealed[20:]
        keys = [k for k in (group_keys or {}).values() if group_key_tag(k) == tag]
        if not keys:
            raise BundleError(f"{p}: bundle is for a group whose key we do not have")
        aad = BUNDLE_MAGIC + bytes([version, kind]) + file_id
        try:
            plain = ChaCha20Poly1305(keys[0]).decrypt(nonce, box, aad)
        except (InvalidTag, ValueError):
            raise BundleError(f"{p}: bundle header was altered") from None
        header, content_key = BundleHeader.from_json(plain)
        if header.group_id is None or (group_keys or {}).get(header.group_id) != keys[0]:
            raise BundleError(f"{p}: bundle names a group this key does not belong to")
        proved = False
    else:
        raise BundleError(f"{p}: unknown bundle kind {kind}")
    bundle = OpenedBundle(p, header, proved, 0, content_key, file_id, _PREFIX.size + header_len)
    for done, _ in enumerate(_chunks(f, bundle), 1):
        if progress is not None:
            progress(done, header.chunks)
    return replace(bundle, size=f.tell())
