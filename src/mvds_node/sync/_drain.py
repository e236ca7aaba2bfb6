"""Draining: what each peer gets now, packed into payloads.

Theory of operation: a drain (:meth:`Engine.payloads_to_send`) collects, per peer, an
:class:`Outgoing`: first the records due (:meth:`Drain.records`, read from the store a chunk at
a time and written back before the next query, so every query makes progress), then the first
transmissions queued in memory for reliable peers (:meth:`Drain.fresh`), then the ACKs and
ephemeral messages waiting for each peer, which ride along or go alone
(:meth:`Drain.ride_along`). One drain produces at most ``drain_budget_bytes``; a drain cut
short says so, and the next deadline is "now". Each peer's records are then encoded as one
payload, or as several when they exceed what the peer's carrier takes (:func:`split`). Every
change to a record goes through ``_state.apply``; what follows from the drain (``GaveUp``
events, REQUESTs that timed out) is the engine's to report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Final, NamedTuple, final

from mvds_node.sync._config import Mode, SyncConfig
from mvds_node.sync._peers import Peers
from mvds_node.sync._state import Input, Record, RecordType, apply, step, transmitted
from mvds_node.sync._wire import ID_RECORD_SIZE, encode_payload, payload_overhead
from mvds_node.sync.store._protocol import Store

__all__ = ["Drain", "Drained", "Outgoing", "split"]

_OFFER: Final = RecordType.OFFER
_REQUEST: Final = RecordType.REQUEST
_MESSAGE: Final = RecordType.MESSAGE
_DUE_CHUNK: Final = 4096
"""Due records read from the store at once."""
_WIRES_AHEAD: Final = 64
"""Message wires read from the store at once, as the budget allows."""


@dataclass(slots=True)
class Outgoing:
    """What one peer gets from one drain, by kind of record (messages as wire encodings)."""

    acks: list[bytes]
    offers: list[bytes]
    requests: list[bytes]
    messages: list[bytes]


class Drained(NamedTuple):
    """What :meth:`Drain.records` did."""

    used: int
    """Bytes of payload it produced, about."""
    cut: bool
    """It stopped at the budget with records still due."""
    timed_out: list[Record]
    """REQUESTs ended unanswered at their timeout (deleted)."""
    gave_up: list[Record]
    """Records parked by the give-up policy, as they were before."""


@final
class Drain:
    """The engine's drain, over the engine's store, group table and peers.

    Args:
        store: the engine's store.
        groups: the engine's group table (group -> {peer -> mode}), read as it changes.
        peers: the engine's per-peer states, read and updated as they change.
        config: the engine's configuration.
    """

    __slots__ = ("_cfg", "_groups", "_parent_epochs", "_peers", "_request_epochs", "_store")

    def __init__(
        self,
        store: Store,
        groups: dict[bytes, dict[bytes, Mode]],
        peers: Peers,
        config: SyncConfig,
    ) -> None:
        self._store = store
        self._groups = groups
        self._peers = peers
        self._cfg = config
        epoch_seconds = config.epoch_seconds
        self._request_epochs = max(1, math.ceil(config.request_timeout / epoch_seconds))
        self._parent_epochs = max(1, math.ceil(config.missing_parent_timeout / epoch_seconds))

    def retransmit_epoch(self, peer: bytes, message_id: bytes, epoch: int, count: int) -> int:
        """When a record transmitted ``count`` times, the last in ``epoch``, is next due."""
        nxt = self._cfg.backoff.next_epoch(epoch=epoch, send_count=count, key=message_id + peer)
        state = self._peers.get(peer)
        if state is not None and nxt < epoch + state.min_gap:
            nxt = epoch + state.min_gap
        return nxt

    def request_age(self, r: Record) -> int:
        """Epochs after its first transmission at which the REQUEST ``r`` ends unanswered: a
        parent's timeout (the record names the group) or an offer's. A slow carrier does not
        stretch it: an answer that comes later is received as any message is."""
        return self._parent_epochs if r.group_id else self._request_epochs

    def records(
        self,
        epoch: int,
        budget: int,
        out: dict[bytes, Outgoing],
        carrier_of: Callable[[bytes], str] | None = None,
    ) -> Drained:
        """Records due by ``epoch``, oldest due first, into ``out``, within ``budget`` bytes;
        each counted as transmitted (``TRANSMITTED``) over the carrier ``carrier_of`` names for
        its peer (asked once per peer and drain; none: not known), parked at the give-up
        policy's limit
        (``GIVE_UP``), or ended: a REQUEST past its timeout (``TIMED_OUT``), a peer out of the
        record's group (``PEER_LEFT``), a message gone (``EXPIRED``)."""
        # Each chunk is written back before the next query, so transmitted records (now due
        # later), parked and deleted ones drop out of the due set and every query makes progress.
        store = self._store
        cfg = self._cfg
        max_attempts = cfg.give_up.max_attempts
        max_age = cfg.give_up.max_age_epochs
        retransmit_epoch = self.retransmit_epoch
        groups = self._groups
        carriers: dict[bytes, str] = {}
        used = 0
        cut = False
        timed_out: list[Record] = []
        gave_up: list[Record] = []
        while not cut:
            due = store.due_records(epoch, _DUE_CHUNK)
            if not due:
                break
            updates: list[Record] = []
            deletes: list[tuple[bytes, bytes]] = []
            # Wires are read a slice at a time, as the budget allows: a budget of large messages
            # is used up long before a chunk of due records is.
            wires: dict[bytes, bytes] = {}
            fetched = 0
            for i, r in enumerate(due):
                if i == fetched:
                    fetched += _WIRES_AHEAD
                    wires.update(
                        store.get_wires(
                            [x.message_id for x in due[i:fetched] if x.type is _MESSAGE]
                        )
                    )
                peer = r.peer
                kind = r.type
                if kind is _REQUEST:
                    age = r.first_epoch >= 0 and epoch - r.first_epoch >= self.request_age(r)
                    if age and apply(r, Input.TIMED_OUT) is None:  # unanswered: stop asking
                        deletes.append(r.key)
                        timed_out.append(r)
                        continue
                elif peer not in groups.get(r.group_id, ()) and apply(r, Input.PEER_LEFT) is None:
                    deletes.append(r.key)  # the peer left the group
                    continue
                if (max_attempts is not None and r.send_count >= max_attempts) or (
                    max_age is not None and r.first_epoch >= 0 and epoch - r.first_epoch >= max_age
                ):
                    updates.append(step(r, Input.GIVE_UP))
                    gave_up.append(r)
                    continue
                o = out.get(peer)
                if o is None:
                    o = out[peer] = Outgoing([], [], [], [])
                if kind is _MESSAGE:
                    wire = wires.get(r.message_id)
                    if wire is None:
                        if apply(r, Input.EXPIRED) is None:  # the message is gone (expired)
                            deletes.append(r.key)
                            continue
                    else:
                        o.messages.append(wire)
                        used += payload_overhead(len(wire))
                elif kind is _OFFER:
                    o.offers.append(r.message_id)
                    used += ID_RECORD_SIZE
                else:
                    o.requests.append(r.message_id)
                    used += ID_RECORD_SIZE
                first = epoch if r.first_epoch < 0 else r.first_epoch
                nxt = retransmit_epoch(peer, r.message_id, epoch, r.send_count + 1)
                if kind is _REQUEST:
                    # The last retransmission is at the timeout, where the record ends: it never
                    # outlives its age by a backoff gap.
                    nxt = min(nxt, max(epoch + 1, first + self.request_age(r)))
                carrier = carriers.get(peer)
                if carrier is None:
                    carrier = carriers[peer] = "" if carrier_of is None else carrier_of(peer)
                updates.append(transmitted(r, epoch, nxt, carrier))
                if used >= budget:
                    cut = True
                    break
            if deletes:
                store.delete_records(deletes)
            if updates:
                store.put_records(updates)
        return Drained(used, cut, timed_out, gave_up)

    def fresh(
        self, epoch: int, budget: int, used: int, out: dict[bytes, Outgoing]
    ) -> tuple[int, bool]:
        """First transmissions to reliable peers (see set_peer_reliable), oldest first, within
        what is left of the budget; their records were written as transmitted already. A peer
        that had its payload this epoch gets another one only if a full payload's worth
        (``Limits.max_payload_bytes``) is waiting: a bulk sender's messages go out as they are
        stored, while smaller sends still wait for the next epoch and go out together."""
        store = self._store
        groups = self._groups
        full = self._cfg.limits.max_payload_bytes
        for peer, state in self._peers.items():
            waiting = state.fresh
            if not waiting or (state.done_epoch == epoch and state.fresh_bytes < full):
                continue
            o = out.get(peer)
            if o is None:
                o = out[peer] = Outgoing([], [], [], [])
            left = state.fresh_bytes
            while waiting:
                chunk = list(islice(waiting, _WIRES_AHEAD))
                wires = store.get_wires([m for m in chunk if waiting[m][0] is _MESSAGE])
                for mid in chunk:
                    kind, group = waiting.pop(mid)
                    if peer not in groups.get(group, ()):
                        continue  # the peer left the group
                    if kind is _MESSAGE:
                        wire = wires.get(mid)
                        if wire is None:
                            continue  # gone (expired) or never committed
                        o.messages.append(wire)
                        used += payload_overhead(len(wire))
                        left -= len(wire)
                    else:
                        o.offers.append(mid)
                        used += ID_RECORD_SIZE
                    if used >= budget:
                        state.fresh_bytes = max(0, left)
                        return used, True
            state.fresh_bytes = 0
        return used, False

    def ride_along(self, epoch: int, out: dict[bytes, Outgoing]) -> None:
        """ACKs and ephemeral messages waiting for peers that have not had their payload in
        ``epoch``: they ride along with the records, or go alone."""
        peers = self._peers
        for peer, state in peers.items():
            if state.acks and state.done_epoch != epoch:
                o = out.get(peer)
                if o is None:
                    o = out[peer] = Outgoing([], [], [], [])
                o.acks.extend(state.acks)
                state.acks.clear()
        for peer, state in peers.items():
            if state.ephemeral and state.done_epoch != epoch:
                o = out.get(peer)
                if o is None:
                    o = out[peer] = Outgoing([], [], [], [])
                o.messages.extend(state.ephemeral)
                state.ephemeral.clear()

    def next_epoch(self, epoch: int) -> int | None:
        """The earliest epoch in which a peer's waiting ACKs, ephemeral messages or first
        transmissions can go out (None: nothing waits)."""
        full = self._cfg.limits.max_payload_bytes
        best: int | None = None
        for state in self._peers.values():
            if state.acks or state.ephemeral or state.fresh:
                # Due now, unless the peer had its payload this epoch (and no full payload's
                # worth of first transmissions is waiting for it).
                if state.done_epoch != epoch or (state.fresh and state.fresh_bytes >= full):
                    return epoch
                best = epoch + 1
        return best


def split(o: Outgoing, cap: int, max_records: int) -> Iterable[bytes]:
    """Encode one peer's records as payloads of at most ``cap`` bytes and ``max_records`` records
    (one payload if they fit): a peer with our limits refuses a payload over either whole."""
    total = ID_RECORD_SIZE * (len(o.acks) + len(o.offers) + len(o.requests)) + sum(
        payload_overhead(len(m)) for m in o.messages
    )
    count = len(o.acks) + len(o.offers) + len(o.requests) + len(o.messages)
    max_records = max(1, max_records)
    if total <= cap and count <= max_records:
        yield encode_payload(o.acks, o.offers, o.requests, o.messages)
        return
    per_ids = min(max(1, cap // ID_RECORD_SIZE), max_records)
    for ids_kind in ("acks", "offers", "requests"):
        ids: list[bytes] = getattr(o, ids_kind)
        for i in range(0, len(ids), per_ids):
            chunk = ids[i : i + per_ids]
            yield encode_payload(**{ids_kind: chunk})
    batch: list[bytes] = []
    size = 0
    for m in o.messages:
        n = payload_overhead(len(m))
        if batch and (size + n > cap or len(batch) >= max_records):
            yield encode_payload(messages=batch)
            batch, size = [], 0
        batch.append(m)
        size += n
    if batch:
        yield encode_payload(messages=batch)
