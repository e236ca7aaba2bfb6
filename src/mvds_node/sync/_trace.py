"""What the engine knows about one message, as a read-only snapshot (:meth:`Engine.trace`).

Theory of operation: nothing here is kept for the trace alone except four facts the engine
records as it works, in the store: when each message was stored (``StoredMessage.stored_at``),
the carrier each record's last transmission was handed to (``Record.carrier``: the drain sets
it in the write that counts the transmission, from the driver's ``carrier_of``),
each acknowledgement that ended one of our records (when, and over which carrier: the ``via``
the driver passes with a payload), and the last contact with each peer per carrier, each way
(:class:`Contacts`, written at most once per epoch per peer and carrier, so the hot paths pay a
dictionary update per payload). The rest is read when asked: the message and its parents, the
records about it (what we still owe each peer, or ask of it), consistent delivery's waiting
lists, and the request counts. Times on the engine's ``now`` clock are converted to the wall
clock with the offset of the last ``handle_timer`` that passed one; 0 means "not known".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from mvds_node.sync._state import RecordType

if TYPE_CHECKING:
    from mvds_node.sync._causal import Causal
    from mvds_node.sync._peers import Peers
    from mvds_node.sync._requests import Requests
    from mvds_node.sync.store._protocol import Store

__all__ = [
    "Contacts",
    "GroupSync",
    "MessageTrace",
    "PeerSync",
    "PeerTrace",
    "offset_clock",
    "sync_status",
    "trace_message",
]

OFFERING: Final = "offering"
SENDING: Final = "sending"
REQUESTING: Final = "requesting"
ACKED: Final = "acked"


@final
@dataclass(frozen=True, slots=True)
class PeerTrace:
    """One peer's part in a message's journey."""

    peer: bytes
    state: str
    """``offering`` (an OFFER is due to it), ``sending`` (the message is), ``requesting`` (we
    ask it for the message), or ``acked`` (it acknowledged the message; nothing is owed)."""
    transmissions: int = 0
    """How many times the record went out (a reconnection re-arms it and counts again)."""
    first_sent_ms: int = 0
    """When it first went out (Unix ms, to the epoch; 0: not yet, or not known)."""
    next_retry_at: float | None = None
    """When it is next due, on the engine's ``now`` clock (None: given up, or acked)."""
    next_retry_ms: int = 0
    """The same as Unix ms (0: not known)."""
    given_up: bool = False
    """The give-up policy parked it: it goes out again only when the peer reconnects."""
    queued: bool = False
    """Its first transmission waits in memory for the peer's next payload (a reliable peer)."""
    carrier: str = ""
    """The carrier the record's last transmission was handed to (``tcp``, ``multicast``,
    ``bundle`` ...; empty: never sent, or sent before carriers were recorded)."""
    acked_ms: int = 0
    """When the acknowledgement arrived (Unix ms; 0: not acked, or not known)."""
    acked_via: str = ""
    """The carrier it came over: ``tcp``, ``bundle``, ``remote-log``, ``memory`` ..."""


@final
@dataclass(frozen=True, slots=True)
class MessageTrace:
    """Every fact the engine holds about one message (:meth:`Engine.trace`)."""

    message_id: bytes
    stored: bool
    """The message is in the store (sent by us, or received)."""
    group_id: bytes = b""
    """Its group (for a message we lack: the group a REQUEST names, if any)."""
    timestamp: int = 0
    stored_ms: int = 0
    """When it was stored (Unix ms; 0: not known, or stored before this was recorded)."""
    expires_ms: int = 0
    """When it expires (Unix ms; 0: never)."""
    held: bool = False
    """Consistent delivery holds it until its parents are delivered."""
    parents: tuple[bytes, ...] = ()
    parents_missing: tuple[bytes, ...] = ()
    """Its parents that are not in the store."""
    asked: tuple[tuple[bytes, tuple[bytes, ...]], ...] = ()
    """For each missing parent, the peers we ask for it (REQUEST records)."""
    waiting_children: tuple[bytes, ...] = ()
    """Messages held until this one (a parent we lack) is delivered."""
    peers: tuple[PeerTrace, ...] = ()
    """Each peer with a record about it, or that acknowledged it, by peer key."""

    @property
    def known(self) -> bool:
        """Whether the engine knows anything about the message at all."""
        return self.stored or bool(self.peers) or bool(self.waiting_children)


@final
class Contacts:
    """The last contact with each peer over each carrier, each way (Unix ms), in memory, and
    what of it the store has not seen yet. ``sent`` and ``received`` are called per payload:
    a dictionary update; :meth:`dirty` hands the store what changed by at least ``resolution_ms``
    since it was last written."""

    __slots__ = ("_resolution", "_stored", "last")

    def __init__(self, rows: list[tuple[bytes, str, int, int]], resolution_ms: int) -> None:
        self.last: dict[tuple[bytes, str], list[int]] = {
            (peer, carrier): [sent, received] for peer, carrier, sent, received in rows
        }
        self._stored: dict[tuple[bytes, str], tuple[int, int]] = {
            key: (v[0], v[1]) for key, v in self.last.items()
        }
        self._resolution = resolution_ms

    def sent(self, peer: bytes, carrier: str, at: int) -> None:
        entry = self.last.get((peer, carrier))
        if entry is None:
            self.last[(peer, carrier)] = [at, 0]
        elif at > entry[0]:
            entry[0] = at

    def received(self, peer: bytes, carrier: str, at: int) -> None:
        entry = self.last.get((peer, carrier))
        if entry is None:
            self.last[(peer, carrier)] = [0, at]
        elif at > entry[1]:
            entry[1] = at

    def dirty(self) -> list[tuple[bytes, str, int, int]]:
        """What changed by at least the resolution since the store last had it (or is new);
        counted as written."""
        out = []
        stored = self._stored
        res = self._resolution
        for key, (sent, received) in self.last.items():
            old = stored.get(key)
            if old is None or sent - old[0] >= res or received - old[1] >= res:
                out.append((key[0], key[1], sent, received))
                stored[key] = (sent, received)
        return out

    def of(self, peer: bytes) -> dict[str, tuple[int, int]]:
        """``carrier -> (sent_ms, received_ms)`` for ``peer``."""
        return {c: (v[0], v[1]) for (p, c), v in self.last.items() if p == peer}


_STATE_NAMES: Final = {
    RecordType.OFFER: OFFERING,
    RecordType.REQUEST: REQUESTING,
    RecordType.MESSAGE: SENDING,
}
_REQUEST: Final = RecordType.REQUEST


@final
@dataclass(frozen=True, slots=True)
class PeerSync:
    """How far one peer is in sync with us, as of :meth:`Engine.sync_status`."""

    peer: bytes
    pending: int
    """Records still owed to it (messages, offers) or asked of it (requests)."""
    pending_bytes: int
    """Bytes of the messages among them: what is still to go to it."""
    pending_bytes_exact: bool
    """False past ``sample`` messages: the bytes of the oldest ``sample`` at their mean size."""
    requested: int
    """Messages we lack and ask it for."""
    contacts: dict[str, tuple[int, int]]
    """Per carrier: the last payload sent to it and received from it (Unix ms, 0: never)."""


@final
@dataclass(frozen=True, slots=True)
class GroupSync:
    """What one group waits for, as of :meth:`Engine.sync_status`; lists are cut at ``limit``
    entries (the counts are whole)."""

    group_id: bytes
    lacking: int
    """Messages of the group we know of (a peer offered them, or a message names them as a
    parent) but do not hold."""
    lacking_ids: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    """Some of them, each with the peers asked for it."""
    held: int
    """Messages consistent delivery holds until a missing parent arrives."""
    held_ids: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    """Some of them, each with the parents it waits for."""


def offset_clock(now: float, wall: int) -> Callable[[float], int]:
    """A converter from the engine's ``now`` clock to Unix ms, by the offset of one reading
    of both."""
    offset = wall - now * 1000

    def to_wall(at: float) -> int:
        return int(at * 1000 + offset)

    return to_wall


def trace_message(
    message_id: bytes,
    *,
    store: Store,
    causal: Causal,
    peer_states: Peers,
    epoch: int,
    epoch_start: Callable[[int], float],
    to_wall: Callable[[float], int],
) -> MessageTrace:
    """:meth:`Engine.trace`, from the engine's parts (read only)."""
    m = store.get_message(message_id)
    fresh = {peer for peer, state in peer_states.items() if message_id in state.fresh}
    peers: dict[bytes, PeerTrace] = {}
    group_id = b"" if m is None else m.group_id
    for r in store.records_for_message(message_id):
        if not group_id and r.group_id:
            group_id = r.group_id
        start = None if r.first_epoch < 0 else epoch_start(r.first_epoch)
        due = None if r.parked else epoch_start(max(r.send_epoch, epoch))
        peers[r.peer] = PeerTrace(
            peer=r.peer,
            state=_STATE_NAMES[r.type],
            transmissions=r.send_count,
            first_sent_ms=0 if start is None else to_wall(start),
            next_retry_at=due,
            next_retry_ms=0 if due is None else to_wall(due),
            given_up=r.parked,
            queued=r.peer in fresh,
            carrier=r.carrier,
        )
    for peer, at, via in store.acks_for_message(message_id):
        if peer not in peers:
            peers[peer] = PeerTrace(peer=peer, state=ACKED, acked_ms=at, acked_via=via)
    waiting = tuple(causal.waiting.get(message_id, ()))
    if m is None:
        return MessageTrace(
            message_id,
            stored=False,
            group_id=group_id,
            waiting_children=waiting,
            peers=tuple(peers[p] for p in sorted(peers)),
        )
    missing = tuple(p for p in m.parents if not store.has_message(p))
    asked = tuple(
        (
            p,
            tuple(sorted(r.peer for r in store.records_for_message(p) if r.type is _REQUEST)),
        )
        for p in missing
    )
    return MessageTrace(
        message_id,
        stored=True,
        group_id=m.group_id,
        timestamp=m.timestamp,
        stored_ms=m.stored_at,
        expires_ms=m.expires_at,
        held=not m.delivered,
        parents=m.parents,
        parents_missing=missing,
        asked=asked,
        waiting_children=waiting,
        peers=tuple(peers[p] for p in sorted(peers)),
    )


def sync_status(
    peers: Iterable[bytes],
    *,
    store: Store,
    causal: Causal,
    requests: Requests,
    peer_states: Peers,
    contacts: Contacts,
    group_ids: Iterable[bytes],
    limit: int,
    sample: int,
) -> tuple[tuple[PeerSync, ...], tuple[GroupSync, ...]]:
    """:meth:`Engine.sync_status`, from the engine's parts (read only)."""

    per_peer = tuple(
        PeerSync(
            peer,
            *store.pending(peer, sample),
            requested=requests.per_peer.get(peer, 0),
            contacts=contacts.of(peer),
        )
        for peer in dict.fromkeys(peers)
    )
    lacking: dict[bytes, list[tuple[bytes, tuple[bytes, ...]]]] = {}
    lacking_count: dict[bytes, int] = {}
    groups_of = peer_states.groups_of
    for mid, asked in requests.by_id.items():
        named = {g for g in asked.values() if g}
        if not named:
            # Offered, its group not known yet: the group it must be in, if the peers
            # that offered it share only one with us (else it counts per peer only).
            shared = set.intersection(*(set(groups_of(p)) for p in asked))
            named = shared if len(shared) == 1 else set()
        for group in named:
            lacking_count[group] = lacking_count.get(group, 0) + 1
            listed = lacking.setdefault(group, [])
            if len(listed) < limit:
                listed.append((mid, tuple(sorted(asked))))
    held: dict[bytes, list[tuple[bytes, tuple[bytes, ...]]]] = {}
    held_count: dict[bytes, int] = {}
    parents_of: dict[bytes, list[bytes]] = {}
    for parent, children in causal.waiting.items():
        for child in children:
            parents_of.setdefault(child, []).append(parent)
    by_id = requests.by_id
    for child in causal.missing:
        # The group of a held message: from the REQUEST for a parent it waits for (in
        # memory), else from the store.
        found: bytes | None = next(
            (g for p in parents_of.get(child, ()) for g in by_id.get(p, {}).values() if g),
            None,
        )
        if found is not None:
            group = found
        else:
            stored = store.get_message(child)
            group = b"" if stored is None else stored.group_id
        held_count[group] = held_count.get(group, 0) + 1
        listed = held.setdefault(group, [])
        if len(listed) < limit:
            listed.append((child, tuple(parents_of.get(child, ()))))
    groups = tuple(
        GroupSync(
            g,
            lacking=lacking_count.get(g, 0),
            lacking_ids=tuple(lacking.get(g, ())),
            held=held_count.get(g, 0),
            held_ids=tuple(held.get(g, ())),
        )
        for g in group_ids
    )
    return per_peer, groups
