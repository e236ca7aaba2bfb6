"""A node's identity: its X25519 static key (Noise) and Ed25519 signing key, in one key file.

The key file is a small JSON document written with mode 0600, atomically (temporary file, fsync,
rename), and never overwritten by :func:`create_identity`. Loading refuses a file that others
can read, because a copied identity lets anyone impersonate the node.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from mvds_node._files import fsync_directory
from mvds_node.errors import ConfigError
from mvds_node.transports import Keypair

__all__ = ["Identity", "create_identity", "load_identity"]

_FORMAT = "mvds-node identity"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class Identity:
    """The keys that make a node itself."""

    noise: Keypair
    """X25519 static key: the node's address on every Noise transport and its engine peer ID."""
    signing: Ed25519PrivateKey
    """Ed25519 key that signs what the node publishes (remote-log heads)."""

    @property
    def public_key(self) -> bytes:
        """The 32-byte X25519 public key peers know this node by."""
        return self.noise.public

    @property
    def signing_public_key(self) -> bytes:
        return self.signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Keypair.generate(), Ed25519PrivateKey.generate())

    def to_json(self) -> str:
        signing = self.signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return json.dumps(
            {
                "format": _FORMAT,
                "version": _VERSION,
                "x25519_private": self.noise.private.hex(),
                "x25519_public": self.noise.public.hex(),
                "ed25519_private": signing.hex(),
                "ed25519_public": self.signing_public_key.hex(),
            },
            indent=2,
        )


def _key(doc: dict[str, object], name: str, path: Path) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: key file lacks {name!r}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{path}: {name} is not hex") from None
    if len(raw) != 32:
        raise ConfigError(f"{path}: {name} must be 32 bytes, not {len(raw)}")
    return raw


def load_identity(path: str | os.PathLike[str]) -> Identity:
    """Read a key file written by :func:`create_identity`.

    Raises:
        ConfigError: the file is missing, readable by others (mode must be 0600 or stricter),
            not a key file, or its public keys do not match its private keys.
    """
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no key file (run `mvds-node init` first)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read key file: {e.strerror}") from None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{p}: key file is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {p}`"
        )
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError(f"{p}: not a key file (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ConfigError(f"{p}: not an mvds-node key file")
    if doc.get("version") != _VERSION:
        raise ConfigError(f"{p}: key file version {doc.get('version')!r} is not supported")
    noise = Keypair.from_private_bytes(_key(doc, "x25519_private", p))
    signing = Ed25519PrivateKey.from_private_bytes(_key(doc, "ed25519_private", p))
    identity = Identity(noise, signing)
    if _key(doc, "x25519_public", p) != identity.public_key or (
        _key(doc, "ed25519_public", p) != identity.signing_public_key
    ):
        raise ConfigError(f"{p}: public keys do not match the private keys (damaged file?)")
    return identity


def create_identity(path: str | os.PathLike[str]) -> Identity:
    """Generate a new identity and write it to ``path`` (mode 0600), atomically.

    Raises:
        ConfigError: ``path`` exists already (an identity is never overwritten) or cannot be
            written.
    """
    p = Path(path)
    if p.exists():
        raise ConfigError(f"{p}: a key file exists already; refusing to overwrite an identity")
    identity = Identity.generate()
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, identity.to_json().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, p)  # fails if someone created `p` meanwhile
        os.unlink(tmp)
        fsync_directory(p.parent)
    except FileExistsError:
        os.unlink(tmp)
        raise ConfigError(f"{p}: a key file exists already") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot write key file: {e.strerror}") from None
    return identity
