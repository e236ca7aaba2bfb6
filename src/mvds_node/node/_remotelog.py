"""The node's remote log: upload our messages to our log, read our peers' logs.

*Writing.* Every durable message the node sends is queued in ``remotelog.sqlite`` in the data
directory, in its own transaction right after the message's, and one task per node uploads the
queue in batches (:class:`~mvds_node.remotelog.LogWriter`). A backend that is down is retried
with backoff (1 s doubling to a minute) in that task only: sync goes on meanwhile, and the queue
survives restarts. A crash between the message's commit and the queue's loses the upload of that
one message (it still syncs by every other carrier).

*Reading.* For each group and each member whose log key we know, a reader task polls the
member's log every ``poll_seconds`` (and at start, at a kick, and when the backend announces an
update of it), and hands what we lack to the engine as a payload from that member:
acknowledgements, dependencies and delivery work as if it had come over the network. A head
that is forged, rolled back or points at tampered content is refused and reported; nothing from
it enters the store. Each reader's cursor (how far it has read the log completely) is kept in
``remotelog.sqlite`` and moves only once what the poll fetched is in the store, so a message
that could not be stored is fetched again at the next poll, and a restart goes on from the
cursor instead of walking the whole log.

*Acknowledgements.* After a poll that moved a cursor, the node publishes its acknowledgement
record: per member whose log it reads, the head sequence read completely (40 bytes a member). A
writer that reads it acknowledges, as from that reader, the messages it published in the
sequences the reader's position passed since the last record; for that it remembers which
message went out in which of its heads (the ``published`` table, written in the transaction
that takes them off the upload queue, and pruned once every member's position has passed them).

*The boundary.* Each log is read by its own task, so a log whose backend is slow delays only
itself, up to that backend's own timeouts; with a pooled backend (HTTP helper, IPFS) each reader
gets its own share of the connections (:func:`_fair_share`), so one stalled log cannot leave the
others waiting for a connection either. ``poll_now`` reads every log at once, and the update
feed only wakes the task of the log it names. No task of the service ever ends on a failure: a
``BackendError`` (unreachable, refused, a wrong address from a CAS) ends that attempt, puts its
reason in the log's status, and the attempt is retried with backoff; a ``LogError`` (forged,
rolled back, malformed) is also reported as a refusal; any other exception is a bug, reported
through ``internal`` (the node's ``InternalError`` event, with its traceback), and is retried
the same way.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.errors import ConfigError, describe_failure
from mvds_node.remotelog import (
    AckRecords,
    Backend,
    BackendError,
    Credentials,
    Cursor,
    FileBackend,
    LogError,
    LogReader,
    LogSettings,
    LogWriter,
    ReadResult,
    Resume,
    SecretError,
    ack_payloads,
    log_name,
    redact_url,
    resolve_secret,
)
from mvds_node.sync import RejectReason, decode_stored, encode_payload

if TYPE_CHECKING:
    from mvds_node.node._config import RemoteLogConfig

__all__ = ["LogStatus", "RemoteLogService", "backend_for", "credentials_from"]

_BATCH: Final = 1000
_FEED_CHUNK: Final = 500
_FEED_BYTES: Final = 1024 * 1024
"""Bytes of messages per payload handed to the engine: far below its payload limit (4 MiB), and
one message at the body limit (1 MiB) still goes alone."""
_MAX_BACKOFF: Final = 60.0
_UNREACHABLE: Final = "backend unreachable: "
_INTERNAL: Final = "internal error: "
_MAX_POOL: Final = 32
"""Connections a pooled backend (HTTP helper, IPFS) is widened to at most, for one per log: our
helper serves 32 connections per client address by default."""


def _fair_share(backend: Backend, readers: int, wanted: int) -> int:
    """CAS fetches one reader may have in flight at once.

    With a backend that holds a bounded pool of connections (HTTP helper, IPFS), the pool is
    widened to one connection per log and one for the writer (up to :data:`_MAX_POOL`), and
    each reader gets an equal share of it: a log whose answers stall then holds only its own
    share, and no other log's request waits for a connection it holds. (Past 31 readers a
    share is still one connection, and stalled logs can fill the pool again.)
    """
    http = getattr(backend, "http", None)
    if http is None or readers == 0:
        return wanted
    from mvds_node.remotelog import HttpClient  # loaded by now: the backend uses it

    if not isinstance(http, HttpClient):
        return wanted
    http.max_connections = max(http.max_connections, min(_MAX_POOL, readers + 1))
    return max(1, min(wanted, (http.max_connections - 1) // readers))


def credentials_from(config: RemoteLogConfig) -> Credentials:
    """The :class:`~mvds_node.remotelog.Credentials` that ``[remote_log]`` gives beside its URL.

    Raises:
        ConfigError: the secret names an unset variable or an unreadable file (the message
            names the setting, never the secret).
    """

    def path(text: str) -> Path | None:
        return Path(text).expanduser() if text else None

    try:
        secret = resolve_secret(config.secret, what="remote_log.secret") if config.secret else None
    except SecretError as error:
        raise ConfigError(str(error)) from None
    return Credentials(
        secret=secret,
        ca_file=path(config.ca_file),
        cert_file=path(config.cert_file),
        key_file=path(config.key_file),
        creds_file=path(config.creds_file),
        nkey_file=path(config.nkey_file),
    )


def backend_for(
    url: str,
    *,
    credentials: Credentials | None = None,
    ipns_ids: dict[str, str] | None = None,
) -> Backend:
    """The backend a ``remote_log.url`` names.

    Raises:
        ConfigError: a scheme we have no backend for, a malformed URL, or credentials a backend
            cannot use (the message shows the URL redacted).
    """
    try:
        return _backend_for(url, credentials=credentials or Credentials(), ipns_ids=ipns_ids)
    except (BackendError, SecretError) as error:
        raise ConfigError(f"remote_log: {error}") from None


def _backend_for(url: str, *, credentials: Credentials, ipns_ids: dict[str, str] | None) -> Backend:
    # The other backends' modules (httpx, coredis) load only when a URL names them.
    import mvds_node.remotelog as remotelog

    if url.startswith(("http://", "https://")):
        return remotelog.HttpBackend(url, credentials=credentials)
    if url.startswith(("redis://", "rediss://")):
        return remotelog.RedisBackend(url, credentials=credentials)
    if url.startswith(("nats://", "tls://")):
        return remotelog.NatsBackend(url, credentials=credentials)
    if url.startswith(("ipfs://", "ipfs+https://")):
        return remotelog.IpfsBackend(url, ipns_ids=ipns_ids, credentials=credentials)
    if credentials != Credentials():
        raise ConfigError(
            f"remote_log: {redact_url(url)}: this backend takes no secret or TLS files yet"
        )
    if url.startswith("file://"):
        return FileBackend(url.removeprefix("file://"))
    raise ConfigError(f"remote_log.url: no backend for {redact_url(url)!r}")


@dataclass
class LogStatus:
    """One log as ``status`` shows it."""

    name: str
    peer: bytes
    group: str
    mine: bool
    seq: int = 0
    last_poll_ms: int = 0
    fetched: int = 0
    """Messages taken from this log so far."""
    behind: int = 0
    """For a peer's log: how many of its messages we lacked at the last poll (0: caught up
    then)."""
    queued: int = 0
    """For our own log: messages waiting to be uploaded."""
    error: str = ""


class RemoteLogService:
    """Runs the writer and the readers for one node; start it with ``nursery.start(run)``."""

    def __init__(
        self,
        *,
        backend: Backend,
        data_dir: Path,
        signing: Ed25519PrivateKey,
        our_key: bytes,
        groups: list[tuple[str, bytes, bytes | None, list[tuple[bytes, bytes]]]],
        settings: LogSettings,
        poll_seconds: float,
        has_message: Callable[[bytes], bool],
        feed: Callable[[bytes, bytes], Awaitable[None]],
        refused: Callable[[bytes, str, str], None],
        uploaded: Callable[[str, int, int, int], None] | None = None,
        internal: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``groups``: (name, group ID, group key, [(member X25519 key, member log key)]).

        ``uploaded(group name, head sequence, messages, still queued)`` is called after each
        batch of our messages is in the log. ``internal(where, error, traceback)`` is called
        when reading a log, uploading, or the update feed raised an exception no rule of ours
        expected (a bug, see :func:`~mvds_node.errors.describe_failure`): that attempt ends
        and is retried with backoff; the service goes on."""
        self.backend = backend
        self.settings = settings
        self.poll_seconds = poll_seconds
        self._has = has_message
        self._signing = signing
        self._acks: dict[bytes, AckRecords] = {}
        """Per group: our acknowledgement record and our members' (see :mod:`._acks`)."""
        self._saved: dict[str, tuple[int, Cursor | None, Resume | None]] = {}
        self._feed = feed
        self._refused = refused
        self._uploaded = uploaded
        self._internal = internal
        self.watch_error = ""
        """Why the update feed (``watch``) is down, while it is; empty when it runs."""
        self._group_names: dict[bytes, str] = {}
        self._db = sqlite3.connect(data_dir / "remotelog.sqlite", isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY, grp BLOB NOT NULL, "
            "id BLOB NOT NULL, wire BLOB NOT NULL)"
        )
        # How far each reader has read its log: the highest head sequence seen (rollbacks are
        # noticed across restarts), the cursor, and a walk cut short by the page bound.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, seen INTEGER NOT NULL, "
            "seq INTEGER, newest BLOB, resume_seq INTEGER, resume_newest BLOB, resume_tail BLOB, "
            "page BLOB, resume_page BLOB)"
        )
        # The page addresses of the cursors (where a walk stops without fetching) came later:
        # a file written before has no such columns, and its cursors stop by message ID.
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(cursors)")}
        for column in ("page", "resume_page"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE cursors ADD COLUMN {column} BLOB")
        # Which of our messages went out in which head of our log, for the acknowledgement
        # records of our readers (they name head sequences).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS published (grp BLOB NOT NULL, seq INTEGER NOT NULL, "
            "id BLOB NOT NULL, PRIMARY KEY (grp, seq, id)) WITHOUT ROWID"
        )
        # Up to which of our head sequences each member's acknowledgements were fed to the engine.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS acked (grp BLOB NOT NULL, member BLOB NOT NULL, "
            "seq INTEGER NOT NULL, PRIMARY KEY (grp, member)) WITHOUT ROWID"
        )
        self._wake = trio.Event()
        self.writers: dict[bytes, LogWriter] = {}
        self.readers: list[tuple[LogReader, bytes]] = []
        self.status: dict[str, LogStatus] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._wakes: dict[str, trio.Event] = {}
        """Per log: set to have its reader read it now (a kick, an update announced)."""
        share = _fair_share(backend, sum(len(m) for *_, m in groups), settings.fetch_concurrency)
        reader_settings = replace(settings, fetch_concurrency=share)
        for name, group_id, key, members in groups:
            self._group_names[group_id] = name
            log_key_for_pages = key if settings.signed else None  # plain logs are never sealed
            writer = LogWriter(
                backend, signing, group_id, settings=settings, group_key=log_key_for_pages
            )
            self.writers[group_id] = writer
            self.status[writer.name] = LogStatus(writer.name, our_key, name, True)
            self._acks[group_id] = AckRecords(
                signing=signing,
                group_id=group_id,
                readers=dict(members),
                ledger=_SqliteLedger(self._db, group_id),
                group_key=key,
            )
            for member, log_key in members:
                reader = LogReader(
                    backend,
                    log_key,
                    group_id,
                    settings=reader_settings,
                    group_key=log_key_for_pages,
                    **self._load_cursor(log_name(log_key, group_id)),
                )
                self.readers.append((reader, member))
                self._wakes[reader.name] = trio.Event()
                self.status[reader.name] = LogStatus(reader.name, member, name, False)
                self.status[reader.name].seq = reader.seq
        self._refresh_queued()

    def _load_cursor(self, name: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT seen, seq, newest, resume_seq, resume_newest, resume_tail, page, resume_page "
            "FROM cursors WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            return {}
        seen, seq, newest, resume_seq, resume_newest, resume_tail, page, resume_page = row
        cursor = Cursor(seq, newest, page or b"") if seq is not None else None
        resume = (
            Resume(Cursor(resume_seq, resume_newest, resume_page or b""), resume_tail)
            if resume_seq is not None
            else None
        )
        self._saved[name] = (seen, cursor, resume)  # what the file holds already
        return {"seq": seen, "cursor": cursor, "resume": resume}

    def _save_cursor(self, reader: LogReader) -> None:
        c, r = reader.cursor, reader.resume
        state = (reader.seq, c, r)
        if self._saved.get(reader.name) == state:
            return  # an idle poll writes nothing
        self._saved[reader.name] = state
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO cursors (name, seen, seq, newest, resume_seq, "
                "resume_newest, resume_tail, page, resume_page) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    reader.name,
                    reader.seq,
                    c.seq if c else None,
                    c.newest if c else None,
                    r.target.seq if r else None,
                    r.target.newest if r else None,
                    r.tail if r else None,
                    c.page if c else None,
                    r.target.page if r else None,
                ),
            )

    def position(self, message_id: bytes) -> tuple[int, bool]:
        """Where one of our messages is in our remote log: the head sequence it went out in
        (0: not published, or no longer in the ledger: acknowledged by every reader, or older
        than the ledger keeps), and whether it still waits in the upload queue."""
        row = self._db.execute(
            "SELECT min(seq) FROM published WHERE id = ?", (message_id,)
        ).fetchone()
        queued = self._db.execute("SELECT 1 FROM queue WHERE id = ? LIMIT 1", (message_id,))
        return (int(row[0]) if row and row[0] is not None else 0), queued.fetchone() is not None

    def close(self) -> None:
        self._db.close()

    async def aclose(self) -> None:
        close = getattr(self.backend, "aclose_connection", None)
        if close is not None:
            await close()
        self.close()

    def enqueue(self, group_id: bytes, items: list[tuple[bytes, bytes]]) -> None:
        """Queue our messages ``(id, wire)`` of a group for upload (durable on return)."""
        if group_id not in self.writers or not items:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO queue (grp, id, wire) VALUES (?, ?, ?)",
                [(group_id, mid, wire) for mid, wire in items],
            )
        self._refresh_queued()
        self._wake.set()

    def _refresh_queued(self) -> None:
        counts = dict(self._db.execute("SELECT grp, count(*) FROM queue GROUP BY grp").fetchall())
        for group_id, writer in self.writers.items():
            self.status[writer.name].queued = counts.get(group_id, 0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if isinstance(self.backend, contextlib.AbstractAsyncContextManager):
                # A backend with a connection pool (Redis) keeps it open for our tasks.
                await stack.enter_async_context(self.backend)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._upload_loop)
                for reader, member in self.readers:
                    nursery.start_soon(self._read_loop, reader, member)
                if hasattr(self.backend, "watch") and self.readers:
                    nursery.start_soon(self._watch_loop)
                task_status.started()

    def _internal_error(self, where: str, exc: Exception) -> str:
        """Report an unexpected exception (a bug) met while handling outside input; the text
        for the status line."""
        error, trace = describe_failure(exc)
        if self._internal is not None:
            self._internal(where, error, trace)
        return f"{_INTERNAL}{error}"

    async def _upload_loop(self) -> None:
        """Upload the queue, a batch at a time, forever. A failed batch (the backend down or
        refusing, an unexpected exception) is retried with backoff, 1 s doubling to a minute;
        its reason is in the writer's status meanwhile."""
        backoff = 1.0
        while True:
            writer: LogWriter | None = None
            try:
                rows = self._db.execute(
                    "SELECT seq, grp, id, wire FROM queue ORDER BY seq LIMIT ?", (_BATCH,)
                ).fetchall()
                if not rows:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                group_id = rows[0][1]
                batch = [r for r in rows if r[1] == group_id]
                writer = self.writers.get(group_id)
                if writer is not None:
                    await writer.append([(r[2], r[3]) for r in batch])
                self._batch_uploaded(group_id, writer, batch)
                backoff = 1.0
                continue
            except (BackendError, LogError) as e:
                error = str(e)
            except Exception as e:
                where = f"remote log upload of {writer.name}" if writer else "remote log upload"
                error = self._internal_error(where, e)
            if writer is not None:
                self.status[writer.name].error = error
            await trio.sleep(backoff)  # retry later; sync goes on meanwhile
            backoff = min(_MAX_BACKOFF, backoff * 2)

    def _batch_uploaded(
        self, group_id: bytes, writer: LogWriter | None, batch: list[tuple[Any, ...]]
    ) -> None:
        """Take a batch that is in the log (or whose group is gone) off the queue."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM queue WHERE seq = ?", [(r[0],) for r in batch])
            if writer is not None:
                self._acks[group_id].uploaded(writer.seq, [r[2] for r in batch])
        self._refresh_queued()
        if writer is not None:
            status = self.status[writer.name]
            status.seq, status.error = writer.seq, ""
            if self._uploaded is not None:
                self._uploaded(self._group_names[group_id], writer.seq, len(batch), status.queued)

    async def _watch_loop(self) -> None:
        """With a backend that announces updates (Redis pub/sub, NATS), have a log read as soon
        as its writer updates it, not at the next poll. The feed only wakes that log's reader
        task, so a slow log never holds up the announcements of the others. Each time the feed
        is up, every log is read once, for the updates announced while it was not. A feed that
        fails or ends is opened again with backoff; polling goes on meanwhile."""
        readers = {reader.name: reader.name for reader, _ in self.readers}
        readers.update({reader.name + "/acks": reader.name for reader, _ in self.readers})
        backoff = 1.0
        while True:
            try:
                async with self.backend.watch() as updates:  # type: ignore[attr-defined]
                    self.watch_error = ""
                    backoff = 1.0
                    # An update announced before the feed was up (at start, or while it was
                    # down) was heard by no one: read every log once now that it is.
                    for wake in self._wakes.values():
                        wake.set()
                    async for name in updates:
                        found = readers.get(name) if isinstance(name, str) else None
                        if found is not None:
                            self._wakes[found].set()
                error = "the update feed ended"
            except BackendError as e:
                error = str(e)
            except Exception as e:
                error = self._internal_error("remote log update feed", e)
            self.watch_error = error
            await trio.sleep(backoff)
            backoff = min(_MAX_BACKOFF, backoff * 2)

    async def poll_now(self) -> None:
        """Read every peer's log once, now (also done every ``poll_seconds``), all at once: a
        log that is slow to answer delays only itself, up to its backend's timeouts."""
        async with trio.open_nursery() as nursery:
            for reader, member in self.readers:
                nursery.start_soon(self._poll, reader, member)

    def kick(self) -> None:
        """Connectivity came back (a peer connected): read every log now, not at the next poll."""
        for wake in self._wakes.values():
            wake.set()

    async def _read_loop(self, reader: LogReader, member: bytes) -> None:
        """One log's reader task: a poll every ``poll_seconds``, at once when woken."""
        delay = self.poll_seconds
        while True:
            # A fresh event before the poll: a wake that comes during it is not lost.
            wake = self._wakes[reader.name] = trio.Event()
            failed = await self._poll(reader, member)
            # A backend that fails is asked again after 2, 4, 8 ... poll intervals (at most 10
            # minutes), so a helper that is down is not hammered; any success resets the pace.
            if failed:
                delay = min(max(delay * 2, self.poll_seconds), max(self.poll_seconds, 600.0))
            else:
                delay = self.poll_seconds
            with trio.move_on_after(delay):
                await wake.wait()

    async def _poll(self, reader: LogReader, member: bytes) -> bool:
        """Read one log once (one poll per log at once); whether the attempt failed (backend
        unreachable, or a bug), for the reader's backoff."""
        async with self._locks.setdefault(reader.name, trio.Lock()):
            return await self._poll_locked(reader, member)

    async def _poll_locked(self, reader: LogReader, member: bytes) -> bool:
        status = self.status[reader.name]
        status.last_poll_ms = time.time_ns() // 1_000_000
        try:
            result = await reader.poll(self._has)
            for payload in _payloads(result.messages):
                await self._feed(member, payload)
            moved = self._commit(reader, result)
            self._save_cursor(reader)
            status.fetched += len(result.messages)
            status.behind = len(result.messages)
            status.seq = result.seq
            if self.settings.signed:
                # Also after a poll that moved nothing: a publication that failed is retried.
                await self._publish_acks(reader.group_id)
                await self._read_acks(reader, member)
        except LogError as e:
            status.error = str(e)
            self._refused(member, RejectReason.REMOTE_LOG, str(e))
            return False
        except BackendError as e:
            status.error = f"{_UNREACHABLE}{e}"
            return True
        except Exception as e:
            where = f"remote log of {member.hex()[:16]} in {self._group_names[reader.group_id]}"
            status.error = self._internal_error(where, e)
            return True
        if moved or not result.messages:
            status.error = ""
        else:
            status.error = (
                f"{reader.name}: fetched messages were not stored; they are fetched again at "
                "the next poll"
            )
        return False

    def _commit(self, reader: LogReader, result: ReadResult) -> bool:
        """Move the reader's cursor if every fetched message is in the store now. One that can
        never be stored (ephemeral, or expired) does not hold the cursor back."""
        wall = time.time_ns() // 1_000_000
        never = set()
        for mid, wire in zip(result.ids, result.messages, strict=True):
            m = decode_stored(wire)
            if m.ephemeral or (m.expires_at and m.expires_at <= wall):
                never.add(mid)
        return reader.commit(result, lambda mid: mid in never or self._has(mid))

    async def _publish_acks(self, group_id: bytes) -> None:
        """Say, in our own acknowledgement record, how far we have read each member's log of the
        group: a writer polling it stops retransmitting what we hold, even if it never meets us.
        """
        records = self._acks[group_id]
        positions = {
            r.writer: r.cursor.seq
            for r, _ in self.readers
            if r.group_id == group_id and r.cursor is not None
        }
        if not positions:
            return
        if records.needs_sequence:
            records.resume(await self.backend.ns_fetch(records.name))
        pending = records.record_for(positions)
        if pending is not None:
            await self.backend.ns_update(records.name, pending.record)
            records.published(pending)

    async def _read_acks(self, reader: LogReader, member: bytes) -> None:
        """The member's acknowledgement record: the messages we published up to the head
        sequence it has read of our log are fed to the engine as ACKs from it.

        Raises:
            LogError: a record that is forged, sealed without our key, or malformed (too long,
                unknown version, entries out of order); nothing changes. Entries for logs we do
                not read are skipped.
        """
        records = self._acks[reader.group_id]
        if not records.wants_record(member):
            return  # nothing of ours awaits its acknowledgement: no need to read the record
        record = await self.backend.ns_fetch(records.record_name(member))
        if record is None:
            return
        with self._db:
            self._db.execute("BEGIN")
            ids = records.read_record(member, record)
        for payload in ack_payloads(ids):
            await self._feed(member, payload)


@final
class _SqliteLedger:
    """One group's :class:`~mvds_node.remotelog.PublishedLedger` in ``remotelog.sqlite`` (the
    ``published`` and ``acked`` tables); the service wraps its calls in transactions."""

    __slots__ = ("_db", "_group_id")

    def __init__(self, db: sqlite3.Connection, group_id: bytes) -> None:
        self._db = db
        self._group_id = group_id

    def add(self, seq: int, ids: Sequence[bytes]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO published VALUES (?, ?, ?)",
            [(self._group_id, seq, mid) for mid in ids],
        )

    def keep_newest(self, count: int) -> None:
        self._db.execute(
            "DELETE FROM published WHERE grp = ? AND seq <= (SELECT seq FROM published "
            "WHERE grp = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (self._group_id, self._group_id, count),
        )

    def newest(self) -> int:
        (seq,) = self._db.execute(
            "SELECT max(seq) FROM published WHERE grp = ?", (self._group_id,)
        ).fetchone()
        return int(seq) if seq is not None else 0

    def ids_between(self, after: int, through: int) -> list[bytes]:
        return [
            mid
            for (mid,) in self._db.execute(
                "SELECT id FROM published WHERE grp = ? AND seq > ? AND seq <= ?",
                (self._group_id, after, through),
            )
        ]

    def forget_through(self, seq: int) -> None:
        self._db.execute("DELETE FROM published WHERE grp = ? AND seq <= ?", (self._group_id, seq))

    def acked_through(self, member: bytes) -> int:
        row = self._db.execute(
            "SELECT seq FROM acked WHERE grp = ? AND member = ?", (self._group_id, member)
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def set_acked_through(self, member: bytes, seq: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO acked VALUES (?, ?, ?)", (self._group_id, member, seq)
        )


def _payloads(messages: list[bytes]) -> Iterator[bytes]:
    """MVDS payloads carrying ``messages`` in order, each within the engine's limits."""
    chunk: list[bytes] = []
    size = 0
    for wire in messages:
        if chunk and (len(chunk) >= _FEED_CHUNK or size + len(wire) > _FEED_BYTES):
            yield encode_payload(messages=chunk)
            chunk, size = [], 0
        chunk.append(wire)
        size += len(wire)
    if chunk:
        yield encode_payload(messages=chunk)
