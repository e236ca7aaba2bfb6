"""What the fuzz targets share: fixed keys, a byte-stream fake, and the rule for errors.

Theory of operation
-------------------
A target feeds outside bytes to one decoder and lets through only the errors that decoder
documents: anything else escapes ``TestOneInput``, and atheris records the
input as a finding. Keys are fixed (derived from constant seeds), so a seed corpus made once by
``make_corpus.py`` stays valid for every run and every machine. Nothing here imports atheris:
``make_corpus.py`` and the pytest module use these helpers without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.transports._noise import Keypair

_T = TypeVar("_T")


def seed_bytes(label: str, n: int = 32) -> bytes:
    """``n`` bytes derived from ``label``: the same on every run."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"mvds-fuzz/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def keypair(label: str) -> Keypair:
    """A fixed X25519 key pair named ``label``."""
    return Keypair.from_private_bytes(seed_bytes(f"x25519/{label}"))


def signing_key(label: str) -> Ed25519PrivateKey:
    """A fixed Ed25519 signing key named ``label``."""
    return Ed25519PrivateKey.from_private_bytes(seed_bytes(f"ed25519/{label}"))


GROUP_ID = seed_bytes("group")
"""The group every target's state belongs to."""
GROUP_KEY = seed_bytes("group-key")
"""That group's shared 32-byte key (multicast, group bundles, sealed logs)."""


def drive(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (its awaits all complete at once) without an event
    loop, so a target that calls async code costs no ``trio.run`` per input.

    Raises:
        RuntimeError: the coroutine suspended (it needs a real event loop).
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the coroutine suspended: it needs trio.run")


class FakeStream:
    """The receiving end of a byte stream that delivers fixed chunks, then end of stream.

    It stands in for a ``trio.SocketStream`` where a decoder reads a peer or server: what it is
    sent is kept in :attr:`sent`. Its methods checkpoint, as trio's do.
    """

    def __init__(self, chunks: list[bytes], *, on_send: Callable[[bytes], None] | None = None):
        self._chunks = list(reversed(chunks))
        self.sent = bytearray()
        self.closed = False
        self._on_send = on_send

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError("closed")
        if not self._chunks:
            return b""
        chunk = self._chunks.pop()
        if max_bytes is not None and len(chunk) > max_bytes:
            self._chunks.append(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    def push(self, chunk: bytes) -> None:
        """Deliver ``chunk`` after the chunks still waiting."""
        self._chunks.insert(0, chunk)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed:
            raise trio.ClosedResourceError("closed")
        self.sent += data
        if self._on_send is not None:
            self._on_send(bytes(data))

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


def _width(span: int) -> int:
    return max(1, (span.bit_length() + 7) // 8)


class Input:
    """The fuzzer's bytes, consumed front to back as choices, integers and byte strings.

    It reads like ``atheris.FuzzedDataProvider`` (same method names), but everything comes from
    the front in a fixed layout, so :class:`Script` can write an input that makes exactly the
    choices a seed needs: the seed corpora are made by the project's encoders through it. Past
    the end, every read gives its smallest value (``False``, ``low``, ``b""``).
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def remaining_bytes(self) -> int:
        """Bytes not consumed yet."""
        return len(self._data) - self._at

    def ConsumeBytes(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer at the end)."""
        out = self._data[self._at : self._at + max(0, n)]
        self._at += len(out)
        return out

    def ConsumeIntInRange(self, low: int, high: int) -> int:
        """An integer in ``low..high``, from as many bytes as the span needs (big-endian)."""
        span = high - low
        raw = self.ConsumeBytes(_width(span))
        return low + (int.from_bytes(raw, "big") % (span + 1) if raw else 0)

    def ConsumeBool(self) -> bool:
        """One byte's lowest bit."""
        return bool(self.ConsumeIntInRange(0, 1))

    def ConsumeBlob(self, limit: int) -> bytes:
        """A byte string of up to ``limit`` bytes, length first."""
        return self.ConsumeBytes(self.ConsumeIntInRange(0, limit))


class Script:
    """Writes the input that makes :class:`Input` return the given values, in order."""

    def __init__(self) -> None:
        self._out = bytearray()

    def flag(self, value: bool) -> Script:
        """What :meth:`Input.ConsumeBool` returns next."""
        return self.integer(int(value), 0, 1)

    def integer(self, value: int, low: int, high: int) -> Script:
        """What :meth:`Input.ConsumeIntInRange` ``(low, high)`` returns next."""
        if not low <= value <= high:
            raise ValueError(f"{value} is not in {low}..{high}")
        self._out += (value - low).to_bytes(_width(high - low), "big")
        return self

    def raw(self, data: bytes) -> Script:
        """What :meth:`Input.ConsumeBytes` returns next (or the rest of the input)."""
        self._out += data
        return self

    def blob(self, data: bytes, limit: int) -> Script:
        """What :meth:`Input.ConsumeBlob` ``(limit)`` returns next."""
        return self.integer(len(data), 0, limit).raw(data)

    def build(self) -> bytes:
        """The input."""
        return bytes(self._out)
