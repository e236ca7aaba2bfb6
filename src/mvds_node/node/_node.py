"""The running node: joins the sans-IO engine, the SQLite store and the carriers under Trio.

Theory of operation
-------------------
Only this module runs the engine, and one task, the *engine loop*, owns the cycle::

    feed timers -> drain payloads to the carriers -> drain events to subscribers
        -> wait for the next input, or the engine's next deadline, whichever comes first

Every input from outside reaches it through one bounded channel (the *inbox*): packets,
carrier events (a peer up or down), a carrier failing or reopening (one supervisor task per
carrier, ``_carriers``) and the remote log's payloads. So a flood from the network waits in
the carriers (TCP pushes back on the peer) instead of in our memory, and the engine is entered
once per input. Application calls (:meth:`Node.send`, group changes, bundles) run the engine
from the caller's task, which is safe because Trio switches tasks only at ``await`` and no
engine call awaits; they then wake the loop. They do not queue behind the inbox: an application
that sends while it is slow to read :meth:`Node.messages` must not wait on a loop that waits on
it.

*Routing.* ``_routing`` picks each packet's carrier from what carriers declare (``reached``,
``reliable``, ``max_latency``, ``max_payload``), and what the engine knows about a peer (records
written once while it is reached reliably, its retransmission gap, its payload size) follows
from that carrier whenever a peer or a carrier comes or goes: no carrier is named here.

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
writes (retransmissions, expiry) every :data:`_STORE_RETRY_SECONDS`, not in a busy loop.

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

*Subscribers* (``_subscribers``): delivered messages wait for a slow reader, events never do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast, final

import trio

from mvds_node.errors import (
    LocalProtocolError,
    NodeFailed,
    StoreError,
    TransportError,
    describe_failure,
)
from mvds_node.node._bundles import ExportResult, ImportResult, export_bundle, import_bundle
from mvds_node.node._carriers import (
    CarrierEvent,
    CarrierFailed,
    CarrierOpened,
    describe,
    read_events,
    supervise,
)
from mvds_node.node._config import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    parse_address,
    save_config,
)
from mvds_node.node._discovery import Discovery, PeerDiscovered
from mvds_node.node._events import (
    AnyEvent,
    InternalError,
    LogUploaded,
    PeerConnected,
    PeerDisconnected,
    StoreFailed,
    StoreRecovered,
    TransportFailed,
    TransportRestored,
)
from mvds_node.node._identity import Identity, load_identity
from mvds_node.node._memory import keep_freed_memory
from mvds_node.node._remotelog import RemoteLogService, backend_for
from mvds_node.node._routing import PeerCapabilities, Queued, Route, Router
from mvds_node.node._status import GroupStatus, NodeStatus, PeerStatus
from mvds_node.node._subscribers import Message, Subscribers
from mvds_node.remotelog import LogSettings
from mvds_node.sync import (
    Engine,
    Limits,
    MessageDelivered,
    PayloadRejected,
    RejectReason,
    SQLiteStore,
    SyncConfig,
)
from mvds_node.transports import (
    HEADER_SIZE,
    FrameError,
    Hello,
    InputRejected,
    MulticastTransport,
    NoSyncFrame,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    SyncFrame,
    TcpTransport,
    Transport,
    check_frame,
    decode_checked,
    encode_frame,
)
from mvds_node.transports import InternalError as TransportInternalError
from mvds_node.transports import Mode as FrameMode

__all__ = ["Node", "open_node", "wall_ms"]

_INBOX_SIZE: Final = 256
"""Inputs waiting for the engine loop. Enough for a burst from every peer; beyond it the
carriers wait, which pushes back on the senders instead of growing our memory."""
_INBOX_BATCH: Final = 256
"""Inputs the loop takes in one go before draining output, so acks go out promptly under load."""
_APP_QUEUE_LIMIT: Final = 2
"""Packets a connection may have queued, the one being written included, before :meth:`Node.send`
and :meth:`Node.send_many` wait for it, up to an epoch (a burst of sends stays ahead of the
network by about this many payloads, and the connection's writer runs while the burst waits)."""
_SUBSCRIBER_BUFFER: Final = 1024
"""Messages or events waiting for one subscriber."""
_STORE_RETRY_SECONDS: Final = 1.0
"""While the store refuses writes (disk full), the engine loop retries its own work (timers,
retransmissions) at most this often instead of at once: no busy loop against a full disk."""


def wall_ms() -> int:
    """Unix time in milliseconds, the unit of message timestamps and expiries."""
    return time.time_ns() // 1_000_000


@final
@dataclass(slots=True)
class _LogFeed:
    """A payload the remote log read for ``peer``; ``done`` once the engine took it."""

    peer: bytes
    payload: bytes
    done: trio.Event = dataclasses.field(default_factory=trio.Event)


_Messages = trio.MemoryReceiveChannel[Message]
_Events = trio.MemoryReceiveChannel[AnyEvent]
_Input = tuple[Transport, bytes, bytes] | CarrierEvent | CarrierOpened | CarrierFailed | _LogFeed
"""What the inbox carries (``None`` is a wake-up)."""


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
        self._engine = Engine(store, config=self._sync, now=trio.current_time())
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
        self._queued = [c for c in self._transports if isinstance(c, Queued)]
        self._inbox_send, self._inbox = trio.open_memory_channel[_Input | None](_INBOX_SIZE)
        self._subscribers = Subscribers(_SUBSCRIBER_BUFFER)
        self._caps: dict[bytes, PeerCapabilities] = {}  # what the engine was told, per peer
        self._connected: dict[bytes, str] = {}  # peers a carrier reported up, and their address
        self._congested: dict[bytes, int] = {}
        self._available_until: dict[bytes, int] = {}
        self._listening: tuple[str, ...] = ()
        self._refused = 0
        self._down: dict[int, str] = {}  # id(carrier): what failed, while it is down
        self._store_error: str | None = None  # while the store refuses writes (StoreFailed)
        self._names = {g.id: g.name for g in config.groups}
        self._nursery: trio.Nursery | None = None
        self._apply_config()
        self._remote_log: RemoteLogService | None = None
        rl = config.remote_log
        if rl.url:
            log_keys = {p.key: p.log_key for p in config.peers if p.log_key}
            self._remote_log = RemoteLogService(
                backend=backend_for(
                    rl.url,
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
                feed=self._feed_from_log,
                refused=self._refuse,
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
        self._names = {g.id: g.name for g in self.config.groups}
        for peer in self._members():
            self._update_peer(peer)

    def _members(self) -> set[bytes]:
        me = self.identity.public_key
        return {m for g in self.config.groups for m in g.members if m != me}

    def _dial_static_peers(self) -> None:
        for peer in self.config.peers:
            if peer.address is not None:
                self._tcp.dial(peer.key, *peer.address)

    def add_peer(self, peer: PeerConfig, *, save: bool = False) -> None:
        """Know ``peer`` (accept its connections) and dial it if it has an address."""
        self.config = self.config.with_peer(peer)
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
        self._wake()
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

        A durable message is committed to the store before this returns, and is delivered to
        every member exactly once, retransmitted as long as it takes. An ephemeral message goes
        out once, as a NOSYNC packet that never enters the sync engine or the store (typing
        notices, presence); it returns ``b""``, since ephemeral messages have no ID.
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
            packet = encode_frame(NoSyncFrame(cfg.id, body))
            for peer in cfg.members:
                if peer != self.identity.public_key:
                    await self._router.route(peer).send(peer, packet)
            return b""
        cfg = await self._ready_to_send(group, (body,))
        mid = self._commit(
            cfg.id,
            lambda now, stamp: [
                self._engine.send(cfg.id, body, now=now, timestamp=stamp, expires_at=expires_at)
            ],
        )
        return mid[0]

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
            lambda now, stamp: self._engine.send_many(cfg.id, bodies, now=now, timestamp=stamp),
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
            await self._wait_for_congested_peers(_APP_QUEUE_LIMIT, cfg.members)
        return cfg

    def _commit(self, group_id: bytes, store: Callable[[float, int], list[bytes]]) -> list[bytes]:
        """Run one send in the engine (``store(now, timestamp)``), report the store's health,
        queue the messages for the remote log and wake the loop to send them."""
        try:
            ids = store(trio.current_time(), wall_ms())
        except StoreError as e:
            self._store_failed(e)
            raise
        self._store_ok()
        self._to_log(group_id, ids)
        self._wake()
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
        self._wake()
        return result

    def import_bundle(
        self,
        path: str | os.PathLike[str],
        *,
        progress: Callable[[int, int], None] | None = None,
        apply_progress: Callable[[int, int], None] | None = None,
    ) -> ImportResult:
        """Authenticate a bundle file completely, then apply it all or nothing.

        Its messages are delivered (to :meth:`messages` subscribers) as if they had come from
        the sender over the network; its acknowledgements stop our retransmissions. Importing
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
        self._wake()
        return result

    async def poll_remote_logs(self) -> None:
        """Read every peer's remote log now (they are also read every ``poll_seconds``)."""
        if self._remote_log is not None:
            await self._remote_log.poll_now()

    # ----------------------------------------------------------------- subscriptions

    def messages(self) -> contextlib.AbstractAsyncContextManager[_Messages]:
        """Receive every message delivered from now on, in delivery order::

            async with node.messages() as inbox:
                async for message in inbox:
                    ...

        While the block runs, a reader that falls behind slows the node rather than missing
        messages; leaving the block unsubscribes.
        """
        return self._subscribers.messages()

    def events(self) -> contextlib.AbstractAsyncContextManager[_Events]:
        """Receive the node's events from now on: the engine's (delivered, acked, given up,
        expired, rejected payloads), the carriers' refused input, and the node's own (peers up
        and down, carriers failing, the store, the remote log). Events that find this
        subscriber's buffer full are dropped and counted in :meth:`status`."""
        return self._subscribers.events()

    # ----------------------------------------------------------------- status

    def status(self) -> NodeStatus:
        """A snapshot of identity, groups, peers (connected, pending records) and counters."""
        pending: dict[bytes, int] = {}
        for peer in {m for g in self.config.groups for m in g.members}:
            pending[peer] = self._store.record_count(peer)
        known = {p.key: p for p in self.config.peers}
        keys = dict.fromkeys([*known, *pending, *self._connected])
        keys.pop(self.identity.public_key, None)
        peers = tuple(
            PeerStatus(
                key=k,
                name=known[k].name if k in known else "",
                address=self._connected.get(k) or _static_address(known.get(k)),
                connected=k in self._connected,
                pending=pending.get(k, 0),
                available_until_ms=self._available_until.get(k, 0),
            )
            for k in keys
        )
        return NodeStatus(
            key=self.identity.public_key,
            name=self.config.name,
            listening=self._listening,
            messages_stored=self._store.message_count(),
            groups=tuple(
                GroupStatus(g.name, g.id, g.mode.value, g.members) for g in self.config.groups
            ),
            peers=peers,
            engine=dataclasses.asdict(self._engine.statistics),
            events_dropped=self._subscribers.events_dropped,
            refused=self._refused,
            logs=tuple(self._remote_log.status.values()) if self._remote_log else (),
            carriers_down=tuple(self._down.values()),
            store_error=self._store_error,
        )

    # ----------------------------------------------------------------- the service

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled: listen, dial, sync; close its carriers on the way out.
        Reports started once listening."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
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
                    outcome = await nursery.start(supervise, carrier, self._inbox_send)
                    if outcome is not None:
                        self._handle(outcome)
                    events = getattr(carrier, "events", None)
                    if events is not None:
                        nursery.start_soon(read_events, carrier, events, self._inbox_send)
                # What reaches each peer now that the carriers are open.
                self._update_peers(self._members())
                nursery.start_soon(self._engine_loop)
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
        self._inbox_send.close()

    async def _dial_discovered(self, discovery: Discovery) -> None:
        """Dial peers that LAN discovery finds, if the configuration knows their keys."""
        async for event in discovery.events:
            if (
                isinstance(event, PeerDiscovered)
                and self._allowed(event.key)
                and event.key not in self._connected
            ):
                self._tcp.dial(event.key, event.addresses[0], event.port)

    async def _engine_loop(self) -> None:
        engine = self._engine
        receive = self._inbox
        retry_at = -math.inf  # while the store refuses writes: when to try our own work again
        while True:
            now = trio.current_time()
            engine.handle_timer(now=now)
            wall = wall_ms()
            if now >= retry_at:
                # A store failure here (disk full) is the store's, not a bug: the engine rolled
                # it back, the node reports it and tries again later; it never ends the node.
                try:
                    expiry = engine.next_expiry()
                    if expiry is not None and expiry <= wall:
                        engine.expire(wall=wall)
                    await self._flush()
                except StoreError as e:
                    self._store_failed(e)
                    retry_at = trio.current_time() + _STORE_RETRY_SECONDS
                else:
                    retry_at = -math.inf
            await self._drain_events()
            deadline = engine.next_deadline()
            try:
                expiry = engine.next_expiry()
            except StoreError as e:  # a store that cannot even be read: try again later
                self._store_failed(e)
                retry_at = trio.current_time() + _STORE_RETRY_SECONDS
                expiry = None
            if expiry is not None:
                at = trio.current_time() + max(0.0, (expiry - wall_ms()) / 1000)
                deadline = at if deadline is None else min(deadline, at)
            if retry_at > -math.inf:
                deadline = retry_at if deadline is None else max(deadline, retry_at)
            with trio.move_on_at(math.inf if deadline is None else deadline):
                item = await receive.receive()
                self._handle(item)
                for _ in range(_INBOX_BATCH - 1):
                    try:
                        item = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._handle(item)

    def _wake(self) -> None:
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._inbox_send.send_nowait(None)

    # ----------------------------------------------------------------- output

    async def _wait_for_congested_peers(
        self, limit: int | None = None, peers: Collection[bytes] | None = None
    ) -> None:
        """Flow control: while a reached peer's send queue holds more than ``limit`` packets
        (default: half of it), give its carrier up to one epoch to drain before producing
        more, so a fast sender does not pile payloads on a slower receiver. Other peers lose at
        most that one epoch, the pace the engine keeps anyway (one payload per peer per epoch).
        ``peers`` limits the check to those peers (default: every connected peer)."""
        watched = self._connected if peers is None else [p for p in peers if p in self._connected]
        if not watched or not self._queued:
            return
        with trio.move_on_after(self._sync.epoch_seconds):
            while True:
                full = next(
                    (
                        q
                        for q in self._queued
                        for p in watched
                        if q.queued(p) > (q.send_queue_size // 2 if limit is None else limit)
                    ),
                    None,
                )
                if full is None:
                    return
                await full.wait_sent()

    async def _flush(self) -> None:
        await self._wait_for_congested_peers()
        now = trio.current_time()
        router = self._router
        # In a batch: if the store fails, the engine takes its state back from the store (the
        # records stay due) before the error reaches the loop.
        with self._engine.batch():
            payloads = self._engine.payloads_to_send(now=now, max_payload_bytes=self._max_payload)
        for peer, payload in payloads:
            carrier = router.route(peer)
            frame = encode_frame(SyncFrame(payload))
            if len(frame) > carrier.max_payload:
                # One message too big for this carrier: it waits for a larger one.
                self._not_sent(peer, payload, now=now)
                continue
            if isinstance(carrier, Queued) and peer in self._connected:
                # A live connection whose queue is full: the peer is busy, not gone. Hand the
                # records back to the engine, retried after 1, 2, 3 ... 8 epochs while the
                # congestion lasts, instead of a retransmission gap or a stalled loop.
                if carrier.offer(peer, frame):
                    self._congested.pop(peer, None)
                else:
                    n = self._congested[peer] = self._congested.get(peer, 0) + 1
                    self._not_sent(peer, payload, now=now, retry_in_epochs=min(8, n))
                await trio.lowlevel.checkpoint()
                continue
            with contextlib.suppress(TransportError):  # the engine retransmits
                await carrier.send(peer, frame)

    def _not_sent(
        self, peer: bytes, payload: bytes, *, now: float, retry_in_epochs: int = 1
    ) -> None:
        """Hand an unsent payload back to the engine. If the store cannot take that, its records
        stay as transmitted and go out again after their retransmission gap."""
        try:
            self._engine.payload_not_sent(peer, payload, now=now, retry_in_epochs=retry_in_epochs)
        except StoreError as e:
            self._store_failed(e)

    async def _drain_events(self) -> None:
        engine = self._engine
        subscribers = self._subscribers
        while (event := engine.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                await subscribers.deliver(
                    Message(
                        group=self._names.get(event.group_id, event.group_id.hex()),
                        group_id=event.group_id,
                        message_id=event.message_id,
                        body=event.body,
                        sender=event.sender,
                        timestamp=event.timestamp,
                        ephemeral=event.ephemeral,
                        parents=event.parents,
                        parents_missing=event.parents_missing,
                    )
                )
            elif isinstance(event, PayloadRejected):
                self._refused += 1
            subscribers.emit(event)

    def _emit(self, event: AnyEvent) -> None:
        self._subscribers.emit(event)

    # ----------------------------------------------------------------- input

    def _handle(self, item: _Input | None) -> None:
        """One input from the inbox. A bug met on it is reported as an ``InternalError`` and
        the loop goes on: one peer's packet never ends the node."""
        try:
            if isinstance(item, tuple):
                self._handle_packet(*item)
            elif isinstance(item, CarrierEvent):
                self._carrier_event(item.carrier, item.event)
            elif isinstance(item, _LogFeed):
                try:
                    self._receive_sync(item.peer, item.payload)
                finally:
                    item.done.set()
            elif isinstance(item, CarrierOpened):
                if self._down.pop(id(item.carrier), None) is not None:
                    self._emit(TransportRestored(item.carrier))
                self._update_peers(self._router.peers_of(item.carrier))
            elif isinstance(item, CarrierFailed):
                self._down[id(item.carrier)] = f"{describe(item.carrier)}: {item.detail}"
                self._emit(TransportFailed(item.carrier, item.detail))
                self._update_peers(self._router.peers_of(item.carrier))
        except Exception as e:
            self._internal_error(_describe_input(item), e)

    def _internal_error(self, where: str, error: Exception) -> None:
        text, trace = describe_failure(error)
        self._emit(InternalError(where, text, trace))

    def _handle_packet(self, transport: Transport, peer: bytes, packet: bytes) -> None:
        try:
            # A carrier that checked the frame on receipt (TCP's stream decoder, multicast)
            # is taken at its word: the header is checked once on the way in.
            if not getattr(transport, "checks_frames", False):
                check_frame(packet)
            if packet[3] == FrameMode.SYNC:
                # The common case, and up to megabytes: the engine reads the payload where it
                # is, without a copy into a SyncFrame.
                with memoryview(packet) as view:
                    self._receive_sync(peer, view[HEADER_SIZE:])
                return
            frame = decode_checked(packet)
        except FrameError as e:
            self._refuse(peer, f"frame:{e.reason.value}", str(e))
            return
        if isinstance(frame, NoSyncFrame):
            self._receive_nosync(peer, frame)
        elif isinstance(frame, Ping):
            if self._nursery is not None and not getattr(transport, "answers_pings", False):
                self._nursery.start_soon(_send_quietly, transport, peer, Pong(frame.nonce))
        elif isinstance(frame, Hello):
            self._available_until[peer] = frame.available_until_ms
        # Pong, UnknownControl: nothing to do.

    def _receive_sync(self, peer: bytes, payload: bytes | memoryview) -> None:
        """Hand one sync payload to the engine as one input: if the store fails, the engine
        rolls it back whole (nothing of it is delivered or acknowledged, so the peer sends it
        again later) and the node carries on."""
        engine = self._engine
        received = engine.statistics.messages_received
        try:
            # receive_payloads hands each item to receive_payload, which reads a memoryview
            # where it is: no copy of a payload of up to megabytes.
            engine.receive_payloads(peer, (cast(bytes, payload),), now=trio.current_time())
        except StoreError as e:
            self._store_failed(e)
            return
        if engine.statistics.messages_received != received:
            self._store_ok()  # a message was stored: the store takes writes again

    def _receive_nosync(self, peer: bytes, frame: NoSyncFrame) -> None:
        group = next((g for g in self.config.groups if g.id == frame.group_id), None)
        if group is None or peer not in group.members:
            self._refuse(
                peer,
                RejectReason.NOSYNC_NOT_MEMBER,
                f"ephemeral message for a group {peer.hex()[:8]} is not in with us",
            )
            return
        # Ephemeral: never wait for a slow subscriber, a lost one is allowed.
        self._subscribers.deliver_nowait(
            Message(group.name, group.id, b"", frame.body, peer, 0, ephemeral=True)
        )
        self._emit(MessageDelivered(b"", group.id, 0, frame.body, (), True, peer))

    def _carrier_event(self, carrier: Transport, event: object) -> None:
        now = trio.current_time()
        if isinstance(event, PeerUp):
            self._connected[event.peer] = event.address
            try:
                # Back after an absence: what it missed goes out at once, not after a backoff.
                self._engine.reset_peer(event.peer, now=now)
            except StoreError as e:  # its records go out on their old schedule
                self._store_failed(e)
            self._update_peer(event.peer)
            self._emit(PeerConnected(event.peer, event.address))
            if self._remote_log is not None:
                self._remote_log.kick()  # we are online again: read the logs now
            if self._nursery is not None:
                self._nursery.start_soon(_send_quietly, carrier, event.peer, Hello())
        elif isinstance(event, PeerDown):
            self._connected.pop(event.peer, None)
            self._update_peer(event.peer)
            self._emit(PeerDisconnected(event.peer, event.address, event.reason))
        elif isinstance(event, InputRejected):
            self._refused += 1
            self._emit(event)
        elif isinstance(event, TransportInternalError):
            self._emit(InternalError(event.where, event.error, event.traceback))
        # PacketDropped, DialFailed: the engine retransmits; the carrier dials again.

    def _update_peers(self, peers: Collection[bytes]) -> None:
        for peer in peers:
            if peer != self.identity.public_key:
                self._update_peer(peer)

    def _update_peer(self, peer: bytes) -> None:
        """Tell the engine what ``peer``'s carrier now is, if that changed (see *Routing*)."""
        caps = self._router.capabilities(peer)
        if self._caps.get(peer) == caps:
            return
        self._caps[peer] = caps
        engine = self._engine
        engine.set_peer_latency(peer, caps.latency)
        engine.set_peer_max_payload(peer, caps.max_payload)
        try:
            # Reached reliably: new messages for it are stored once and sent from memory.
            engine.set_peer_reliable(peer, caps.reliable, now=trio.current_time())
        except StoreError as e:
            self._store_failed(e)

    def _refuse(self, peer: bytes | None, reason: str, detail: str) -> None:
        """Input the node itself refused (a frame, an ephemeral message, a remote log's
        record): counted and reported as ``InputRejected``."""
        self._refused += 1
        self._emit(InputRejected(peer, "", reason, detail))

    # ----------------------------------------------------------------- the store and the log

    def _store_failed(self, error: StoreError) -> None:
        """The store refused a write: report it once per episode (see StoreFailed)."""
        if self._store_error is None:
            self._emit(StoreFailed(self._store.path, str(error)))
        self._store_error = str(error)

    def _store_ok(self) -> None:
        """A write that stores data succeeded: end the episode, if there was one."""
        if self._store_error is not None:
            self._store_error = None
            self._emit(StoreRecovered(self._store.path))

    async def _feed_from_log(self, peer: bytes, payload: bytes) -> None:
        """A payload the remote log read: handed to the loop, and back once the engine took
        it. A payload the store cannot take is dropped there: the log's cursor moves only over
        messages the store holds, so the next poll fetches it again."""
        feed = _LogFeed(peer, payload)
        await self._inbox_send.send(feed)
        await feed.done.wait()

    def _log_uploaded(self, group: str, seq: int, messages: int, queued: int) -> None:
        self._emit(LogUploaded(group, seq, messages, queued))

    def _log_internal(self, where: str, error: str, traceback: str) -> None:
        self._emit(InternalError(where, error, traceback))

    def _to_log(self, group_id: bytes, ids: Sequence[bytes]) -> None:
        if self._remote_log is not None and ids:
            wires = self._store.get_wires(list(ids))
            self._remote_log.enqueue(group_id, [(i, wires[i]) for i in ids if i in wires])


async def _send_quietly(transport: Transport, peer: bytes, frame: Ping | Pong | Hello) -> None:
    with contextlib.suppress(TransportError):
        await transport.send(peer, encode_frame(frame))


def _describe_input(item: _Input | None) -> str:
    if isinstance(item, tuple):
        return f"packet from {item[1].hex()[:16]}"
    if isinstance(item, _LogFeed):
        return f"remote log payload of {item.peer.hex()[:16]}"
    return "handling a transport event"


def _static_address(peer: PeerConfig | None) -> str | None:
    if peer is None or peer.address is None:
        return None
    host, port = peer.address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe_listener(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
