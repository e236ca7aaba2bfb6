"""The running node: the public API over the engine, the SQLite store and the carriers.

Theory of operation
-------------------
A :class:`Node` builds the pieces and runs them: the engine on its store, the carriers (TCP,
multicast per group with a secret, and any passed in), the :class:`~._routing.Router` that picks
a carrier per peer by what carriers declare, one supervisor task per carrier (``_carriers``),
and the one loop (``_driver``) that every input from outside goes through and that alone drains
the engine. Application calls (:meth:`Node.send`, group changes, bundles) run the engine from
the caller's task, which is safe because Trio switches tasks only at ``await`` and no engine
call awaits; they then wake the loop. They do not queue behind the loop's inbox: an application
that sends while it is slow to read :meth:`Node.messages` must not wait on a loop that waits on
it.

*Durability.* :meth:`Node.send` returns once the SQLite transaction holding the message has
committed, so a message ``send`` accepted survives ``kill -9``. Received messages are committed
before they are acknowledged. Shutdown (cancellation, Ctrl-C) only closes: there is nothing in
memory that the store does not already hold, except ephemeral traffic, which is by definition
allowed to vanish.

*A full disk.* A store write that fails (disk full, a read-only file system, an I/O error)
raises :class:`~mvds_node.errors.StoreError` from :meth:`Node.send`; in the loop it never ends
the node. A received payload is one engine input (``receive_payloads``): if it cannot be
stored, the engine rolls it back whole, so nothing of it is delivered or acknowledged and the
peer sends it again later. :class:`StoreFailed` reports the first failure of an episode and
:class:`StoreRecovered` the first message stored after it; meanwhile the loop retries its own
writes (retransmissions, expiry) every :data:`~._driver._STORE_RETRY_SECONDS`, not in a busy loop.

*Pacing.* Trio runs one task at a time, so an application that sends in a tight loop would leave
the connection writers only the moments between its calls. :meth:`Node.send` and
:meth:`Node.send_many` therefore first wait (up to an epoch) while a carrier's queue for a peer
holds more than a couple of payloads: the application goes at the pace of the network, and the
queues stay short.

*Peers.* A peer is its X25519 key, whatever carries its packets: the engine keeps one
acknowledgement space per peer, so a message sent over TCP may be acknowledged in a bundle
file. When a peer comes up its records are re-armed (:meth:`Engine.reset_peer`), so a peer
returning after a long absence gets what it missed at once rather than at the end of a long
backoff.

*The inbox* (``_inbox``): every durable message delivered to the application is kept in the
store's inbox, written by the engine in the transaction that stores the message, and
:meth:`Node.messages` reads it from a durable, named cursor: after a crash or a restart a reader
resumes after the last message it confirmed (at least once; exactly once for an application
that confirms). The loop never waits for a reader: a slow application reads behind, from the
store, and the node goes on syncing. Live subscribers (``messages(live=True)``) and events
subscribers (``_subscribers``) have bounded buffers and miss what finds them full.
Retention (``[retention]``) deletes old messages, received and sent alike, that no peer waits
for, off the causal frontier, and (received ones) that every cursor has passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, overload

import trio

from mvds_node._address import format_address
from mvds_node.errors import (
    ConfigError,
    LocalProtocolError,
    NodeFailed,
    StoreError,
)
from mvds_node.node._bundles import ExportResult, ImportResult, export_bundle, import_bundle
from mvds_node.node._carriers import (
    read_events,
    supervise,
)
from mvds_node.node._config import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    load_config,
    parse_address,
    save_config,
)
from mvds_node.node._discovery import Discovery, PeerDiscovered
from mvds_node.node._driver import Driver, wall_ms
from mvds_node.node._envelope import Authors, seal, seal_batch, sign_binding, verify_binding
from mvds_node.node._events import (
    AnyEvent,
    AuthorLearned,
    AuthorMismatch,
    EnvelopeMismatch,
    InternalError,
    LogUploaded,
)
from mvds_node.node._identity import Identity, load_identity
from mvds_node.node._inbox import (
    DEFAULT_CURSOR,
    Inbox,
    InboxReader,
    check_cursor_name,
    history_messages,
)
from mvds_node.node._memory import keep_freed_memory
from mvds_node.node._remotelog import RemoteLogService, backend_for, credentials_from
from mvds_node.node._routing import Route, Router
from mvds_node.node._status import (
    Contact,
    CursorStatus,
    GroupStatus,
    NodeStatus,
    PeerStatus,
    Trace,
    WaitingFor,
)
from mvds_node.node._subscribers import Message, Subscribers
from mvds_node.remotelog import LogSettings
from mvds_node.sync import (
    Engine,
    Limits,
    SQLiteStore,
    SyncConfig,
)
from mvds_node.transports import (
    HEADER_SIZE,
    Author,
    Hello,
    MulticastTransport,
    NoSyncFrame,
    TcpTransport,
    Transport,
    encode_frame,
)

__all__ = ["Node", "open_node", "wall_ms"]

_APP_QUEUE_LIMIT: Final = 2
"""Packets a connection may have queued, the one being written included, before :meth:`Node.send`
and :meth:`Node.send_many` wait for it, up to an epoch (a burst of sends stays ahead of the
network by about this many payloads, and the connection's writer runs while the burst waits)."""
_SUBSCRIBER_BUFFER: Final = 1024
"""Messages or events waiting for one subscriber."""
_Messages = trio.MemoryReceiveChannel[Message]
_Events = trio.MemoryReceiveChannel[AnyEvent]


class Node:
    """A running mvds-node; get one from :func:`open_node`, or run one in your own nursery::

        node = Node(config, identity, store)
        await nursery.start(node.run)

    All methods must be called from the Trio thread that runs the node.
    """

    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        store: SQLiteStore,
        *,
        transports: Sequence[Transport] = (),
        sync: SyncConfig | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self._store = store
        self._sync = sync or SyncConfig(
            epoch_seconds=config.epoch_seconds,
            delivery=config.delivery,
            limits=Limits(max_requests_per_peer=config.max_requests_per_peer),
            request_timeout=config.request_timeout,
            missing_parent_timeout=config.missing_parent_timeout,
            missing_parents=config.missing_parents,
        )
        # Signed envelopes: who wrote each message (``_envelope``); the engine asks before it
        # stores a received message.
        self._author_key = identity.signing_public_key
        self._authors = Authors(
            self._author_key,
            *_author_tables(config),
            mismatch=self._envelope_mismatch,
            # A store in memory holds nothing from before envelopes, and writes no file.
            legacy_before=(
                wall_ms() if store.path in ("", ":memory:") else envelopes_since(config.data_dir)
            ),
        )
        self._mismatches: set[tuple[bytes, bytes]] = set()
        self._author_mismatches: set[tuple[bytes, bytes]] = set()
        self._engine = Engine(
            store,
            config=self._sync,
            now=trio.current_time(),
            wall=wall_ms(),
            validate=self._authors,
        )
        self._tcp = TcpTransport(
            identity.noise,
            allow=self._allowed,
            accept_unknown=config.accept_unknown,
            max_inbound_connections=config.tcp.max_inbound_connections,
            max_handshakes_per_address=config.tcp.max_handshakes_per_address,
            handshake_timeout=config.tcp.handshake_timeout,
            frame_timeout=config.tcp.frame_timeout,
            keepalive_interval=config.tcp.keepalive_interval or None,
            keepalive_misses=config.tcp.keepalive_misses,
        )
        routes = [Route(t) for t in (*transports, self._tcp)]
        # UDP multicast: one carrier per group with a secret, when enabled, for its members.
        if config.multicast.enabled:
            mc = config.multicast
            for g in config.groups:
                if g.secret is not None:
                    carrier = MulticastTransport(
                        identity.public_key,
                        g.secret,
                        group=mc.group,
                        port=mc.port,
                        interface=mc.interface,
                    )
                    routes.append(Route(carrier, frozenset(g.members)))
        self._max_payload = min(
            self._sync.limits.max_payload_bytes, self._tcp.max_payload - HEADER_SIZE
        )
        self._router = Router(routes, fallback=self._tcp, max_payload=self._max_payload)
        self._transports = [r.carrier for r in routes]
        self._subscribers = Subscribers(_SUBSCRIBER_BUFFER)
        # Our signing key, bound to our Noise key: members that list us without a log_key
        # learn it when we connect (``_learn_author``). TCP writes it, after the Hello, first on
        # every connection, so it arrives before our first message is checked.
        author = Author(self._author_key, sign_binding(identity.signing, identity.public_key))
        self._tcp.greeting = (encode_frame(Hello()), encode_frame(author))
        self._driver = Driver(
            self._engine,
            self._router,
            self._subscribers,
            store_path=store.path,
            me=identity.public_key,
            groups=lambda: self.config.groups,
            epoch_seconds=self._sync.epoch_seconds,
            max_payload=self._max_payload,
            on_peer_up=self._peer_up,
            authors=self._authors,
            author=author,
            on_author=self._learn_author,
        )
        self._inbox = Inbox(
            store,
            lambda: self._driver.names,
            self._driver.emit,
            self._driver.store_failed,
            is_signed=self._authors.is_signed,
        )
        self._inbox.check()  # a damaged inbox or cursor: refuse to start, never reset it
        self._driver.on_delivered = self._inbox.notify
        self._listening: tuple[str, ...] = ()
        self._apply_config()
        self._remote_log: RemoteLogService | None = None
        rl = config.remote_log
        if rl.url:
            log_keys = {p.key: p.log_key for p in config.peers if p.log_key}
            self._remote_log = RemoteLogService(
                backend=backend_for(
                    rl.url,
                    credentials=credentials_from(rl),
                    ipns_ids={
                        p.log_key.hex(): p.ipns for p in config.peers if p.log_key and p.ipns
                    },
                ),
                data_dir=config.data_dir,
                signing=identity.signing,
                our_key=identity.public_key,
                groups=[
                    (
                        g.name,
                        g.id,
                        g.secret,
                        [(m, log_keys[m]) for m in g.members if m in log_keys],
                    )
                    for g in config.groups
                ],
                settings=LogSettings(
                    page_size=rl.page_size,
                    inline=rl.inline,
                    head_size=rl.head_size,
                    signed=rl.signed,
                ),
                poll_seconds=rl.poll_seconds,
                has_message=self._engine.has_message,
                feed=self._driver.feed_from_log,
                refused=self._driver.refuse,
                uploaded=self._log_uploaded,
                internal=self._log_internal,
            )

    # ----------------------------------------------------------------- configuration

    def _allowed(self, key: bytes) -> bool:
        return any(p.key == key for p in self.config.peers)

    def _apply_config(self) -> None:
        """Make the engine's groups and members match the configuration."""
        engine = self._engine
        current = engine.groups()
        for group in self.config.groups:
            if group.id not in current:
                engine.add_group(group.id)
            members = current.get(group.id, {})
            for peer in group.members:
                if peer != self.identity.public_key and members.get(peer) != group.mode:
                    engine.add_peer(group.id, peer, mode=group.mode)
            for peer in members:
                if peer not in group.members:
                    engine.remove_peer(group.id, peer)
        self._driver.names = {g.id: g.name for g in self.config.groups}
        self._authors.update(*_author_tables(self.config))
        self._driver.set_members(self._members())

    def _members(self) -> set[bytes]:
        me = self.identity.public_key
        return {m for g in self.config.groups for m in g.members if m != me}

    def _dial_static_peers(self) -> None:
        for peer in self.config.peers:
            if peer.address is not None:
                self._tcp.dial(peer.key, *peer.address)

    def add_peer(self, peer: PeerConfig, *, save: bool = False) -> None:
        """Know ``peer`` (accept its connections) and dial it if it has an address.

        A peer known already keeps its ``log_key`` (its Ed25519 key, which signs its messages)
        and ``ipns`` when ``peer`` gives none: a new address does not make it a stranger."""
        known = next((p for p in self.config.peers if p.key == peer.key), None)
        if known is not None:
            peer = dataclasses.replace(
                peer,
                log_key=peer.log_key if peer.log_key is not None else known.log_key,
                ipns=peer.ipns or known.ipns,
            )
        self.config = self.config.with_peer(peer)
        self._authors.update(*_author_tables(self.config))
        if peer.address is not None:
            self._tcp.dial(peer.key, *peer.address)
        if save:
            save_config(self.config)

    def dial(self, peer: bytes, host: str, port: int) -> None:
        """Dial a known peer at an address learned elsewhere (LAN discovery, a QR code)."""
        self._tcp.dial(peer, host, port)

    def add_group(self, group: GroupConfig, *, save: bool = False) -> None:
        """Join ``group`` (or update its members and mode) from now on."""
        self.config = self.config.with_group(group)
        self._apply_config()
        self._driver.wake()
        if save:
            save_config(self.config)

    def group(self, name_or_id: str | bytes) -> GroupConfig:
        """The configured group with this name or ID. Raises ``ConfigError`` if none."""
        return self.config.group(name_or_id)

    # ----------------------------------------------------------------- sending

    async def send(
        self,
        group: str | bytes,
        body: bytes,
        *,
        ephemeral: bool = False,
        expires_at: int = 0,
    ) -> bytes:
        """Send ``body`` to every member of ``group`` (its name or ID).

        A durable message is committed to the store before this returns, and is retransmitted
        to every member as long as it takes; each member's application gets it at least once
        (exactly once for one that confirms what it read, see :meth:`messages`). An ephemeral
        message goes out once, as a NOSYNC packet that never enters the sync engine or the
        store (typing notices, presence); it returns ``b""``, since ephemeral messages have no ID.
        ``expires_at`` (Unix ms) makes the message delete itself everywhere at that time.
        While a member's connection has more than two payloads queued or being written, a durable
        send first waits for it to drain, for up to an epoch (the application keeps the network's
        pace).

        Raises:
            ConfigError: no such group.
            LocalProtocolError: the body is over the limit or the expiry is invalid.
            StoreError: the store cannot take the message (disk full, read-only): nothing was
                sent; the node keeps running and a later send succeeds once there is room.
        """
        if ephemeral:
            cfg = await self._ready_to_send(group, (body,), wait=False)
            packet = encode_frame(NoSyncFrame(cfg.id, self._wrap(cfg, 0, body)))
            for peer in cfg.members:
                if peer != self.identity.public_key:
                    await self._router.route(peer).send(peer, packet)
            return b""
        cfg = await self._ready_to_send(group, (body,))
        mid = self._commit(
            cfg.id,
            lambda now, stamp: [
                self._engine.send(
                    cfg.id,
                    self._wrap(cfg, stamp, body),
                    now=now,
                    timestamp=stamp,
                    expires_at=expires_at,
                )
            ],
        )
        return mid[0]

    def _wrap(self, group: GroupConfig, timestamp: int, body: bytes) -> bytes:
        """``body`` as the engine sends it: in a signed envelope, or as it is (a raw group)."""
        if group.envelope == "raw":
            return bytes(body)
        return seal(self.identity.signing, self._author_key, group.id, timestamp, bytes(body))

    def _wrap_many(
        self, group: GroupConfig, timestamp: int, bodies: Sequence[bytes]
    ) -> list[bytes]:
        """Bodies of one :meth:`send_many`: signed in batches (one signature per
        ``_envelope.BATCH`` messages, each carrying its Merkle path), or as they are."""
        if group.envelope == "raw":
            return [bytes(b) for b in bodies]
        key, author = self.identity.signing, self._author_key
        return seal_batch(key, author, group.id, timestamp, [bytes(b) for b in bodies])

    async def send_many(self, group: str | bytes, bodies: Sequence[bytes]) -> list[bytes]:
        """Send several durable messages to ``group`` in one store transaction.

        For bulk sending: one commit for all of them instead of one each. All of them are
        committed when this returns, or none is (on error). Paced like :meth:`send`.

        Raises:
            ConfigError: no such group.
            LocalProtocolError: a body is over the limit.
            StoreError: the store cannot take them (disk full, read-only): none was sent.
        """
        cfg = await self._ready_to_send(group, bodies)
        return self._commit(
            cfg.id,
            lambda now, stamp: self._engine.send_many(
                cfg.id, self._wrap_many(cfg, stamp, bodies), now=now, timestamp=stamp
            ),
        )

    async def _ready_to_send(
        self,
        group: str | bytes,
        bodies: Sequence[bytes],
        *,
        wait: bool = True,
    ) -> GroupConfig:
        """What :meth:`send` and :meth:`send_many` check before anything is stored: the group
        exists and ``bodies`` are bytes; then, for durable sends, wait while a member's queue
        is full (see *Pacing* in the module doc). The engine checks sizes and the expiry.

        Raises:
            ConfigError: no such group.
            LocalProtocolError: a body is not bytes.
        """
        cfg = self.config.group(group)
        for body in bodies:
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise LocalProtocolError(f"a message body is bytes, not {type(body).__name__}")
        await trio.lowlevel.checkpoint()
        if wait:
            # Pace the application to the network: while a connection still has payloads
            # queued, let its writer run (for up to an epoch) instead of storing more. Without
            # this, an application that sends in a tight loop leaves the writer only the
            # moments between its calls, and the queue grows while the network idles.
            await self._driver.wait_for_congested_peers(_APP_QUEUE_LIMIT, cfg.members)
        return cfg

    def _commit(self, group_id: bytes, store: Callable[[float, int], list[bytes]]) -> list[bytes]:
        """Run one send in the engine (``store(now, timestamp)``), report the store's health,
        queue the messages for the remote log and wake the loop to send them."""
        try:
            ids = store(trio.current_time(), wall_ms())
        except StoreError as e:
            self._driver.store_failed(e)
            raise
        self._driver.store_ok()
        self._to_log(group_id, ids)
        self._driver.wake()
        return ids

    def export_bundle(
        self,
        path: str | os.PathLike[str],
        *,
        peer: str | bytes | None = None,
        group: str | bytes | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ExportResult:
        """Write a bundle file with what ``peer`` (or every member of ``group``) still needs.

        A peer bundle is sealed to the peer's key; a group bundle to the group's secret. What
        it carries counts as sent once the file is complete and on disk, with a latency of days
        (no retransmission storm); it is sent again sooner if the peer shows up on a live
        carrier. Runs in the node's thread: the node pauses while it writes.

        Raises:
            ConfigError: unknown peer or group.
            BundleError: the file cannot be written, or the group has no secret.
        """
        kwargs: dict[str, Any] = {}
        if peer is not None:
            kwargs["peer"] = self.config.peer(peer).key if isinstance(peer, str) else peer
        if group is not None:
            cfg = self.config.group(group)
            kwargs["group_id"] = cfg.id
            kwargs["group_key"] = cfg.secret
        result = export_bundle(
            self._engine,
            path,
            sender=self.identity.noise,
            now=trio.current_time(),
            created_ms=wall_ms(),
            progress=progress,
            **kwargs,
        )
        self._driver.wake()
        return result

    def import_bundle(
        self,
        path: str | os.PathLike[str],
        *,
        progress: Callable[[int, int], None] | None = None,
        apply_progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Authenticate a bundle file completely, then apply it all or nothing.

        Its messages are delivered (into the inbox :meth:`messages` reads) as if they had come
        from the sender over the network; its acknowledgements stop our retransmissions. Importing
        the same file again is harmless. ``progress`` follows the check of the file,
        ``apply_progress`` the second pass that applies it; both get (chunks done, chunks).

        Raises:
            BundleError: not a bundle, not for this node, damaged, changed or gone since it was
                checked, unreadable, or from an unknown key; nothing was applied.
        """
        keys = {g.id: g.secret for g in self.config.groups if g.secret is not None}
        result = import_bundle(
            self._engine,
            path,
            keypair=self.identity.noise,
            now=trio.current_time(),
            group_keys=keys,
            progress=progress,
            apply_progress=apply_progress,
        )
        self._driver.wake()
        return result

    async def poll_remote_logs(self) -> None:
        """Read every peer's remote log now (they are also read every ``poll_seconds``)."""
        if self._remote_log is not None:
            await self._remote_log.poll_now()

    # ----------------------------------------------------------------- subscriptions

    @overload
    def messages(
        self,
        cursor: str = ...,
        *,
        live: Literal[False] = ...,
        confirm: Literal["auto", "manual"] = ...,
    ) -> contextlib.AbstractAsyncContextManager[InboxReader]: ...
    @overload
    def messages(
        self,
        cursor: str = ...,
        *,
        live: Literal[True],
        confirm: Literal["auto", "manual"] = ...,
    ) -> contextlib.AbstractAsyncContextManager[_Messages]: ...
    def messages(
        self,
        cursor: str = DEFAULT_CURSOR,
        *,
        live: bool = False,
        confirm: Literal["auto", "manual"] = "auto",
    ) -> contextlib.AbstractAsyncContextManager[InboxReader | _Messages]:
        """Read the durable messages delivered to this node, in delivery order, from the durable
        cursor ``cursor`` (one name per consumer, say ``"ui"``)::

            async with node.messages() as inbox:
                async for message in inbox:
                    ...

        A cursor starts before the oldest stored message, so what arrived while no reader ran
        (a bundle imported while the node was stopped, a remote log caught up) is read first.
        Confirmation is per message: ``async for`` (or :meth:`InboxReader.receive`) confirms a
        message once the reader asks for the next one, that is after the loop body ran for it,
        and leaving the block without an exception confirms the last one. With
        ``confirm="manual"``, call :meth:`InboxReader.confirm` (for a batch: its last message).
        After a crash or a restart the cursor resumes after the last confirmed message: every
        message at least once, exactly once for an application that confirms. The node never
        waits for a reader: a slow one reads behind, from the store.

        ``live=True`` is a live-only subscription, as before the inbox: messages delivered from
        now on, ephemeral (NOSYNC) ones included, which are never in the inbox; a live reader
        that falls 1,024 messages behind misses messages (they stay in the inbox).

        Raises:
            LocalProtocolError: a bad cursor name or ``confirm`` mode.
        """
        if live:
            return self._subscribers.messages()
        check_cursor_name(cursor)
        return self._inbox.reader(cursor, confirm)

    @property
    def store(self) -> SQLiteStore:
        """The node's store (its inbox, cursors and history are read from here)."""
        return self._store

    def cursors(self) -> dict[str, int]:
        """The durable cursors, each with the inbox position it last confirmed."""
        return self._inbox.cursors()

    def delete_cursor(self, name: str) -> bool:
        """Forget a durable cursor (a consumer that is gone, so retention is not held back by
        it). Returns False if there was none of that name."""
        return self._inbox.delete_cursor(name)

    def unread(self, cursor: str = DEFAULT_CURSOR) -> int:
        """Inbox messages after ``cursor``'s position."""
        return self._inbox.unread(cursor)

    def history(
        self,
        group: str | bytes,
        *,
        since: int = 0,
        limit: int | None = None,
        author: bytes | None = None,
    ) -> list[Message]:
        """The group's stored messages, received and sent, oldest first: those with a
        timestamp (Unix ms) at or after ``since``; with ``limit``, the last ``limit`` of them;
        with ``author``, those whose verified author (:attr:`Message.author`, an Ed25519 key;
        this node's ``identity.signing_public_key`` for those it sent) is that key; a raw
        group's messages have no author. An expired or retained-away message is not there.

        Raises:
            ConfigError: no such group.
        """
        cfg = self.config.group(group)
        return history_messages(
            self._store,
            cfg.name,
            cfg.id,
            self.identity.public_key,
            signed=self._authors.is_signed(cfg.id),
            since=since,
            limit=limit,
            author=author,
        )

    def apply_retention(self) -> int:
        """Delete what ``[retention]`` says may go (see :meth:`SQLiteStore.retain`), our own
        sends as well as received messages, never a received message a durable cursor has not
        passed. Returns how many messages went; the
        node does this every ``retention.interval`` seconds."""
        r = self.config.retention
        if not (r.max_age or r.max_messages or r.max_bytes):
            return 0
        cursors = self._inbox.cursors()
        up_to = min(cursors.values()) if cursors else self._store.inbox_end()
        deleted = self._store.retain(
            up_to,
            older_than=wall_ms() - int(r.max_age * 1000) if r.max_age else None,
            max_messages=r.max_messages or None,
            max_bytes=r.max_bytes or None,
        )
        return len(deleted)

    async def _retain_periodically(self) -> None:
        while True:
            try:
                self.apply_retention()
            except StoreError as e:
                self._driver.store_failed(e)
            await trio.sleep(self.config.retention.interval)

    def events(self) -> contextlib.AbstractAsyncContextManager[_Events]:
        """Receive the node's events from now on: the engine's (delivered, acked, given up,
        expired, rejected payloads), the carriers' refused input, and the node's own (peers up
        and down, carriers failing, the store, the remote log). Events that find this
        subscriber's buffer full are dropped and counted in :meth:`status`."""
        return self._subscribers.events()

    # ----------------------------------------------------------------- status

    def status(self) -> NodeStatus:
        """A snapshot of identity, groups, peers and counters, and how far each peer and group
        is in sync: per peer, records pending and their bytes, messages asked of it and the
        last contact per carrier; per group, messages we lack (and whom we ask), messages held
        for a missing parent (and which), and the remote log's lag. It reads the store through
        its indexes (each peer's records), never a scan of every message."""
        members = dict.fromkeys(m for g in self.config.groups for m in g.members)
        members.pop(self.identity.public_key, None)
        per_peer, per_group = self._engine.sync_status(members)
        sync = {p.peer: p for p in per_peer}
        known = {p.key: p for p in self.config.peers}
        keys = dict.fromkeys([*known, *sync, *self._driver.connected])
        keys.pop(self.identity.public_key, None)
        peers = tuple(
            PeerStatus(
                key=k,
                name=known[k].name if k in known else "",
                address=self._driver.connected.get(k) or _static_address(known.get(k)),
                connected=k in self._driver.connected,
                pending=sync[k].pending if k in sync else 0,
                available_until_ms=self._driver.available_until.get(k, 0),
                pending_bytes=sync[k].pending_bytes if k in sync else 0,
                pending_bytes_exact=sync[k].pending_bytes_exact if k in sync else True,
                requested=sync[k].requested if k in sync else 0,
                contacts=tuple(
                    Contact(c, sent, received)
                    for c, (sent, received) in sorted(sync[k].contacts.items())
                )
                if k in sync
                else (),
            )
            for k in keys
        )
        groups_sync = {g.group_id: g for g in per_group}
        logs = tuple(self._remote_log.status.values()) if self._remote_log else ()
        groups = []
        for g in self.config.groups:
            gs = groups_sync.get(g.id)
            mine = [log for log in logs if log.group == g.name]
            groups.append(
                GroupStatus(
                    g.name,
                    g.id,
                    g.mode.value,
                    g.members,
                    lacking=0 if gs is None else gs.lacking,
                    lacking_ids=()
                    if gs is None
                    else tuple(WaitingFor(m, on) for m, on in gs.lacking_ids),
                    held=0 if gs is None else gs.held,
                    held_ids=()
                    if gs is None
                    else tuple(WaitingFor(m, on) for m, on in gs.held_ids),
                    log_behind=sum(log.behind for log in mine if not log.mine),
                    log_queued=sum(log.queued for log in mine if log.mine),
                )
            )
        return NodeStatus(
            key=self.identity.public_key,
            name=self.config.name,
            listening=self._listening,
            messages_stored=self._store.message_count(),
            groups=tuple(groups),
            peers=peers,
            engine=dataclasses.asdict(self._engine.statistics()),
            events_dropped=self._subscribers.events_dropped,
            refused=self._driver.refused,
            logs=logs,
            carriers_down=tuple(self._driver.down.values()),
            store_error=self._driver.store_error,
            cursors=tuple(
                CursorStatus(name, position, self._inbox.unread_after(position))
                for name, position in self._inbox.cursors().items()
            ),
            live_messages_dropped=self._subscribers.messages_dropped,
        )

    def message_ids(self, prefix: bytes, *, limit: int = 2) -> list[bytes]:
        """Up to ``limit`` stored message IDs that start with ``prefix`` (for an ID written
        short, as ``mvds-node send`` shows it), read from the store's ID index."""
        return self._engine.store_view.ids_with_prefix(prefix, limit)

    def trace(self, message_id: bytes) -> Trace:
        """Every fact the node holds about one message: stored when, expiry, held for causal
        order and which parents are missing (and whom we ask for them); per peer: offered,
        sent or requested (transmissions, carrier, next retry, given up) or acknowledged (when,
        and how: ``tcp``, ``bundle``, ``remote-log`` ...); in our remote log at which head
        sequence. A snapshot: nothing changes. Works on a node that is not running too (the
        facts are in the store; next retries then count running time from now)."""
        now, wall = trio.current_time(), wall_ms()
        t = self._engine.trace(message_id, now=now, wall=wall)
        names = {g.id: g.name for g in self.config.groups}
        group = names.get(t.group_id, t.group_id.hex()) if t.group_id else ""
        seq, queued = (
            self._remote_log.position(message_id)
            if self._remote_log is not None and t.stored
            else (0, False)
        )
        return Trace(
            message_id=message_id,
            known=t.known,
            stored=t.stored,
            group=group,
            group_id=t.group_id,
            timestamp=t.timestamp,
            stored_ms=t.stored_ms,
            expires_ms=t.expires_ms,
            held=t.held,
            parents=t.parents,
            parents_missing=tuple(WaitingFor(p, peers) for p, peers in t.asked),
            waiting_children=t.waiting_children,
            peers=t.peers,
            log_seq=seq,
            log_queued=queued,
            taken_ms=wall,
        )

    # ----------------------------------------------------------------- the service

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled: listen, dial, sync; close its carriers on the way out.
        Reports started once listening."""
        try:
            async with trio.open_nursery() as nursery:
                if self.config.listen is not None:
                    host, port = self.config.listen
                    listeners = await nursery.start(self._tcp.serve, host, port)
                    self._listening = tuple(_describe_listener(lst) for lst in listeners)
                else:
                    await nursery.start(self._tcp.serve_listeners, [])
                self._dial_static_peers()
                for carrier in self._transports:
                    # How its first opening went is handled here, before the node reports
                    # started: a carrier that cannot open is in status() from the start.
                    outcome = await nursery.start(supervise, carrier, self._driver.inputs)
                    if outcome is not None:
                        self._driver.handle(outcome)
                    events = getattr(carrier, "events", None)
                    if events is not None:
                        nursery.start_soon(read_events, carrier, events, self._driver.inputs)
                # What reaches each peer now that the carriers are open.
                self._driver.set_members(self._members())
                await nursery.start(self._driver.run)
                nursery.start_soon(self._retain_periodically)
                if self._remote_log is not None:
                    await nursery.start(self._remote_log.run)
                if self.config.discovery.enabled and self._listening:
                    port = parse_address(self._listening[0])[1]
                    discovery = Discovery(
                        self.identity.public_key,
                        port,
                        [g.id for g in self.config.groups],
                        interfaces=self.config.discovery.interfaces,
                    )
                    await nursery.start(discovery.run)
                    nursery.start_soon(self._dial_discovered, discovery)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.aclose()

    async def aclose(self) -> None:
        """Close the remote log and every carrier. Always closes; closing twice is harmless."""
        if self._remote_log is not None:
            await self._remote_log.aclose()
        for transport in self._transports:
            with contextlib.suppress(Exception):
                await transport.aclose()
        self._driver.close()

    async def _dial_discovered(self, discovery: Discovery) -> None:
        """Dial peers that LAN discovery finds, if the configuration knows their keys."""
        async for event in discovery.events:
            if (
                isinstance(event, PeerDiscovered)
                and self._allowed(event.key)
                and event.key not in self._driver.connected
            ):
                self._tcp.dial(event.key, event.addresses[0], event.port)

    # ----------------------------------------------------------------- the store and the log

    def _log_uploaded(self, group: str, seq: int, messages: int, queued: int) -> None:
        self._driver.emit(LogUploaded(group, seq, messages, queued))

    def _log_internal(self, where: str, error: str, traceback: str) -> None:
        self._driver.emit(InternalError(where, error, traceback))

    def _envelope_mismatch(self, group_id: bytes, peer: bytes, theirs: str) -> None:
        """A peer's message shows a different envelope setting for a group: said once per
        group and peer while the node runs."""
        if (group_id, peer) in self._mismatches:
            return
        self._mismatches.add((group_id, peer))
        ours = "raw" if theirs == "signed" else "signed"
        name = self._driver.names.get(group_id, group_id.hex())
        self._driver.emit(EnvelopeMismatch(name, peer, ours, theirs))

    def _learn_author(self, peer: bytes, frame: Author) -> None:
        """A peer's ``AUTHOR`` frame, over a carrier that proved its Noise key: trust on first
        use. A member listed without ``log_key`` gets the key (in memory, and in
        ``config.toml`` when the node runs from one, where ``peers list``, the CLI's author
        names and the next start read it); a configured key is never replaced, and a key
        that is already another member's (or ours) is never taken."""
        key = frame.signing_key
        if not verify_binding(key, peer, frame.signature):
            self._driver.refuse(
                peer, "author-bad-signature", "AUTHOR frame's signature does not bind its key"
            )
            return
        config = self.config
        entry = next((p for p in config.peers if p.key == peer), None)
        if entry is None or entry.log_key == key:
            return  # a stranger teaches nothing; a known key needs nothing
        if entry.log_key is not None:
            self._author_mismatch(peer, key, "configured", configured=entry.log_key)
            return
        if key == self._author_key:
            self._author_mismatch(peer, key, "in-use", owner=self.identity.public_key)
            return
        owner = next((p.key for p in config.peers if p.log_key == key), None)
        if owner is not None:
            self._author_mismatch(peer, key, "in-use", owner=owner)
            return
        self.config = config.with_peer(dataclasses.replace(entry, log_key=key))
        self._authors.update(*_author_tables(self.config))
        saved, detail = self._save_author(peer, key)
        self._driver.emit(AuthorLearned(peer, key, saved, detail))

    def _save_author(self, peer: bytes, key: bytes) -> tuple[bool, str]:
        """Write a learned key into ``config.toml``: into the file as it is now, not the
        configuration the node started with, so an edit made while the node runs (``peers
        add``, ``config set``) is kept. Returns (saved, why not)."""
        path = self.config.config_path
        if not path.exists():
            return False, "the configuration has no file"
        try:
            on_disk = load_config(self.config.data_dir)
            entry = next((p for p in on_disk.peers if p.key == peer), None)
            if entry is None or entry.log_key is not None:
                return False, f"{path} changed: it lists this peer differently now"
            save_config(on_disk.with_peer(dataclasses.replace(entry, log_key=key)))
        except ConfigError as e:
            return False, str(e)
        return True, ""

    def _author_mismatch(
        self,
        peer: bytes,
        key: bytes,
        reason: str,
        *,
        configured: bytes | None = None,
        owner: bytes | None = None,
    ) -> None:
        if (peer, key) in self._author_mismatches:
            return
        if len(self._author_mismatches) >= 4096:  # a peer making up keys: bounded, said again
            self._author_mismatches.clear()
        self._author_mismatches.add((peer, key))
        self._driver.emit(AuthorMismatch(peer, key, reason, configured, owner))

    def _peer_up(self) -> None:
        if self._remote_log is not None:
            self._remote_log.kick()  # we are online again: read the logs now

    def _to_log(self, group_id: bytes, ids: Sequence[bytes]) -> None:
        if self._remote_log is not None and ids:
            wires = self._store.get_wires(list(ids))
            self._remote_log.enqueue(group_id, [(i, wires[i]) for i in ids if i in wires])


ENVELOPES_SINCE_NAME: Final = "envelopes-since"
"""The file in the data directory that says since when (Unix ms) the node requires envelopes."""


def envelopes_since(data_dir: Path) -> int:
    """Since when (Unix ms) this node requires envelopes in signed groups: the time it first
    ran a release that has them, kept in ``envelopes-since`` in the data directory (written
    once, atomically). A member's message without an envelope timestamped before it was
    written by an earlier release (a data directory's pending sends, a remote log's pages) and
    is delivered without an author; one timestamped after is refused.

    Raises:
        ConfigError: the file is damaged or cannot be written.
    """
    path = data_dir / ENVELOPES_SINCE_NAME
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        now = wall_ms()
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{now}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            raise ConfigError(f"{path}: cannot write: {e.strerror}") from None
        return now
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    value = text.strip()
    if not value.isdigit() or len(value) > 19:
        raise ConfigError(
            f"{path}: damaged (expected Unix milliseconds); write the time this node first ran "
            "with envelopes, or delete it to require envelopes from now on"
        )
    return int(value)


def _author_tables(config: NodeConfig) -> tuple[dict[bytes, frozenset[bytes]], dict[bytes, bytes]]:
    """What :class:`Authors` needs from the configuration: each signed group's members'
    Ed25519 keys (their ``log_key``), and each peer's Ed25519 key by its X25519 key."""
    keys = {p.key: p.log_key for p in config.peers if p.log_key is not None}
    signed = {
        g.id: frozenset(keys[m] for m in g.members if m in keys)
        for g in config.groups
        if g.envelope == "signed"
    }
    return signed, keys


def _static_address(peer: PeerConfig | None) -> str | None:
    if peer is None or peer.address is None:
        return None
    return format_address(*peer.address)


def _describe_listener(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return format_address(host, port)


@contextlib.asynccontextmanager
async def open_node(
    config: NodeConfig,
    *,
    identity: Identity | None = None,
    transports: Sequence[Transport] = (),
    sync: SyncConfig | None = None,
) -> AsyncIterator[Node]:
    """Open the node's store, start it, and yield it; stop and close everything on exit::

        async with open_node(load_config()) as node:
            await node.send("chat", b"hello")

    An exception raised in the block leaves it as itself. The node's own tasks run in a
    nursery this hides; if they fail (or the node cannot start), :class:`NodeFailed` is raised
    from their exception group. For the nursery in your own hands, run :meth:`Node.run` there.

    Args:
        config: see :func:`~mvds_node.node.load_config`.
        identity: the node's keys; default: read ``identity.key`` from the data directory.
        transports: extra carriers tried before TCP (for example a memory hub in tests).
        sync: engine settings; default from ``config``.

    Raises:
        ConfigError: bad configuration or key file.
        StoreError: the store cannot be opened (another process holds it, say).
        NodeFailed: the node could not start (the listen address cannot be bound, say) or
            failed while running; ``__cause__`` holds what its tasks raised.
    """
    ident = identity if identity is not None else load_identity(config.identity_path)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    keep_freed_memory(config.keep_freed_memory_mib * 1024 * 1024)
    store = SQLiteStore(
        config.store_path, synchronous=config.store_sync, page_size=config.store_page_size
    )
    raised: BaseException | None = None  # what the block raised
    try:
        node = Node(config, ident, store, transports=transports, sync=sync)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                try:
                    yield node
                except BaseException as e:
                    raised = e
                    raise
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _, theirs = group.split(lambda e: e is raised)
            if theirs is None and raised is not None:
                raise raised from None  # only the block's own exception: not the node's
            failures = group.split(trio.Cancelled)[1]
            if failures is None:
                raise  # cancelled from outside: the cancel scope that did it takes the group
            first = _leaves(failures)[0]
            raise NodeFailed(f"the node stopped: {type(first).__name__}: {first}") from group
    finally:
        store.close()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]
