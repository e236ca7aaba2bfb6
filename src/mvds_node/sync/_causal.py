"""Causal tracking: each group's frontier, missing parents, held messages and delivery order.

Theory of operation: a new message names as parents its group's *frontier*, the delivered
messages no stored message names yet (at most ``Limits.max_parents`` of them, the smallest IDs,
so the choice is deterministic). The frontier is kept incrementally, never by scanning the
store: a delivered message joins it unless it expires or a stored message already names it,
and the parents it names leave it. Ephemeral and expiring messages are never parents.

In consistent delivery a message whose parents are not all delivered is *held*: stored and
acknowledged, not delivered. :attr:`Causal.missing` counts, per held message, the parents it
still waits for, and :attr:`Causal.waiting` lists, per missing parent, the messages waiting
for it; delivering a message releases the held messages that waited only for it, parents
before children, in the order they were held. A parent given up on (no REQUEST for it left)
is remembered for a while so that naming it again asks nothing, and with
``MissingParents.DELIVER`` the messages that waited for it are delivered, marked.

The engine decides what to ask for and owns the records; this module only tracks what is held
and queues the deliveries as the engine's events.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from heapq import nsmallest
from typing import TYPE_CHECKING, final

from mvds_node.sync._config import MissingParents, SyncConfig
from mvds_node.sync._events import Event, MessageDelivered
from mvds_node.sync._wire import decode_stored
from mvds_node.sync.store._protocol import Store, StoredMessage

if TYPE_CHECKING:
    from mvds_node.sync._engine import Counters

__all__ = ["Causal"]

_Delivery = tuple[bytes, bytes, int, bytes, tuple[bytes, ...], bytes, int, bool]
"""What :meth:`Causal.deliver` takes: id, group, timestamp, body, parents, sender, expiry, held."""


@final
class Causal:
    """The causal state of every group, kept beside the store (see the module docstring).

    Args:
        store: where messages are kept (read, and marked delivered).
        config: the engine's configuration.
        stats: the engine's statistics (deliveries counted in place).
        push: queues an event (each delivery, in delivery order).
    """

    __slots__ = (
        "_cfg",
        "_push",
        "_stats",
        "_store",
        "abandoned",
        "abandoned_for",
        "frontier",
        "held_sender",
        "missing",
        "waiting",
    )

    def __init__(
        self,
        store: Store,
        config: SyncConfig,
        stats: Counters,
        push: Callable[[Event], None],
    ) -> None:
        self._store = store
        self._cfg = config
        self._stats = stats
        self._push = push
        self.frontier: dict[bytes, dict[bytes, None]] = {}
        """Per group, its messages without children (an ordered set)."""
        self.missing: dict[bytes, int] = {}
        """Held message -> how many of its parents it still waits for."""
        self.waiting: dict[bytes, list[bytes]] = {}
        """Missing parent -> the held messages waiting for it, in the order they were held."""
        self.held_sender: dict[bytes, bytes] = {}
        """Held message -> the peer it came from, for its delivery."""
        self.abandoned_for: dict[bytes, list[bytes]] = {}
        """Held message -> the parents given up on for it (``MissingParents.DELIVER``)."""
        self.abandoned: dict[bytes, None] = {}
        """Parents given up on lately (``Limits.abandoned_parents_window``), oldest first."""

    # ------------------------------------------------------------- frontier

    def load_frontier(self, group_id: bytes) -> None:
        """Take the group's frontier from the store (a group added, or a rollback)."""
        self.frontier[group_id] = dict.fromkeys(self._store.frontier(group_id))

    def drop_group(self, group_id: bytes) -> None:
        self.frontier.pop(group_id, None)

    def choose_parents(self, group_id: bytes) -> tuple[bytes, ...]:
        """The parents of the group's next message: its frontier, at most
        ``Limits.max_parents`` of it (the smallest IDs, so the choice is deterministic)."""
        frontier = self.frontier[group_id]
        cap = self._cfg.limits.max_parents
        # A partial sort when the frontier is wide (many concurrent messages), where a full
        # sort per send would cost.
        return tuple(sorted(frontier)) if len(frontier) <= cap else tuple(nsmallest(cap, frontier))

    def sent(self, group_id: bytes, parents: tuple[bytes, ...], last: bytes) -> None:
        """Our own messages, the first naming ``parents`` and ``last`` the newest, were stored:
        ``last`` replaces the parents in the frontier."""
        frontier = self.frontier[group_id]
        for p in parents:
            frontier.pop(p, None)
        frontier[last] = None

    def held_parents(self, group_id: bytes, parents: tuple[bytes, ...]) -> list[bytes]:
        """Which of ``parents`` a new message of the group must wait for in consistent
        delivery: those neither delivered nor stored."""
        frontier = self.frontier[group_id]
        missing = self.missing
        store = self._store
        # A parent in the frontier is stored and delivered: no query needed for the common
        # case of a message whose parent is the one before it.
        return [
            p for p in parents if p not in frontier and (p in missing or not store.has_message(p))
        ]

    def hold(self, message_id: bytes, sender: bytes, parents: list[bytes]) -> None:
        """Hold ``message_id`` (from ``sender``) until ``parents`` are delivered."""
        self.held_sender[message_id] = sender
        self.missing[message_id] = len(parents)
        for p in parents:
            self.waiting.setdefault(p, []).append(message_id)

    def forget(self, m: StoredMessage) -> None:
        """``m`` left the store (it expired)."""
        frontier = self.frontier.get(m.group_id)
        if frontier is not None:
            frontier.pop(m.id, None)
        self.missing.pop(m.id, None)
        self.waiting.pop(m.id, None)
        self.held_sender.pop(m.id, None)
        self.abandoned_for.pop(m.id, None)

    def reload(self, requests: Container[bytes]) -> None:
        """The store rolled back: take the held messages from it again (the senders of those
        still held are kept)."""
        senders = self.held_sender
        self.missing = {}
        self.waiting = {}
        self.abandoned_for = {}
        self.restore_held(requests)
        self.held_sender = {m: p for m, p in senders.items() if m in self.missing}

    # ------------------------------------------------------------- delivery

    def release_children(self, parent: bytes) -> None:
        """``parent`` was delivered outside ``deliver`` (it came ephemeral) or given up on:
        deliver the held messages that waited only for it."""
        for child in self.ready_children(parent):
            self.deliver_held(child)

    def ready_children(self, parent: bytes) -> list[bytes]:
        """Count ``parent`` as no longer missing; return the held children now ready, in the
        order they were held."""
        children = self.waiting.pop(parent, None)
        if not children:
            return []
        ready = []
        missing = self.missing
        for child in children:
            left = missing.get(child)
            if left is None:
                continue
            if left > 1:
                missing[child] = left - 1
                continue
            del missing[child]
            ready.append(child)
        return ready

    def deliver_held(self, child: bytes) -> None:
        held = self.held_delivery(child)
        if held is not None:
            self.deliver(*held)

    def held_delivery(self, child: bytes) -> _Delivery | None:
        """The arguments of :meth:`deliver` for a held message, read back from the store."""
        stored = self._store.get_message(child)
        if stored is None:
            return None
        c = decode_stored(stored.wire)
        return (
            child,
            stored.group_id,
            stored.timestamp,
            c.body,
            stored.parents,
            self.held_sender.pop(child, b""),
            stored.expires_at,
            True,
        )

    def give_up_parent(self, parent: bytes) -> None:
        """No REQUEST for the missing ``parent`` is left: remember it (so that naming it again
        does not renew the asking) and, with ``MissingParents.DELIVER``, deliver the held
        messages that waited only for it, marked."""
        abandoned = self.abandoned
        abandoned[parent] = None
        if len(abandoned) > self._cfg.limits.abandoned_parents_window:
            del abandoned[next(iter(abandoned))]
        if self._cfg.missing_parents is not MissingParents.DELIVER or parent not in self.waiting:
            return
        for child in self.waiting.get(parent, ()):
            if child in self.missing:
                self.abandoned_for.setdefault(child, []).append(parent)
        self.release_children(parent)

    def deliver(
        self,
        mid: bytes,
        group_id: bytes,
        timestamp: int,
        body: bytes,
        parents: tuple[bytes, ...],
        sender: bytes,
        expires_at: int,
        was_held: bool,
        *,
        maybe_parent: bool = True,
    ) -> None:
        """Hand a message to the app, then every held message that was waiting only for it.

        ``maybe_parent=False`` says no stored message can name this one as a parent yet (it
        was neither requested nor named earlier in its payload), which saves a query.
        """
        stack: list[_Delivery] = [
            (mid, group_id, timestamp, body, parents, sender, expires_at, was_held)
        ]
        first = True
        store = self._store
        abandoned_for = self.abandoned_for
        while stack:
            mid, group_id, timestamp, body, parents, sender, expires_at, was_held = stack.pop()
            if was_held:
                store.mark_delivered(mid)
            frontier = self.frontier.get(group_id)
            if frontier is not None:
                if not expires_at:  # an expiring child is never a parent: its parents stay
                    for p in parents:
                        frontier.pop(p, None)
                check = maybe_parent or not first
                if not expires_at and not (check and store.is_parent(mid)):
                    frontier[mid] = None
            first = False
            gone = tuple(abandoned_for.pop(mid, ())) if abandoned_for else ()
            # In the same transaction: a delivered message is in the application's inbox.
            store.record_delivery(mid, group_id, sender, gone)
            self._stats.messages_delivered += 1
            self._push(
                MessageDelivered(
                    mid, group_id, timestamp, body, parents, False, sender, expires_at, gone
                )
            )
            ready = self.ready_children(mid)
            # Reverse so that the first-held child is delivered first.
            for child in reversed(ready):
                held = self.held_delivery(child)
                if held is not None:
                    stack.append(held)

    def restore_held(self, requests: Container[bytes]) -> None:
        """Rebuild consistent delivery's waiting lists from the held messages in the store (at
        start-up, and after a rollback), with ``requests`` the IDs we still ask for; deliver
        those whose parents all came before a crash cut their delivery short."""
        store = self._store
        held = store.undelivered()
        held_ids = {m.id for m in held}
        give_up = self._cfg.missing_parents is MissingParents.DELIVER
        for m in held:
            missing = [p for p in m.parents if p in held_ids or not store.has_message(p)]
            if give_up:
                # A parent nobody is asked for any more was given up on before the restart.
                gone = [p for p in missing if p not in held_ids and p not in requests]
                if gone:
                    self.abandoned_for[m.id] = gone
                    missing = [p for p in missing if p not in gone]
            if missing:
                self.missing[m.id] = len(missing)
                for p in missing:
                    self.waiting.setdefault(p, []).append(m.id)
        for m in held:
            if m.id not in self.missing:
                # All parents arrived (or were given up on) before a crash cut the delivery
                # short.
                c = decode_stored(m.wire)
                self.deliver(
                    m.id, m.group_id, m.timestamp, c.body, m.parents, b"", m.expires_at, True
                )
