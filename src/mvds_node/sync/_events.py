"""Events the engine reports to its driver, drained with :meth:`Engine.next_event`.

Each event is one fact, a frozen slotted dataclass under :class:`Event`; none is subclassed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import final

from mvds_node.sync._state import RecordType

__all__ = [
    "Event",
    "GaveUp",
    "MessageAcked",
    "MessageDelivered",
    "MessageExpired",
    "PayloadRejected",
]


class Event:
    """Base of every engine event."""

    __slots__ = ()


@final
@dataclass(frozen=True, slots=True)
class MessageDelivered(Event):
    """A message reached the application (once per message; ephemeral ones are never stored)."""

    message_id: bytes
    group_id: bytes
    timestamp: int
    body: bytes
    parents: tuple[bytes, ...]
    ephemeral: bool
    sender: bytes
    """The peer we received it from (not necessarily its author, who MVDS does not name)."""
    expires_at: int = 0
    parents_missing: tuple[bytes, ...] = ()
    """Parents we gave up on (``SyncConfig.missing_parent_timeout``) and delivered this message
    without, in consistent delivery with ``MissingParents.DELIVER``; empty otherwise."""


@final
@dataclass(frozen=True, slots=True)
class MessageAcked(Event):
    """A peer acknowledged one of the messages we were sending to it."""

    message_id: bytes
    peer: bytes
    via: str = field(default="", compare=False)
    """The carrier the acknowledgement came over (``tcp``, ``bundle``, ``remote-log`` ...),
    as the driver named it; empty when it did not say. Not compared: an acknowledgement is
    the same event whichever way it came."""


@final
@dataclass(frozen=True, slots=True)
class GaveUp(Event):
    """The give-up policy stopped the retransmission of a record; ``reset_peer`` re-arms it."""

    message_id: bytes
    peer: bytes
    record: RecordType
    send_count: int


@final
@dataclass(frozen=True, slots=True)
class MessageExpired(Event):
    """A message reached its expiry and was deleted from the store and every peer's queue."""

    message_id: bytes
    group_id: bytes


@final
@dataclass(frozen=True, slots=True)
class PayloadRejected(Event):
    """Input from a peer was refused, whole or in part; what was valid was kept.

    Also what a peer made us refuse to ask for (a request bound reached: reported once per
    episode) and REQUESTs it left unanswered until their timeout (``dropped`` counts them; for
    missing parents, the peer is the one that named them)."""

    peer: bytes
    reason: str
    dropped: int
    """How many records this reason covers (1 for a payload refused whole)."""
    whole: bool
    """True if nothing of the payload was used."""
