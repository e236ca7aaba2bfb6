"""Every per-(message, peer) transition of the engine: one table, and one function that applies it.

Theory of operation: for each message and each peer we keep at most one *record*: OFFER (tell the
peer we have it), REQUEST (ask the peer for it) or MESSAGE (send it in full), with its send count,
the epoch it is next due, the epoch of its first transmission and whether the give-up policy
parked it. "No record" is :attr:`RecordType.NONE`. ACKs are never state (2/MVDS): they are
answered afresh each time a message arrives.

:func:`apply` takes a record (a blank one of type NONE when there is none) and an :class:`Input`,
looks the pair up in :data:`TRANSITIONS`, and returns the record after the input (updated in
place, or a new one where a record is made), or None when the record ends. Nothing else assigns
a record's fields.
Every (state, input) pair is in the table with the reason for its result (``docs/engine.md``
shows the same table, and a test checks that the two agree); a pair missing from it is a bug in
the engine, never a consequence of remote input, because the engine only asks about inputs it
has validated: :func:`apply` raises :class:`~mvds_node.errors.LocalProtocolError` for it.

What an input does to the fields of a record it keeps or creates is fixed per input (see
:func:`apply`): a record that is created, or that replaces a REQUEST, starts afresh (never sent,
due at ``due``); one that changes from OFFER to MESSAGE keeps its send count and age.

Where we differ from the Go reference on purpose (REPORT.md §3), the table says so:

* a REQUEST replaces our OFFER (the Go code keeps both until the ACK);
* an ACK clears OFFER and MESSAGE alike, and an ACK for a record we do not hold is a no-op
  (the SQLite Go store aborts the rest of the payload);
* receiving a message clears every REQUEST for it, from any peer (no duplicate fetches);
* an OFFER of a message we hold clears our own OFFER or MESSAGE to that peer, who evidently has it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from mvds_node.errors import LocalProtocolError

__all__ = [
    "TRANSITIONS",
    "Input",
    "Record",
    "RecordType",
    "Step",
    "apply",
    "blank",
    "create",
    "create_for",
    "step",
    "transition",
    "transmitted",
]


class RecordType(enum.IntEnum):
    """What we owe one peer for one message. The values are stored on disk: do not renumber."""

    NONE = -1
    OFFER = 0
    REQUEST = 1
    MESSAGE = 2


@dataclass(slots=True)
class Record:
    """What we owe one peer for one message, and when we next transmit it.

    Only :func:`apply` changes a record's fields; the stores keep and return them.
    """

    message_id: bytes
    peer: bytes
    type: RecordType
    group_id: bytes
    """The message's group; empty for a REQUEST of a message whose group we do not know yet."""
    send_count: int = 0
    send_epoch: int = 0
    first_epoch: int = -1
    """Epoch of the first transmission (-1 before it), for the give-up policy's age limit."""
    parked: bool = False
    """True once the give-up policy stopped it; parked records are never due."""
    carrier: str = ""
    """The carrier its last transmission was handed to (``tcp``, ``multicast`` ...; empty:
    never transmitted, or not known): what the driver named for the peer's payloads."""

    @property
    def key(self) -> tuple[bytes, bytes]:
        return (self.message_id, self.peer)


class Input(enum.IntEnum):
    """Something that happened to one (message, peer) pair.

    An ``IntEnum`` only so that it hashes at C speed: every record change looks a pair up.
    """

    SHARE_BATCH = enum.auto()
    """We hold the message and the peer should get it in full (local send or relay, batch)."""
    SHARE_INTERACTIVE = enum.auto()
    """We hold the message and the peer should be offered it (interactive, or relay by offer)."""
    GOT_OFFER_MISSING = enum.auto()
    """The peer offered a message we do not hold."""
    GOT_OFFER_HELD = enum.auto()
    """The peer offered a message we hold: it has it too."""
    GOT_REQUEST = enum.auto()
    """The peer, a member of the message's group, requested a message we hold."""
    GOT_ACK = enum.auto()
    """The peer acknowledged the message."""
    GOT_MESSAGE_FROM_PEER = enum.auto()
    """The peer sent us the message: it has it, and we no longer need to ask it."""
    GOT_MESSAGE_ELSEWHERE = enum.auto()
    """Another peer sent us the message: stop asking this one for it."""
    MISSING_PARENT = enum.auto()
    """A message from this peer names a parent we do not hold: ask the peer for it."""
    EXPIRED = enum.auto()
    """The message expired and was deleted (or was found gone when its record came due)."""
    TRANSMITTED = enum.auto()
    """The record went out in a payload (or is written as sent, its first transmission queued
    in memory for a reliable peer): count it, and schedule the retransmission at ``due``."""
    NOT_SENT = enum.auto()
    """The carrier could not take the payload that carried it: uncount it, due again at
    ``due``."""
    EXPORTED = enum.auto()
    """It went out on a one-way carrier (a bundle file): count it, due no earlier than
    ``due``."""
    GIVE_UP = enum.auto()
    """The give-up policy's limit was reached: park it."""
    REARM = enum.auto()
    """The live connection its first transmission was queued for went down: due at ``due``."""
    RESET = enum.auto()
    """The application says the peer is back (``reset_peer``): start again, due at ``due``."""
    TIMED_OUT = enum.auto()
    """Its age passed the request timeout, unanswered."""
    PEER_LEFT = enum.auto()
    """The peer is no longer a member of the record's group."""


_N, _O, _R, _M = RecordType.NONE, RecordType.OFFER, RecordType.REQUEST, RecordType.MESSAGE
_KEPT: Final = "kept"


class Step(NamedTuple):
    """The result of one (state, input) pair."""

    to: RecordType
    """The record type after the input (NONE: the record ends, or none is created)."""
    kept: bool
    """The record stays exactly as it is (nothing to write)."""
    why: str


def _table(
    rows: dict[Input, dict[RecordType, tuple[RecordType | Literal["kept"], str]]],
) -> dict[tuple[RecordType, Input], Step]:
    table: dict[tuple[RecordType, Input], Step] = {}
    for event, by_state in rows.items():
        for state, (to, why) in by_state.items():
            if to == _KEPT:
                table[(state, event)] = Step(state, True, why)
            else:
                table[(state, event)] = Step(RecordType(to), False, why)
    return table


_NOTHING = "no record, and none to make"
_NOT_HELD = "cannot happen: records of a message leave the store with it; left as it is"

TRANSITIONS: Final[dict[tuple[RecordType, Input], Step]] = _table(
    {
        # We have something to give.
        Input.SHARE_BATCH: {
            _N: (_M, "send it in full"),
            _O: (_KEPT, "already offered: the peer asks if it wants it"),
            _R: (_M, "we came to hold it (our own send): give it instead of asking"),
            _M: (_KEPT, "already being sent"),
        },
        Input.SHARE_INTERACTIVE: {
            _N: (_O, "offer it"),
            _O: (_KEPT, "already offered"),
            _R: (_O, "we came to hold it (our own send): offer it instead of asking"),
            _M: (_KEPT, "already being sent, which says more than an offer"),
        },
        # We lack something and a peer can give it.
        Input.GOT_OFFER_MISSING: {
            _N: (_R, "ask the peer that offered it"),
            _O: (_KEPT, _NOT_HELD),
            _R: (_KEPT, "already asked"),
            _M: (_KEPT, _NOT_HELD),
        },
        Input.MISSING_PARENT: {
            _N: (_R, "ask the peer that named it"),
            _O: (_KEPT, _NOT_HELD),
            _R: (_KEPT, "already asked"),
            _M: (_KEPT, _NOT_HELD),
        },
        # The peer holds the message already.
        Input.GOT_OFFER_HELD: {
            _N: (_N, "the peer has it: nothing owed"),
            _O: (_N, "the peer has it: stop offering (Go keeps offering)"),
            _R: (_N, "stale: we hold it (our own send) and so does the peer; stop asking"),
            _M: (_N, "the peer has it: stop sending"),
        },
        # The peer asks for it: the full message replaces the offer.
        Input.GOT_REQUEST: {
            _N: (_M, "asked: send it in the next payload"),
            _O: (_M, "the message replaces the offer (Go keeps both)"),
            _R: (_M, "stale: we came to hold it (our own send); send it"),
            _M: (_M, "asked again: send it in the next payload"),
        },
        # Done with this peer.
        Input.GOT_ACK: {
            _N: (_N, "nothing owed: an ACK for a record we do not hold is a no-op"),
            _O: (_N, "acknowledged: done"),
            _R: (_KEPT, "an ACK of a message we asked for ends nothing: we still lack it"),
            _M: (_N, "acknowledged: done"),
        },
        Input.GOT_MESSAGE_FROM_PEER: {
            _N: (_N, "the peer has it: nothing owed"),
            _O: (_N, "the peer has it: stop offering"),
            _R: (_N, "answered"),
            _M: (_N, "the peer has it: stop sending"),
        },
        Input.GOT_MESSAGE_ELSEWHERE: {
            _N: (_N, "nothing owed"),
            _O: (_KEPT, "this peer may still lack it"),
            _R: (_N, "we hold it now: stop asking this peer too (no duplicate fetches)"),
            _M: (_KEPT, "this peer may still lack it"),
        },
        Input.EXPIRED: {
            _N: (_N, "nothing owed"),
            _O: (_N, "deleted everywhere: never sent again"),
            _R: (_N, "deleted everywhere: never asked for again"),
            _M: (_N, "deleted everywhere: never sent again"),
        },
        # Our own transmissions and their fate.
        Input.TRANSMITTED: {
            _N: (_N, _NOTHING),
            _O: (_O, "counted; the retransmission is due later"),
            _R: (_R, "counted; the retransmission is due later, never past the timeout"),
            _M: (_M, "counted; the retransmission is due later"),
        },
        Input.NOT_SENT: {
            _N: (_N, _NOTHING),
            _O: (_O, "uncounted: it never left; due again soon"),
            _R: (_R, "uncounted: it never left; due again soon"),
            _M: (_M, "uncounted: it never left; due again soon"),
        },
        Input.EXPORTED: {
            _N: (_N, _NOTHING),
            _O: (_O, "counted; unparked, due after twice the carrier's latency"),
            _R: (_R, "counted; unparked, due after twice the carrier's latency"),
            _M: (_M, "counted; unparked, due after twice the carrier's latency"),
        },
        Input.GIVE_UP: {
            _N: (_N, _NOTHING),
            _O: (_O, "parked: never due, until the peer is reset"),
            _R: (_R, "parked: never due, until the peer is reset"),
            _M: (_M, "parked: never due, until the peer is reset"),
        },
        Input.REARM: {
            _N: (_N, _NOTHING),
            _O: (_O, "its first transmission was never made: due in the next payload"),
            _R: (_R, "due in the next payload, keeping its age"),
            _M: (_M, "its first transmission was never made: due in the next payload"),
        },
        Input.RESET: {
            _N: (_N, _NOTHING),
            _O: (_O, "new again: unparked, never sent, due in the next payload"),
            _R: (_R, "unparked and due in the next payload, keeping its age (no renewal)"),
            _M: (_M, "new again: unparked, never sent, due in the next payload"),
        },
        Input.TIMED_OUT: {
            _N: (_N, _NOTHING),
            _O: (_KEPT, "only a REQUEST times out (the give-up policy parks the others)"),
            _R: (_N, "unanswered for its timeout: stop asking"),
            _M: (_KEPT, "only a REQUEST times out (the give-up policy parks the others)"),
        },
        Input.PEER_LEFT: {
            _N: (_N, "nothing owed"),
            _O: (_N, "not a member any more: owed nothing"),
            _R: (_N, "not a member any more: not asked"),
            _M: (_N, "not a member any more: owed nothing"),
        },
    }
)

# Inputs whose result sets the fields of a record, and what they set (see apply).
_CREATES: Final = frozenset(
    {
        Input.SHARE_BATCH,
        Input.SHARE_INTERACTIVE,
        Input.GOT_OFFER_MISSING,
        Input.MISSING_PARENT,
        Input.GOT_REQUEST,
    }
)


_TRANSMITS: Final = frozenset(
    state
    for (state, event), result in TRANSITIONS.items()
    if event is Input.TRANSMITTED and state is not _N and result.to is state and not result.kept
)
"""The record types that a transmission keeps (and counts): :func:`transmitted`'s fast path,
read from the table, so the table stays the one place that says it."""


def blank(message_id: bytes, peer: bytes, group_id: bytes = b"") -> Record:
    """The record of a (message, peer) pair that has none: pass it to :func:`apply`."""
    return Record(message_id, peer, _N, group_id)


def apply(
    record: Record,
    event: Input,
    *,
    epoch: int = 0,
    due: int = 0,
    group_id: bytes | None = None,
) -> Record | None:
    """Apply ``event`` to ``record``; return the record after it, or None if there is none
    afterwards (delete it, or create none).

    A record that stays is ``record`` itself, updated in place (or unchanged: *kept*); one that
    is made from none, or replaces a REQUEST, is a new object.

    Args:
        record: the current record; :func:`blank` when the pair has none.
        event: what happened.
        epoch: the current epoch (``TRANSMITTED``, ``EXPORTED``: the first transmission's).
        due: the epoch the record is next due (every input that schedules it).
        group_id: the message's group, for a record that is created or replaces a REQUEST
            (default: the record's).

    Raises:
        LocalProtocolError: the pair is not in :data:`TRANSITIONS` (a bug in the engine).
    """
    try:
        step = TRANSITIONS[record.type, event]  # a subscript, not a call: this is the hot path
    except KeyError:
        raise LocalProtocolError(f"no transition for {record.type.name} + {event.name}") from None
    to = step.to
    if to is _N:
        return None
    if step.kept:
        return record
    r = record
    # A record that stays is updated in place (the drain changes thousands at a time); one that
    # is made, or replaces a REQUEST, is a new object.
    if event is Input.TRANSMITTED:  # the most frequent, first
        if r.first_epoch < 0:
            r.first_epoch = epoch
        r.send_count += 1
        r.send_epoch = due
        return r
    if event in _CREATES:
        if r.type is _N or r.type is _R:
            # Created, or replacing a REQUEST: a new record, never sent.
            group = r.group_id if group_id is None else group_id
            return Record(r.message_id, r.peer, to, group, 0, due)
        # Asked for what we offered or were sending: answered at once, the schedule's count
        # and age go on.
        r.type = to
        r.send_epoch = due
        r.parked = False
        return r
    if event is Input.NOT_SENT:
        r.send_count = max(0, r.send_count - 1)
        r.send_epoch = due
        if not r.send_count:
            r.carrier = ""  # it never went out after all
        return r
    if event is Input.EXPORTED:
        r.send_count += 1
        if r.first_epoch < 0:
            r.first_epoch = epoch
        r.send_epoch = max(r.send_epoch, due)
        r.parked = False
        r.carrier = "bundle"
        return r
    if event is Input.GIVE_UP:
        r.parked = True
        return r
    if event is Input.REARM or event is Input.RESET:
        r.parked = False
        r.send_count = 0
        if to is not _R:
            # A REQUEST keeps its age: a peer that reconnects does not renew what it was
            # asked and never answered (request_timeout, missing_parent_timeout).
            r.first_epoch = -1
        r.send_epoch = due
        return r
    raise LocalProtocolError(f"{event.name} cannot make a {to.name} record")


def create(message_id: bytes, peer: bytes, group_id: bytes, event: Input, *, due: int) -> Record:
    """The record ``event`` makes for a (message, peer) pair that has none, due at ``due``.

    Raises:
        LocalProtocolError: ``event`` makes no record from none (a bug in the engine).
    """
    step = TRANSITIONS.get((_N, event))
    if step is None:
        raise LocalProtocolError(f"no transition for NONE + {event.name}")
    if step.to is _N or step.kept or event not in _CREATES:
        raise LocalProtocolError(f"{event.name} makes no record from none")
    return Record(message_id, peer, step.to, group_id, 0, due)


def create_for(
    message_ids: Sequence[bytes],
    targets: Iterable[tuple[bytes, int]],
    group_id: bytes,
    event: Input,
) -> list[Record]:
    """:func:`create` for several messages and several (peer, due) targets: the records of a
    send for every member at once, the table looked up once.

    Raises:
        LocalProtocolError: ``event`` makes no record from none (a bug in the engine).
    """
    first = TRANSITIONS.get((_N, event))
    if first is None or first.to is _N or first.kept or event not in _CREATES:
        raise LocalProtocolError(f"{event.name} makes no record from none")
    to = first.to
    return [Record(mid, peer, to, group_id, 0, due) for peer, due in targets for mid in message_ids]


def transmitted(record: Record, epoch: int, due: int, carrier: str = "") -> Record:
    """:func:`apply` of ``TRANSMITTED`` (the drain's input, once per record sent), without the
    general dispatch: the table's row for it is read once, at import. ``carrier`` is the one
    that takes the transmission (kept in the record, written with the rest of it).

    Raises:
        LocalProtocolError: the table has no such pair, or it ends the record (a bug).
    """
    if record.type not in _TRANSMITS:
        raise LocalProtocolError(f"TRANSMITTED cannot apply to a {record.type.name} record")
    if record.first_epoch < 0:
        record.first_epoch = epoch
    record.send_count += 1
    record.send_epoch = due
    record.carrier = carrier
    return record


def step(
    record: Record, event: Input, *, epoch: int = 0, due: int = 0, group_id: bytes | None = None
) -> Record:
    """:func:`apply` for an input that never ends the record it is applied to (``GOT_REQUEST``,
    and ``TRANSMITTED``, ``NOT_SENT``, ``EXPORTED``, ``GIVE_UP``, ``REARM``, ``RESET`` on an
    OFFER, REQUEST or MESSAGE).

    Raises:
        LocalProtocolError: the input ended the record (a bug in the engine).
    """
    after = apply(record, event, epoch=epoch, due=due, group_id=group_id)
    if after is None:
        raise LocalProtocolError(f"{event.name} left no record where one was expected")
    return after


def transition(current: RecordType, event: Input) -> RecordType:
    """The record type after ``event`` (NONE: no record).

    Raises:
        LocalProtocolError: the pair is not in :data:`TRANSITIONS` (a bug in the engine).
    """
    step = TRANSITIONS.get((current, event))
    if step is None:
        raise LocalProtocolError(f"no transition for {current.name} + {event.name}")
    return step.to
