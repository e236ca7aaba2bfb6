"""Receiving: what each record of a peer's payload does to our records and messages.

Theory of operation: :meth:`Receive.payload` takes a payload the engine decoded and checked
(the sender is a member of some group), inside the store transaction the engine opened, and
applies its records in the order 2/MVDS gives them: ACKs end what we owed (``GOT_ACK``),
REQUESTs are answered with the message (``GOT_REQUEST``), OFFERs of messages we lack are asked
for (``GOT_OFFER_MISSING``, within the request bounds of ``_requests``) and OFFERs of messages
we hold end our own records (``GOT_OFFER_HELD``), and MESSAGEs, once the driver's
:data:`Validator` (if any) accepts them, are stored, acknowledged,
relayed to the group's other members (``SHARE_*``), their missing parents asked for
(``MISSING_PARENT``) and delivered, or held, through ``_causal``. Every record change goes
through ``_state``; the records to write are collected and written once per payload. What a
record cannot do is counted in ``dropped`` by reason, for the engine to report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias, final

from mvds_node.sync._causal import Causal
from mvds_node.sync._config import DeliveryMode, MissingParents, Mode, RelayPolicy, SyncConfig
from mvds_node.sync._events import Event, MessageAcked, MessageDelivered
from mvds_node.sync._peers import Peers, PeerState
from mvds_node.sync._reasons import RejectReason
from mvds_node.sync._requests import Requests
from mvds_node.sync._state import TRANSITIONS, Input, Record, RecordType, apply, blank, create, step
from mvds_node.sync._wire import DecodedMessage, DecodedPayload
from mvds_node.sync.store._protocol import Store, StoredMessage

if TYPE_CHECKING:
    from mvds_node.sync._engine import Counters

__all__ = ["Receive", "Validator"]

Validator: TypeAlias = Callable[[bytes, bytes, int, bytes, bool], "str | None"]
"""The driver's check of a received message before it is stored: ``validate(group_id, peer,
timestamp, body, direct)`` returns None to accept it, or the reason to refuse it (a
:class:`~mvds_node.sync.RejectReason`). ``peer`` is who handed it to us, ``direct`` whether the
carrier proved that peer (a Noise session): the engine knows neither authors nor envelopes. A
refused message is not stored, acknowledged, relayed or delivered, and is reported in
``PayloadRejected`` with that reason. It must not raise."""

_NONE: Final = RecordType.NONE
_REQUEST: Final = RecordType.REQUEST
# Record types an ACK ends (the others stay: an ACK of a message we asked for ends nothing).
_ENDED_BY_ACK: Final = frozenset(
    t for t in RecordType if t is not _NONE and TRANSITIONS[(t, Input.GOT_ACK)].to is _NONE
)


@final
class Receive:
    """The engine's receive path, over the engine's state (see the module docstring).

    Args:
        store, config, groups, peers, requests, causal: the engine's, read and updated.
        stats: the engine's statistics (counted in place).
        seen_ephemeral: the engine's window of ephemeral IDs seen (updated in place).
        push: queues an event; ``schedule``: a record is due at an epoch; ``note_expiry``: an
            expiring message was stored.
    """

    __slots__ = (
        "_causal",
        "_cfg",
        "_epoch",
        "_groups",
        "_limits",
        "_note_expiry",
        "_now_wall",
        "_peers",
        "_push",
        "_requests",
        "_schedule",
        "_seen",
        "_stats",
        "_store",
        "_validate",
        "_via",
        "_wall",
    )

    def __init__(
        self,
        *,
        store: Store,
        config: SyncConfig,
        groups: dict[bytes, dict[bytes, Mode]],
        peers: Peers,
        requests: Requests,
        causal: Causal,
        stats: Counters,
        seen_ephemeral: dict[bytes, None],
        push: Callable[[Event], None],
        schedule: Callable[[int], None],
        note_expiry: Callable[[int], None],
        validate: Validator | None = None,
    ) -> None:
        self._store = store
        self._validate = validate
        self._cfg = config
        self._limits = config.limits
        self._groups = groups
        self._peers = peers
        self._requests = requests
        self._causal = causal
        self._stats = stats
        self._seen = seen_ephemeral
        self._push = push
        self._schedule = schedule
        self._note_expiry = note_expiry
        self._epoch = 0
        self._wall = 0
        self._now_wall = 0
        self._via = ""

    def payload(
        self,
        peer: bytes,
        decoded: DecodedPayload,
        *,
        epoch: int,
        wall: int,
        now_wall: int = 0,
        direct: bool = False,
        via: str = "",
    ) -> tuple[bool, dict[str, int]]:
        """Apply ``decoded`` from ``peer`` (a member) in ``epoch``, with ``wall`` the last wall
        clock seen (Unix ms, for messages that arrive expired), ``now_wall`` the wall clock now
        as the engine knows it (when messages are stored and ACKs arrive; 0: unknown),
        ``direct`` whether the carrier proved the peer (for the validator) and ``via`` the
        carrier it came over (kept with each ACK). Returns whether records were
        deleted (the next due epoch may have changed) and the REQUESTs refused by a bound, by
        reason; records dropped are counted in ``decoded.dropped``."""
        self._epoch = epoch
        self._wall = wall
        self._now_wall = now_wall
        self._via = via
        dropped = decoded.dropped
        deletes: list[tuple[bytes, bytes]] = []
        puts: list[Record] = []
        refused: dict[str, int] = {}
        acked = False
        if decoded.acks:
            acked = self._acks(peer, decoded.acks)
        if decoded.requests:
            self._requests_of(peer, decoded.requests, puts, dropped)
        if decoded.offers:
            self._offers(peer, decoded.offers, puts, deletes, decoded.messages, dropped, refused)
        if decoded.messages:
            self._messages(peer, decoded.messages, puts, deletes, dropped, refused, direct)
        store = self._store
        if deletes:
            store.delete_records(deletes)
        if puts:
            store.put_records(puts)
        return bool(deletes) or acked, refused

    def _due(self, peer: bytes) -> int:
        """The epoch in which a new record for ``peer`` can go out."""
        state = self._peers.get(peer)
        epoch = self._epoch
        return epoch + 1 if state is not None and state.done_epoch == epoch else epoch

    def ack_queue(self, state: PeerState) -> dict[bytes, None]:
        """The peer's ACK queue, with room for one more."""
        q = state.acks
        if len(q) >= self._limits.max_pending_acks:
            del q[next(iter(q))]
        return q

    def _acks(self, peer: bytes, acks: list[bytes]) -> bool:
        """Delete what the ACKs end; return whether anything was deleted."""
        push = self._push
        # An ID acknowledged twice in one payload (the Go code appends one ACK per copy received)
        # is one acknowledgement: one MessageAcked. The store deletes in one go, without reading
        # the records first.
        unique = list(dict.fromkeys(acks))
        store = self._store
        done = store.delete_acked(unique, peer, _ENDED_BY_ACK)
        if done:
            at, via = self._now_wall, self._via
            acked = [mid for mid in unique if mid in done]
            # Kept for Engine.trace: when and over which carrier each record ended.
            store.put_acks([(mid, peer, at, via) for mid in acked])
            for mid in acked:
                push(MessageAcked(mid, peer, via))
        return bool(done)

    def _requests_of(
        self, peer: bytes, requests: list[bytes], puts: list[Record], dropped: dict[str, int]
    ) -> None:
        store = self._store
        peer_groups = self._peers.groups_of(peer)
        due = self._due(peer)
        for mid in requests:
            m = store.get_message(mid)
            if m is None:
                dropped[RejectReason.REQUEST_NOT_HELD] = (
                    dropped.get(RejectReason.REQUEST_NOT_HELD, 0) + 1
                )
                continue
            if m.group_id not in peer_groups:
                dropped[RejectReason.REQUEST_OUTSIDE_GROUP] = (
                    dropped.get(RejectReason.REQUEST_OUTSIDE_GROUP, 0) + 1
                )
                continue
            r = store.get_record(mid, peer)
            if r is None:
                r = blank(mid, peer, m.group_id)
            elif r.type is _REQUEST:
                # A REQUEST of ours is stale: we came to hold the message by our own send.
                self._requests.discard(mid, peer)
            # Asked explicitly: answer in the next payload.
            puts.append(step(r, Input.GOT_REQUEST, due=due, group_id=m.group_id))
            self._schedule(due)

    def _offers(
        self,
        peer: bytes,
        offers: list[bytes],
        puts: list[Record],
        deletes: list[tuple[bytes, bytes]],
        messages: list[DecodedMessage],
        dropped: dict[str, int],
        refused: dict[str, int],
    ) -> None:
        store = self._store
        requests = self._requests
        due = self._due(peer)
        acks = None
        # A message in the same payload answers its own offer (the Go code sends both): asking
        # for it would leave a REQUEST for a message we then hold.
        arriving = {m.id for m in messages}
        for i, mid in enumerate(offers):
            if mid in arriving:
                continue
            r = store.get_record(mid, peer)
            if store.has_message(mid):
                if r is not None and apply(r, Input.GOT_OFFER_HELD) is None:
                    # The peer has it: stop offering or sending it (or, stale, asking for it:
                    # we came to hold it by our own send).
                    deletes.append((mid, peer))
                    requests.discard(mid, peer)
                if self._cfg.ack_offers_we_have:
                    if acks is None:
                        acks = self.ack_queue(self._peers[peer])
                    acks[mid] = None
                continue
            if r is None:
                reason = self._requests.refuse(peer, b"", refused)
                if reason is not None:
                    # Nothing frees room within this payload: the rest of its offers are
                    # ignored without looking them up (a flood costs what the bound allows).
                    # Offers of messages we hold among them go unacknowledged this time; the
                    # peer offers them again.
                    refused[reason] += len(offers) - i - 1
                    break
                puts.append(create(mid, peer, b"", Input.GOT_OFFER_MISSING, due=due))
                requests.add(mid, peer, b"")
                self._schedule(due)
            else:
                new = apply(r, Input.GOT_OFFER_MISSING)  # already asked: the table keeps it
                if new is None:
                    deletes.append(r.key)
                    requests.discard(mid, peer)
                elif new is not r:
                    puts.append(new)

    def _messages(
        self,
        peer: bytes,
        messages: list[DecodedMessage],
        puts: list[Record],
        deletes: list[tuple[bytes, bytes]],
        dropped: dict[str, int],
        refused: dict[str, int],
        direct: bool,
    ) -> None:
        store = self._store
        stats = self._stats
        groups = self._groups
        validate = self._validate
        consistent = self._cfg.delivery is DeliveryMode.CONSISTENT
        give_up_held = self._cfg.missing_parents is MissingParents.DELIVER
        relay = self._cfg.relay
        acks = self.ack_queue(self._peers[peer])
        ack_cap = self._limits.max_pending_acks
        wall = self._wall
        # A parent that comes later in this same payload is not missing: no REQUEST for it.
        arriving = {m.id for m in messages} if len(messages) > 1 else ()
        requests = self._requests
        causal = self._causal
        abandoned = causal.abandoned
        # Parents named by earlier messages of this payload that were not stored then: when one
        # of them arrives, it already has a child (no query needed to know it).
        referenced: set[bytes] = set()
        for m in messages:
            mid = m.id
            members = groups.get(m.group_id)
            if members is None or peer not in members:
                reason = (
                    RejectReason.MESSAGE_UNKNOWN_GROUP
                    if members is None
                    else RejectReason.MESSAGE_OUTSIDE_GROUP
                )
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            # The driver's check (the envelope: who wrote it), before anything is stored or
            # acknowledged. A relayed copy of a message we hold was checked when it was stored;
            # one straight from a proved peer is checked again (the validator's cheap case),
            # saving a lookup per message on the common path.
            if validate is not None and (direct or m.ephemeral or not store.has_message(mid)):
                refusal = validate(m.group_id, peer, m.timestamp, m.body, direct)
                if refusal is not None:
                    dropped[refusal] = dropped.get(refusal, 0) + 1
                    continue
            stats.messages_received += 1
            if m.ephemeral:
                self._ephemeral(peer, m)
                if mid in requests:
                    # An answer all the same (we asked for it as an offer or as a parent, and
                    # it came ephemeral): stop asking, and release what waited for it.
                    self.clear_records(peer, mid, deletes, set())
                    causal.release_children(mid)
                continue
            if len(acks) >= ack_cap:
                del acks[next(iter(acks))]
            acks[mid] = None
            # Records about a message we did not hold can only be our REQUESTs for it, and
            # ``_requests`` knows those: a new message costs no record lookup.
            was_requested = mid in requests
            if m.expires_at and m.expires_at <= wall:
                if was_requested:  # already expired here: stop asking, never store it
                    self.clear_records(peer, mid, deletes, set())
                continue
            frontier = causal.frontier[m.group_id]
            held = causal.held_parents(m.group_id, m.parents) if consistent else []
            if not store.add_message(
                StoredMessage(
                    mid,
                    m.group_id,
                    m.timestamp,
                    m.wire,
                    m.parents,
                    m.expires_at,
                    not held,
                    self._now_wall,
                )
            ):
                stats.duplicates_received += 1
                # The peer has it: stop offering or sending it there; stop asking for it.
                self.clear_records(peer, mid, deletes, set())
                continue
            if m.expires_at:
                self._note_expiry(m.expires_at)
            if abandoned:
                abandoned.pop(mid, None)  # it came after all
            # Peers we were asking offered it to us, so they have it too: no relay to them.
            has_it = {peer}
            if was_requested:
                self.clear_records(peer, mid, deletes, has_it)
            # Relay to the group's other members.
            if relay is not RelayPolicy.NONE:
                for q, mode in members.items():
                    if q in has_it:
                        continue
                    share = (
                        Input.SHARE_BATCH
                        if relay is RelayPolicy.MODE and mode is Mode.BATCH
                        else Input.SHARE_INTERACTIVE
                    )
                    due = self._due(q)
                    puts.append(create(mid, q, m.group_id, share, due=due))
                    self._schedule(due)
            # Ask the peer that referenced them for parents we lack, at any depth: each parent
            # that arrives is checked in turn. Only that peer is asked: it named them, and a
            # peer that names parents nobody has costs the others nothing.
            gone: list[bytes] = []  # parents we will not ask for: given up on, or over a bound
            for p in m.parents:
                if p in frontier:
                    continue
                referenced.add(p)
                if p in arriving:
                    continue
                if requests.asks(p, peer) or store.has_message(p):
                    continue
                if p in abandoned or self._requests.refuse(peer, m.group_id, refused):
                    if p not in requests:
                        gone.append(p)
                    continue
                due = self._due(peer)
                puts.append(create(p, peer, m.group_id, Input.MISSING_PARENT, due=due))
                requests.add(p, peer, m.group_id)
                self._schedule(due)
            if held and gone and give_up_held:
                causal.abandoned_for[mid] = gone
                held = [p for p in held if p not in gone]
                if not held:  # stored as held: delivered now, without those parents
                    causal.deliver(
                        mid, m.group_id, m.timestamp, m.body, m.parents, peer, m.expires_at, True
                    )
                    continue
            if held:
                causal.hold(mid, peer, held)
            else:
                causal.deliver(
                    mid,
                    m.group_id,
                    m.timestamp,
                    m.body,
                    m.parents,
                    peer,
                    m.expires_at,
                    False,
                    maybe_parent=was_requested or mid in referenced,
                )

    def clear_records(
        self, peer: bytes, mid: bytes, deletes: list[tuple[bytes, bytes]], has_it: set[bytes]
    ) -> None:
        """``peer`` sent us ``mid``: drop the records that this ends, note who has it."""
        for r in self._store.records_for_message(mid):
            if r.type is _REQUEST:
                has_it.add(r.peer)
            got = Input.GOT_MESSAGE_FROM_PEER if r.peer == peer else Input.GOT_MESSAGE_ELSEWHERE
            if apply(r, got) is None:
                deletes.append(r.key)
        self._requests.discard_all(mid)

    def _ephemeral(self, peer: bytes, m: DecodedMessage) -> None:
        seen = self._seen
        if m.id in seen:
            self._stats.duplicates_received += 1
            return
        seen[m.id] = None
        if len(seen) > self._limits.ephemeral_dedup_window:
            del seen[next(iter(seen))]
        self._stats.messages_delivered += 1
        self._push(
            MessageDelivered(m.id, m.group_id, m.timestamp, m.body, (), True, peer, m.expires_at)
        )

    # ----------------------------------------------------------------- output
