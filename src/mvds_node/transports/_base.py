"""The ``Transport`` protocol every carrier implements, and the events carriers report.

Theory of operation
-------------------
A transport carries *packets* (whole frames from ``_framing``, header included) between this
node and peers named by opaque byte strings (for Noise-based transports, the 32-byte X25519 static
key the peer proved). It knows nothing about MVDS: the sync engine above retransmits whatever a
transport loses, so a transport may drop packets, but must say so through its capabilities:

* ``reliable``: packets are not lost while the carrier is up (TCP), versus best effort (UDP).
* ``max_payload``: the largest packet ``send`` accepts, header included. The engine sizes its
  payloads to fit.
* ``max_latency``: seconds within which a packet normally arrives. The engine's retransmission
  is latency aware, so a file carried by hand is not resent every few seconds.

A carrier may also say, and a driver routes by these (``mvds_node.node`` names no carrier):

* ``reaches(peer) -> bool``: whether a packet for ``peer`` would go out now (a live connection,
  an endpoint on a hub, an open socket); a carrier without it is never chosen for a peer.
* ``checks_frames = True``: every packet ``receive`` returns is already one checked frame, so
  the driver does not check its header again; without it, the driver checks.
* ``answers_pings = True``: the carrier answers a ``Ping`` itself, on the connection it came on.
* ``proves_peer = True``: the peer ``receive`` names is proved, not claimed (a Noise session's
  static key; an in-process hub), so a node may take what that peer wrote on its word.
* ``description``: what a person reads about the carrier when it fails.

Errors follow trio's resource contract, in our exception tree: after *we* call ``aclose()``,
``send`` and ``receive`` raise :class:`~mvds_node.errors.TransportClosed`; if the carrier as a
whole fails underneath us they raise :class:`~mvds_node.errors.TransportBroken`. A single peer
going away is not an error of the transport: it is an event (:class:`PeerDown`), and packets for
it are dropped and reported (:class:`PacketDropped`).

Events are one fact each, frozen and slotted under :class:`TransportEvent`, and go out on a
bounded channel that the transport never blocks on: when it is full, events are counted as
dropped instead, because a node that is slow to read events must not stall the network.
:class:`EventQueue` is that channel, shared by the carriers and the node's event subscribers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, final, runtime_checkable

import trio

__all__ = [
    "DialFailed",
    "EventQueue",
    "InputRejected",
    "PacketDropped",
    "PeerDown",
    "PeerUp",
    "Transport",
    "TransportEvent",
]


@runtime_checkable
class Transport(Protocol):
    """What the node needs from any carrier."""

    @property
    def reliable(self) -> bool:
        """True if packets are not lost while the carrier is up."""
        ...

    @property
    def max_payload(self) -> int:
        """The largest packet, in bytes, header included, that :meth:`send` accepts."""
        ...

    @property
    def max_latency(self) -> float:
        """Seconds within which a sent packet normally arrives."""
        ...

    async def send(self, peer: bytes, packet: bytes) -> None:
        """Hand one packet to the carrier for ``peer``.

        Returns once the packet is queued or dropped; it never waits for a slow peer. A packet
        that cannot go (unknown peer, full queue) is dropped and reported, not raised: the sync
        layer retransmits.

        Raises:
            TransportClosed: we closed the transport.
            TransportBroken: the carrier itself failed.
            LocalProtocolError: the packet is larger than :attr:`max_payload` or not a frame.
        """
        ...

    async def receive(self) -> tuple[bytes, bytes]:
        """Wait for the next packet from any peer.

        Returns:
            ``(peer, packet)``.

        Raises:
            TransportClosed: we closed the transport (also wakes a task blocked here).
            TransportBroken: the carrier itself failed.
        """
        ...

    async def aclose(self) -> None:
        """Close the transport and everything it holds. Always closes, even if cancelled."""
        ...


class TransportEvent:
    """Base of every transport event."""

    __slots__ = ()


E = TypeVar("E")


@final
class EventQueue(Generic[E]):
    """Advisory events queued with a bound, for a reader that may be slow or absent.

    :meth:`emit` never blocks: an event that finds the queue full is dropped and counted in
    :attr:`dropped`, since a producer (a carrier, the node's loop) must never wait on whoever
    reads its events. Once :meth:`close` is called, or the reader closed its end, events go
    nowhere and are not counted.

    Args:
        size: events held for the reader (0 drops every event nobody is waiting for).
    """

    __slots__ = ("_receive", "_send", "dropped")

    def __init__(self, size: int) -> None:
        self._send, self._receive = trio.open_memory_channel[E](size)
        self.dropped = 0
        """Events dropped because the queue was full."""

    @property
    def receive(self) -> trio.MemoryReceiveChannel[E]:
        """The reader's end; it ends after :meth:`close`."""
        return self._receive

    def emit(self, event: E) -> None:
        """Queue ``event``, or count it as dropped if the queue is full. Never blocks."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # closed by us, or the reader has left

    def close(self) -> None:
        """End the queue: the reader sees the end after what is already queued."""
        self._send.close()


@final
@dataclass(frozen=True, slots=True)
class PeerUp(TransportEvent):
    """A peer proved its identity and can be reached (its first live connection)."""

    peer: bytes
    address: str
    outbound: bool
    """True if we dialled it."""


@final
@dataclass(frozen=True, slots=True)
class PeerDown(TransportEvent):
    """A peer's last live connection ended."""

    peer: bytes
    address: str
    reason: str


@final
@dataclass(frozen=True, slots=True)
class InputRejected(TransportEvent):
    """Bytes from the network were refused, and the connection or datagram they came on dropped."""

    peer: bytes | None
    """The proved identity, or None if the sender never proved one."""
    address: str
    reason: str
    """A stable token. From TCP: ``unknown-key``, ``handshake-failed``, ``handshake-timeout``,
    ``too-many-connections``, ``too-many-handshakes`` (from one IP address), ``frame-timeout``
    (a packet begun but not finished in time). From
    UDP multicast: ``too-short``, ``too-large``, ``bad-magic``, ``unknown-version``,
    ``foreign-group``, ``replay``, ``own-sender``. From both:
    ``bad-ciphertext`` (fails authentication) and ``frame:<FrameErrorReason value>`` (authentic,
    but not a frame we accept)."""
    detail: str
    """Human-readable detail for logs."""


@final
@dataclass(frozen=True, slots=True)
class PacketDropped(TransportEvent):
    """A packet we were asked to send was dropped; the sync layer will retransmit."""

    peer: bytes
    reason: str
    """``no-route`` (no connection and no address for the peer) or ``queue-full``."""


@final
@dataclass(frozen=True, slots=True)
class DialFailed(TransportEvent):
    """An attempt to connect to a dialled peer failed; the next one is scheduled."""

    peer: bytes
    address: str
    reason: str
    """``unreachable``, ``timeout``, ``wrong-key`` or ``handshake-failed``."""
    detail: str
    retry_in: float
    """Seconds until the next attempt."""


@final
@dataclass(frozen=True, slots=True)
class InternalError(TransportEvent):
    """Handling one connection's or datagram's input raised an exception that no rule of ours
    expected: a bug. That piece of work ended (the connection closed, the datagram dropped) and
    the carrier went on serving everyone else. See :func:`mvds_node.errors.describe_failure`."""

    where: str
    """What was being handled, e.g. ``tcp connection from 127.0.0.1:5501``."""
    error: str
    """``ExceptionType: message``."""
    traceback: str
