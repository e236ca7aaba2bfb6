"""The application's durable inbox and its named cursors.

Theory of operation
-------------------
Every durable message the engine delivers is appended to the ``inbox`` table of the store by
the engine itself, in the transaction that stores the message (``Store.record_delivery``): a
message the node stored and acknowledged to its peer is in the inbox even if the process dies
the next instant. Each entry has a sequence number, in delivery order.

A *cursor* is a name and a position: the last sequence number its consumer confirmed. It is
kept in the store (``cursors`` table), so after a crash or a restart a reader resumes right
after the last confirmed message: every message reaches the application at least once, and
exactly once for an application that confirms each message once it is done with it. A cursor
that does not exist yet starts before the oldest message retention has kept.

:class:`InboxReader` reads one cursor. ``async for`` (and :meth:`InboxReader.receive`) confirms a
message when the reader asks for the next one, that is after the loop body ran for it, and
leaving the ``async with`` block without an exception confirms the last one. With
``confirm="manual"``, nothing is confirmed until :meth:`InboxReader.confirm` (batch use: confirm
the last message of a batch once the batch is committed somewhere).

The node's loop only appends (through the engine) and wakes the readers; it never waits for
them, so a slow application never slows the node. An expired message vanishes from the inbox too;
a reader that had not reached it gets the next message with its ID in
:attr:`Message.skipped <mvds_node.node.Message.skipped>`, and an :class:`InboxSkipped` event.
Ephemeral (NOSYNC) messages are never in the inbox: they go to live subscribers only.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import Final, Literal, final

import trio

from mvds_node.errors import LocalProtocolError, StoreError
from mvds_node.node._config import NodeConfig
from mvds_node.node._envelope import unwrap
from mvds_node.node._events import AnyEvent, InboxSkipped
from mvds_node.node._subscribers import Message
from mvds_node.sync import InboxEntry, SQLiteStore, decode_stored

__all__ = [
    "DEFAULT_CURSOR",
    "Inbox",
    "InboxReader",
    "check_cursor_name",
    "history_messages",
    "signed_groups",
    "unread_messages",
]

DEFAULT_CURSOR: Final = "default"
"""The cursor :meth:`Node.messages` reads when none is named."""
_BATCH: Final = 256
"""Entries read from the store at once."""
_NAME: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def check_cursor_name(name: str) -> str:
    """A cursor name: 1-64 letters, digits, ``_ . : -``.

    Raises:
        LocalProtocolError: not such a name.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise LocalProtocolError(
            f"a cursor name is 1-64 letters, digits, '_', '.', ':' or '-', not {name!r}"
        )
    return name


def _message(
    name: str,
    entry: InboxEntry,
    via: bytes,
    skipped: tuple[bytes, ...] = (),
    *,
    signed: bool,
) -> Message:
    m = entry.message
    assert m is not None
    body = decode_stored(m.wire).body
    # A signed group's message was checked when it was stored: its envelope names the author.
    # A raw group's body is the application's as it is, whatever its bytes look like.
    author, body = unwrap(body) if signed else (None, body)
    return Message(
        group=name,
        group_id=entry.group_id,
        message_id=entry.message_id,
        body=body,
        via=via,
        timestamp=m.timestamp,
        parents=m.parents,
        parents_missing=entry.parents_missing,
        seq=entry.seq,
        skipped=skipped,
        author=author,
    )


def signed_groups(config: NodeConfig) -> frozenset[bytes]:
    """The IDs of the groups of ``config`` whose messages carry signed envelopes."""
    return frozenset(g.id for g in config.groups if g.envelope == "signed")


def history_messages(
    store: SQLiteStore,
    group_name: str,
    group_id: bytes,
    me: bytes,
    *,
    signed: bool,
    since: int = 0,
    limit: int | None = None,
    author: bytes | None = None,
) -> list[Message]:
    """A group's stored messages, received and sent, oldest first (see :meth:`Node.history`).
    Works on a store opened read-only too.

    Args:
        me: this node's key (X25519): the ``via`` of the messages it sent.
        signed: whether the group's messages carry envelopes (``envelope = "signed"``).
        author: only the messages whose verified author (Ed25519) is this key.
    """
    # The author is inside the envelope, not a column: with a filter, the group's messages
    # are read and filtered here, and the limit applies to what is left.
    entries = store.history(group_id, since=since, limit=None if author else limit)
    found = [
        _message(group_name, e, me if e.seq == 0 else (e.sender or b""), signed=signed)
        for e in entries
    ]
    if author is not None:
        found = [m for m in found if m.author == author]
        if limit is not None:
            found = found[len(found) - max(0, limit) :] if limit else []
    return found


def unread_messages(
    store: SQLiteStore,
    names: dict[bytes, str],
    cursor: str,
    *,
    signed: Collection[bytes],
    group_id: bytes | None = None,
    limit: int = 10_000,
) -> tuple[list[Message], int]:
    """Up to ``limit`` inbox messages after ``cursor`` (of ``group_id`` only, if given), and
    the position to confirm once they are shown (past the entries of other groups, too)."""
    position = store.cursors().get(check_cursor_name(cursor))
    if position is None:
        position = store.inbox_start()
    out: list[Message] = []
    while len(out) < limit:
        entries = store.inbox_after(position, min(_BATCH, limit - len(out)))
        if not entries:
            break
        for e in entries:
            position = e.seq
            if e.message is not None and (group_id is None or e.group_id == group_id):
                name = names.get(e.group_id, e.group_id.hex())
                out.append(_message(name, e, e.sender or b"", signed=e.group_id in signed))
    return out, position


@final
class Inbox:
    """The node's inbox over its store: readers, cursors, and the wake-up of readers.

    Args:
        store: the node's store (it holds the inbox and the cursors).
        names: group names by ID, for the messages handed out.
        emit: where :class:`InboxSkipped` events go.
        store_failed: told when an automatic confirmation cannot be stored (a full or
            read-only disk): the reader goes on, and the message is delivered again after a
            restart (at least once).
    """

    def __init__(
        self,
        store: SQLiteStore,
        names: Callable[[], dict[bytes, str]],
        emit: Callable[[AnyEvent], None],
        store_failed: Callable[[StoreError], None] = lambda e: None,
        *,
        is_signed: Callable[[bytes], bool] = lambda group_id: False,
    ) -> None:
        self._store = store
        self._names = names
        self._is_signed = is_signed
        self._emit = emit
        self.store_failed = store_failed
        self._changed = trio.Event()
        self._seen_end = store.inbox_end()
        self.readers = 0
        """Open :class:`InboxReader` blocks."""

    def check(self) -> None:
        """Refuse a damaged inbox or cursor: the node does not start on one.

        Raises:
            StoreError: naming the store file and how to repair it.
        """
        problem = self._store.check_inbox()
        if problem is not None:
            raise StoreError(f"{self._store.path}: {problem}")

    def notify(self) -> None:
        """Wake the readers if the inbox grew (called by the node's loop; never waits)."""
        end = self._store.inbox_end()
        if end != self._seen_end:
            self._seen_end = end
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for_more(self, position: int) -> None:
        """Until the inbox holds an entry after ``position``."""
        while self._store.inbox_end() <= position:
            await self._changed.wait()

    # ----------------------------------------------------------------- cursors

    def cursors(self) -> dict[str, int]:
        """Every durable cursor and the last inbox position it confirmed."""
        return self._store.cursors()

    def position(self, name: str) -> int:
        """Where cursor ``name`` is (a new one: before the oldest stored message)."""
        pos = self._store.cursors().get(check_cursor_name(name))
        return self._store.inbox_start() if pos is None else pos

    def confirm(self, name: str, position: int) -> None:
        """Move cursor ``name`` forward to ``position`` (never back); committed on return."""
        current = self._store.cursors().get(name)
        if current is None or position > current:
            self._store.set_cursor(name, position)

    def delete_cursor(self, name: str) -> bool:
        """Forget cursor ``name``; False if there was none."""
        return self._store.delete_cursor(check_cursor_name(name))

    def unread(self, name: str) -> int:
        """Messages after cursor ``name``'s position (expired ones included)."""
        return self.unread_after(self.position(name))

    def unread_after(self, position: int) -> int:
        return max(0, self._store.inbox_end() - position)

    # ----------------------------------------------------------------- reading

    def entries_after(self, position: int, limit: int = _BATCH) -> list[InboxEntry]:
        return self._store.inbox_after(position, limit)

    def to_message(self, entry: InboxEntry, skipped: tuple[bytes, ...] = ()) -> Message:
        name = self._names().get(entry.group_id, entry.group_id.hex())
        signed = self._is_signed(entry.group_id)
        return _message(name, entry, entry.sender or b"", skipped, signed=signed)

    def skipped(self, cursor: str, ids: Iterable[bytes]) -> None:
        ids = tuple(ids)
        if ids:
            self._emit(InboxSkipped(cursor, ids))

    @contextlib.asynccontextmanager
    async def reader(
        self, name: str, confirm: Literal["auto", "manual"]
    ) -> AsyncIterator[InboxReader]:
        check_cursor_name(name)
        if confirm not in ("auto", "manual"):
            raise LocalProtocolError(f"confirm must be 'auto' or 'manual', not {confirm!r}")
        reader = InboxReader(self, name, auto=confirm == "auto")
        self.readers += 1
        try:
            yield reader
        except BaseException:
            raise  # the last message's work did not finish: it is delivered again
        else:
            if reader.auto:
                reader.auto_confirm()
        finally:
            self.readers -= 1
            reader.closed = True


@final
class InboxReader:
    """Durable messages from one cursor of the inbox, in delivery order (see the module doc).

    ``async for message in reader`` and ``await reader.receive()`` wait for the next message.
    """

    def __init__(self, inbox: Inbox, cursor: str, *, auto: bool) -> None:
        self._inbox = inbox
        self.cursor = cursor
        """The cursor's name."""
        self.auto = auto
        """Whether asking for the next message confirms the previous one."""
        self._position = inbox.position(cursor)
        self._last: int | None = None  # the last message handed out, not confirmed yet
        self._batch: list[InboxEntry] = []
        self.closed = False

    def __aiter__(self) -> InboxReader:
        return self

    async def __anext__(self) -> Message:
        if self.closed:
            raise StopAsyncIteration
        return await self.receive()

    async def receive(self) -> Message:
        """The next message (waiting for one); in ``auto`` mode this first confirms the
        message handed out before, whose work is done once its reader asks for more."""
        if self.closed:
            raise trio.ClosedResourceError("the inbox reader's block has ended")
        if self.auto and self._last is not None:
            self.auto_confirm()
        skipped: list[bytes] = []  # expired before we got to them: told with the next one
        told = 0  # of those, already told in an InboxSkipped event
        while True:
            if not self._batch:
                await trio.lowlevel.checkpoint()
                self._batch = self._inbox.entries_after(self._position)
                if not self._batch:
                    if len(skipped) > told:  # told now too, not only with the next message
                        self._inbox.skipped(self.cursor, skipped[told:])
                        told = len(skipped)
                        if self._last is None:  # nothing unconfirmed before them: move on
                            self._last = self._position
                            self.auto_confirm()
                    await self._inbox.wait_for_more(self._position)
                    continue
                self._batch.reverse()
            entry = self._batch.pop()
            self._position = entry.seq
            if entry.message is None:  # expired before we got to it
                skipped.append(entry.message_id)
                continue
            if len(skipped) > told:
                self._inbox.skipped(self.cursor, skipped[told:])
            self._last = entry.seq
            return self._inbox.to_message(entry, tuple(skipped))

    def receive_nowait(self) -> Message:
        """The next message if one is stored.

        Raises:
            trio.WouldBlock: none is.
        """
        if self.auto and self._last is not None:
            self.auto_confirm()
        while True:
            if not self._batch:
                self._batch = self._inbox.entries_after(self._position)
                if not self._batch:
                    raise trio.WouldBlock
                self._batch.reverse()
            entry = self._batch.pop()
            self._position = entry.seq
            if entry.message is not None:
                self._last = entry.seq
                return self._inbox.to_message(entry)
            self._inbox.skipped(self.cursor, (entry.message_id,))

    def auto_confirm(self) -> None:
        """Confirm the last message handed out; a store that cannot take it (a full disk) is
        reported, not raised: the reader goes on, and after a restart the message comes again."""
        try:
            self.confirm()
        except StoreError as e:
            self._inbox.store_failed(e)

    def confirm(self, message: Message | None = None) -> None:
        """Confirm ``message`` and everything before it (default: the last one handed out):
        after a restart this cursor resumes after it. Committed to the store on return.

        Raises:
            StoreError: the store cannot take it (the cursor stays where it was).
        """
        seq = self._last if message is None else message.seq
        if seq is None or seq <= 0:
            return
        self._inbox.confirm(self.cursor, seq)
        if message is None or seq == self._last:
            self._last = None

    @property
    def unread(self) -> int:
        """Messages stored after this reader's place."""
        return self._inbox.unread_after(self._position)
