"""Every per-(message, peer) transition of the engine, as one table.

Theory of operation: for each message and each peer we keep at most one *record*: OFFER (tell the
peer we have it), REQUEST (ask the peer for it) or MESSAGE (send it in full). "No record" is
:attr:`RecordType.NONE`. ACKs are never state (2/MVDS): they are answered afresh each time a
message arrives. The engine looks every transition up in :data:`TRANSITIONS`; a pair missing from
the table is a bug in the engine, never a consequence of remote input, because the engine only
asks about inputs it has validated.

Where we differ from the Go reference on purpose (REPORT.md §3), the table says so:

* a REQUEST replaces our OFFER (the Go code keeps both until the ACK);
* an ACK clears OFFER and MESSAGE alike, and an ACK for a record we do not hold is a no-op
  (the SQLite Go store aborts the rest of the payload);
* receiving a message clears every REQUEST for it, from any peer (no duplicate fetches);
* an OFFER of a message we hold clears our own OFFER or MESSAGE to that peer, who evidently has it.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TRANSITIONS", "Input", "RecordType", "transition"]


class RecordType(enum.IntEnum):
    """What we owe one peer for one message. The values are stored on disk: do not renumber."""

    NONE = -1
    OFFER = 0
    REQUEST = 1
    MESSAGE = 2


class Input(enum.Enum):
    """Something that happened to one (message, peer) pair."""

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
    """The message expired and was deleted."""


_N, _O, _R, _M = RecordType.NONE, RecordType.OFFER, RecordType.REQUEST, RecordType.MESSAGE

TRANSITIONS: Final[dict[tuple[RecordType, Input], RecordType]] = {
    # We have something to give.
    (_N, Input.SHARE_BATCH): _M,
    (_O, Input.SHARE_BATCH): _O,
    (_M, Input.SHARE_BATCH): _M,
    (_N, Input.SHARE_INTERACTIVE): _O,
    (_O, Input.SHARE_INTERACTIVE): _O,
    (_M, Input.SHARE_INTERACTIVE): _M,
    # We lack something and a peer can give it.
    (_N, Input.GOT_OFFER_MISSING): _R,
    (_R, Input.GOT_OFFER_MISSING): _R,
    (_N, Input.MISSING_PARENT): _R,
    (_R, Input.MISSING_PARENT): _R,
    # The peer holds the message already.
    (_N, Input.GOT_OFFER_HELD): _N,
    (_O, Input.GOT_OFFER_HELD): _N,
    (_M, Input.GOT_OFFER_HELD): _N,
    # The peer asks for it: the full message replaces the offer.
    (_N, Input.GOT_REQUEST): _M,
    (_O, Input.GOT_REQUEST): _M,
    (_M, Input.GOT_REQUEST): _M,
    # Done with this peer.
    (_N, Input.GOT_ACK): _N,
    (_O, Input.GOT_ACK): _N,
    (_M, Input.GOT_ACK): _N,
    (_R, Input.GOT_ACK): _R,
    (_N, Input.GOT_MESSAGE_FROM_PEER): _N,
    (_O, Input.GOT_MESSAGE_FROM_PEER): _N,
    (_R, Input.GOT_MESSAGE_FROM_PEER): _N,
    (_M, Input.GOT_MESSAGE_FROM_PEER): _N,
    (_N, Input.GOT_MESSAGE_ELSEWHERE): _N,
    (_R, Input.GOT_MESSAGE_ELSEWHERE): _N,
    (_O, Input.GOT_MESSAGE_ELSEWHERE): _O,
    (_M, Input.GOT_MESSAGE_ELSEWHERE): _M,
    (_N, Input.EXPIRED): _N,
    (_O, Input.EXPIRED): _N,
    (_R, Input.EXPIRED): _N,
    (_M, Input.EXPIRED): _N,
}


def transition(current: RecordType, event: Input) -> RecordType:
    """Return the record type after ``event``; raises ``KeyError`` for an impossible pair."""
    return TRANSITIONS[(current, event)]
