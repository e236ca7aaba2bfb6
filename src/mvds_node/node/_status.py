"""Snapshots of a node for people and scripts: ``mvds-node status`` (:class:`NodeStatus`) and
``mvds-node trace`` (:class:`Trace`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from mvds_node.node._events import to_json
from mvds_node.node._remotelog import LogStatus
from mvds_node.sync import PeerTrace

__all__ = [
    "CursorStatus",
    "Contact",
    "GroupStatus",
    "NodeStatus",
    "PeerStatus",
    "Trace",
    "WaitingFor",
]


@final
@dataclass(frozen=True, slots=True)
class Contact:
    """The last contact with a peer over one carrier, each way (Unix ms; 0: never)."""

    carrier: str
    sent_ms: int
    received_ms: int


@final
@dataclass(frozen=True, slots=True)
class WaitingFor:
    """A message and what it waits for: the peers asked for a message we lack, or the
    parents a held message waits for."""

    message_id: bytes
    on: tuple[bytes, ...]


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
    pending_bytes: int = 0
    """Bytes of the messages among them: what is still to go to it (estimated past 1,000
    messages: the oldest 1,000 at their mean size)."""
    pending_bytes_exact: bool = True
    requested: int = 0
    """Messages we lack and ask this peer for."""
    contacts: tuple[Contact, ...] = ()
    """The last contact per carrier, each way (kept across restarts)."""


@final
@dataclass(frozen=True, slots=True)
class GroupStatus:
    name: str
    id: bytes
    mode: str
    members: tuple[bytes, ...]
    lacking: int = 0
    """Messages we know of (offered, or named as a parent) but lack."""
    lacking_ids: tuple[WaitingFor, ...] = ()
    """Some of them (up to 10), each with the peers we ask for it."""
    held: int = 0
    """Messages held by consistent delivery until a missing parent arrives."""
    held_ids: tuple[WaitingFor, ...] = ()
    """Some of them (up to 10), each with the parents it waits for."""
    log_behind: int = 0
    """The remote log's lag: messages of members' logs we lacked at the last poll."""
    log_queued: int = 0
    """Our messages waiting to be uploaded to our remote log."""


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
    cursors: tuple[CursorStatus, ...] = ()
    """The inbox's durable cursors, and how much each has not read yet."""
    live_messages_dropped: int = 0
    """Messages a live-only subscriber (``messages(live=True)``) missed because it was full
    (durable readers miss nothing: they read the inbox)."""

    def to_json(self) -> dict[str, Any]:
        """The snapshot as JSON data, in the encoding of :func:`~mvds_node.node.to_json`."""
        data: dict[str, Any] = to_json(self)
        return data


@final
@dataclass(frozen=True, slots=True)
class CursorStatus:
    """One durable cursor of the inbox, as ``status`` shows it."""

    name: str
    position: int
    """The last inbox position its consumer confirmed."""
    unread: int
    """Inbox entries after it (expired ones included)."""


@final
@dataclass(frozen=True, slots=True)
class Trace:
    """Every fact the node holds about one message (``node.trace``, ``mvds-node trace``)."""

    message_id: bytes
    known: bool
    """Whether the node knows anything of it (stored, owed, asked for, or waited for)."""
    stored: bool
    group: str = ""
    """The group's name (its ID in hex if it is not configured; empty: not known)."""
    group_id: bytes = b""
    timestamp: int = 0
    stored_ms: int = 0
    """When it was stored here (Unix ms; 0: not known)."""
    expires_ms: int = 0
    """When it expires everywhere (Unix ms; 0: never)."""
    held: bool = False
    """Consistent delivery holds it until its parents are delivered."""
    parents: tuple[bytes, ...] = ()
    parents_missing: tuple[WaitingFor, ...] = ()
    """Its parents we lack, each with the peers we ask for it."""
    waiting_children: tuple[bytes, ...] = ()
    """Messages held until this one arrives (it is a parent we lack)."""
    peers: tuple[PeerTrace, ...] = ()
    """Each peer's part: offered, sent or requested (transmissions, next retry, given up,
    carrier), or acknowledged (when, over which carrier)."""
    log_seq: int = 0
    """The head sequence of our remote log it went out in (0: not in it, or not known)."""
    log_queued: bool = False
    """It waits to be uploaded to our remote log."""
    taken_ms: int = 0
    """When this trace was taken (Unix ms): next retries are relative to it."""

    def to_json(self) -> dict[str, Any]:
        """The trace as JSON data, in the encoding of :func:`~mvds_node.node.to_json`."""
        data: dict[str, Any] = to_json(self)
        return data
