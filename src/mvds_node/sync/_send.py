"""Sending: a new message of ours, stored with its records for every member of its group.

Theory of operation: ``Engine.send`` checks the caller's arguments and encodes the message;
:class:`Send` stores it and makes one record per member (``SHARE_BATCH`` or
``SHARE_INTERACTIVE`` by the member's mode), in one store transaction, so a message ``send``
returned for is durable with everything owed for it. For a member on a live reliable connection
(``Engine.set_peer_reliable``) the record is written once, as transmitted already
(``TRANSMITTED``), and the first transmission waits in that peer's ``PeerState.fresh`` for the
next drain, instead of the record being written again when it is drained. An ephemeral message
is only queued for each member's next payload. The group's frontier moves on (``_causal``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, final

from mvds_node.sync._causal import Causal
from mvds_node.sync._config import Mode, SyncConfig
from mvds_node.sync._peers import Peers
from mvds_node.sync._state import (
    TRANSITIONS,
    Input,
    Record,
    RecordType,
    create,
    create_for,
    transmitted,
)
from mvds_node.sync._wire import encode_message
from mvds_node.sync.store._protocol import Store, StoredMessage

__all__ = ["Send"]

_NONE: Final = RecordType.NONE


@final
class Send:
    """The engine's send path, over the engine's state (see the module docstring).

    Args:
        store, config, groups, peers, causal: the engine's, read and updated.
        epoch: the engine's current epoch; ``retransmit_epoch``: when a record transmitted
            ``count`` times, the last in ``epoch``, is next due (peer, message ID, epoch,
            count); ``schedule``: a record is due at an epoch; ``note_expiry``: an expiring
            message was stored.
    """

    __slots__ = (
        "_causal",
        "_cfg",
        "_epoch",
        "_groups",
        "_note_expiry",
        "_peers",
        "_retransmit_epoch",
        "_schedule",
        "_store",
        "_wall",
    )

    def __init__(
        self,
        *,
        store: Store,
        config: SyncConfig,
        groups: dict[bytes, dict[bytes, Mode]],
        peers: Peers,
        causal: Causal,
        epoch: Callable[[], int],
        retransmit_epoch: Callable[[bytes, bytes, int, int], int],
        schedule: Callable[[int], None],
        note_expiry: Callable[[int], None],
        wall: Callable[[], int] = lambda: 0,
    ) -> None:
        self._store = store
        self._wall = wall
        self._cfg = config
        self._groups = groups
        self._peers = peers
        self._causal = causal
        self._epoch = epoch
        self._retransmit_epoch = retransmit_epoch
        self._schedule = schedule
        self._note_expiry = note_expiry

    def ephemeral(self, members: Iterable[bytes], wire: bytes) -> None:
        """Queue an ephemeral message for each member's next payload (sent once)."""
        peers = self._peers
        for peer in members:
            peers[peer].ephemeral.append(wire)

    def durable(self, message: StoredMessage) -> None:
        """Store ``message`` (ours, new) with its records; a message already stored (the same
        group, timestamp and body: the same message) changes nothing."""
        store = self._store
        mid, group_id, expires_at = message.id, message.group_id, message.expires_at
        with store.transaction():
            if not store.add_message(message):
                return
            if expires_at:
                self._note_expiry(expires_at)
            records, fresh = self._new_records(group_id, (mid,))
            if records:
                store.put_records(records)
        self._note_fresh(fresh, group_id, (mid,), len(message.wire))
        if not expires_at:
            # An expiring message is never a parent, so it cannot stand in for the messages it
            # names: they stay in the frontier, and the next message names them.
            self._causal.sent(group_id, message.parents, mid)

    def chain(
        self, group_id: bytes, bodies: Sequence[bytes], ids: list[bytes], timestamp: int
    ) -> bool:
        """``Engine.send_many`` when none of ``ids`` is stored yet: each message names the one
        before it, the first names the frontier; False (nothing done) if one is stored."""
        if not ids:
            return True
        first = self._causal.choose_parents(group_id)
        messages = []
        parents: tuple[bytes, ...] = first
        stored_at = self._wall()
        for mid, body in zip(ids, bodies, strict=True):
            wire = encode_message(group_id, timestamp, body, parents=parents)
            messages.append(
                StoredMessage(mid, group_id, timestamp, wire, parents, stored_at=stored_at)
            )
            parents = (mid,)
        store = self._store
        if not store.add_messages(messages):
            return False
        records, fresh = self._new_records(group_id, ids)
        if records:
            store.put_records(records)
        self._causal.sent(group_id, first, ids[-1])
        size = sum(len(m.wire) for m in messages) if fresh else 0
        self._note_fresh(fresh, group_id, ids, size)
        return True

    def _new_records(
        self, group_id: bytes, ids: Sequence[bytes]
    ) -> tuple[list[Record], list[tuple[bytes, RecordType]]]:
        """The records of the new messages ``ids`` for every member of the group, scheduled,
        and the reliable members whose first transmission goes out from memory, with their kind
        of record (for :meth:`_note_fresh` once the records are stored)."""
        records: list[Record] = []
        fresh: list[tuple[bytes, RecordType]] = []
        epoch = self._epoch()
        cap = self._cfg.limits.max_pending_acks
        peers = self._peers
        # The members' records, by mode, made in one call each: (peer, due) per member.
        targets: dict[Input, list[tuple[bytes, int]]] = {}
        for peer, mode in self._groups[group_id].items():
            share = Input.SHARE_BATCH if mode is Mode.BATCH else Input.SHARE_INTERACTIVE
            state = peers[peer]
            if state.reliable and len(state.fresh) + len(ids) <= cap:
                # Written once, as transmitted; the transmission follows from memory.
                for mid in ids:
                    due = self._retransmit_epoch(peer, mid, epoch, 1)
                    new = create(mid, peer, group_id, share, due=due)
                    records.append(transmitted(new, epoch, due, state.carrier))
                    self._schedule(due)
                fresh.append((peer, TRANSITIONS[(_NONE, share)].to))
                continue
            due = state.first_due(epoch)
            targets.setdefault(share, []).append((peer, due))
            self._schedule(due)
        for share, members in targets.items():
            records.extend(create_for(ids, members, group_id, share))
        return records, fresh

    def _note_fresh(
        self,
        fresh: list[tuple[bytes, RecordType]],
        group_id: bytes,
        ids: Sequence[bytes],
        size: int,
    ) -> None:
        """Queue the first transmissions of ``ids`` (``size`` bytes of wires) to ``fresh``."""
        peers = self._peers
        for peer, kind in fresh:
            state = peers[peer]
            waiting = state.fresh
            for mid in ids:
                waiting[mid] = (kind, group_id)
            state.fresh_bytes += size
