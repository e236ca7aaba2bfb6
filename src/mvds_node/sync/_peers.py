"""What the engine keeps in memory about one peer, in one object.

Theory of operation: everything per peer that is not in the store (the groups it is a member
of, the epoch its last payload went out, the ACKs and ephemeral messages waiting for it, the
first transmissions queued for it on a live reliable connection, what its carrier declared, and
whether its requests hit a bound) lives in one :class:`PeerState`, in one table keyed by peer
(:class:`Peers`). A peer gets a state when it joins its first group or its carrier is first
declared, and loses it when it leaves its last group: a peer removed and added again starts
afresh, with nothing left over from before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Set
from typing import final

from mvds_node.sync._state import RecordType

__all__ = ["PeerState", "Peers"]


@final
class PeerState:
    """One peer's in-memory state (see the module docstring)."""

    __slots__ = (
        "acks",
        "cap",
        "carrier",
        "done_epoch",
        "ephemeral",
        "fresh",
        "fresh_bytes",
        "full",
        "groups",
        "min_gap",
        "reliable",
    )

    def __init__(self, ephemeral_queue: int) -> None:
        self.groups: set[bytes] = set()
        """The groups the peer is a member of."""
        self.done_epoch: int | None = None
        """The last epoch in which its payload went out complete."""
        self.acks: dict[bytes, None] = {}
        """IDs to acknowledge in its next payload, oldest first (bounded by the engine)."""
        self.ephemeral: deque[bytes] = deque(maxlen=ephemeral_queue)
        """Ephemeral messages (wire encodings) for its next payload, sent once."""
        self.reliable = False
        """Reached now over a live reliable connection (``Engine.set_peer_reliable``)."""
        self.carrier = ""
        """That connection's carrier, if the driver named it."""
        self.fresh: dict[bytes, tuple[RecordType, bytes]] = {}
        """Messages whose records were written as transmitted already, their first
        transmission waiting here: ID -> (kind of record, group)."""
        self.fresh_bytes = 0
        """About the bytes of those messages' wires: a full payload's worth goes out without
        waiting for the next epoch."""
        self.cap: int | None = None
        """The largest payload its carrier takes (None: the drain's limit)."""
        self.min_gap = 0
        """Epochs a retransmission to it waits at least (its carrier's latency; 0: none)."""
        self.full: tuple[str, bytes] | None = None
        """The request bound its requests hit, and the counter's key, while the refusal
        episode lasts (reported once until that counter falls to half its bound)."""

    def first_due(self, epoch: int) -> int:
        """The epoch in which a new record for the peer can go out: this one, unless its
        payload for this epoch went out already."""
        return epoch + 1 if self.done_epoch == epoch else epoch

    def drop_fresh(self) -> dict[bytes, tuple[RecordType, bytes]]:
        """Forget the first transmissions waiting here; return them."""
        waiting = self.fresh
        self.fresh = {}
        self.fresh_bytes = 0
        return waiting


@final
class Peers(dict[bytes, PeerState]):
    """Peer -> :class:`PeerState`, in the order peers were first known."""

    __slots__ = ("_ephemeral_queue",)

    def __init__(self, *, ephemeral_queue: int) -> None:
        super().__init__()
        self._ephemeral_queue = ephemeral_queue

    def state(self, peer: bytes) -> PeerState:
        """The peer's state, made fresh if it has none."""
        state = self.get(peer)
        if state is None:
            state = self[peer] = PeerState(self._ephemeral_queue)
        return state

    def groups_of(self, peer: bytes) -> Set[bytes]:
        """The groups ``peer`` is a member of (empty if none); do not change the set."""
        state = self.get(peer)
        return _NO_GROUPS if state is None else state.groups


_NO_GROUPS: frozenset[bytes] = frozenset()
