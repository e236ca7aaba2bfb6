"""Fan-out of delivered messages and events to the node's subscribers.

Theory of operation
-------------------
Durable messages reach the application through the inbox (``_inbox``): the store keeps them,
and readers read at their own pace. Each live :meth:`Node.messages` block (``live=True``) is a
bounded channel that the node's loop fills in delivery order without ever waiting: a live reader
whose channel is full misses the message (counted in ``messages_dropped``), as ephemeral messages
are missed; the message is still in the inbox for durable cursors. Each :meth:`Node.events`
block is an :class:`~mvds_node.transports.EventQueue`: events are advisory, never wait, and those
that find a queue full are counted as dropped.

A subscriber is removed before its channel is closed, with no checkpoint in between, so the
loop never sends to a channel whose reader is gone.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import final

import trio

from mvds_node.node._events import AnyEvent
from mvds_node.transports import EventQueue

__all__ = ["Message", "Subscribers"]


@final
@dataclass(frozen=True, slots=True)
class Message:
    """A message delivered to this node's application (durable or ephemeral)."""

    group: str
    """The group's name in our configuration."""
    group_id: bytes
    message_id: bytes
    """The MVDS message ID (empty for an ephemeral NOSYNC message, which has none)."""
    body: bytes
    """What the author sent (the inner body: the envelope is taken off)."""
    via: bytes
    """Key (X25519) of the peer or carrier it came from, which may have relayed it: a bundle's
    sender, a remote log's writer, the member that passed it on. Empty when not known: a
    message stored before the store kept senders (schema 2)."""
    timestamp: int
    """Author's clock, Unix milliseconds (0 for ephemeral NOSYNC messages)."""
    ephemeral: bool = False
    parents: tuple[bytes, ...] = ()
    parents_missing: tuple[bytes, ...] = ()
    """Parents given up on (``missing_parents = "deliver"``): delivered without them."""
    seq: int = 0
    """Its place in the node's durable inbox (0 for a live-only or ephemeral message)."""
    skipped: tuple[bytes, ...] = ()
    """From a durable cursor: IDs of messages that expired before this reader reached them,
    just before this one."""
    author: bytes | None = None
    """The verified writer: its Ed25519 public key (a member's ``log_key``, or ours), from the
    message's signed envelope. None when the message has no envelope: a group with
    ``envelope = "raw"``, or a message stored before envelopes existed; nobody vouches for
    its writer then."""

    @property
    def sender(self) -> bytes:
        """Deprecated alias of :attr:`via` (the peer it came from, not its author)."""
        warnings.warn(
            "Message.sender is deprecated: use Message.via (who passed it on) or "
            "Message.author (who wrote it)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.via


@final
class Subscribers:
    """The open :meth:`Node.messages` and :meth:`Node.events` blocks of one node.

    Args:
        buffer: messages or events held for one subscriber.
    """

    def __init__(self, buffer: int) -> None:
        self._buffer = buffer
        self._messages: list[trio.MemorySendChannel[Message]] = []
        self._events: list[EventQueue[AnyEvent]] = []
        self._dropped_by_gone = 0  # events dropped by subscribers that have left
        self.messages_dropped = 0
        """Messages live subscribers missed because their channel was full."""

    @property
    def watching(self) -> bool:
        """Whether any :meth:`Node.events` block is open."""
        return bool(self._events)

    @property
    def events_dropped(self) -> int:
        """Events dropped because a subscriber's queue was full, since the node started."""
        return self._dropped_by_gone + sum(q.dropped for q in self._events)

    @contextlib.asynccontextmanager
    async def messages(self) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
        send, receive = trio.open_memory_channel[Message](self._buffer)
        self._messages.append(send)
        try:
            yield receive
        finally:
            self._messages.remove(send)
            send.close()
            receive.close()

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[trio.MemoryReceiveChannel[AnyEvent]]:
        queue = EventQueue[AnyEvent](self._buffer)
        self._events.append(queue)
        try:
            yield queue.receive
        finally:
            self._events.remove(queue)
            self._dropped_by_gone += queue.dropped
            queue.close()
            queue.receive.close()

    def emit(self, event: AnyEvent) -> None:
        """Give ``event`` to every events subscriber; never waits."""
        for queue in self._events:
            queue.emit(event)

    def deliver_nowait(self, message: Message) -> None:
        """Give ``message`` to every live subscriber with room; a full one misses it (the node's
        loop never waits for a reader)."""
        for send in self._messages:
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                self.messages_dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass
