"""The REQUEST records we hold, counted per peer and per group, to bound what a member can make
us ask for.

Theory of operation: any member can offer IDs that do not exist or name parents nobody has, so
every REQUEST counts against the peer asked (``Limits.max_requests_per_peer``), the group of a
missing parent (``Limits.max_requests_per_group``) and all of them together
(``Limits.max_pending_requests``). :class:`Requests` is kept in memory beside the store
(rebuilt from it at start-up and after a rollback) and updated at every change of a REQUEST
record, so that checking a bound costs a dict lookup. A refusal opens an *episode*, reported
once until the counter that refused falls to half its bound.
"""

from __future__ import annotations

from typing import Final, final

from mvds_node.sync._config import Limits
from mvds_node.sync._reasons import RejectReason
from mvds_node.sync._state import RecordType
from mvds_node.sync.store._protocol import Store

__all__ = ["GROUP_FULL", "PEER_FULL", "TOTAL_FULL", "Requests"]

PEER_FULL: Final = RejectReason.PEER_FULL
GROUP_FULL: Final = RejectReason.GROUP_FULL
TOTAL_FULL: Final = RejectReason.TOTAL_FULL


@final
class Requests:
    """The REQUEST records we hold, counted per peer and per group, to bound them.

    Kept in memory beside the store (rebuilt from it at start-up and after a rollback), and
    updated at every change of a REQUEST record, so that checking a bound costs a dict lookup.
    """

    __slots__ = ("_limits", "by_id", "per_group", "per_peer", "refusal", "total")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.by_id: dict[bytes, dict[bytes, bytes]] = {}
        """Message ID -> {peer asked -> group (empty: not known, a REQUEST from an offer)}."""
        self.per_peer: dict[bytes, int] = {}
        self.per_group: dict[bytes, int] = {}
        self.total = 0
        self.refusal: tuple[str, bytes] = ("", b"")
        """The bound the current payload's requests hit first, and the key of its counter."""

    @classmethod
    def load(cls, store: Store, limits: Limits) -> Requests:
        """Count the REQUEST records in the store (at start-up)."""
        requests = cls(limits)
        requests.reload(store)
        return requests

    def reload(self, store: Store) -> None:
        """Count the REQUEST records in the store again (after a rollback)."""
        self.by_id = {}
        self.per_peer = {}
        self.per_group = {}
        self.total = 0
        for mid in dict.fromkeys(store.request_ids()):
            for r in store.records_for_message(mid):
                if r.type is RecordType.REQUEST:
                    self.add(mid, r.peer, r.group_id)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self.by_id

    def asks(self, message_id: bytes, peer: bytes) -> bool:
        """Whether we have a REQUEST for ``message_id`` to ``peer``."""
        peers = self.by_id.get(message_id)
        return peers is not None and peer in peers

    def add(self, message_id: bytes, peer: bytes, group: bytes) -> None:
        peers = self.by_id.get(message_id)
        if peers is None:
            peers = self.by_id[message_id] = {}
        elif peer in peers:
            return
        peers[peer] = group
        self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        if group:
            self.per_group[group] = self.per_group.get(group, 0) + 1
        self.total += 1

    def discard(self, message_id: bytes, peer: bytes) -> None:
        peers = self.by_id.get(message_id)
        if peers is None:
            return
        group = peers.pop(peer, None)
        if group is None:
            return
        if not peers:
            del self.by_id[message_id]
        _decrement(self.per_peer, peer)
        if group:
            _decrement(self.per_group, group)
        self.total -= 1

    def discard_all(self, message_id: bytes) -> None:
        for peer in list(self.by_id.get(message_id, ())):
            self.discard(message_id, peer)

    def refuse(self, peer: bytes, group: bytes, refused: dict[str, int]) -> str | None:
        """None if one more REQUEST to ``peer`` (for a parent in ``group``, or an offer: empty)
        fits under the request bounds; otherwise the reason, counted in ``refused``, with the
        episode noted (:attr:`refusal`, kept as ``PeerState.full``)."""
        limits = self._limits
        if self.per_peer.get(peer, 0) >= limits.max_requests_per_peer:
            reason, key = PEER_FULL, peer
        elif group and self.per_group.get(group, 0) >= limits.max_requests_per_group:
            reason, key = GROUP_FULL, group
        elif self.total >= limits.max_pending_requests:
            reason, key = TOTAL_FULL, b""
        else:
            return None
        if not refused:
            self.refusal = (reason, key)  # opens an episode, unless one is open
        refused[reason] = refused.get(reason, 0) + 1
        return reason

    def below_half(self, full: tuple[str, bytes]) -> bool:
        """Whether the counter that refused a peer's requests fell to half its bound."""
        reason, key = full
        limits = self._limits
        if reason is PEER_FULL:
            return self.per_peer.get(key, 0) <= limits.max_requests_per_peer // 2
        if reason is GROUP_FULL:
            return self.per_group.get(key, 0) <= limits.max_requests_per_group // 2
        return self.total <= limits.max_pending_requests // 2


def _decrement(counts: dict[bytes, int], key: bytes) -> None:
    n = counts[key] - 1
    if n:
        counts[key] = n
    else:
        del counts[key]
