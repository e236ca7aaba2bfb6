"""Acknowledgements through the remote log, without I/O: publishing positions, reading them back.

Theory of operation
-------------------
A reader of a writer's log says how far it has read it in its own *acknowledgement record*, an NS
record next to its log (:func:`~mvds_node.remotelog._format.acks_name`): per writer whose log it
reads, the head sequence it has read completely. A writer that reads that record acknowledges, as
from that reader, every message it published in the heads the reader's position passed since the
last record it read; so a writer stops retransmitting what a reader holds even if the two never
meet.

:class:`AckRecords` is one group's side of this for one node, in the manner of h11: the caller
does the I/O (NS fetches and updates) and hands the bytes in; the core decides and hands back
what to publish or which IDs to acknowledge. It keeps in memory only what a restart may lose (the
sequence of the last record read from each member, and whether a member publishes positions at
all); what must survive a restart goes to a :class:`PublishedLedger`: which message went out in
which of our heads, and up to which head each member's acknowledgements were fed. The node keeps
its ledger in SQLite, the simulator and the tests in a :class:`MemoryLedger`.

The two formats of a record are both read: positions (the current format, an odd length) and
the old bare list of message IDs, which are acknowledged as they are. A record may be sealed with
the group key, so that a helper stores only ciphertext; it is always signed by its publisher.

Publishing::

    if records.needs_sequence:
        records.resume(await backend.ns_fetch(records.name))
    pending = records.record_for(positions)
    if pending is not None:
        await backend.ns_update(records.name, pending.record)
        records.published(pending)

Reading a member's record::

    if records.wants_record(member):
        record = await backend.ns_fetch(records.record_name(member))
        if record is not None:
            ids = records.read_record(member, record)   # then feed ack_payloads(ids)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.errors import LocalProtocolError
from mvds_node.remotelog._format import (
    MAX_SEQ,
    LogError,
    acks_name,
    decode_acks,
    encode_acks,
    open_head,
    public_key,
    seal,
    sign_head,
    unseal,
)
from mvds_node.sync import encode_payload

__all__ = [
    "ACK_CHUNK",
    "MAX_PUBLISHED",
    "AckRecords",
    "MemoryLedger",
    "PendingRecord",
    "PublishedLedger",
    "ack_payloads",
]

MAX_PUBLISHED: Final = 100_000
"""IDs of our published messages kept per group when some member never publishes a position
(the oldest go first; those messages are then acknowledged by sync only)."""
ACK_CHUNK: Final = 50_000
"""IDs per ACK payload handed to the engine: 1.6 MB, within its payload limit (4 MiB)."""


class PublishedLedger(Protocol):
    """The durable half of one group's acknowledgement state.

    ``member`` is whatever the caller names a member by (the node: its X25519 key). Calls that
    change the ledger come in the groups a transaction should hold: :meth:`AckRecords.uploaded`
    (``add``, ``keep_newest``) and :meth:`AckRecords.read_record` (``set_acked_through``,
    ``forget_through``); the caller wraps each call in a transaction if its ledger has them.
    """

    def add(self, seq: int, ids: Sequence[bytes]) -> None:
        """``ids`` went out in our head at sequence ``seq``."""

    def keep_newest(self, count: int) -> None:
        """Forget the oldest heads while more than about ``count`` IDs are kept."""

    def newest(self) -> int:
        """The newest head sequence holding a kept ID (0: none)."""

    def ids_between(self, after: int, through: int) -> list[bytes]:
        """The IDs that went out in heads ``after < seq <= through``."""

    def forget_through(self, seq: int) -> None:
        """Forget the heads up to ``seq`` (every member has read past them)."""

    def acked_through(self, member: bytes) -> int:
        """Up to which of our heads ``member``'s acknowledgements were fed (0: none)."""

    def set_acked_through(self, member: bytes, seq: int) -> None: ...


@final
class MemoryLedger:
    """A :class:`PublishedLedger` in memory (the simulator, tests)."""

    __slots__ = ("_acked", "_heads", "_size")

    def __init__(self) -> None:
        self._heads: list[tuple[int, tuple[bytes, ...]]] = []
        """(head sequence, IDs that went out in it), oldest first."""
        self._size = 0
        self._acked: dict[bytes, int] = {}

    def add(self, seq: int, ids: Sequence[bytes]) -> None:
        if ids:
            self._heads.append((seq, tuple(ids)))
            self._size += len(ids)

    def keep_newest(self, count: int) -> None:
        while self._size > count:
            _, ids = self._heads.pop(0)
            self._size -= len(ids)

    def newest(self) -> int:
        return self._heads[-1][0] if self._heads else 0

    def ids_between(self, after: int, through: int) -> list[bytes]:
        return [mid for seq, ids in self._heads if after < seq <= through for mid in ids]

    def forget_through(self, seq: int) -> None:
        while self._heads and self._heads[0][0] <= seq:
            self._size -= len(self._heads.pop(0)[1])

    def acked_through(self, member: bytes) -> int:
        return self._acked.get(member, 0)

    def set_acked_through(self, member: bytes, seq: int) -> None:
        self._acked[member] = seq

    def __len__(self) -> int:
        """IDs kept."""
        return self._size


@final
@dataclass(frozen=True, slots=True)
class PendingRecord:
    """Our acknowledgement record, signed, to put at :attr:`AckRecords.name`; hand it back to
    :meth:`AckRecords.published` once the NS took it."""

    record: bytes
    seq: int
    positions: Mapping[bytes, int]


@final
class AckRecords:
    """One group's acknowledgement records for one node: ours to publish, our members' to read.

    Args:
        signing: our log's signing key (the record is signed like a head).
        group_id: the group.
        readers: member -> that member's log key, for every member whose log we read (and whose
            record we read back).
        ledger: where our published heads and the members' acknowledged positions are kept.
        group_key: seal our record with it (and open sealed records of members); None: plain.
        seq: the sequence of our record in the NS now, when known (0 for a fresh log); None to
            learn it first (:attr:`needs_sequence`).
        max_published: IDs the ledger keeps at most (:data:`MAX_PUBLISHED`).
    """

    __slots__ = (
        "_group_id",
        "_group_key",
        "_known",
        "_last",
        "_ledger",
        "_log_key",
        "_max_published",
        "_members",
        "_readers",
        "_seen",
        "_seq",
        "_signing",
        "name",
    )

    def __init__(
        self,
        *,
        signing: Ed25519PrivateKey,
        group_id: bytes,
        readers: Mapping[bytes, bytes],
        ledger: PublishedLedger,
        group_key: bytes | None = None,
        seq: int | None = None,
        max_published: int = MAX_PUBLISHED,
    ) -> None:
        self._signing = signing
        self._group_id = group_id
        self._log_key = public_key(signing)
        self._readers = dict(readers)
        self._members = frozenset([self._log_key, *self._readers.values()])
        self._ledger = ledger
        self._group_key = group_key
        self._seq = seq
        self._max_published = max_published
        self._last: Mapping[bytes, int] | None = None
        self._seen: dict[bytes, int] = {}
        """Member -> the sequence of its last record read."""
        self._known: set[bytes] = set()
        """Members seen publishing positions: their record is read only while some message we
        published awaits their acknowledgement."""
        self.name: Final = acks_name(self._log_key, group_id)
        """The NS name of our record."""

    # ---------------------------------------------------------------- publishing

    @property
    def needs_sequence(self) -> bool:
        """Whether the sequence of our record in the NS is unknown: fetch it and call
        :meth:`resume` before :meth:`record_for`."""
        return self._seq is None

    def resume(self, record: bytes | None) -> None:
        """Take the sequence of our record as the NS holds it (``None``: there is none).

        Raises:
            LogError: the record there is not ours, or malformed.
        """
        self._seq = open_head(record, self.name, self._log_key).seq if record is not None else 0

    def record_for(self, positions: Mapping[bytes, int]) -> PendingRecord | None:
        """Our record saying we have read each writer's log (log key) up to ``positions``, or
        None when there is nothing to say (no positions, or those last published).

        Raises:
            LocalProtocolError: the sequence is unknown (see :attr:`needs_sequence`).
            LogError: our record is at its last sequence (:data:`MAX_SEQ`).
        """
        if self._seq is None:
            raise LocalProtocolError(f"{self.name}: resume() first: the sequence is unknown")
        if not positions or self._last == positions:
            return None
        data = encode_acks(dict(positions))
        if self._group_key is not None:
            data = seal(self._group_key, data)
        seq = self._seq + 1
        if seq > MAX_SEQ:  # readers refuse a sequence their store cannot hold
            raise LogError(f"{self.name}: the record is at its last sequence ({MAX_SEQ})")
        record = sign_head(self._signing, self.name, seq, data, self._group_key is not None)
        return PendingRecord(record, seq, dict(positions))

    def published(self, pending: PendingRecord) -> None:
        """The NS took ``pending``: the next record goes after it."""
        self._seq = pending.seq
        self._last = pending.positions

    def uploaded(self, seq: int, ids: Sequence[bytes]) -> None:
        """Our messages ``ids`` went out in our log's head at sequence ``seq``: remember them
        until every member's position passes ``seq``."""
        self._ledger.add(seq, ids)
        self._ledger.keep_newest(self._max_published)

    # ------------------------------------------------------------------- reading

    def record_name(self, member: bytes) -> str:
        """The NS name of ``member``'s record."""
        return acks_name(self._readers[member], self._group_id)

    def wants_record(self, member: bytes) -> bool:
        """Whether ``member``'s record is worth fetching: always until it has been seen to
        publish positions, then only while a message we published awaits its acknowledgement.
        """
        if member not in self._known:
            return True
        return self._ledger.newest() > self._ledger.acked_through(member)

    def read_record(self, member: bytes, record: bytes) -> list[bytes]:
        """The IDs to acknowledge as from ``member``, given its record as the NS holds it.

        A record of the current format acknowledges what we published in the heads its
        position for our log passed since the last record read; a position that went back (the
        member lost its state) is taken as it is: what it reads again is acknowledged again,
        which is harmless. A record of the old format acknowledges the IDs it holds. A record
        not newer than the last one read gives nothing.

        Raises:
            LogError: a record that is forged, sealed without our key, or malformed (too long,
                unknown version, entries out of order); nothing changes. Entries for logs of
                writers we do not know are skipped.
        """
        name = self.record_name(member)
        head = open_head(record, name, self._readers[member])
        if head.seq <= self._seen.get(member, 0):
            return []
        data = head.log
        if head.sealed:
            if self._group_key is None:
                raise LogError(f"{name}: sealed and we have no key")
            data = unseal(self._group_key, data, name)
        acks = decode_acks(data, name, members=self._members)
        self._seen[member] = head.seq
        if len(data) % 2:  # positions (a record of the old format has an even length)
            self._known.add(member)
        ids = list(acks.ids)
        position = acks.positions.get(self._log_key)
        if position is not None:
            last = self._ledger.acked_through(member)
            if position > last:
                ids += self._ledger.ids_between(last, position)
            self._ledger.set_acked_through(member, position)
            floor = min(self._ledger.acked_through(m) for m in self._readers)
            if floor > 0:
                self._ledger.forget_through(floor)
        return ids


def ack_payloads(ids: Iterable[bytes]) -> Iterator[bytes]:
    """MVDS payloads acknowledging ``ids``, :data:`ACK_CHUNK` at a time."""
    chunk: list[bytes] = []
    for mid in ids:
        chunk.append(mid)
        if len(chunk) == ACK_CHUNK:
            yield encode_payload(acks=chunk)
            chunk = []
    if chunk:
        yield encode_payload(acks=chunk)
