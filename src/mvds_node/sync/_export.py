"""Snapshots for one-way carriers: what some peers still need, taken without changing anything.

Theory of operation: a carrier that cannot talk back (a bundle file carried by hand) gets one
chance to take everything a peer lacks, so :func:`take_snapshot` collects every pending record
for the peers, due or not (parked ones too), plus ACKs for what we hold of the groups we share
with them. Nothing changes until the carrier holds the file for sure; then
:meth:`Engine.commit_export` counts the records as transmitted (:func:`exported_records`, the
``EXPORTED`` input of ``_state.py``). A snapshot keeps message IDs and sizes, not bodies:
:class:`SnapshotMessages` reads the bodies from the store a slice at a time, so a bundle of a
thousand 1 MB messages is written with one payload's worth in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Final, final, overload

from mvds_node.sync._config import Limits
from mvds_node.sync._state import Input, Record, RecordType, step
from mvds_node.sync._wire import decode_stored
from mvds_node.sync.store._protocol import Store

__all__ = ["ExportSnapshot", "SnapshotMessages", "exported_records", "take_snapshot"]

_REQUEST: Final = RecordType.REQUEST

_EXPORT_CHUNK: Final = 256
"""Messages read from the store at once while a snapshot is taken or its messages are read."""


@final
class SnapshotMessages(Sequence[bytes]):
    """The wire encodings of a snapshot's messages, read from the store when asked for.

    A snapshot holds the IDs and sizes only, so exporting thousands of large messages never
    holds them in memory at once: a carrier asks for a slice (one payload's worth) at a time.
    Read them before anything deletes messages from the store (a message gone meanwhile, by
    expiry, is left out of the slice that names it).
    """

    __slots__ = ("_store", "ids", "sizes")

    def __init__(self, store: Store, ids: tuple[bytes, ...], sizes: tuple[int, ...]) -> None:
        self._store = store
        self.ids = ids
        """Message IDs, parents before their children."""
        self.sizes = sizes
        """The length of each wire encoding, to cut payloads before reading them."""

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            ids = self.ids[index]
            found = self._store.get_wires(ids)
            return [found[i] for i in ids if i in found]
        mid = self.ids[index]
        wire = self._store.get_wires([mid]).get(mid)
        if wire is None:
            raise LookupError(f"message {mid.hex()[:16]} is no longer in the store")
        return wire

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.ids), _EXPORT_CHUNK):
            yield from self[start : start + _EXPORT_CHUNK]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SnapshotMessages):
            return self.ids == other.ids
        if isinstance(other, tuple | list):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SnapshotMessages({len(self.ids)} messages, {sum(self.sizes)} bytes)"


@final
@dataclass(frozen=True, slots=True)
class ExportSnapshot:
    """What some peers still need from us, taken for a one-way carrier (a bundle file).

    Taking it changes nothing; :meth:`Engine.commit_export` marks it sent once the carrier holds
    it for sure (the file is complete and on disk). Dropping it is the abort.
    """

    peers: tuple[bytes, ...]
    messages: SnapshotMessages
    """Wire encodings of the messages the peers lack (full messages, whatever the mode: a
    one-way carrier cannot wait for a REQUEST), read from the store a slice at a time."""
    requests: tuple[bytes, ...]
    """IDs we are asking these peers for."""
    acks: dict[bytes, tuple[bytes, ...]]
    """Per peer, the IDs we acknowledge to it."""
    prerequisites: tuple[bytes, ...]
    """Parents of included messages that are not included: the reader should have them."""
    records: tuple[Record, ...]


def take_snapshot(
    store: Store,
    peers: tuple[bytes, ...],
    peer_groups: Mapping[bytes, Set[bytes]],
    queued_acks: Mapping[bytes, tuple[bytes, ...]],
    limits: Limits,
) -> ExportSnapshot:
    """What ``peers`` (distinct) still need from us: every record for them, the bodies of the
    messages those name (by ID and size), and ACKs: ``queued_acks`` (waiting for each peer in
    memory) and the newest messages of the groups ``peer_groups`` says it shares with us."""
    records: list[Record] = []
    for peer in peers:
        records.extend(store.records_for_peer(peer))
    # Records are kept in creation order, so parents come before their children. The
    # bodies are read a chunk at a time and let go: the snapshot keeps IDs and sizes.
    wanted = list(dict.fromkeys(r.message_id for r in records if r.type is not _REQUEST))
    sizes: dict[bytes, int] = {}
    prerequisites: dict[bytes, None] = {}
    for start in range(0, len(wanted), _EXPORT_CHUNK):
        chunk = wanted[start : start + _EXPORT_CHUNK]
        found = store.get_wires(chunk)
        for mid in chunk:
            wire = found.get(mid)
            if wire is None:
                continue
            sizes[mid] = len(wire)
            for p in decode_stored(wire).parents:
                if p not in sizes:
                    prerequisites[p] = None
    for mid in sizes:  # a parent named before it was seen (not in creation order)
        prerequisites.pop(mid, None)
    included = sizes.keys()
    # ACK what we have of the groups we share with them: the ACK queue lives in memory, and
    # a reader of a file cannot ask. An ACK for a message the peer did not send is ignored.
    acks: dict[bytes, tuple[bytes, ...]] = {}
    for peer in peers:
        ids = dict.fromkeys(queued_acks.get(peer, ()))
        for group in peer_groups.get(peer, ()):
            ids.update(dict.fromkeys(store.recent_ids(group, limits.max_pending_acks)))
        for mid in included:
            ids.pop(mid, None)
        if ids:
            acks[peer] = tuple(ids)
    return ExportSnapshot(
        peers=peers,
        messages=SnapshotMessages(store, tuple(sizes), tuple(sizes.values())),
        requests=tuple(dict.fromkeys(r.message_id for r in records if r.type is _REQUEST)),
        acks=acks,
        prerequisites=tuple(prerequisites),
        records=tuple(records),
    )


def exported_records(
    store: Store, snapshot: ExportSnapshot, *, epoch: int, due: int
) -> list[Record]:
    """The snapshot's records as counted once it went out in ``epoch``, next due no earlier
    than ``due``; records that changed meanwhile (acknowledged, say) are left as they are."""
    updates = []
    for r in snapshot.records:
        current = store.get_record(r.message_id, r.peer)
        if current is None or current.type is not r.type:
            continue
        updates.append(step(current, Input.EXPORTED, epoch=epoch, due=due))
    return updates
