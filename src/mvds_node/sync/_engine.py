"""The MVDS engine: a sans-IO state machine for one node and all its groups.

Theory of operation
-------------------
Inputs are method calls, outputs are drained, and time only enters as ``now`` (seconds on any
monotonic clock) and ``wall`` (Unix milliseconds, only for expiry)::

    engine.send(group, body, now=..., timestamp=...)       # app -> engine
    engine.receive_payload(peer, data, now=...)            # network -> engine
    engine.handle_timer(now=..., wall=...)                 # a deadline passed
    engine.payloads_to_send(now=...) -> [(peer, bytes)]    # engine -> network
    engine.next_event() -> Event | None                    # engine -> app
    engine.next_deadline() -> float | None                 # when to call handle_timer

A driver calls ``payloads_to_send`` and drains ``next_event`` after every input, then waits until
``next_deadline()``, the one timer: the next epoch with work and, once ``handle_timer`` has been
given the wall clock, the next expiry (converted with the clocks' offset at that call, so a jump
of the wall clock is corrected at the next wake-up). Nothing here blocks, sleeps or reads a
clock.

Time is cut into epochs of ``SyncConfig.epoch_seconds``. The epoch counter is stored, and after a
restart it continues from the stored value, so a schedule measured in epochs resumes where it
stopped: running time counts, time spent switched off does not. Each peer gets at most one
payload per epoch (2/MVDS), carrying every record due for it; a record created for a peer that
already had its payload this epoch is due in the next one. A logical payload is split into
several wire payloads only when it exceeds the size the carrier takes.

Records (what we owe a peer for a message) live in the store, keyed by (message, peer), with the
epoch they are next due; every change of a record goes through ``_state.apply`` and its table. The
engine keeps in memory only what is derived or transient: the group table, each peer's state
(``_peers``: ACKs and ephemeral messages waiting for its next payload, what its carrier
declared), the causal frontier of each group and consistent delivery's waiting lists
(``_causal``), the request counts (``_requests``), and events. ``Engine`` is the facade: the
inputs and outputs above, with the send path in ``_send``, the receive path in ``_receive``,
the drain in ``_drain`` and snapshots for one-way carriers in ``_export``.

What a member can make us ask for is bounded, because any member can offer IDs that do not exist
or name parents nobody has. REQUEST records are counted per peer and per group (``_requests``,
rebuilt from the store at start-up): past ``Limits.max_requests_per_peer`` a peer's offers and
parents are ignored, and reported once per episode, so one member filling its own bound costs
the others nothing. A REQUEST only goes to the peer that offered the message or named it as a
parent, and ends unanswered at its age (``request_timeout``, ``missing_parent_timeout``), which
its retransmissions never pass and a reconnection does not renew; a parent nobody is asked for
any more is given up on, the peer that named it is reported, and consistent delivery then holds
or delivers the messages that waited for it (``MissingParents``). Any answer ends a REQUEST,
even an ephemeral message.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final, final

from mvds_node.errors import LocalProtocolError
from mvds_node.sync._causal import Causal
from mvds_node.sync._config import Mode, SyncConfig
from mvds_node.sync._drain import Drain, Outgoing, split
from mvds_node.sync._events import (
    Event,
    GaveUp,
    MessageAcked,
    MessageDelivered,
    MessageExpired,
    PayloadRejected,
)
from mvds_node.sync._export import ExportSnapshot as ExportSnapshot
from mvds_node.sync._export import SnapshotMessages as SnapshotMessages
from mvds_node.sync._export import exported_records, take_snapshot
from mvds_node.sync._peers import Peers
from mvds_node.sync._reasons import RejectReason
from mvds_node.sync._receive import Receive, Validator
from mvds_node.sync._requests import Requests
from mvds_node.sync._send import Send
from mvds_node.sync._state import (
    Input,
    Record,
    RecordType,
    step,
)
from mvds_node.sync._trace import Contacts, offset_clock, sync_status, trace_message
from mvds_node.sync._trace import GroupSync as GroupSync
from mvds_node.sync._trace import MessageTrace as MessageTrace
from mvds_node.sync._trace import PeerSync as PeerSync
from mvds_node.sync._trace import PeerTrace as PeerTrace
from mvds_node.sync._wire import (
    ID_RECORD_SIZE,
    ID_SIZE,
    decode_payload,
    encode_message,
    message_id,
)
from mvds_node.sync.store._protocol import Store, StoredMessage, StoreView

__all__ = [
    "Engine",
    "EngineStatistics",
    "ExportSnapshot",
    "GroupSync",
    "MessageTrace",
    "Outstanding",
    "PeerSync",
    "PeerTrace",
    "SnapshotMessages",
]

_NONE: Final = RecordType.NONE
_OFFER: Final = RecordType.OFFER
_REQUEST: Final = RecordType.REQUEST
_MESSAGE: Final = RecordType.MESSAGE
_OFFERS_UNANSWERED: Final = RejectReason.OFFERS_UNANSWERED
_PARENTS_UNANSWERED: Final = RejectReason.PARENTS_UNANSWERED
_EXPIRE_CHUNK: Final = 1024


@dataclass(slots=True)
class Counters:
    """The engine's counters, changed in place as it works (read them through
    :meth:`Engine.statistics`, a frozen snapshot)."""

    payloads_sent: int = 0
    bytes_sent: int = 0
    payloads_received: int = 0
    bytes_received: int = 0
    acks_sent: int = 0
    offers_sent: int = 0
    requests_sent: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    duplicates_received: int = 0
    messages_delivered: int = 0
    records_rejected: int = 0
    payloads_rejected: int = 0
    gave_up: int = 0
    expired: int = 0
    events_dropped: int = 0
    requests_refused: int = 0
    """Offers and missing parents not asked for, because a request limit was reached."""
    requests_timed_out: int = 0
    """REQUESTs dropped unanswered after ``request_timeout`` or ``missing_parent_timeout``."""
    parents_abandoned: int = 0
    """Missing parents given up on (no REQUEST for them left)."""


@final
@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """The engine's counters since it started, as of :meth:`Engine.statistics` (a snapshot);
    the fields are those of :class:`Counters`."""

    payloads_sent: int = 0
    bytes_sent: int = 0
    payloads_received: int = 0
    bytes_received: int = 0
    acks_sent: int = 0
    offers_sent: int = 0
    requests_sent: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    duplicates_received: int = 0
    messages_delivered: int = 0
    records_rejected: int = 0
    payloads_rejected: int = 0
    gave_up: int = 0
    expired: int = 0
    events_dropped: int = 0
    requests_refused: int = 0
    requests_timed_out: int = 0
    parents_abandoned: int = 0


@final
class _StatisticsAccess:
    """What ``Engine.statistics`` is: call it for a snapshot. Reading a counter from it
    directly (``engine.statistics.payloads_sent``, the attribute of earlier releases) still
    works, with a ``DeprecationWarning``."""

    __slots__ = ("_counters",)

    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    def __call__(self) -> EngineStatistics:
        c = self._counters
        return EngineStatistics(**{name: getattr(c, name) for name in _COUNTER_NAMES})

    def __getattr__(self, name: str) -> int:
        if name in _COUNTER_NAMES:
            warnings.warn(
                f"Engine.statistics is a method: use engine.statistics().{name}",
                DeprecationWarning,
                stacklevel=2,
            )
            return int(getattr(self._counters, name))
        raise AttributeError(name)


_COUNTER_NAMES: Final = tuple(Counters.__dataclass_fields__)


@final
@dataclass(frozen=True, slots=True)
class Outstanding:
    """What the engine is waiting for, as of :meth:`Engine.outstanding` (a snapshot)."""

    requests: int
    """REQUEST records in all."""
    requests_per_peer: dict[bytes, int]
    """REQUEST records per peer asked."""
    requests_per_group: dict[bytes, int]
    """REQUEST records for missing parents, per group."""
    held: int
    """Messages held by consistent delivery until their parents are delivered."""
    missing_parents: int
    """Parents that held messages wait for."""


@final
class Engine:
    """One node's MVDS state machine.

    Args:
        store: where messages, membership and retransmission state are kept; the engine is its
            only writer and restores its state from it.
        config: limits, timing and behaviour.
        now: the current time on the driver's monotonic clock.
        validate: the driver's check of each received message before it is stored (see
            :data:`~mvds_node.sync.Validator`); None accepts every message of a member.
        wall: the wall clock (Unix ms) at ``now``, from a driver that has one: from the start,
            the times :meth:`trace` reports (when a message was stored, acknowledged) are on
            it, as after a ``handle_timer`` that passed ``wall``.
    """

    def __init__(
        self,
        store: Store,
        *,
        config: SyncConfig | None = None,
        now: float,
        validate: Validator | None = None,
        wall: int | None = None,
    ) -> None:
        self._store = store
        self._store_view = StoreView(store)
        self._cfg = cfg = config if config is not None else SyncConfig()
        self._limits = cfg.limits
        self._epoch_seconds = cfg.epoch_seconds
        self._epoch0 = store.get_epoch()
        self._now0 = now
        self._now = now
        self._epoch = self._epoch0
        self._stats = Counters()
        self._events: deque[Event] = deque()
        self._drain_cut = False
        self._seen_ephemeral: dict[bytes, None] = {}
        # Everything in memory about each peer, in one object per peer.
        self._peers = Peers(ephemeral_queue=cfg.limits.max_ephemeral_queue)
        self._wall = 0
        # The earliest expiry among stored messages (Unix ms), and the wall clock's offset from
        # ``now`` (ms) at the last handle_timer that passed it: next_deadline includes expiry.
        self._expiry: int | None = store.next_expiry()
        self._wall_offset: float | None = None if wall is None else wall - now * 1000
        self._stored_epoch = self._epoch0
        # The last contact with each peer per carrier (Engine.trace, sync_status): updated per
        # payload in memory, written with the epoch counter.
        self._contacts = Contacts(store.load_contacts(), resolution_ms=1)
        # Membership.
        self._groups: dict[bytes, dict[bytes, Mode]] = {}
        for group, members in store.load_groups().items():
            self._groups[group] = {}
            for peer, mode in members.items():
                self._join(group, peer, Mode(mode))
        # Causal frontier per group, and consistent delivery's held messages.
        self._causal = Causal(store, cfg, self._stats, self._push)
        for group in self._groups:
            self._causal.load_frontier(group)
        # The REQUEST records we hold, counted per peer and group; and the bound a payload's
        # requests hit, with the counter to watch (PeerState.full): the refusal is reported
        # once, until that counter falls to half its bound.
        self._requests = Requests.load(store, cfg.limits)
        self._drain = Drain(store, self._groups, self._peers, cfg)
        self._send = Send(
            store=store,
            config=cfg,
            groups=self._groups,
            peers=self._peers,
            causal=self._causal,
            epoch=lambda: self._epoch,
            retransmit_epoch=self._drain.retransmit_epoch,
            schedule=self._schedule,
            note_expiry=self._note_expiry,
            wall=self._wall_now,
        )
        self._receive = Receive(
            store=store,
            config=cfg,
            groups=self._groups,
            peers=self._peers,
            requests=self._requests,
            causal=self._causal,
            stats=self._stats,
            seen_ephemeral=self._seen_ephemeral,
            push=self._push,
            schedule=self._schedule,
            note_expiry=self._note_expiry,
            validate=validate,
        )
        self._next_due: int | None = store.min_due_epoch()
        self._causal.restore_held(self._requests)

    # ------------------------------------------------------------------ clock

    def _advance(self, now: float) -> int:
        self._now = now
        epoch = self._epoch0 + math.floor((now - self._now0) / self._epoch_seconds)
        if epoch > self._epoch:
            self._epoch = epoch
        return self._epoch

    def _epoch_start(self, epoch: int) -> float:
        return self._now0 + (epoch - self._epoch0) * self._epoch_seconds

    def _wall_now(self) -> int:
        """The wall clock (Unix ms) at the last ``now`` passed in, by the offset of the last
        ``handle_timer`` that passed ``wall``; 0 before one did."""
        return self._to_wall(self._now)

    def _to_wall(self, at: float) -> int:
        offset = self._wall_offset
        return 0 if offset is None else int(at * 1000 + offset)

    @property
    def epoch(self) -> int:
        """The current epoch (as of the last call that passed ``now``)."""
        return self._epoch

    def _first_due(self, peer: bytes) -> int:
        """The epoch in which a new record for ``peer`` can go out."""
        state = self._peers.get(peer)
        epoch = self._epoch
        return epoch + 1 if state is not None and state.done_epoch == epoch else epoch

    def _schedule(self, epoch: int) -> None:
        nd = self._next_due
        if nd is None or epoch < nd:
            self._next_due = epoch

    # ------------------------------------------------------------- membership

    def _join(self, group: bytes, peer: bytes, mode: Mode) -> None:
        self._groups[group][peer] = mode
        self._peers.state(peer).groups.add(group)

    def add_group(self, group_id: bytes) -> None:
        """Start syncing a group (idempotent)."""
        if not 0 < len(group_id) <= self._limits.max_group_id_bytes:
            raise LocalProtocolError(
                f"group id must be 1..{self._limits.max_group_id_bytes} bytes, got {len(group_id)}"
            )
        if group_id in self._groups:
            return
        self._store.put_group(group_id)
        self._groups[group_id] = {}
        self._causal.load_frontier(group_id)

    def remove_group(self, group_id: bytes) -> None:
        """Stop syncing a group; stored messages stay, pending records for it stop."""
        members = self._groups.pop(group_id, None)
        if members is None:
            return
        with self._store.transaction():
            for peer in list(members):
                self._drop_member_records(group_id, peer)
                self._leave(group_id, peer)
            self._store.delete_group(group_id)
        self._causal.drop_group(group_id)

    def add_peer(self, group_id: bytes, peer: bytes, *, mode: Mode = Mode.BATCH) -> None:
        """Add ``peer`` to a group, or change its mode.

        Raises:
            LocalProtocolError: unknown group, or a peer ID longer than the limit.
        """
        if group_id not in self._groups:
            raise LocalProtocolError(f"unknown group {group_id.hex()}")
        if not 0 < len(peer) <= self._limits.max_peer_id_bytes:
            raise LocalProtocolError(
                f"peer id must be 1..{self._limits.max_peer_id_bytes} bytes, got {len(peer)}"
            )
        self._store.put_member(group_id, peer, mode.value)
        self._join(group_id, peer, mode)

    def remove_peer(self, group_id: bytes, peer: bytes) -> None:
        """Remove ``peer`` from a group and drop what we still owed it there."""
        members = self._groups.get(group_id)
        if members is None or peer not in members:
            return
        with self._store.transaction():
            self._drop_member_records(group_id, peer)
            self._store.delete_member(group_id, peer)
        del members[peer]
        self._leave(group_id, peer)

    def _leave(self, group_id: bytes, peer: bytes) -> None:
        """``peer`` is no longer a member of ``group_id``; out of its last group, it is
        forgotten: added again, it starts afresh."""
        state = self._peers.get(peer)
        if state is not None:
            state.groups.discard(group_id)
            if not state.groups:
                del self._peers[peer]

    def _drop_member_records(self, group_id: bytes, peer: bytes) -> None:
        doomed = [
            r.key
            for r in self._store.records_for_peer(peer)
            if r.group_id == group_id
            or (r.type is _REQUEST and len(self._peers.groups_of(peer)) == 1)
        ]
        self._store.delete_records(doomed)
        requests = self._requests
        for mid, p in doomed:
            requests.discard(mid, p)

    def has_message(self, message_id: bytes) -> bool:
        """Whether the message is stored here (received or sent, and not expired)."""
        return self._store.has_message(message_id)

    @property
    def store_view(self) -> StoreView:
        """A read-only view of the store (messages and records as stored), for diagnostics
        and tests; the engine stays its only writer."""
        return self._store_view

    @property
    def statistics(self) -> _StatisticsAccess:
        """Call it: ``engine.statistics()`` is a frozen :class:`EngineStatistics` of the
        counters since the engine started (payloads, messages, rejections, events dropped ...).
        """
        return _StatisticsAccess(self._stats)

    def outstanding(self) -> Outstanding:
        """What the engine waits for now: its REQUESTs, counted as the request bounds count
        them, and the messages consistent delivery holds."""
        requests, causal = self._requests, self._causal
        return Outstanding(
            requests=requests.total,
            requests_per_peer=dict(requests.per_peer),
            requests_per_group=dict(requests.per_group),
            held=len(causal.missing),
            missing_parents=len(causal.waiting),
        )

    def payload_sent(self, peer: bytes, carrier: str, *, now: float) -> None:
        """``carrier`` (a short name: ``tcp``, ``multicast``, ``memory`` ...) took a payload
        for ``peer`` from :meth:`payloads_to_send`: kept as the last contact with the peer over
        it, for :meth:`trace` and :meth:`sync_status` (written to the store with the epoch
        counter, so it survives a restart). A dictionary update: call it for every payload."""
        self._now = now
        self._contacts.sent(peer, carrier, self._to_wall(now))

    def trace(
        self, message_id: bytes, *, now: float | None = None, wall: int | None = None
    ) -> MessageTrace:
        """Every fact the engine holds about one message, as a snapshot (nothing changes).

        Stored or not, when, expiry, held by consistent delivery and for which missing parents
        (and whom we ask for them), the messages waiting for it, and per peer: the record we
        keep about it (offering, sending, requesting; transmissions, first and next
        transmission, given up, the carrier its last transmission was handed to), or the
        acknowledgement (when, over which carrier). A message the engine knows nothing of
        gives ``MessageTrace(message_id, stored=False)`` (``known`` is False).

        Times on the ``now`` clock are also given as Unix ms, converted by the clocks' offset
        at the last ``handle_timer`` that passed ``wall``, or by ``now`` and ``wall`` when both
        are passed here (a driver that has not run a timer yet, say).
        """
        return trace_message(
            message_id,
            store=self._store,
            causal=self._causal,
            peer_states=self._peers,
            epoch=self._epoch,
            epoch_start=self._epoch_start,
            to_wall=self._to_wall if now is None or wall is None else offset_clock(now, wall),
        )

    def sync_status(
        self, peers: Iterable[bytes], *, limit: int = 10, sample: int = 1000
    ) -> tuple[tuple[PeerSync, ...], tuple[GroupSync, ...]]:
        """How far each of ``peers`` and each group is in sync, as a snapshot.

        Per peer: records pending and the bytes of their messages (read through the store's
        peer index, not a scan of the whole store), messages we ask it for, and the last
        contact per carrier. Per group: messages we know of but lack (with whom we ask) and
        messages held for a missing parent (with which), counted from what the engine keeps
        in memory; at most ``limit`` of each are listed. Pending bytes are exact up to
        ``sample`` messages per peer; past it the oldest ``sample`` are read and the rest
        counted at their mean size (``pending_bytes_exact`` says which). An offered message
        whose group is not known yet counts in the group the peers that offered it share with
        us, if they share one only (and in every case in their ``requested``).
        """
        return sync_status(
            peers,
            store=self._store,
            causal=self._causal,
            requests=self._requests,
            peer_states=self._peers,
            contacts=self._contacts,
            group_ids=self._groups,
            limit=limit,
            sample=sample,
        )

    def groups(self) -> dict[bytes, dict[bytes, Mode]]:
        """A copy of the group table: group ID -> {peer -> mode}."""
        return {g: dict(m) for g, m in self._groups.items()}

    def set_peer_max_payload(self, peer: bytes, nbytes: int | None) -> None:
        """Cut payloads for ``peer`` to at most ``nbytes`` (a datagram carrier); None: no limit
        beyond the one passed to :meth:`payloads_to_send`. A single message larger than this
        still goes out alone in one payload, which such a carrier cannot take: the driver
        routes it over another carrier."""
        self._peers.state(peer).cap = None if nbytes is None else max(ID_RECORD_SIZE, nbytes)

    def set_peer_latency(self, peer: bytes, seconds: float) -> None:
        """Declare how long the carrier to ``peer`` may take to deliver a payload.

        Retransmissions to the peer then wait at least twice this long, so a slow carrier (a file
        on a USB stick, days) does not cause a retransmission storm. 0 restores the default.
        """
        gap = math.ceil(2 * seconds / self._epoch_seconds) if seconds > 0 else 0
        self._peers.state(peer).min_gap = gap

    def set_peer_reliable(
        self, peer: bytes, reliable: bool, *, now: float, carrier: str = ""
    ) -> None:
        """Declare whether ``peer`` is reached now over a reliable, live connection (TCP).

        While it is, a message sent to it has its record written once, at ``send``, in the state
        of a record transmitted once (its retransmission due after the usual gap), and its first
        transmission goes out from memory in the next payload, instead of the record being
        written again when it is drained: a bulk sender stores each record once and deletes it
        at the ACK. A crash before that first transmission loses nothing (the record is
        durable, due at the retransmission time, and a reconnection re-arms it at once with
        :meth:`reset_peer`). At most ``Limits.max_pending_acks`` messages per peer wait in
        memory; beyond that, sends use the records as usual. Declaring the peer unreliable again
        (the connection went down) re-arms the records of messages still waiting. ``carrier``
        names the connection's carrier (``tcp``): kept in the records written so, for
        :meth:`trace`.

        Call ``payloads_to_send`` next.
        """
        self._advance(now)
        state = self._peers.state(peer)
        state.reliable = reliable
        state.carrier = carrier if reliable else ""
        if reliable:
            return
        waiting = state.drop_fresh()
        if not waiting:
            return
        records = list(self._store.get_records(list(waiting), peer).values())
        self._rearm(peer, records, Input.REARM)

    # -------------------------------------------------------------- app input

    def send(
        self,
        group_id: bytes,
        body: bytes,
        *,
        now: float,
        timestamp: int,
        ephemeral: bool = False,
        parents: Sequence[bytes] | None = None,
        expires_at: int = 0,
    ) -> bytes:
        """Send a message to every peer of a group and return its ID.

        A durable message is in the store when this returns. Its parents are the group's messages
        without children (its causal frontier), unless ``parents`` names them. An ephemeral message
        is sent once, in the next payload to each peer, and never stored, acknowledged,
        retransmitted or named as a parent. A message with ``expires_at`` (Unix ms) is deleted
        everywhere once the wall clock passes it, and is never named as a parent.

        Call ``payloads_to_send`` next.

        Raises:
            LocalProtocolError: unknown group, body over the limit, bad parents or expiry.
        """
        limits = self._limits
        members = self._groups.get(group_id)
        if members is None:
            raise LocalProtocolError(f"unknown group {group_id.hex()}")
        if len(body) > limits.max_body_bytes:
            raise LocalProtocolError(
                f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}"
            )
        if not -(2**63) <= timestamp < 2**63:
            raise LocalProtocolError("timestamp does not fit in int64")
        if expires_at < 0 or expires_at >= 2**63:
            raise LocalProtocolError("expires_at must be 0 or a positive int64")
        self._advance(now)
        mid = message_id(group_id, timestamp, body)
        if ephemeral:
            if parents:
                raise LocalProtocolError("ephemeral messages have no parents")
            self._send.ephemeral(members, encode_message(group_id, timestamp, body, ephemeral=True))
            return mid
        causal = self._causal
        if parents is None:
            chosen = causal.choose_parents(group_id)
        else:
            chosen = tuple(parents)
            if len(chosen) > limits.max_parents or any(len(p) != ID_SIZE for p in chosen):
                raise LocalProtocolError(
                    f"parents must be at most {limits.max_parents} IDs of {ID_SIZE} bytes"
                )
            if mid in chosen:
                raise LocalProtocolError("a message cannot be its own parent")
        wire = encode_message(group_id, timestamp, body, parents=chosen, expires_at=expires_at)
        self._send.durable(
            StoredMessage(
                mid, group_id, timestamp, wire, chosen, expires_at, stored_at=self._wall_now()
            )
        )
        return mid

    def send_many(
        self, group_id: bytes, bodies: Sequence[bytes], *, now: float, timestamp: int
    ) -> list[bytes]:
        """Send several durable messages to a group, in order, as one input; return their IDs.

        The same as calling :meth:`send` for each body inside :meth:`batch` (each message
        names the one before it as its parent, the first names the frontier), with the store
        written a table at a time instead of a message at a time. All of them are in the
        store when this returns, or none (it raises). Call ``payloads_to_send`` next.

        Raises:
            LocalProtocolError: unknown group, a body over the limit, a bad timestamp.
        """
        limits = self._limits
        members = self._groups.get(group_id)
        if members is None:
            raise LocalProtocolError(f"unknown group {group_id.hex()}")
        if not -(2**63) <= timestamp < 2**63:
            raise LocalProtocolError("timestamp does not fit in int64")
        for body in bodies:
            if len(body) > limits.max_body_bytes:
                raise LocalProtocolError(
                    f"body of {len(body)} bytes exceeds the limit of {limits.max_body_bytes}"
                )
        self._advance(now)
        ids = [message_id(group_id, timestamp, body) for body in bodies]
        with self.batch():
            if len(set(ids)) != len(ids) or not self._send.chain(group_id, bodies, ids, timestamp):
                # A message already stored, or one twice: the general path says what each does.
                return [self.send(group_id, b, now=now, timestamp=timestamp) for b in bodies]
        return ids

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Commit every ``send`` inside the block in one store transaction.

        For bulk sending (an import, a burst of many small messages): one commit instead of one
        per message, which is most of a send's cost with a durable store. The messages are
        durable when the block exits; if the block raises, none of them was sent, and the
        engine's in-memory state is restored from the store. Without a batch, each ``send`` is
        durable when it returns.
        """
        try:
            with self._store.transaction():
                yield
        except BaseException:
            self._after_rollback()
            raise

    def _after_rollback(self) -> None:
        """The store rolled back a block of sends or receipts: take again from it what the
        engine keeps in memory about messages and records (frontiers, the next due epoch) and
        drop first transmissions queued for messages that are gone."""
        store = self._store
        for group in self._groups:
            self._causal.load_frontier(group)
        self._next_due = store.min_due_epoch()
        self._expiry = store.next_expiry()
        for state in self._peers.values():
            waiting = state.fresh
            for mid in [m for m in waiting if not store.has_message(m)]:
                del waiting[mid]
            if not waiting:
                state.fresh_bytes = 0

    def export_snapshot(self, peers: Sequence[bytes], *, now: float) -> ExportSnapshot:
        """Collect what ``peers`` still need from us, without marking anything sent.

        Every pending record for them counts, due or not (parked ones too): a file carried by
        hand is the one chance to get them there. Pass the snapshot to :meth:`commit_export`
        once it is safely written; until then nothing changes.
        """
        self._advance(now)
        wanted = tuple(dict.fromkeys(peers))
        known = self._peers
        groups = {peer: known.groups_of(peer) for peer in wanted}
        acks = {peer: tuple(state.acks) for peer in wanted if (state := known.get(peer))}
        return take_snapshot(self._store, wanted, groups, acks, self._limits)

    def commit_export(
        self, snapshot: ExportSnapshot, *, now: float, latency_seconds: float
    ) -> None:
        """Count ``snapshot`` as transmitted over a carrier that takes ``latency_seconds``.

        Its records are next due after twice that latency (a file carried by hand is not
        chased by retransmissions every few seconds), and its ACKs leave the queues. Records
        that changed meanwhile (acknowledged, say) are left as they are.
        """
        epoch = self._advance(now)
        gap = max(1, math.ceil(2 * latency_seconds / self._epoch_seconds))
        store = self._store
        updates = exported_records(store, snapshot, epoch=epoch, due=epoch + gap)
        with store.transaction():
            if updates:
                store.put_records(updates)
        self._next_due = store.min_due_epoch()
        wall = self._wall_now()
        for peer in snapshot.peers:
            self._contacts.sent(peer, "bundle", wall)
        peers = self._peers
        for peer, acks in snapshot.acks.items():
            state = peers.get(peer)
            if state is not None and state.acks:
                queue = state.acks
                for mid in acks:
                    queue.pop(mid, None)

    def receive_payloads(
        self,
        peer: bytes,
        payloads: Iterable[bytes],
        *,
        now: float,
        direct: bool = False,
        via: str = "",
    ) -> None:
        """Process ``payloads`` from ``peer`` as one input: all of them, or none.

        For a carrier that hands over many payloads at once and must apply them whole (a bundle
        file: its reader authenticates the file, then streams the payloads in here). Each payload
        is handled as by :meth:`receive_payload`, all in one store transaction. If iterating
        ``payloads`` raises (the file changed or vanished since it was authenticated), or the
        store fails (disk full at commit), the exception propagates, the store rolls back, and
        the engine brings its own state back in line with the store: what was undone is neither
        delivered nor acknowledged, so a peer is never told we hold a message we do not have.
        A store that cannot roll back (:class:`MemoryStore`) keeps what was applied, and the
        engine keeps the deliveries and ACKs that go with it.

        Do not call it inside :meth:`batch` (an inner block cannot roll the store back alone).
        Drain ``next_event`` and call ``payloads_to_send`` next.
        """
        self._advance(now)
        events = self._events.copy()
        stats = replace(self._stats)
        state = self._peers.get(peer)
        acks = {} if state is None else dict(state.acks)
        seen = dict(self._seen_ephemeral)
        try:
            with self._store.transaction():
                for payload in payloads:
                    self.receive_payload(peer, payload, now=now, direct=direct, via=via)
        except BaseException:
            self._undo_receive(peer, events, stats, acks, seen)
            raise

    def _undo_receive(
        self,
        peer: bytes,
        events: deque[Event],
        stats: Counters,
        acks: dict[bytes, None],
        seen: dict[bytes, None],
    ) -> None:
        """After an aborted :meth:`receive_payloads`: derive the engine's state from the store
        again, keeping of the aborted block only what the store kept (``events``, ``stats``,
        ``acks`` and ``seen`` were copied before the block)."""
        store = self._store
        current = self._events
        dropped = self._stats.events_dropped - stats.events_dropped
        pushed = len(current) - len(events) + dropped
        new = list(current)[len(current) - pushed :] if pushed > 0 else []
        kept = 0
        for event in new:
            if isinstance(event, MessageDelivered):
                if event.ephemeral:  # the dedup window is restored: a retry delivers it
                    continue
                m = store.get_message(event.message_id)
                if m is None or not m.delivered:
                    continue
                kept += 1
            elif isinstance(event, MessageAcked):
                if store.get_record(event.message_id, event.peer) is not None:
                    continue
            elif isinstance(event, PayloadRejected):
                continue  # a retry reports it again
            if len(events) >= self._limits.max_queued_events:
                events.popleft()
                stats.events_dropped += 1
            events.append(event)
        self._events = events
        stats.messages_delivered += kept
        for name in _COUNTER_NAMES:  # in place: others hold it
            setattr(self._stats, name, getattr(stats, name))
        # ACK only what the store holds.
        state = self._peers.get(peer)
        if state is not None:
            for mid in state.acks:
                if mid not in acks and store.has_message(mid):
                    acks[mid] = None
            while len(acks) > self._limits.max_pending_acks:
                del acks[next(iter(acks))]
            state.acks = acks
        self._seen_ephemeral.clear()
        self._seen_ephemeral.update(seen)
        self._requests.reload(store)
        self._after_rollback()
        self._causal.reload(self._requests)

    def payload_not_sent(
        self, peer: bytes, payload: bytes, *, now: float, retry_in_epochs: int = 1
    ) -> None:
        """The carrier could not take ``payload`` (from :meth:`payloads_to_send`) for ``peer``.

        Its records are due again ``retry_in_epochs`` epochs from now, their transmission
        uncounted, and its ACKs go back to the queue: nothing waits out a retransmission gap for
        a packet that never left. (A driver backs off ``retry_in_epochs`` while the carrier stays
        congested.) Call ``payloads_to_send`` at the next deadline.
        """
        epoch = self._advance(now)
        stats = self._stats
        stats.payloads_sent -= 1
        stats.bytes_sent -= len(payload)
        decoded = decode_payload(payload, self._limits)
        store = self._store
        updates = []
        for mid in [*decoded.offers, *decoded.requests, *(m.id for m in decoded.messages)]:
            r = store.get_record(mid, peer)
            if r is None:
                continue
            updates.append(step(r, Input.NOT_SENT, due=epoch + max(1, retry_in_epochs)))
        if updates:
            with store.transaction():
                store.put_records(updates)
            self._schedule(epoch + max(1, retry_in_epochs))
        state = self._peers.get(peer)
        if state is None:
            return  # it left its groups meanwhile: nothing is owed to it any more
        if decoded.acks:
            queue = self._receive.ack_queue(state)
            for mid in decoded.acks:
                queue[mid] = None
        for m in decoded.messages:
            if m.ephemeral:
                state.ephemeral.append(m.wire)

    def reset_peer(self, peer: bytes, *, now: float) -> int:
        """Re-arm every record for ``peer``: the application learned that it is back online.

        Parked records (given up) are re-armed too, send counts restart, and everything goes out in
        the peer's next payload. Returns the number of records re-armed. Call ``payloads_to_send``
        next.
        """
        self._advance(now)
        state = self._peers.get(peer)
        if state is not None:
            state.drop_fresh()  # their records are re-armed below
        records = self._store.records_for_peer(peer)
        self._rearm(peer, records, Input.RESET)
        return len(records)

    def _rearm(self, peer: bytes, records: list[Record], event: Input) -> None:
        """Apply ``event`` (REARM or RESET) to ``records`` (``peer``'s): due in its next
        payload."""
        if not records:
            return
        due = self._first_due(peer)
        with self._store.transaction():
            self._store.put_records([step(r, event, due=due) for r in records])
        self._schedule(due)

    def handle_timer(self, *, now: float, wall: int | None = None) -> None:
        """Tell the engine that time passed (a deadline from ``next_deadline`` was reached).

        Args:
            now: the driver's monotonic clock, as for every input.
            wall: the wall clock (Unix ms), from a driver that has one: messages whose expiry
                is at or before it are deleted (as by :meth:`expire`), and from then on
                ``next_deadline`` includes the next expiry, converted to the ``now`` clock by
                the two clocks' offset at this call. A wall clock that jumped is corrected at
                the next call, so the driver waits on the one deadline and passes both clocks
                at each wake-up.

        Drain ``next_event`` and call ``payloads_to_send`` next.
        """
        self._advance(now)
        if wall is None:
            return
        self._wall_offset = wall - now * 1000
        expiry = self._expiry
        if expiry is not None and expiry <= wall:
            self.expire(wall=wall)

    def expire(self, *, wall: int) -> int:
        """Delete every message whose expiry is at or before ``wall`` (Unix ms); return the count.

        Expired messages leave the store and every peer's queue and are never sent again; each
        yields a ``MessageExpired`` event. Messages received already expired are acknowledged but
        not stored. Drain ``next_event`` next.
        """
        if wall > self._wall:
            self._wall = wall
        store = self._store
        count = 0
        while True:
            batch = store.expired(wall, _EXPIRE_CHUNK)
            if not batch:
                if count and self._next_due is not None:
                    self._next_due = store.min_due_epoch()  # their records are gone too
                self._expiry = store.next_expiry()
                return count
            with store.transaction():
                for m in batch:
                    store.delete_message(m.id)
            for m in batch:
                self._causal.forget(m)
                self._requests.discard_all(m.id)  # delete_message took every record about it
                self._push(MessageExpired(m.id, m.group_id))
            count += len(batch)
            self._stats.expired += len(batch)

    def next_expiry(self) -> int | None:
        """The earliest expiry (Unix ms) among stored messages.

        Deprecated: pass ``wall`` to :meth:`handle_timer`, and ``next_deadline`` includes the
        next expiry.
        """
        warnings.warn(
            "Engine.next_expiry() is deprecated: pass wall= to handle_timer(), and "
            "next_deadline() includes the next expiry",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._store.next_expiry()

    def _note_expiry(self, expires_at: int) -> None:
        """A message that expires at ``expires_at`` was stored: the next expiry may be sooner."""
        expiry = self._expiry
        if expiry is None or expires_at < expiry:
            self._expiry = expires_at

    # ---------------------------------------------------------- network input

    def receive_payload(
        self,
        peer: bytes,
        data: bytes | bytearray | memoryview,
        *,
        now: float,
        direct: bool = False,
        via: str = "",
    ) -> None:
        """Process a payload received from ``peer``. Never raises on remote input.

        ``direct``: the carrier proved that the payload comes from ``peer`` (a Noise session),
        passed on to the validator, which may then trust what ``peer`` wrote itself. ``via``
        names the carrier it came over (``tcp``, ``bundle``, ``remote-log`` ...): kept as the
        last contact with the peer over it, and with each acknowledgement it carries
        (:meth:`trace`).

        Invalid input is dropped (whole, or record by record) and reported as ``PayloadRejected``.
        Drain ``next_event`` and call ``payloads_to_send`` next.
        """
        self._advance(now)
        stats = self._stats
        stats.payloads_received += 1
        stats.bytes_received += len(data)
        state = self._peers.get(peer)
        if state is None or not state.groups:
            self._reject(peer, RejectReason.NOT_A_MEMBER, 1, whole=True)
            return
        decoded = decode_payload(data, self._limits)
        if decoded.whole_payload_rejected:
            for reason, n in decoded.dropped.items():
                self._reject(peer, reason, n, whole=True)
            return
        dropped = decoded.dropped
        store = self._store
        full = state.full
        if full is not None and self._requests.below_half(full):
            state.full = None  # the episode is over: a new refusal is reported again
        wall = self._wall_now()
        if via:
            self._contacts.received(peer, via, wall)
        try:
            with store.transaction():
                changed, refused = self._receive.payload(
                    peer,
                    decoded,
                    epoch=self._epoch,
                    wall=self._wall,
                    now_wall=wall,
                    direct=direct,
                    via=via,
                )
        except BaseException:
            # The store rolled back (or may have): count the REQUESTs it holds again.
            self._requests.reload(store)
            raise
        if changed and self._next_due is not None:
            # What was acknowledged or answered may have been the next record due.
            self._next_due = store.min_due_epoch()
        for reason, n in dropped.items():
            self._reject(peer, reason, n, whole=False)
        if refused:
            self._stats.requests_refused += sum(refused.values())
            if state.full is None:
                state.full = self._requests.refusal
                for reason, n in refused.items():
                    self._reject(peer, reason, n, whole=False)

    def _push(self, event: Event) -> None:
        events = self._events
        if len(events) >= self._limits.max_queued_events:
            events.popleft()
            self._stats.events_dropped += 1
        events.append(event)

    def _reject(self, peer: bytes, reason: str, count: int, *, whole: bool) -> None:
        stats = self._stats
        if whole:
            stats.payloads_rejected += 1
        stats.records_rejected += count
        self._push(PayloadRejected(peer, reason, count, whole))

    def next_event(self) -> Event | None:
        """Return the next event, or None when there is none."""
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Drain and return every queued event."""
        out = list(self._events)
        self._events.clear()
        return out

    def next_deadline(self) -> float | None:
        """When the engine next needs ``handle_timer`` (and a drain), or None if never.

        On the ``now`` clock: the start of the next epoch with something to send and, once
        ``handle_timer`` was passed ``wall``, the next message expiry. A value at or before the
        current time means "drain now".
        """
        epoch = self._epoch
        best: int | None = None
        if self._drain_cut:
            best = epoch
        nd = self._next_due
        if nd is not None and (best is None or nd < best):
            best = max(nd, epoch)
        e = self._drain.next_epoch(epoch)  # ACKs, ephemeral messages, first transmissions
        if e is not None and (best is None or e < best):
            best = e
        at = None if best is None else self._epoch_start(best)
        offset, expiry = self._wall_offset, self._expiry
        if offset is not None and expiry is not None:
            # The next expiry on the ``now`` clock, as of the last wall clock passed in.
            when = (expiry - offset) / 1000
            if at is None or when < at:
                at = when
        return at

    def payloads_to_send(
        self,
        *,
        now: float,
        max_payload_bytes: int | None = None,
        carrier_of: Callable[[bytes], str] | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Return the payloads due now, as ``(peer, payload)`` pairs, and mark them sent.

        Each peer gets at most one payload per epoch, with every record due for it and the ACKs
        waiting for it; the one exception is a reliable peer (``set_peer_reliable``) with a full
        payload's worth of new messages waiting, which gets them at once. A payload larger than
        ``max_payload_bytes`` (default: the limit peers accept) is split into several. One call
        produces at most ``drain_budget_bytes``; if it stops short, ``next_deadline`` says to call
        again at once.

        The records count as transmitted when this returns; a payload the carrier then fails to
        deliver is simply retransmitted later. ``carrier_of(peer)`` names the carrier that takes
        ``peer``'s payloads (``tcp``, ``multicast`` ...): kept in each record transmitted, in
        the write that counts it, for :meth:`trace` (asked once per peer with records due).
        """
        epoch = self._advance(now)
        cap = max_payload_bytes or self._limits.max_payload_bytes
        budget = self._cfg.drain_budget_bytes
        out: dict[bytes, Outgoing] = {}
        used = 0
        cut = False
        store = self._store
        peers = self._peers
        drain = self._drain
        nd = self._next_due
        with store.transaction():
            if nd is not None and nd <= epoch:
                drained = drain.records(epoch, budget, out, carrier_of)
                used, cut = drained.used, drained.cut
                self._next_due = store.min_due_epoch()
                for r in drained.gave_up:
                    self._stats.gave_up += 1
                    self._push(GaveUp(r.message_id, r.peer, r.type, r.send_count))
                if drained.timed_out:  # one report per peer for the whole drain
                    self._requests_timed_out(drained.timed_out)
            if not cut and any(state.fresh for state in peers.values()):
                used, cut = drain.fresh(epoch, budget, used, out)
            if epoch != self._stored_epoch:
                store.set_epoch(epoch)
                self._stored_epoch = epoch
                contacts = self._contacts.dirty()
                if contacts:
                    store.put_contacts(contacts)
        # ACKs and ephemeral messages ride along, or go alone if nothing else is due.
        drain.ride_along(epoch, out)
        self._drain_cut = cut
        result: list[tuple[bytes, bytes]] = []
        stats = self._stats
        for peer, o in out.items():
            to = peers.get(peer)
            if not cut and to is not None:
                to.done_epoch = epoch
            stats.acks_sent += len(o.acks)
            stats.offers_sent += len(o.offers)
            stats.requests_sent += len(o.requests)
            stats.messages_sent += len(o.messages)
            peer_cap = None if to is None else to.cap
            peer_bytes = cap if peer_cap is None else min(cap, peer_cap)
            for data in split(o, peer_bytes, self._limits.max_records_per_payload):
                stats.payloads_sent += 1
                stats.bytes_sent += len(data)
                result.append((peer, data))
        return result

    def _requests_timed_out(self, records: list[Record]) -> None:
        """REQUESTs deleted unanswered: count them down, give up on parents nobody is asked
        for any more, and report each peer that did not answer."""
        requests = self._requests
        self._stats.requests_timed_out += len(records)
        reports: dict[tuple[bytes, str], int] = {}
        for r in records:
            mid = r.message_id
            requests.discard(mid, r.peer)
            parent = bool(r.group_id) or mid in self._causal.waiting
            key = (r.peer, _PARENTS_UNANSWERED if parent else _OFFERS_UNANSWERED)
            reports[key] = reports.get(key, 0) + 1
            if parent and mid not in requests:
                self._stats.parents_abandoned += 1
                self._causal.give_up_parent(mid)
        for (peer, reason), n in reports.items():
            self._reject(peer, reason, n, whole=False)
