"""The store protocol: what the engine keeps durably, and a read-only view of it.

Theory of operation: the engine is the only writer. It wraps every input (a send, a received
payload, a drain) in :meth:`Store.transaction`, so the durable state moves from one consistent
state to the next; a crash loses at most the input in progress, never half of it. The store holds

* messages, in their canonical wire encoding, with their group, parents, expiry and whether the
  application has seen them (consistent delivery holds a message back until its parents are in);
* group membership and each member's mode;
* per-(message, peer) records with their send count and send epoch (the retransmission state);
* the engine's epoch counter, so that schedules resume after a restart.

ACKs, ephemeral messages and the causal frontier are not stored: ACKs are re-sent when a message is
received again, ephemeral messages are by definition not kept, and the frontier is derived from the
stored parents when the engine starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Protocol, final

from mvds_node.sync._state import Record, RecordType

__all__ = ["InboxEntry", "Record", "Store", "StoreReader", "StoreView", "StoredMessage"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A durable message as the store keeps it."""

    id: bytes
    group_id: bytes
    timestamp: int
    wire: bytes
    """The canonical ``Message`` encoding, sent as it is."""
    parents: tuple[bytes, ...]
    expires_at: int = 0
    """Unix milliseconds after which the message is deleted everywhere (0: never)."""
    delivered: bool = True
    """False while consistent delivery holds the message back until its parents are delivered."""
    stored_at: int = 0
    """When it was stored, Unix ms, as the engine knew the wall clock then (0: unknown, or
    stored before schema 3). Read back by ``get_message``; other reads leave it 0."""


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One message of the application's inbox (or of a group's history), as the store keeps it."""

    seq: int
    """Its place in delivery order (0 in a history for a message this node sent)."""
    message_id: bytes
    group_id: bytes
    sender: bytes | None
    """The peer it came from; None when not known (delivered before the store kept it) or, in a
    history, for a message this node sent."""
    message: StoredMessage | None
    """The message; None once it is gone (it expired before the reader reached it)."""
    parents_missing: tuple[bytes, ...] = ()
    """Parents given up on, that it was delivered without."""


class Store(Protocol):
    """Durable engine state. Methods are synchronous and must not block for long."""

    def transaction(self) -> AbstractContextManager[None]:
        """Group the writes of one engine input; commit on success, roll back on error."""
        ...

    # Messages.
    def has_message(self, message_id: bytes) -> bool: ...
    def get_message(self, message_id: bytes) -> StoredMessage | None: ...
    def ids_with_prefix(self, prefix: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` stored message IDs that start with ``prefix``, in order."""
        ...

    def get_wires(self, message_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """Return the wire encoding of each of ``message_ids`` that is stored."""
        ...

    def add_message(self, message: StoredMessage) -> bool:
        """Store ``message``; return False (and change nothing) if it is already stored."""
        ...

    def add_messages(self, messages: Sequence[StoredMessage]) -> bool:
        """Store every one of ``messages`` (distinct IDs), or none of them and return False if
        one is already stored. For a batch of new messages: one call instead of one each."""
        ...

    def delete_message(self, message_id: bytes) -> None:
        """Delete a message and every record about it."""
        ...

    def mark_delivered(self, message_id: bytes) -> None: ...
    def record_delivery(
        self,
        message_id: bytes,
        group_id: bytes,
        sender: bytes,
        parents_missing: tuple[bytes, ...] = (),
    ) -> None:
        """Append a message delivered to the application to the inbox, in the transaction that
        delivers it (so a stored, acknowledged message is never missing from the inbox)."""
        ...

    def undelivered(self) -> list[StoredMessage]:
        """Messages held back by consistent delivery."""
        ...

    def is_parent(self, message_id: bytes) -> bool:
        """Whether some stored, non-expiring message names ``message_id`` as a parent (an
        expiring message is never a parent, so the messages it names stay on the frontier)."""
        ...

    def frontier(self, group_id: bytes) -> list[bytes]:
        """Delivered, non-expiring messages of the group that no stored, non-expiring message
        names as parent."""
        ...

    def expired(self, wall: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages whose expiry is at or before ``wall``."""
        ...

    def recent_ids(self, group_id: bytes, limit: int) -> list[bytes]:
        """IDs of up to ``limit`` of the group's delivered messages, newest stored first."""
        ...

    def request_ids(self) -> list[bytes]:
        """IDs of the messages we have REQUEST records for (read once, at start-up)."""
        ...

    def next_expiry(self) -> int | None: ...
    def message_count(self) -> int: ...

    # Membership.
    def load_groups(self) -> dict[bytes, dict[bytes, str]]:
        """Every group, with its members and the mode name of each."""
        ...

    def put_group(self, group_id: bytes) -> None: ...
    def delete_group(self, group_id: bytes) -> None: ...
    def put_member(self, group_id: bytes, peer: bytes, mode: str) -> None: ...
    def delete_member(self, group_id: bytes, peer: bytes) -> None: ...

    # Records.
    def get_record(self, message_id: bytes, peer: bytes) -> Record | None: ...
    def records_for_message(self, message_id: bytes) -> list[Record]: ...
    def records_for_peer(self, peer: bytes) -> list[Record]: ...
    def get_records(self, message_ids: Iterable[bytes], peer: bytes) -> dict[bytes, Record]:
        """The records for ``peer`` about each of ``message_ids`` that has one."""
        ...

    def put_records(self, records: Iterable[Record]) -> None:
        """Insert or replace records (keyed by message ID and peer)."""
        ...

    def delete_records(self, keys: Iterable[tuple[bytes, bytes]]) -> None: ...
    def delete_acked(
        self, message_ids: Iterable[bytes], peer: bytes, types: frozenset[RecordType]
    ) -> set[bytes]:
        """Delete ``peer``'s records of these ``types`` about ``message_ids`` (what an ACK from
        it ends); return the IDs whose record was deleted."""
        ...

    def due_records(self, epoch: int, limit: int) -> list[Record]:
        """Up to ``limit`` unparked records with ``send_epoch <= epoch``, earliest first."""
        ...

    def min_due_epoch(self) -> int | None:
        """The smallest ``send_epoch`` of an unparked record, or None."""
        ...

    def record_count(self, peer: bytes | None = None) -> int:
        """How many records there are, or with ``peer`` only ``peer``'s (without reading them)."""
        ...

    # Trace facts (see Engine.trace).
    def put_acks(self, acks: Sequence[tuple[bytes, bytes, int, str]]) -> None:
        """Keep ``(message_id, peer, acked_at, via)`` for each acknowledgement that ended a
        record; ``delete_message`` deletes a message's."""
        ...

    def acks_for_message(self, message_id: bytes) -> list[tuple[bytes, int, str]]:
        """``(peer, acked_at, via)`` of each acknowledgement of ``message_id``, by peer."""
        ...

    def put_contacts(self, contacts: Sequence[tuple[bytes, str, int, int]]) -> None:
        """Keep ``(peer, carrier, sent_at, received_at)``, the last contact each way."""
        ...

    def load_contacts(self) -> list[tuple[bytes, str, int, int]]: ...
    def pending(self, peer: bytes, sample: int) -> tuple[int, int, bool]:
        """``peer``'s records and the bytes of the messages among them, and whether those
        bytes are exact: past ``sample`` messages, the oldest ``sample`` are read and the rest
        counted at their mean size. Never reads other peers' records."""
        ...

    # Engine metadata.
    def get_epoch(self) -> int: ...
    def set_epoch(self, epoch: int) -> None: ...
    def close(self) -> None: ...


class StoreReader(Protocol):
    """The reading half of :class:`Store`: what :attr:`Engine.store_view` offers."""

    def has_message(self, message_id: bytes) -> bool: ...
    def get_message(self, message_id: bytes) -> StoredMessage | None: ...
    def ids_with_prefix(self, prefix: bytes, limit: int) -> list[bytes]: ...
    def get_wires(self, message_ids: Iterable[bytes]) -> dict[bytes, bytes]: ...
    def undelivered(self) -> list[StoredMessage]: ...
    def frontier(self, group_id: bytes) -> list[bytes]: ...
    def recent_ids(self, group_id: bytes, limit: int) -> list[bytes]: ...
    def next_expiry(self) -> int | None: ...
    def message_count(self) -> int: ...
    def load_groups(self) -> dict[bytes, dict[bytes, str]]: ...
    def get_record(self, message_id: bytes, peer: bytes) -> Record | None: ...
    def records_for_message(self, message_id: bytes) -> list[Record]: ...
    def records_for_peer(self, peer: bytes) -> list[Record]: ...
    def get_records(self, message_ids: Iterable[bytes], peer: bytes) -> dict[bytes, Record]: ...
    def min_due_epoch(self) -> int | None: ...
    def record_count(self, peer: bytes | None = None) -> int: ...
    def acks_for_message(self, message_id: bytes) -> list[tuple[bytes, int, str]]: ...
    def load_contacts(self) -> list[tuple[bytes, str, int, int]]: ...
    def pending(self, peer: bytes, sample: int) -> tuple[int, int, bool]: ...
    def get_epoch(self) -> int: ...


def _copy(r: Record) -> Record:
    # Every field, whatever fields a Record gains: the view hands out copies, never the
    # store's own objects.
    return replace(r)


@final
class StoreView:
    """A read-only view of an engine's store (a :class:`StoreReader`), for diagnostics and
    tests: what is stored, and each record's state. Records come as copies, so changing one
    changes nothing; nothing here writes."""

    __slots__ = ("_store",)

    def __init__(self, store: Store) -> None:
        self._store = store

    def has_message(self, message_id: bytes) -> bool:
        return self._store.has_message(message_id)

    def get_message(self, message_id: bytes) -> StoredMessage | None:
        return self._store.get_message(message_id)

    def ids_with_prefix(self, prefix: bytes, limit: int) -> list[bytes]:
        return self._store.ids_with_prefix(prefix, limit)

    def get_wires(self, message_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        return self._store.get_wires(message_ids)

    def undelivered(self) -> list[StoredMessage]:
        return self._store.undelivered()

    def frontier(self, group_id: bytes) -> list[bytes]:
        return self._store.frontier(group_id)

    def recent_ids(self, group_id: bytes, limit: int) -> list[bytes]:
        return self._store.recent_ids(group_id, limit)

    def next_expiry(self) -> int | None:
        return self._store.next_expiry()

    def message_count(self) -> int:
        return self._store.message_count()

    def load_groups(self) -> dict[bytes, dict[bytes, str]]:
        return self._store.load_groups()

    def get_record(self, message_id: bytes, peer: bytes) -> Record | None:
        r = self._store.get_record(message_id, peer)
        return None if r is None else _copy(r)

    def records_for_message(self, message_id: bytes) -> list[Record]:
        return [_copy(r) for r in self._store.records_for_message(message_id)]

    def records_for_peer(self, peer: bytes) -> list[Record]:
        return [_copy(r) for r in self._store.records_for_peer(peer)]

    def get_records(self, message_ids: Iterable[bytes], peer: bytes) -> dict[bytes, Record]:
        return {m: _copy(r) for m, r in self._store.get_records(message_ids, peer).items()}

    def min_due_epoch(self) -> int | None:
        return self._store.min_due_epoch()

    def record_count(self, peer: bytes | None = None) -> int:
        return self._store.record_count(peer)

    def acks_for_message(self, message_id: bytes) -> list[tuple[bytes, int, str]]:
        return self._store.acks_for_message(message_id)

    def load_contacts(self) -> list[tuple[bytes, str, int, int]]:
        return self._store.load_contacts()

    def pending(self, peer: bytes, sample: int) -> tuple[int, int, bool]:
        return self._store.pending(peer, sample)

    def get_epoch(self) -> int:
        return self._store.get_epoch()
