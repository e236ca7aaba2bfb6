"""In-process transports: a hub that connects any number of endpoints, for tests and embedding.

Theory of operation
-------------------
A :class:`MemoryHub` is a tiny switch. Each :meth:`MemoryHub.transport` call plugs in an endpoint
with a peer ID; ``send(peer, packet)`` on one endpoint puts ``(sender_id, packet)`` into the
destination's inbound buffer, and ``receive()`` there takes it out. Buffers are bounded, and like
a real network the hub never makes a sender wait: a packet for a full buffer, an unknown peer or
a closed endpoint is dropped and counted in :meth:`MemoryHub.statistics`. For tests the hub can
also lose a fraction of packets, drawn from its own seeded RNG, so a run is reproducible.

Packets are carried as they are, without framing checks: this is a carrier, and a test may well
want to push malformed bytes through it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final, final

import trio

from mvds_node.errors import LocalProtocolError, TransportClosed
from mvds_node.transports._framing import DEFAULT_LIMITS

__all__ = ["MemoryHub", "MemoryHubStatistics", "MemoryTransport", "memory_transport_pair"]


@final
@dataclass(frozen=True, slots=True)
class MemoryHubStatistics:
    delivered: int
    """Packets put into a destination buffer."""
    lost: int
    """Packets the simulated loss dropped."""
    dropped: int
    """Packets for an unknown or closed peer, or a full buffer."""


@final
class MemoryHub:
    """A set of in-process endpoints that can send to each other by peer ID."""

    def __init__(
        self,
        *,
        buffer_size: int = 256,
        loss: float = 0.0,
        seed: int | None = None,
        max_payload: int = DEFAULT_LIMITS.max_frame_bytes,
        max_latency: float = 0.0,
    ) -> None:
        """Create a hub.

        Args:
            buffer_size: packets each endpoint buffers before further ones are dropped.
            loss: fraction of packets dropped at random (0.0 to 1.0).
            seed: seed of the loss RNG; None for a random seed.
            max_payload: the largest packet an endpoint accepts.
            max_latency: what endpoints advertise as ``max_latency``.
        """
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be between 0 and 1")
        self._buffer_size = buffer_size
        self._loss = loss
        self._rng = random.Random(seed)
        self.max_payload: Final = max_payload
        self.max_latency: Final = max_latency
        self._endpoints: dict[bytes, MemoryTransport] = {}
        self._delivered = 0
        self._lost = 0
        self._dropped = 0

    def transport(self, peer_id: bytes) -> MemoryTransport:
        """Plug in a new endpoint named ``peer_id``.

        Raises:
            LocalProtocolError: an open endpoint already has that ID.
        """
        if peer_id in self._endpoints:
            raise LocalProtocolError(f"peer id {peer_id!r} is already on this hub")
        endpoint = MemoryTransport(self, peer_id, self._buffer_size)
        self._endpoints[peer_id] = endpoint
        return endpoint

    def statistics(self) -> MemoryHubStatistics:
        return MemoryHubStatistics(self._delivered, self._lost, self._dropped)

    def _deliver(self, sender: bytes, peer: bytes, packet: bytes) -> None:
        if self._loss and self._rng.random() < self._loss:
            self._lost += 1
            return
        target = self._endpoints.get(peer)
        if target is None:
            self._dropped += 1
            return
        try:
            target._inbound_send.send_nowait((sender, packet))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._dropped += 1
        else:
            self._delivered += 1

    def _unplug(self, endpoint: MemoryTransport) -> None:
        if self._endpoints.get(endpoint.peer_id) is endpoint:
            del self._endpoints[endpoint.peer_id]


@final
class MemoryTransport:
    """One endpoint of a :class:`MemoryHub`; implements :class:`~mvds_node.transports.Transport`."""

    def __init__(self, hub: MemoryHub, peer_id: bytes, buffer_size: int) -> None:
        """Internal: use :meth:`MemoryHub.transport` or :func:`memory_transport_pair`."""
        self._hub = hub
        self.peer_id: Final = peer_id
        """This endpoint's own ID (what its peers see as the sender)."""
        send, receive = trio.open_memory_channel[tuple[bytes, bytes]](buffer_size)
        self._inbound_send = send
        self._inbound_receive = receive
        self._closed = False

    proves_peer: Final = True
    """The hub names each packet's sender by its endpoint, in this process."""

    @property
    def reliable(self) -> bool:
        return self._hub._loss == 0.0

    @property
    def max_payload(self) -> int:
        return self._hub.max_payload

    @property
    def max_latency(self) -> float:
        return self._hub.max_latency

    def reaches(self, peer: bytes) -> bool:
        """True while this endpoint is open and ``peer`` has an endpoint on the hub."""
        return not self._closed and peer in self._hub._endpoints

    async def send(self, peer: bytes, packet: bytes) -> None:
        """Put ``packet`` into ``peer``'s buffer, or drop it (see :class:`MemoryHub`).

        Raises:
            TransportClosed: we closed this endpoint.
            LocalProtocolError: the packet is larger than :attr:`max_payload`.
        """
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise TransportClosed("transport was closed")
        if len(packet) > self.max_payload:
            raise LocalProtocolError(f"packet of {len(packet)} bytes exceeds {self.max_payload}")
        self._hub._deliver(self.peer_id, peer, bytes(packet))

    async def receive(self) -> tuple[bytes, bytes]:
        """Wait for the next ``(sender, packet)``.

        Raises:
            TransportClosed: we closed this endpoint.
        """
        try:
            return await self._inbound_receive.receive()
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise TransportClosed("transport was closed") from None

    def receive_nowait(self) -> tuple[bytes, bytes]:
        """Take the next ``(sender, packet)`` if one is buffered.

        Raises:
            trio.WouldBlock: nothing is buffered.
            TransportClosed: we closed this endpoint.
        """
        try:
            return self._inbound_receive.receive_nowait()
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise TransportClosed("transport was closed") from None

    async def aclose(self) -> None:
        """Unplug from the hub and drop whatever is buffered. Always closes."""
        if not self._closed:
            self._closed = True
            self._hub._unplug(self)
            self._inbound_send.close()
            self._inbound_receive.close()
        await trio.lowlevel.checkpoint()


def memory_transport_pair(
    a: bytes = b"a", b: bytes = b"b", *, hub: MemoryHub | None = None
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two endpoints, named ``a`` and ``b``, on ``hub`` (by default a fresh lossless hub)."""
    hub = MemoryHub() if hub is None else hub
    return hub.transport(a), hub.transport(b)
