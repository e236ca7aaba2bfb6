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

__all__ = [
    "DeliveryMode",
    "GiveUpPolicy",
    "Limits",
    "MissingParents",
    "Mode",
    "RelayPolicy",
    "SyncConfig",
]


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


class MissingParents(enum.Enum):
    """What consistent delivery does with a held message once we gave up on its missing parents
    (``SyncConfig.missing_parent_timeout``, or parents we could not ask for under the limits)."""

    DELIVER = "deliver"
    """Deliver it, with ``MessageDelivered.parents_missing`` naming the parents it never got: a
    member that names parents nobody has cannot hide its messages, nor ours after them."""
    HOLD = "hold"
    """Keep holding it until the parents arrive by another route (a peer relays or offers them),
    possibly for ever: causal order is never broken."""


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
    # Messages we are asking one peer for (REQUEST records, from its offers and from parents its
    # messages name). Any group member can offer IDs that do not exist, so the bound is per peer:
    # one member filling it costs the others nothing. Past it, further offers from that peer are
    # ignored (it offers them again later, and we ask once answers make room) and reported once
    # per episode. 10,000 records are about 2.5 MB on disk, and re-arming them all when the peer
    # reconnects stays well under a second; an honest backlog larger than that comes in rounds.
    max_requests_per_peer: int = 10_000
    # Missing parents we are asking for per group, whoever named them: several members of one
    # group cannot, together, make us hold more than this for it (REQUESTs from offers name no
    # group and count against the per-peer bound only).
    max_requests_per_group: int = 50_000
    # All REQUEST records together, over every peer and group: an overall safety bound on memory
    # and disk (about 250 MB of records at worst). It was the only bound before the per-peer and
    # per-group ones, and is kept so that configurations naming it still work.
    max_pending_requests: int = 1_000_000
    # Parents we gave up on (missing_parent_timeout), remembered so that a member naming them
    # again does not make us ask again: a later message naming one is handled at once as if its
    # timeout had passed. In memory only; the oldest are forgotten first.
    abandoned_parents_window: int = 65_536


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
    request_timeout: float = 600.0
    """Seconds of running time after which a REQUEST for an offered message that the offerer has
    not answered is dropped and reported; an honest offerer offers again and is asked again.
    Retransmissions of a REQUEST never go past this age, and reconnecting does not renew it."""
    missing_parent_timeout: float = 600.0
    """Seconds of running time after which we stop asking for a missing parent (a parent named by
    a message we received) that nobody sent, report the peer that named it, and give it up: in
    consistent delivery the held messages waiting for it are then handled as ``missing_parents``
    says. Ten minutes is twice the latency the MVDS notes measured at 90 % offline; an honest
    parent still arrives later from its author, who sends it until acknowledged."""
    missing_parents: MissingParents = MissingParents.HOLD
    """Consistent delivery only: keep holding a message whose parents we gave up on (the
    default: causal order is never broken), or deliver it marked ``parents_missing``."""
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
        if not self.request_timeout > 0 or not self.missing_parent_timeout > 0:
            raise ValueError("request_timeout and missing_parent_timeout must be positive")
        if self.drain_budget_bytes < 1024:
            raise ValueError("drain_budget_bytes must be at least 1 KiB")
