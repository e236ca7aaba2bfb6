"""Fan-out of delivered messages and events to the node's subscribers.

Theory of operation
-------------------
Each :meth:`Node.messages` block is a bounded channel that the node's loop fills in delivery
order. Messages are lossless: when a reader's channel is full the loop waits for it (a slow
reader slows the node, it does not miss messages), except ephemeral ones, which never wait and
may be lost. Each :meth:`Node.events` block is an :class:`~mvds_node.transports.EventQueue`:
events are advisory, never wait, and those that find a queue full are counted as dropped.

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
    sender, a remote log's writer, the member that passed it on."""
    timestamp: int
    """Author's clock, Unix milliseconds (0 for ephemeral NOSYNC messages)."""
    ephemeral: bool = False
    parents: tuple[bytes, ...] = ()
    parents_missing: tuple[bytes, ...] = ()
    """Parents given up on (``missing_parents = "deliver"``): delivered without them."""
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

    async def deliver(self, message: Message) -> None:
        """Give ``message`` to every messages subscriber, waiting for a full one."""
        for send in list(self._messages):
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                try:
                    send.send_nowait(message)  # the common case: room in the buffer
                except trio.WouldBlock:
                    await send.send(message)  # a slow reader: wait for it

    def deliver_nowait(self, message: Message) -> None:
        """Give an ephemeral ``message`` to every subscriber with room; a full one misses it."""
        for send in self._messages:
            with contextlib.suppress(
                trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
            ):
                send.send_nowait(message)
