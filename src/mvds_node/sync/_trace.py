"""What the engine knows about one message, as a read-only snapshot (:meth:`Engine.trace`).

Theory of operation: nothing here is kept for the trace alone except three facts the engine
records as it works, in the store: when each message was stored (``StoredMessage.stored_at``),
each acknowledgement that ended one of our records (when, and over which carrier: the ``via``
the driver passes with a payload), and the last contact with each peer per carrier, each way
(:class:`Contacts`, written at most once per epoch per peer and carrier, so the hot paths pay a
dictionary update per payload). The rest is read when asked: the message and its parents, the
records about it (what we still owe each peer, or ask of it), consistent delivery's waiting
lists, and the request counts. Times on the engine's ``now`` clock are converted to the wall
clock with the offset of the last ``handle_timer`` that passed one; 0 means "not known".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, final

__all__ = ["Contacts", "MessageTrace", "PeerTrace"]

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
    """The carrier that took the peer's latest payload from us (when a record is still owed:
    the one its last transmission went over)."""
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

    def latest_sent(self, peer: bytes) -> str:
        """The carrier that took ``peer``'s latest payload ("" if none did)."""
        best, at = "", 0
        for (p, c), v in self.last.items():
            if p == peer and v[0] > at:
                best, at = c, v[0]
        return best
