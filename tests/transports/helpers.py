"""Shared helpers for transport tests."""

from __future__ import annotations

from typing import TypeVar

from mvds_node.transports import TcpTransport, TransportEvent

E = TypeVar("E", bound=TransportEvent)


async def next_event(transport: TcpTransport, kind: type[E], **match: object) -> E:
    """Read ``transport.events`` until an event of ``kind`` whose fields equal ``match``."""
    async for event in transport.events:
        if isinstance(event, kind) and all(getattr(event, k) == v for k, v in match.items()):
            return event
    raise AssertionError(f"events ended before a {kind.__name__} {match}")


def drain_events(transport: TcpTransport) -> list[TransportEvent]:
    """Everything queued on ``transport.events`` right now."""
    events = []
    while True:
        try:
            events.append(transport.events.receive_nowait())
        except Exception:  # WouldBlock, or the channel ended
            return events
