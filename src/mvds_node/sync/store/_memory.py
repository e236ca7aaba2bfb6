"""The in-memory store: :class:`MemoryStore`, for tests, the simulator and nodes that need no
durability. It does no I/O; its semantics define what :class:`~mvds_node.sync.SQLiteStore` keeps.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import final

from mvds_node.sync._state import Record, RecordType
from mvds_node.sync.store._protocol import StoredMessage

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """A :class:`Store` in memory, for tests, the simulator and nodes that need no durability.

    Records are returned by reference; the engine writes them back with ``put_records``, which is
    when the due index learns their new send epoch.
    """

    def __init__(self, *, inbox: bool = True) -> None:
        self._keep_inbox = inbox
        self._messages: dict[bytes, StoredMessage] = {}
        self._parent_refs: dict[bytes, int] = {}  # parent -> children that do not expire
        self._groups: dict[bytes, dict[bytes, str]] = {}
        self._records: dict[tuple[bytes, bytes], Record] = {}
        self._by_message: dict[bytes, set[bytes]] = {}
        # Due index: epoch -> keys due then, plus a heap of epochs (lazily cleaned).
        self._indexed: dict[tuple[bytes, bytes], int] = {}
        self._buckets: dict[int, dict[tuple[bytes, bytes], None]] = {}
        self._heap: list[int] = []
        self._acks: dict[bytes, dict[bytes, tuple[int, str]]] = {}
        self._contacts: dict[tuple[bytes, str], tuple[int, int]] = {}
        self._epoch = 0
        self._closed = False
        self.inbox: list[tuple[bytes, bytes, bytes]] = []
        """(message ID, group, sender) of every delivered message, in delivery order (kept
        unless ``inbox=False``: the simulator, whose application is itself, keeps none)."""

    @contextmanager
    def _txn(self) -> Iterator[None]:
        yield

    def transaction(self) -> AbstractContextManager[None]:
        return self._txn()

    # Messages.
    def has_message(self, message_id: bytes) -> bool:
        return message_id in self._messages

    def get_message(self, message_id: bytes) -> StoredMessage | None:
        return self._messages.get(message_id)

    def ids_with_prefix(self, prefix: bytes, limit: int) -> list[bytes]:
        return sorted(m for m in self._messages if m.startswith(prefix))[:limit]

    def get_wires(self, message_ids: Iterable[bytes]) -> dict[bytes, bytes]:
        messages = self._messages
        return {i: messages[i].wire for i in message_ids if i in messages}

    def add_message(self, message: StoredMessage) -> bool:
        if message.id in self._messages:
            return False
        self._messages[message.id] = message
        if not message.expires_at:  # an expiring message is never a parent: it names none
            refs = self._parent_refs
            for p in message.parents:
                refs[p] = refs.get(p, 0) + 1
        return True

    def add_messages(self, messages: Sequence[StoredMessage]) -> bool:
        stored = self._messages
        if any(m.id in stored for m in messages):
            return False
        for m in messages:
            self.add_message(m)
        return True

    def delete_message(self, message_id: bytes) -> None:
        message = self._messages.pop(message_id, None)
        if message is not None and not message.expires_at:
            for p in message.parents:
                left = self._parent_refs.get(p, 0) - 1
                if left > 0:
                    self._parent_refs[p] = left
                else:
                    self._parent_refs.pop(p, None)
        peers = self._by_message.get(message_id, ())
        self.delete_records([(message_id, peer) for peer in list(peers)])
        self._acks.pop(message_id, None)

    def mark_delivered(self, message_id: bytes) -> None:
        message = self._messages.get(message_id)
        if message is not None and not message.delivered:
            self._messages[message_id] = replace(message, delivered=True)

    def record_delivery(
        self,
        message_id: bytes,
        group_id: bytes,
        sender: bytes,
        parents_missing: tuple[bytes, ...] = (),
    ) -> None:
        if self._keep_inbox:
            self.inbox.append((message_id, group_id, sender))

    def undelivered(self) -> list[StoredMessage]:
        return [m for m in self._messages.values() if not m.delivered]

    def is_parent(self, message_id: bytes) -> bool:
        # The counts cover the children that do not expire (only those make a parent).
        return message_id in self._parent_refs

    def frontier(self, group_id: bytes) -> list[bytes]:
        refs = self._parent_refs  # counts only children that do not expire
        return sorted(
            m.id
            for m in self._messages.values()
            if m.group_id == group_id and m.delivered and not m.expires_at and m.id not in refs
        )

    def request_ids(self) -> list[bytes]:
        return list(
            dict.fromkeys(
                r.message_id for r in self._records.values() if r.type is RecordType.REQUEST
            )
        )

    def recent_ids(self, group_id: bytes, limit: int) -> list[bytes]:
        out: list[bytes] = []
        for m in reversed(self._messages.values()):
            if len(out) >= limit:
                break
            if m.group_id == group_id and m.delivered:
                out.append(m.id)
        return out

    def expired(self, wall: int, limit: int) -> list[StoredMessage]:
        found = [m for m in self._messages.values() if m.expires_at and m.expires_at <= wall]
        found.sort(key=lambda m: m.expires_at)
        return found[:limit]

    def next_expiry(self) -> int | None:
        return min((m.expires_at for m in self._messages.values() if m.expires_at), default=None)

    def message_count(self) -> int:
        return len(self._messages)

    # Membership.
    def load_groups(self) -> dict[bytes, dict[bytes, str]]:
        return {g: dict(members) for g, members in self._groups.items()}

    def put_group(self, group_id: bytes) -> None:
        self._groups.setdefault(group_id, {})

    def delete_group(self, group_id: bytes) -> None:
        self._groups.pop(group_id, None)

    def put_member(self, group_id: bytes, peer: bytes, mode: str) -> None:
        self._groups.setdefault(group_id, {})[peer] = mode

    def delete_member(self, group_id: bytes, peer: bytes) -> None:
        self._groups.get(group_id, {}).pop(peer, None)

    # Records.
    def get_record(self, message_id: bytes, peer: bytes) -> Record | None:
        return self._records.get((message_id, peer))

    def records_for_message(self, message_id: bytes) -> list[Record]:
        records = self._records
        return [records[(message_id, p)] for p in self._by_message.get(message_id, ())]

    def get_records(self, message_ids: Iterable[bytes], peer: bytes) -> dict[bytes, Record]:
        records = self._records
        out = {}
        for mid in message_ids:
            r = records.get((mid, peer))
            if r is not None:
                out[mid] = r
        return out

    def records_for_peer(self, peer: bytes) -> list[Record]:
        return [r for r in self._records.values() if r.peer == peer]

    def _unindex(self, key: tuple[bytes, bytes]) -> None:
        old = self._indexed.pop(key, None)
        if old is not None:
            bucket = self._buckets[old]
            del bucket[key]
            if not bucket:
                del self._buckets[old]

    def put_records(self, records: Iterable[Record]) -> None:
        store = self._records
        by_message = self._by_message
        indexed = self._indexed
        buckets = self._buckets
        for r in records:
            key = (r.message_id, r.peer)
            store[key] = r
            peers = by_message.get(r.message_id)
            if peers is None:
                by_message[r.message_id] = {r.peer}
            else:
                peers.add(r.peer)
            new = None if r.parked else r.send_epoch
            old = indexed.get(key)
            if old == new:
                continue
            if old is not None:
                self._unindex(key)
            if new is not None:
                indexed[key] = new
                bucket = buckets.get(new)
                if bucket is None:
                    buckets[new] = {key: None}
                    heapq.heappush(self._heap, new)
                else:
                    bucket[key] = None

    def delete_records(self, keys: Iterable[tuple[bytes, bytes]]) -> None:
        for key in keys:
            if self._records.pop(key, None) is None:
                continue
            self._unindex(key)
            peers = self._by_message.get(key[0])
            if peers is not None:
                peers.discard(key[1])
                if not peers:
                    del self._by_message[key[0]]

    def delete_acked(
        self, message_ids: Iterable[bytes], peer: bytes, types: frozenset[RecordType]
    ) -> set[bytes]:
        records = self._records
        done = set()
        for mid in message_ids:
            r = records.get((mid, peer))
            if r is not None and r.type in types:
                done.add(mid)
        self.delete_records([(mid, peer) for mid in done])
        return done

    def _clean_heap(self) -> None:
        heap = self._heap
        while heap and heap[0] not in self._buckets:
            heapq.heappop(heap)

    def due_records(self, epoch: int, limit: int) -> list[Record]:
        self._clean_heap()
        out: list[Record] = []
        records = self._records
        # Walk the buckets in epoch order without disturbing the heap.
        for e in sorted(e for e in self._buckets if e <= epoch):
            for key in self._buckets[e]:
                out.append(records[key])
                if len(out) >= limit:
                    return out
        return out

    def min_due_epoch(self) -> int | None:
        self._clean_heap()
        return self._heap[0] if self._heap else None

    def record_count(self, peer: bytes | None = None) -> int:
        if peer is None:
            return len(self._records)
        return sum(1 for r in self._records.values() if r.peer == peer)

    # Trace facts.
    def put_acks(self, acks: Sequence[tuple[bytes, bytes, int, str]]) -> None:
        for mid, peer, at, via in acks:
            self._acks.setdefault(mid, {})[peer] = (at, via)

    def acks_for_message(self, message_id: bytes) -> list[tuple[bytes, int, str]]:
        acks = self._acks.get(message_id, {})
        return [(peer, *acks[peer]) for peer in sorted(acks)]

    def put_contacts(self, contacts: Sequence[tuple[bytes, str, int, int]]) -> None:
        for peer, carrier, sent_at, received_at in contacts:
            self._contacts[(peer, carrier)] = (sent_at, received_at)

    def load_contacts(self) -> list[tuple[bytes, str, int, int]]:
        return [(p, c, s, r) for (p, c), (s, r) in self._contacts.items()]

    def pending(self, peer: bytes, sample: int) -> tuple[int, int, bool]:
        count = size = read = kinds = 0
        messages = self._messages
        for r in self._records.values():
            if r.peer == peer:
                count += 1
                if r.type is RecordType.MESSAGE:
                    kinds += 1
                    if read < sample and (m := messages.get(r.message_id)):
                        size += len(m.wire)
                        read += 1
        if kinds <= sample:
            return count, size, True
        return count, size * kinds // max(1, read), False

    # Engine metadata.
    def get_epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def close(self) -> None:
        self._closed = True
