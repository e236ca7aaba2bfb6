"""Writing and reading a remote log.

:class:`LogWriter` appends a group's messages to its writer's log: the newest ``inline``
messages ride inside the pages, older ones go to the CAS and are named by address; the head page
lives in the NS, and when it holds ``page_size`` entries its oldest ones are frozen into a CAS
page that the new head's ``tail`` points to. Each append costs one NS update, one CAS add per
frozen page, and one per message stored by address (none when everything is inline). A writer
that restarts reads its own head back from the NS and goes on from there.

:class:`LogReader` polls a writer's head, checks its signature and that its sequence number
never goes back, walks pages from the newest down to its :class:`Cursor` (the newest message of
the log when it last read it completely; the whole log the first time), skipping the messages
it already has, fetches the missing bodies (a bounded number at a time), and checks every object
against its address and every message against its ID before handing the messages over, oldest
first. The cursor moves only when the caller says the messages are stored
(:meth:`LogReader.commit`), so "read completely" means "holds every message up to there". A
walk that the page bound cuts short goes on from the page where it stopped at the next poll.

The three modes of the spec are settings: fully replicated (``inline >= page_size``), pages
with CAS mapping (``inline = 0``), linked list (``page_size = 1``). ``head_size`` bounds the head
page on its own: every poll downloads the head, so with ``head_size = 0`` (a head that only names
the newest page, each append freezing its messages into one page) an idle poll costs one small
signed record, and a reader with a cursor, which remembers the page its cursor's message opens,
downloads each page once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from mvds_node.remotelog._backend import Backend, BackendError
from mvds_node.remotelog._format import (
    MAX_SEQ,
    Head,
    LogError,
    Page,
    Pair,
    address_of,
    log_name,
    open_head,
    parse_page,
    public_key,
    seal,
    sign_head,
    unseal,
)
from mvds_node.sync import decode_stored

__all__ = [
    "Cursor",
    "LogReader",
    "LogSettings",
    "LogWriter",
    "ReadResult",
    "Resume",
    "add_checked",
]

_RECENT = 100_000


async def add_checked(backend: Backend, data: bytes, where: str) -> bytes:
    """Store ``data`` in the backend's CAS and return its address, checked.

    Every address we publish (a page's ``tail``, an entry's address) comes from here: a CAS
    that answers anything but the SHA-256 of what it was given (the spec's proof-of-concept
    server answers 40 ASCII bytes) would otherwise have it published, and every reader,
    ourselves included, would then refuse the whole log.

    Raises:
        BackendError: the backend failed, or answered another address; nothing that would name
            the object has been published, so the caller retries later.
    """
    address = await backend.cas_add(data)
    expected = address_of(data)
    if address != expected:
        shown = (
            f"{len(address)} bytes {address[:40].hex()}"
            if isinstance(address, bytes)
            else f"a {type(address).__name__}"
        )
        raise BackendError(
            f"{where}: the CAS answered address {shown} for an object whose SHA-256 is "
            f"{expected.hex()}; nothing was published"
        )
    return address


@dataclass(frozen=True, slots=True)
class LogSettings:
    page_size: int = 256
    """Entries per frozen page."""
    head_size: int | None = None
    """Entries the head page holds at most; None: ``page_size``. When an append would leave
    more, the oldest entries of the head are frozen into CAS pages, ``page_size`` at a time
    (the last one may be smaller). Every poll downloads the head, so a small head makes a poll
    cheap: with 0 the head names only the newest page, each append freezes its messages into
    one new page, and a reader with a cursor downloads each page once."""
    inline: int = 64
    """How many of the newest messages carry their bytes inside the page (the rest by CAS
    address). ``inline >= page_size`` is a fully replicated log; 0 maps everything to the CAS."""
    max_pages_per_poll: int = 10_000
    """A reader walks at most this many pages in one poll (a hostile helper cannot loop it)."""
    fetch_concurrency: int = 16
    """CAS fetches in flight at once."""
    signed: bool = True
    """False: the NS holds the spec's bare ``RemoteLog`` (the head page), for interop with
    other implementations. Then nothing proves who wrote a head and a rolled-back head goes
    unnoticed, and logs cannot be sealed; our HTTP helper accepts signed heads only."""

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.inline < 0:
            raise ValueError("page_size must be >= 1 and inline >= 0")
        if self.head_size is not None and self.head_size < 0:
            raise ValueError("head_size must be >= 0")


class LogWriter:
    """Appends one writer's messages of one group to its remote log."""

    def __init__(
        self,
        backend: Backend,
        signing: Ed25519PrivateKey,
        group_id: bytes,
        *,
        settings: LogSettings | None = None,
        group_key: bytes | None = None,
    ) -> None:
        self.backend = backend
        self.signing = signing
        self.writer = public_key(signing)
        self.name = log_name(self.writer, group_id)
        self.settings = settings or LogSettings()
        self.group_key = group_key
        if not self.settings.signed and group_key is not None:
            raise ValueError("a plain (unsigned) log cannot be sealed")
        self.seq = 0
        self.head: list[Pair] = []  # newest first
        self.tail = b""
        self._loaded = False
        # IDs appended lately (bounded), so that appending a message twice is harmless even
        # after its entry left the head page.
        self._recent: dict[bytes, None] = {}
        # An update whose answer never came: (record, seq, head, tail, IDs). It may be in the
        # NS (a server that wrote it and died before answering); the next append reads the NS
        # again, and if this record is there, goes on from it.
        self._unsure: tuple[bytes, int, list[Pair], bytes, list[bytes]] | None = None

    def _seal(self, data: bytes) -> bytes:
        return seal(self.group_key, data) if self.group_key is not None else data

    async def load(self) -> None:
        """Pick up where this writer's log stands in the NS (after a restart)."""
        record = await self.backend.ns_fetch(self.name)
        unsure, self._unsure = self._unsure, None  # kept if the fetch fails
        if unsure is not None and record == unsure[0]:
            # Our last update did land: its pages and IDs are as we made them.
            _, self.seq, self.head, self.tail, ids = unsure
            self._remember(ids)
        elif record is not None and not self.settings.signed:
            page = parse_page(record, self.name)
            self.seq, self.head, self.tail = 1, list(page.pairs), page.tail
        elif record is not None:
            head = open_head(record, self.name, self.writer)
            log = head.log
            if head.sealed:
                if self.group_key is None:
                    raise LogError(f"{self.name}: our own log is sealed and we have no key")
                log = unseal(self.group_key, log, self.name)
            page = parse_page(log, self.name)
            self.seq, self.head, self.tail = head.seq, list(page.pairs), page.tail
        self._loaded = True

    async def append(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Add ``(message ID, wire bytes)`` pairs, oldest first, and publish the new head.

        Raises:
            BackendError: the backend failed, or its CAS answered an address that is not the
                SHA-256 of what it stored (see :func:`add_checked`); nothing was published
                and nothing is lost: call again with the same messages (entries already in
                the head are not added twice).
            LogError: our own head in the NS does not open (forged, sealed without our key),
                or the log has reached :data:`~mvds_node.remotelog._format.MAX_SEQ`.
        """
        if not self._loaded:
            await self.load()
        s = self.settings
        head = list(self.head)
        present = {p.message_id for p in head} | self._recent.keys()
        for mid, wire in messages:
            if mid not in present:
                head.insert(0, Pair(mid, b"", wire))
                present.add(mid)
        tail = self.tail
        # Freeze pages, oldest first: each points at the one before it.
        limit = s.page_size if s.head_size is None else s.head_size
        while len(head) > limit:
            size = min(s.page_size, len(head))
            frozen, head = head[-size:], head[:-size]
            frozen = [
                await self._by_address(p, i, s.inline, len(head)) for i, p in enumerate(frozen)
            ]
            tail = await add_checked(
                self.backend, self._seal(Page(tuple(frozen), tail).encode()), self.name
            )
        # Entries of the head that left the inline window go to the CAS.
        head = [await self._by_address(p, i, s.inline, 0) for i, p in enumerate(head)]
        log = self._seal(Page(tuple(head), tail).encode())
        seq = self.seq + 1
        if seq > MAX_SEQ:  # readers refuse a sequence their store cannot hold
            raise LogError(f"{self.name}: the log is at its last sequence ({MAX_SEQ})")
        if s.signed:
            record = sign_head(self.signing, self.name, seq, log, self.group_key is not None)
        else:
            record = log  # the spec's RemoteLog, as it is
        try:
            await self.backend.ns_update(self.name, record)
        except BackendError:
            # It may have landed all the same: the next append reads the NS first, so that it
            # neither writes this sequence again (refused forever) nor adds these messages to
            # the log twice.
            self._unsure = (record, seq, head, tail, [mid for mid, _ in messages])
            self._loaded = False
            raise
        self.seq, self.head, self.tail = seq, head, tail
        self._remember([mid for mid, _ in messages])

    def _remember(self, ids: Sequence[bytes]) -> None:
        recent = self._recent
        for mid in ids:
            recent[mid] = None
        while len(recent) > _RECENT:
            del recent[next(iter(recent))]

    async def _by_address(self, pair: Pair, index: int, inline: int, newer: int) -> Pair:
        if not pair.data or newer + index < inline:
            return pair
        address = await add_checked(self.backend, self._seal(pair.data), self.name)
        return Pair(pair.message_id, address, b"")


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a reader has read a log completely: the head sequence it read and the newest
    message ID in the log at that head. The reader holds every message of the log up to there,
    and the next poll walks from the head until it meets ``newest``."""

    seq: int
    newest: bytes
    """Empty for a log that held no message."""
    page: bytes = b""
    """The CAS address of the frozen page whose first entry is ``newest`` (empty when that
    entry was in the head page): a walk that reaches this address stops without fetching it,
    since everything in it is held."""


@dataclass(frozen=True, slots=True)
class Resume:
    """A walk that :attr:`LogSettings.max_pages_per_poll` cut short: it continues from ``tail``
    (pages are immutable, so the address stays good) down to the reader's cursor, and then the
    cursor becomes ``target``."""

    target: Cursor
    tail: bytes


@dataclass
class ReadResult:
    messages: list[bytes] = field(default_factory=list)
    """Wire bytes of the messages we lacked, oldest first, each checked against its ID."""
    ids: list[bytes] = field(default_factory=list)
    """Their IDs, in the same order."""
    seq: int = 0
    """The head sequence the poll saw."""
    pages: int = 0
    cas_gets: int = 0
    complete: bool = True
    """False: the page bound stopped the walk; the next poll goes on from where it stopped."""
    cursor: Cursor | None = None
    """The reader's cursor once these messages are stored (see :meth:`LogReader.commit`)."""
    resume: Resume | None = None
    base: tuple[Cursor | None, Resume | None] = (None, None)
    """The reader's state the poll started from."""


class LogReader:
    """Reads one writer's log of one group.

    The reader keeps a :class:`Cursor`: the position in the log up to which it holds every
    message. :meth:`poll` walks from the head down to the cursor, skipping (not fetching) what
    ``known`` says we have, and :meth:`commit` moves the cursor once the caller has stored what
    the poll returned. Without a cursor (the first poll ever) the walk goes down the whole log.
    """

    def __init__(
        self,
        backend: Backend,
        writer: bytes,
        group_id: bytes,
        *,
        settings: LogSettings | None = None,
        group_key: bytes | None = None,
        seq: int = 0,
        cursor: Cursor | None = None,
        resume: Resume | None = None,
    ) -> None:
        """``seq``, ``cursor`` and ``resume``: the state a previous reader of this log left (its
        attributes of the same names), to go on from there after a restart."""
        self.backend = backend
        self.writer = writer
        self.name = log_name(writer, group_id)
        self.group_id = group_id
        self.settings = settings or LogSettings()
        self.group_key = group_key
        self.seq = seq
        """The highest head sequence seen; a lower one is a rollback."""
        self.cursor = cursor
        """Where this reader has read the log completely; None: nowhere yet."""
        self.resume = resume
        """A walk cut short by the page bound, to go on with at the next poll."""
        self._last_plain = b""

    def _open(self, data: bytes, sealed: bool) -> bytes:
        if not sealed:
            return data
        if self.group_key is None:
            raise LogError(f"{self.name}: the log is sealed and we have no group key")
        return unseal(self.group_key, data, self.name)

    def _page(self, data: bytes, sealed: bool) -> Page:
        return parse_page(self._open(data, sealed), self.name)

    async def poll(self, known: Callable[[bytes], bool]) -> ReadResult:
        """Fetch what the log holds past our cursor and ``known`` says we lack.

        The cursor does not move: store the messages, then call :meth:`commit`.

        Raises:
            LogError: forged or rolled-back head, tampered page or content (nothing returned).
            BackendError: the backend is unreachable (poll again later).
        """
        cursor, resume = self.cursor, self.resume
        result = ReadResult(seq=self.seq, cursor=cursor, resume=resume, base=(cursor, resume))
        record = await self.backend.ns_fetch(self.name)
        if record is None:
            return result
        if not self.settings.signed:
            # A bare RemoteLog: no signature, no sequence; "new" means "different".
            digest = address_of(record)
            seq = self.seq if digest == self._last_plain else self.seq + 1
            head = Head(self.writer, seq, record, False)
            self._last_plain = digest
        else:
            head = open_head(record, self.name, self.writer)
        if head.seq < self.seq:
            raise LogError(
                f"{self.name}: head went back from sequence {self.seq} to {head.seq} (rollback)"
            )
        if cursor is not None and head.seq < cursor.seq:
            raise LogError(
                f"{self.name}: head went back from sequence {cursor.seq} to {head.seq} (rollback)"
            )
        self.seq = result.seq = head.seq
        if resume is None and cursor is not None and head.seq == cursor.seq:
            return result
        segments: list[list[Pair]] = []  # each newest first; older segments first
        seen: set[bytes] = set()
        stop = cursor.newest if cursor is not None else None
        stop_page = cursor.page if cursor is not None else b""
        while True:
            wanted: list[Pair] = []
            page: Page | None
            if resume is not None:
                target = resume.target
                at = resume.tail  # the address of the page being read
                page = None
                if at != stop_page:
                    raw = await self._get(at, result)
                    page = self._page(raw, head.sealed)
            else:
                page = self._page(head.log, head.sealed)
                target = Cursor(head.seq, page.pairs[0].message_id if page.pairs else b"")
                at = b""
            newest, newest_page = target.newest, target.page
            while page is not None:
                result.pages += 1
                reached = False
                for p in page.pairs:
                    if not newest:
                        # A head page without entries: the first met, and where.
                        newest, newest_page = p.message_id, at
                    if p.message_id == stop:
                        reached = True
                        break
                    if p.message_id in seen:
                        raise LogError(f"{self.name}: a message appears twice in the log")
                    seen.add(p.message_id)
                    if not known(p.message_id):
                        wanted.append(p)
                if reached or not page.tail or page.tail == stop_page:
                    break  # met the cursor, or went down the whole log
                if result.pages >= self.settings.max_pages_per_poll:
                    segments.append(wanted)
                    result.complete = False
                    result.resume = Resume(Cursor(target.seq, newest, newest_page), page.tail)
                    break
                at = page.tail
                raw = await self._get(at, result)
                page = self._page(raw, head.sealed)
            if not result.complete:
                break
            segments.append(wanted)
            cursor = result.cursor = Cursor(target.seq, newest, newest_page)
            stop, stop_page = newest, newest_page
            resume = result.resume = None
            if cursor.seq == head.seq or result.pages >= self.settings.max_pages_per_poll:
                result.complete = cursor.seq == head.seq
                break
        for wanted in reversed(segments):  # the newest segment first, like its pairs
            for p, wire in zip(
                wanted, await self._fetch_all(wanted, head.sealed, result), strict=True
            ):
                self._check(p.message_id, wire)
                result.messages.append(wire)
                result.ids.append(p.message_id)
        result.messages.reverse()
        result.ids.reverse()
        return result

    def commit(self, result: ReadResult, held: Callable[[bytes], bool]) -> bool:
        """Move the cursor to where ``result``'s poll reached, if every message it returned is
        now ``held`` (stored, or one that can never be stored, such as an expired one).

        Returns:
            Whether the cursor moved. It does not when a message is missing (the next poll
            fetches it again) or when the reader's state changed since that poll.
        """
        if result.base != (self.cursor, self.resume):
            return False
        if not all(held(mid) for mid in result.ids):
            return False
        self.cursor, self.resume = result.cursor, result.resume
        return True

    async def _get(self, address: bytes, result: ReadResult) -> bytes:
        result.cas_gets += 1
        data = await self.backend.cas_get(address)
        if data is None:
            raise LogError(f"{self.name}: object {address.hex()[:16]} is missing from the CAS")
        if address_of(data) != address:
            raise LogError(f"{self.name}: object {address.hex()[:16]} does not match its address")
        return data

    async def _fetch_all(self, pairs: list[Pair], sealed: bool, result: ReadResult) -> list[bytes]:
        out: list[bytes] = [p.data for p in pairs]
        get_many = getattr(self.backend, "cas_get_many", None)
        if get_many is not None:  # a backend that reads many objects in one go (files)
            wanted = [i for i, p in enumerate(pairs) if p.address]
            for start in range(0, len(wanted), 256):
                chunk = wanted[start : start + 256]
                found = await get_many([pairs[i].address for i in chunk])
                for i, data in zip(chunk, found, strict=True):
                    result.cas_gets += 1
                    address = pairs[i].address
                    if data is None:
                        raise LogError(f"{self.name}: object {address.hex()[:16]} is missing")
                    if address_of(data) != address:
                        raise LogError(
                            f"{self.name}: object {address.hex()[:16]} does not match its address"
                        )
                    out[i] = self._open(data, sealed)
            return out
        limit = trio.Semaphore(self.settings.fetch_concurrency)

        async def fetch(i: int, address: bytes) -> None:
            async with limit:
                out[i] = self._open(await self._get(address, result), sealed)

        try:
            async with trio.open_nursery() as nursery:
                for i, p in enumerate(pairs):
                    if p.address:
                        nursery.start_soon(fetch, i, p.address)
        except BaseExceptionGroup as group:
            # One failed fetch cancels the others: report it as itself.
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            if isinstance(first, (LogError, BackendError)):
                raise first from None
            raise
        return out

    def _check(self, message_id: bytes, wire: bytes) -> None:
        try:
            m = decode_stored(wire)
        except DecodeError:
            raise LogError(f"{self.name}: an entry is not an MVDS message") from None
        if m.id != message_id:
            raise LogError(f"{self.name}: message {message_id.hex()[:16]} does not match its ID")
        if m.group_id != self.group_id:
            raise LogError(f"{self.name}: message {message_id.hex()[:16]} is for another group")
