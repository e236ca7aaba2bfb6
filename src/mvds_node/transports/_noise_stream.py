"""``NoiseStream``: a ``trio.abc.Stream`` that runs Noise XX over any other ``trio.abc.Stream``.

Theory of operation
-------------------
On the wire, every Noise message (handshake or transport) travels as a u16 big-endian length and
then the message, so the receiver knows where each ciphertext ends on a byte stream. After the
three-message XX handshake (:class:`~mvds_node.transports._noise.NoiseHandshake`), ``send_all``
cuts the caller's bytes into plaintext chunks of at most 65519 bytes (so that each ciphertext is
a legal Noise message, see ``_noise.py``), encrypts them and writes them about a megabyte at a
time; ``receive_some`` reads several messages' worth at once, decrypts the whole messages it has
and hands out plaintext, buffering whatever the caller's ``max_bytes`` did not take. Each write or
read may pass through the scheduler, where other tasks can run for a long while (an application
storing a batch of messages), so a bulk transfer makes few of them. Message boundaries carry no
meaning for the caller: this is a byte stream, like the one underneath.

The model is trio's ``SSLStream``: a sans-IO protocol object driven by a thin async layer. It is
simpler because Noise, unlike TLS, has no renegotiation or alerts after the handshake: sending
never needs to receive and receiving never needs to send, so the two directions share no lock.

Trio's stream contract, and how we keep it:

* **Busy.** Two tasks in ``send_all``/``wait_send_all_might_not_block`` at once, or two in
  ``receive_some``, raise ``trio.BusyResourceError`` (a conflict detector per direction).
* **Closed** means *we* closed this object: every method afterwards raises
  ``trio.ClosedResourceError``, and a task blocked in the stream underneath when we close it gets
  the same from below.
* **Broken** means the peer or the network did. Errors from the stream underneath already follow
  the contract (trio maps ``OSError`` once, in ``SocketStream``); what is new here is crypto, and
  a ciphertext that fails authentication, or a stream that ends inside a Noise message, becomes
  ``trio.BrokenResourceError`` with the :class:`NoiseError` as its ``__cause__``. A broken
  direction stays broken.
* **Cancellation.** Encrypting advances the sending nonce, so if ``send_all`` is interrupted after
  encrypting, the bytes on the wire no longer match the nonces. As in ``SSLStream``, any
  interruption of the write underneath (cancellation included) marks the send side broken: the
  next ``send_all`` raises ``BrokenResourceError`` instead of desynchronising the peer.
  ``receive_some`` only changes state after a read returns, so cancelling it loses nothing.
* **Stalls.** :attr:`NoiseStream.receive_pending_since` says since when a Noise message has been
  arriving without being complete, so that the layer above can bound how long a peer may take
  to finish what it began (a peer that sends one byte and stops holds a connection otherwise).
* **EOF.** A clean end of the stream underneath at a message boundary is EOF (``b""``). There is no
  Noise-level close message, so an attacker who can cut the TCP stream can fake an EOF at a
  boundary; the framing above detects a cut inside a packet, and MVDS retransmits what a cut
  loses. This is a ``Stream``, not a ``HalfCloseableStream``: there is no ``send_eof``.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, final

import trio

from mvds_node.transports._noise import (
    MAX_NOISE_MESSAGE,
    MAX_PLAINTEXT,
    PROLOGUE,
    Keypair,
    NoiseError,
    NoiseHandshake,
    NoiseSession,
    PeerRefused,
    length_prefixed,
)

_U16: Final = struct.Struct(">H")

__all__ = ["NoiseStream"]

# How much we ask the stream underneath for at once: during the handshake one maximal Noise
# message and its prefix; afterwards several, so that a bulk transfer costs one read (and one
# trip through the scheduler) per few messages rather than one or more per message.
_RECEIVE_SIZE: Final = MAX_NOISE_MESSAGE + 2
_BULK_RECEIVE_SIZE: Final = 4 * _RECEIVE_SIZE
_DEFAULT_MAX_BYTES: Final = 65536
# send_all hands the stream underneath at most this many encrypted bytes per write: large enough
# that a big packet goes out in a few writes (each write may pass through the scheduler, where
# other tasks can run for a long while), small enough to bound the copy.
_SEND_BATCH: Final = 16 * (MAX_NOISE_MESSAGE + 2)


@final
class _ConflictDetector:
    """Raise ``trio.BusyResourceError`` if two tasks enter at once (trio's is private)."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True
        try:
            yield
        finally:
            self._held = False


@final
class _MessageReader:
    """Reassemble u16-length-prefixed Noise messages from a byte stream (sans-IO).

    Holds at most one partial message plus one read, so its size is bounded by the read size and
    the 64 KiB a u16 can declare.
    """

    def __init__(self, initial: bytes = b"") -> None:
        self._buffer = bytearray(initial)

    def receive_data(self, data: bytes | bytearray) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def has_message(self) -> bool:
        """Whether at least one whole message is buffered."""
        buffer = self._buffer
        return len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big")

    def leftover(self) -> bytes:
        return bytes(self._buffer)

    def next_message(self) -> bytes | None:
        if len(self._buffer) < 2:
            return None
        size = int.from_bytes(self._buffer[:2], "big")
        if len(self._buffer) < 2 + size:
            return None
        with memoryview(self._buffer) as view:  # one copy (a bytearray slice would be two)
            message = bytes(view[2 : 2 + size])
        del self._buffer[: 2 + size]
        return message


async def _read_message(stream: trio.abc.Stream, reader: _MessageReader) -> bytes:
    """Read one whole Noise message during the handshake.

    Raises:
        trio.BrokenResourceError: the stream ended first.
    """
    while (message := reader.next_message()) is None:
        data = await stream.receive_some(_RECEIVE_SIZE)
        if not data:
            raise trio.BrokenResourceError("stream ended during the Noise handshake")
        reader.receive_data(data)
    return message


@final
class NoiseStream(trio.abc.Stream):
    """An encrypted, mutually authenticated stream over another stream.

    Build one with :meth:`handshake`; :attr:`remote_static` is then the peer's proved identity.
    """

    def __init__(
        self, transport_stream: trio.abc.Stream, session: NoiseSession, *, leftover: bytes = b""
    ) -> None:
        """Wrap a stream whose handshake is done; use :meth:`handshake` instead.

        Args:
            transport_stream: the stream the handshake ran on.
            session: the finished handshake's session.
            leftover: bytes read past the last handshake message (the start of the peer's data).
        """
        self.transport_stream: Final = transport_stream
        self._session = session
        self._reader = _MessageReader(leftover)
        # Decrypted bytes not yet returned: _plaintext[_offset:]. An offset rather than slicing, so
        # that many small receive_some calls on one 64 KiB message stay linear.
        self._plaintext = b""
        self._offset = 0
        self._send_conflict = _ConflictDetector("another task is using send_all on this stream")
        self._receive_conflict = _ConflictDetector(
            "another task is using receive_some on this stream"
        )
        self._closed = False
        self._send_broken: BaseException | None = None
        self._receive_broken: trio.BrokenResourceError | None = None
        self._eof = False
        self._pending_since: float | None = trio.current_time() if leftover else None

    @property
    def remote_static(self) -> bytes:
        """The 32-byte X25519 public key the peer proved in the handshake: its identity."""
        return self._session.remote_static

    @property
    def receive_pending_since(self) -> float | None:
        """The trio time at which the bytes buffered from the stream underneath, not yet a whole
        Noise message, began to arrive; None when nothing is buffered."""
        return self._pending_since

    @property
    def handshake_hash(self) -> bytes:
        """The same on both ends of this session only; usable for channel binding."""
        return self._session.handshake_hash

    @classmethod
    async def handshake(
        cls,
        stream: trio.abc.Stream,
        static_key: Keypair,
        *,
        initiator: bool,
        prologue: bytes = PROLOGUE,
        accept: Callable[[bytes], bool] | None = None,
    ) -> NoiseStream:
        """Run the XX handshake on ``stream`` and return the encrypted stream.

        Args:
            stream: a connected stream; it belongs to the result from now on.
            static_key: our identity.
            initiator: True on the side that opened the connection.
            prologue: must be equal on both sides.
            accept: called with the peer's static key as soon as it is proved; returning False
                aborts. The initiator learns the key from message 2 and so refuses a responder
                before sending message 3, which would reveal its own identity to it.

        Returns:
            The stream, ready for data.

        Raises:
            PeerRefused: ``accept`` returned False.
            NoiseError: the peer's handshake messages were malformed or failed authentication.
            trio.BrokenResourceError: the stream broke or ended during the handshake.
            trio.ClosedResourceError: ``stream`` was closed by us.

        On any failure, cancellation included, ``stream`` is closed.
        """
        hs = NoiseHandshake(static_key, initiator=initiator, prologue=prologue)
        reader = _MessageReader()
        try:
            while not hs.complete:
                if hs.our_turn:
                    await stream.send_all(length_prefixed(hs.write_message()))
                else:
                    hs.read_message(await _read_message(stream, reader))
                    # The initiator knows the key after message 2, the responder after 3: check
                    # at that first moment, before we send anything more.
                    remote = hs.remote_static
                    if remote is not None and accept is not None and not accept(remote):
                        raise PeerRefused(remote)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(stream, hs.session(), leftover=reader.leftover())

    # --- sending -----------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send all of ``data``; see :meth:`trio.abc.SendStream.send_all`.

        Raises:
            trio.BusyResourceError: another task is sending.
            trio.ClosedResourceError: we closed this stream.
            trio.BrokenResourceError: the peer or network broke it, or an earlier send was
                interrupted part-way.
        """
        with self._send_conflict():
            self._check_send()
            view = memoryview(data).cast("B")
            if not view:
                await trio.lowlevel.checkpoint()
                return
            # Encrypt up to _SEND_BATCH bytes of messages, then write them in one call.
            encrypt = self._session.encrypt
            batch: list[bytes] = []
            size = 0
            for start in range(0, len(view), MAX_PLAINTEXT):
                message = encrypt(view[start : start + MAX_PLAINTEXT])
                batch.append(_U16.pack(len(message)))
                batch.append(message)
                size += 2 + len(message)
                if size >= _SEND_BATCH:
                    await self._write(b"".join(batch))
                    batch, size = [], 0
            if batch:
                await self._write(b"".join(batch))

    async def _write(self, data: bytes) -> None:
        try:
            await self.transport_stream.send_all(data)
        except BaseException as exc:
            # Whatever stopped the write (the peer, the network, cancellation), an encrypted
            # message may be on the wire in part or not at all: the nonces are out of step.
            if self._send_broken is None:
                self._send_broken = exc
            if self._closed:
                raise trio.ClosedResourceError("stream was closed") from exc
            raise

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._send_broken is not None:
            raise trio.BrokenResourceError(
                "an earlier send on this stream failed or was interrupted"
            ) from self._send_broken

    async def wait_send_all_might_not_block(self) -> None:
        """See :meth:`trio.abc.SendStream.wait_send_all_might_not_block`."""
        with self._send_conflict():
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            await self.transport_stream.wait_send_all_might_not_block()

    # --- receiving ---------------------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Return up to ``max_bytes`` of decrypted data, or ``b""`` at the end of the stream.

        Raises:
            trio.BusyResourceError: another task is receiving.
            trio.ClosedResourceError: we closed this stream.
            trio.BrokenResourceError: the peer or network broke it, a message failed
                authentication, or the stream ended inside a message.
        """
        with self._receive_conflict():
            if max_bytes is None:
                max_bytes = _DEFAULT_MAX_BYTES
            else:
                max_bytes = operator.index(max_bytes)
                if max_bytes < 1:
                    raise ValueError("max_bytes must be >= 1")
            if self._closed:
                raise trio.ClosedResourceError("stream was closed")
            if self._receive_broken is not None:
                raise self._receive_broken
            checkpointed = False
            while self._offset == len(self._plaintext) and not self._eof:
                if not self._reader.has_message:
                    data = await self.transport_stream.receive_some(_BULK_RECEIVE_SIZE)
                    checkpointed = True
                    if not data:
                        self._end_of_stream()
                    else:
                        if not self._reader.buffered:
                            self._pending_since = trio.current_time()
                        self._reader.receive_data(data)
                    continue
                # Decrypt every whole message buffered, up to max_bytes of plaintext: one call
                # hands a bulk reader several messages. (An empty plaintext is legal Noise; it
                # simply adds no bytes.)
                self._plaintext = self._decrypt_buffered(max_bytes)
                self._offset = 0
            if not checkpointed:
                await trio.lowlevel.checkpoint()
            if self._offset == 0 and len(self._plaintext) <= max_bytes:
                chunk, self._plaintext = self._plaintext, b""  # all of it: no copy
                return chunk
            chunk = self._plaintext[self._offset : self._offset + max_bytes]
            self._offset += len(chunk)
            return chunk

    def _decrypt_buffered(self, max_bytes: int) -> bytes:
        """Decrypt whole buffered messages until their plaintext reaches ``max_bytes`` (at least
        one message: the caller takes what exceeds it on its next call)."""
        parts: list[bytes] = []
        size = 0
        decrypt = self._session.decrypt
        while size < max_bytes and (message := self._reader.next_message()) is not None:
            try:
                plaintext = decrypt(message)
            except NoiseError as exc:
                self._receive_broken = trio.BrokenResourceError(str(exc))
                self._receive_broken.__cause__ = exc
                raise self._receive_broken from exc
            parts.append(plaintext)
            size += len(plaintext)
        # What is left came in the read that completed the last message: it began just now.
        self._pending_since = trio.current_time() if self._reader.buffered else None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _end_of_stream(self) -> None:
        if self._reader.buffered:
            error = NoiseError(f"stream ended {self._reader.buffered} bytes into a Noise message")
            self._receive_broken = trio.BrokenResourceError(str(error))
            self._receive_broken.__cause__ = error
            raise self._receive_broken from error
        self._eof = True

    # --- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close this stream and the one underneath. Always closes, even if cancelled."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._plaintext = b""
        self._offset = 0
        await self.transport_stream.aclose()
