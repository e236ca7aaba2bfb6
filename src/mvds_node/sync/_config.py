"""Engine configuration: every size and count limit in one place, each with the reason for it.

Theory of operation: the engine takes one frozen :class:`SyncConfig`. Its :class:`Limits` bound
everything a peer controls (sizes and counts read from the wire), so that a hostile or broken peer
costs us at most a bounded amount of memory and CPU per payload. The remaining fields tune timing
and behaviour; none of them changes the wire format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mvds_node.sync._backoff import Backoff

__all__ = ["DeliveryMode", "GiveUpPolicy", "Limits", "Mode", "RelayPolicy", "SyncConfig"]


class Mode(enum.Enum):
    """How we send messages to one peer (chosen per group membership)."""

    BATCH = "batch"
    """Send the full MESSAGE at once; best under loss (one successful leg instead of three)."""
    INTERACTIVE = "interactive"
    """OFFER the ID first, send the MESSAGE only on REQUEST.

    Saves bandwidth when peers often have the message already."""


class DeliveryMode(enum.Enum):
    """When a received message is handed to the application."""

    EVENTUAL = "eventual"
    """Deliver at once; fetch missing parents in the background."""
    CONSISTENT = "consistent"
    """Hold a message until all its parents are delivered, so the app sees causal order."""


class RelayPolicy(enum.Enum):
    """What we do with a message received from one group peer for the other group peers."""

    MODE = "mode"
    """Relay in each peer's mode (MESSAGE to batch, OFFER to interactive peers), as the Go code."""
    OFFER = "offer"
    """Relay by OFFER only: a peer that already has the message answers with an ACK, so a full
    mesh costs 32-byte IDs instead of full copies."""
    NONE = "none"
    """Do not relay (every peer talks to every other peer directly)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may make us hold or process."""

    # A payload is one epoch's worth of records for one peer. 4 MiB carries ~15,000 messages of
    # 256 bytes and still fits comfortably in memory per peer; senders split bigger batches.
    max_payload_bytes: int = 4 * 1024 * 1024
    # Records of any kind per payload. 4 MiB of bare 35-byte ID records is ~120,000; 200,000 leaves
    # room for that and stops a peer from making us iterate millions of tiny records.
    max_records_per_payload: int = 200_000
    # Message bodies. Large enough for a photo thumbnail or a document chunk; apps chunk larger
    # data (a 1 MiB body already costs 1 MiB per retransmission per peer).
    max_body_bytes: int = 1024 * 1024
    # Group IDs are 32-byte hashes in practice (Status, the Go code); 64 allows other hashes and
    # rules out a peer using the group ID as a second body.
    max_group_id_bytes: int = 64
    # Parents per message. 4/MVDS-META bounds them by the number of participants; with a bound we
    # also cap the dependency work one message can cause. Locally sent messages name at most this
    # many (the rest of the frontier is named by the next message).
    max_parents: int = 64
    # Peer IDs are opaque to the engine: a 32-byte key, or the 65-byte uncompressed secp256k1 key
    # that Status uses.
    max_peer_id_bytes: int = 65
    # Ephemeral messages waiting for the next payload, per peer. They are best effort: when this
    # many are queued the oldest is dropped rather than growing memory while a peer is away.
    max_ephemeral_queue: int = 256
    # Pending ACKs per peer. An ACK costs 35 bytes; past this many we drop the oldest, and the
    # peer's retransmission brings the message (and our ACK) back.
    max_pending_acks: int = 200_000
    # Events waiting to be drained. A driver that never drains events would otherwise grow without
    # bound; past this, the oldest events are dropped and counted in ``statistics()``.
    max_queued_events: int = 1_000_000
    # Recently seen ephemeral IDs, to suppress duplicates the network made (they are not stored).
    ephemeral_dedup_window: int = 4096
    # Messages we are asking peers for (REQUEST records, from offers and from missing parents).
    # Any group member can offer IDs that do not exist; past this many, further asks are dropped
    # (and reported) until answers or acknowledgements bring the number down. A million is far
    # beyond any honest backlog and about 100 MB of records at worst.
    max_pending_requests: int = 1_000_000


@dataclass(frozen=True, slots=True)
class GiveUpPolicy:
    """When to stop retransmitting a record and tell the application (``GaveUp``).

    A record that gave up is parked, not forgotten: :meth:`Engine.reset_peer` re-arms it when the
    application learns that the peer is back.
    """

    max_attempts: int | None = None
    """Transmissions after which we give up (None: no limit)."""
    max_age_epochs: int | None = 2_000_000
    """Epochs of running time since the first transmission after which we give up (None: no limit).
    The default is about 11.5 days at 0.5 s epochs."""


def _default_backoff() -> Backoff:
    from mvds_node.sync._backoff import ExponentialBackoff

    return ExponentialBackoff()


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Everything that tunes one engine."""

    limits: Limits = field(default_factory=Limits)
    epoch_seconds: float = 0.5
    """Length of an epoch. At most one payload goes to each peer per epoch, so this is also the
    batching window: short enough for chat, long enough to gather many records in one payload."""
    backoff: Backoff = field(default_factory=_default_backoff)
    give_up: GiveUpPolicy = field(default_factory=GiveUpPolicy)
    delivery: DeliveryMode = DeliveryMode.EVENTUAL
    relay: RelayPolicy = RelayPolicy.MODE
    ack_offers_we_have: bool = True
    """Answer an OFFER of a message we already hold with an ACK, so the offerer stops offering it.
    2/MVDS does not say what to do; the Go code ignores such offers, which makes the offerer repeat
    them until it gives up."""
    drain_budget_bytes: int = 16 * 1024 * 1024
    """Payload bytes produced by one ``payloads_to_send`` call at most; the rest follows on the next
    call. This bounds the memory of a drain when a peer comes back to a large backlog."""

    def __post_init__(self) -> None:
        if not self.epoch_seconds > 0:
            raise ValueError("epoch_seconds must be positive")
        if self.drain_budget_bytes < 1024:
            raise ValueError("drain_budget_bytes must be at least 1 KiB")
