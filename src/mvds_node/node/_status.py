"""Snapshots of a running node for people and scripts (``mvds-node status``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from mvds_node.node._events import to_json
from mvds_node.node._remotelog import LogStatus

__all__ = ["GroupStatus", "NodeStatus", "PeerStatus"]


@final
@dataclass(frozen=True, slots=True)
class PeerStatus:
    key: bytes
    name: str
    address: str | None
    connected: bool
    pending: int
    """Records (messages, offers, requests) still waiting for this peer's acknowledgement."""
    available_until_ms: int = 0


@final
@dataclass(frozen=True, slots=True)
class GroupStatus:
    name: str
    id: bytes
    mode: str
    members: tuple[bytes, ...]


@final
@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A snapshot of the node for people and scripts (``mvds-node status``)."""

    key: bytes
    name: str
    listening: tuple[str, ...]
    messages_stored: int
    groups: tuple[GroupStatus, ...]
    peers: tuple[PeerStatus, ...]
    engine: dict[str, int]
    events_dropped: int
    refused: int
    logs: tuple[LogStatus, ...] = ()
    carriers_down: tuple[str, ...] = ()
    """Carriers that failed and are not back (``TransportFailed``): what failed, and why."""
    store_error: str | None = None
    """Why the store refuses writes (``StoreFailed``), until it takes them again."""

    def to_json(self) -> dict[str, Any]:
        """The snapshot as JSON data, in the encoding of :func:`~mvds_node.node.to_json`."""
        data: dict[str, Any] = to_json(self)
        return data
