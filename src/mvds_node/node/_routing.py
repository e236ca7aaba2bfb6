"""Which carrier takes a peer's packets, chosen by what the carriers declare.

Theory of operation
-------------------
The node holds a list of carriers (``Transport``\\ s) and asks this module, for each packet, which
one reaches the peer now. A carrier says so itself with ``reaches(peer)`` (a live TCP connection,
a memory hub's endpoint, an open multicast socket); a carrier may also be limited to some peers
(a group's multicast carrier carries only that group's members). Among the carriers that reach a
peer, the router prefers a ``reliable`` one, then the one with the lowest ``max_latency``, then
the order the node gave. When none reaches it, the packet goes to the *fallback* carrier (the
one that dials: TCP queues it for a connection being made, or drops it and says so); the engine
retransmits what is lost either way.

What the engine must know about a peer follows from its carrier, in :meth:`Router.capabilities`:
whether it is reached reliably (records are written once while it is), how long its packets may
take (the retransmission gap), and how large a payload fits. So a new carrier is a new
``Transport`` with honest capabilities; the node needs no change for it.

Carriers with per-peer send queues (TCP) also offer ``offer(peer, packet) -> bool`` (queue now
or say it is full), ``queued(peer)``, ``send_queue_size`` and ``wait_sent()``, which the node uses
for flow control: :class:`Queued` is that shape.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol, final, runtime_checkable

from mvds_node.transports import HEADER_SIZE, Transport

__all__ = ["PeerCapabilities", "Queued", "Reaches", "Route", "Router"]


@runtime_checkable
class Reaches(Protocol):
    """A carrier that can tell whether it reaches a peer now."""

    def reaches(self, peer: bytes) -> bool: ...


@runtime_checkable
class Queued(Protocol):
    """A carrier with a send queue per peer, for the node's flow control."""

    @property
    def send_queue_size(self) -> int: ...

    def offer(self, peer: bytes, packet: bytes) -> bool: ...

    def queued(self, peer: bytes) -> int: ...

    async def wait_sent(self) -> None: ...


@final
@dataclass(frozen=True, slots=True)
class Route:
    """A carrier, and the peers it may carry (None: any peer it reaches)."""

    carrier: Transport
    peers: frozenset[bytes] | None = None

    def reaches(self, peer: bytes) -> bool:
        if self.peers is not None and peer not in self.peers:
            return False
        carrier = self.carrier
        return isinstance(carrier, Reaches) and carrier.reaches(peer)


@final
@dataclass(frozen=True, slots=True)
class PeerCapabilities:
    """What the engine is told about a peer, from the carrier that reaches it."""

    reliable: bool
    """Reached now over a reliable carrier (records are written once while it is)."""
    latency: float
    """Seconds its packets may take (the engine waits at least twice this to retransmit);
    0 when no carrier reaches it: the engine's own backoff."""
    max_payload: int | None
    """The largest sync payload its carrier takes, header excluded; None: no cut beyond the
    node's own limit (a stream carrier)."""


_UNREACHED = PeerCapabilities(reliable=False, latency=0.0, max_payload=None)


@final
class Router:
    """Picks a carrier per peer from ``routes``, by their capabilities; see the module doc.

    Args:
        routes: the carriers, in the node's order of preference among equals.
        fallback: the carrier for a peer no route reaches now (one that dials).
        max_payload: the node's own payload limit; a carrier that takes more gives no cut.
    """

    def __init__(self, routes: Iterable[Route], *, fallback: Transport, max_payload: int) -> None:
        # sorted() is stable: among equals the node's order stays.
        self._routes = sorted(routes, key=lambda r: (not r.carrier.reliable, r.carrier.max_latency))
        self._fallback = fallback
        self._max_payload = max_payload

    @property
    def carriers(self) -> list[Transport]:
        return [r.carrier for r in self._routes]

    def route(self, peer: bytes) -> Transport:
        """The carrier for ``peer``'s next packet."""
        for r in self._routes:
            if r.reaches(peer):
                return r.carrier
        return self._fallback

    def reached(self, peer: bytes) -> bool:
        """Whether some carrier reaches ``peer`` now."""
        return any(r.reaches(peer) for r in self._routes)

    def peers_of(self, carrier: Transport) -> Collection[bytes]:
        """The peers a carrier is limited to (empty if it is not limited)."""
        for r in self._routes:
            if r.carrier is carrier and r.peers is not None:
                return r.peers
        return ()

    def capabilities(self, peer: bytes) -> PeerCapabilities:
        """What the engine should know about ``peer`` now; see :class:`PeerCapabilities`."""
        for r in self._routes:
            if r.reaches(peer):
                carrier = r.carrier
                room = carrier.max_payload - HEADER_SIZE
                return PeerCapabilities(
                    reliable=carrier.reliable,
                    latency=carrier.max_latency,
                    max_payload=None if room >= self._max_payload else room,
                )
        return _UNREACHED
