"""The running node: joins the sans-IO engine, the SQLite store and the transports under Trio.

Theory of operation
-------------------
Only this module runs the engine. One task, the *engine loop*, owns the cycle::

    feed timers -> drain payloads to the carriers -> drain events to subscribers
        -> wait for the next input, or the engine's next deadline, whichever comes first

Inputs reach it through one bounded channel (the *inbox*): one receive task per transport puts
``(transport, peer, packet)`` there, so a flood from the network waits in the carriers (TCP
pushes back on the peer) instead of in our memory. Application calls (:meth:`Node.send`, group
changes) run the engine directly from the caller's task, which is safe because Trio switches
tasks only at ``await`` and no engine call awaits; they then wake the loop.

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
:meth:`Node.send_many` therefore first wait (up to an epoch) while a connection has more than a
couple of payloads queued: the application goes at the pace of the network, and the queues stay
short. While a TCP connection to a peer is up, the engine writes the record of each new message
for it once (:meth:`Engine.set_peer_reliable`).

*Peers and carriers.* A peer is its X25519 key, whatever carries its packets: the engine keeps
one acknowledgement space per peer, so a message sent over TCP may be acknowledged in a bundle
file. For each payload the node picks the first carrier that reaches the peer now (a live TCP
connection, or the memory hub in tests); if none does, the packet goes to TCP anyway, which drops
it with a ``no-route`` event, and the engine retransmits later. When a peer comes up its records
are re-armed (:meth:`Engine.reset_peer`), so a peer returning after a long absence gets what it
missed at once rather than at the end of a long backoff.

*Subscribers.* Delivered messages go to every open :meth:`Node.messages` stream through a bounded
channel, waiting when one is full: a slow reader slows the node, it does not lose messages.
Events (acks, peers coming and going, refused input) are advisory and never wait: when a
subscriber's channel is full they are counted as dropped.
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
    StoreError,
    TransportBroken,
    TransportClosed,
    TransportError,
    describe_failure,
)
from mvds_node.node._bundles import ExportResult, ImportResult, export_bundle, import_bundle
from mvds_node.node._config import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    parse_address,
    save_config,
)
from mvds_node.node._discovery import Discovery, PeerDiscovered
from mvds_node.node._identity import Identity, load_identity
from mvds_node.node._memory import keep_freed_memory
from mvds_node.node._remotelog import LogStatus, RemoteLogService, backend_for
from mvds_node.remotelog import LogSettings
from mvds_node.sync import (
    Engine,
    GaveUp,
    Limits,
    MessageAcked,
    MessageDelivered,
    MessageExpired,
    PayloadRejected,
    SQLiteStore,
    SyncConfig,
)
from mvds_node.transports import (
    HEADER_SIZE,
    DialFailed,
    FrameError,
    Hello,
    InputRejected,
    NoSyncFrame,
    PacketDropped,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    SyncFrame,
    TcpTransport,
    Transport,
    TransportEvent,
    UnknownControl,
    decode_frame,
    encode_frame,
)
from mvds_node.transports import InternalError as TransportInternalError
from mvds_node.transports._framing import Mode as FrameMode
from mvds_node.transports._framing import check_frame
from mvds_node.transports._multicast import MulticastTransport

__all__ = [
    "Message",
    "Node",
    "NodeEvent",
    "NodeStatus",
    "open_node",
]

_INBOX_SIZE: Final = 256
"""Packets waiting for the engine loop. Enough for a burst from every peer; beyond it the
carriers wait, which pushes back on the senders instead of growing our memory."""
_INBOX_BATCH: Final = 256
"""Packets the loop takes in one go before draining output, so acks go out promptly under load."""
_APP_QUEUE_LIMIT: Final = 2
"""Packets a connection may have queued, the one being written included, before :meth:`Node.send`
and :meth:`Node.send_many` wait for it, up to an epoch (a burst of sends stays ahead of the
network by about this many payloads, and the connection's writer runs while the burst waits)."""
_REOPEN_DELAYS: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Seconds between attempts to reopen a failed multicast carrier (the last one repeats)."""
RELIABLE_RETRANSMIT_SECONDS: Final = 30.0
"""Retransmission gap (halved) for peers on a live TCP connection; see the PeerUp handling."""
_SUBSCRIBER_BUFFER: Final = 1024
"""Messages or events waiting for one subscriber."""
_STORE_RETRY_SECONDS: Final = 1.0
"""While the store refuses writes (disk full), the engine loop retries its own work (timers,
retransmissions) at most this often instead of at once: no busy loop against a full disk."""
_CONTROL_LINE_MAX: Final = 8 * 1024 * 1024 + 4096
"""The longest request on the control socket: a message body at the engine's limit, base64."""


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class Message:
    """A message delivered to this node's application (durable or ephemeral)."""

    group: str
    """The group's name in our configuration."""
    group_id: bytes
    message_id: bytes
    """The MVDS message ID (empty for an ephemeral NOSYNC message, which has none)."""
    body: bytes
    sender: bytes
    """Key of the peer it came from (which may have relayed it)."""
    timestamp: int
    """Author's clock, Unix milliseconds (0 for ephemeral NOSYNC messages)."""
    ephemeral: bool = False
    parents: tuple[bytes, ...] = ()
    parents_missing: tuple[bytes, ...] = ()
    """Parents given up on (``missing_parents = "deliver"``): delivered without them."""


class NodeEvent:
    """Base of the node's events; each subclass is one fact."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Delivered(NodeEvent):
    message: Message


@dataclass(frozen=True, slots=True)
class Acked(NodeEvent):
    """A peer confirmed it has one of our messages."""

    message_id: bytes
    peer: bytes


@dataclass(frozen=True, slots=True)
class GaveUpSending(NodeEvent):
    """Retransmission of a record to a peer stopped (give-up policy); a reset re-arms it."""

    message_id: bytes
    peer: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Expired(NodeEvent):
    message_id: bytes
    group_id: bytes


@dataclass(frozen=True, slots=True)
class PeerConnected(NodeEvent):
    peer: bytes
    address: str


@dataclass(frozen=True, slots=True)
class PeerDisconnected(NodeEvent):
    peer: bytes
    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class Refused(NodeEvent):
    """Input from the network was refused; the node kept running and says why."""

    peer: bytes | None
    address: str
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class LogUploaded(NodeEvent):
    """A batch of our messages of ``group`` is in our remote log: readers can fetch them even
    when we are gone. ``queued`` of the group's messages still wait for upload."""

    group: str
    seq: int
    messages: int
    queued: int


@dataclass(frozen=True, slots=True)
class TransportFailed(NodeEvent):
    """A carrier failed as a whole (``TransportBroken``, or a multicast carrier that cannot
    open: its interface is not there). The node keeps running on its other carriers. Its own
    multicast carriers are reopened, with backoff, until :class:`TransportRestored`; a carrier
    passed to :func:`open_node` is not read again."""

    transport: Transport
    detail: str


@final
@dataclass(frozen=True, slots=True)
class InternalError(NodeEvent):
    """Handling one piece of outside input (a connection, a datagram, a remote log, a backend's
    reply) raised an exception no rule of ours expected: a bug, reported with its traceback.
    That piece of work ended; the node kept running and serving its other peers and logs."""

    where: str
    """What was being handled, e.g. ``tcp connection from 127.0.0.1:5501`` or
    ``remote log of <key> in chat``."""
    error: str
    """``ExceptionType: message``."""
    traceback: str


@final
@dataclass(frozen=True, slots=True)
class StoreFailed(NodeEvent):
    """The store refused a write (disk full, read-only file system, I/O error): emitted once,
    when the first write fails. Until :class:`StoreRecovered` the node keeps running on what it
    has: sends raise :class:`~mvds_node.errors.StoreError`, and received messages that cannot be
    stored are not acknowledged (their sender retransmits them later). Everything committed
    before stays in the store."""

    path: str
    """The store's database file."""
    reason: str
    """The store's error, e.g. ``/var/lib/mvds/store.db: disk full: no space left ...``."""


@final
@dataclass(frozen=True, slots=True)
class StoreRecovered(NodeEvent):
    """The store takes writes again after :class:`StoreFailed` (a send, or a received message,
    was stored): nothing else needs doing, peers' retransmissions bring what was refused."""

    path: str


@dataclass(frozen=True, slots=True)
class TransportRestored(NodeEvent):
    """A multicast carrier that had failed is open again."""

    transport: Transport


@dataclass(frozen=True, slots=True)
class PeerStatus:
    key: bytes
    name: str
    address: str | None
    connected: bool
    pending: int
    """Records (messages, offers, requests) still waiting for this peer's acknowledgement."""
    available_until_ms: int = 0


@dataclass(frozen=True, slots=True)
class GroupStatus:
    name: str
    id: bytes
    mode: str
    members: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A snapshot of the node for people and scripts (``mvds-node status``)."""

    key: bytes
    name: str
    listening: tuple[str, ...]
    messages_stored: int
    groups: tuple[GroupStatus, ...]
    peers: tuple[PeerStatus, ...]
    engine: dict[str, int]
    events_dropped: int
    refused: int
    logs: tuple[LogStatus, ...] = ()
    carriers_down: tuple[str, ...] = ()
    """Carriers that failed and are not back (``TransportFailed``): what failed, and why."""
    store_error: str | None = None
    """Why the store refuses writes (``StoreFailed``), until it takes them again."""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key.hex(),
            "name": self.name,
            "listening": list(self.listening),
            "messages_stored": self.messages_stored,
            "groups": [
                {
                    "name": g.name,
                    "id": g.id.hex(),
                    "mode": g.mode,
                    "members": [m.hex() for m in g.members],
                }
                for g in self.groups
            ],
            "peers": [
                {
                    "key": p.key.hex(),
                    "name": p.name,
                    "address": p.address,
                    "connected": p.connected,
                    "pending": p.pending,
                    "available_until_ms": p.available_until_ms,
                }
                for p in self.peers
            ],
            "engine": self.engine,
            "events_dropped": self.events_dropped,
            "refused": self.refused,
            "carriers_down": list(self.carriers_down),
            "store_error": self.store_error,
            "logs": [
                {
                    "name": log.name,
                    "peer": log.peer.hex(),
                    "group": log.group,
                    "mine": log.mine,
                    "seq": log.seq,
                    "last_poll_ms": log.last_poll_ms,
                    "fetched": log.fetched,
                    "behind": log.behind,
                    "queued": log.queued,
                    "error": log.error,
                }
                for log in self.logs
            ],
        }


def wall_ms() -> int:
    """Unix time in milliseconds, the unit of message timestamps and expiries."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- the node


@dataclass
class _Subscriber:
    send: trio.MemorySendChannel[Any]
    lossless: bool
    dropped: int = 0


@dataclass
class _Inbox:
    send: trio.MemorySendChannel[tuple[Transport, bytes, bytes] | None]
    receive: trio.MemoryReceiveChannel[tuple[Transport, bytes, bytes] | None]


class Node:
    """A running mvds-node; get one from :func:`open_node`.

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
        # UDP multicast: one carrier per group with a secret, when enabled. A member that has
        # no live TCP connection is reached there, with payloads cut to datagram size.
        self._multicast: list[tuple[MulticastTransport, frozenset[bytes]]] = []
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
                    self._multicast.append((carrier, frozenset(g.members)))
        self._transports: list[Transport] = [
            *transports,
            self._tcp,
            *(carrier for carrier, _ in self._multicast),
        ]
        send, receive = trio.open_memory_channel[tuple[Transport, bytes, bytes] | None](_INBOX_SIZE)
        self._inbox = _Inbox(send, receive)
        self._messages: list[_Subscriber] = []
        self._events: list[_Subscriber] = []
        self._connected: dict[bytes, str] = {}
        self._congested: dict[bytes, int] = {}
        self._available_until: dict[bytes, int] = {}
        self._listening: tuple[str, ...] = ()
        self._refused = 0
        self._events_dropped = 0
        self._down: dict[int, str] = {}  # id(carrier): what failed, while it is down
        self._store_error: str | None = None  # while the store refuses writes (StoreFailed)
        self._names = {g.id: g.name for g in config.groups}
        self._max_payload = min(
            self._sync.limits.max_payload_bytes, self._tcp.max_payload - HEADER_SIZE
        )
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
                refused=self._log_refused,
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
        cfg = self.config.group(group)
        await trio.lowlevel.checkpoint()
        if ephemeral:
            packet = encode_frame(NoSyncFrame(cfg.id, body))
            for peer in cfg.members:
                if peer != self.identity.public_key:
                    await self._route(peer).send(peer, packet)
            return b""
        await self._wait_for_congested_peers(_APP_QUEUE_LIMIT, cfg.members)  # see send_many
        try:
            mid = self._engine.send(
                cfg.id, body, now=trio.current_time(), timestamp=wall_ms(), expires_at=expires_at
            )
        except StoreError as e:
            self._store_failed(e)
            raise
        self._store_ok()
        self._to_log(cfg.id, [mid])
        self._wake()
        return mid

    async def send_many(self, group: str | bytes, bodies: Sequence[bytes]) -> list[bytes]:
        """Send several durable messages to ``group`` in one store transaction.

        For bulk sending: one commit for all of them instead of one each. All of them are
        committed when this returns, or none is (on error). Paced like :meth:`send`.

        Raises:
            ConfigError: no such group.
            LocalProtocolError: a body is over the limit.
            StoreError: the store cannot take them (disk full, read-only): none was sent.
        """
        cfg = self.config.group(group)
        await trio.lowlevel.checkpoint()
        # Pace the application to the network: while a connection still has payloads queued,
        # let its writer run (for up to an epoch) instead of storing more. Without this, an
        # application that sends in a tight loop leaves the writer only the moments between its
        # calls, and the queue grows while the network idles.
        await self._wait_for_congested_peers(_APP_QUEUE_LIMIT, cfg.members)
        now = trio.current_time()
        stamp = wall_ms()
        try:
            ids = self._engine.send_many(cfg.id, bodies, now=now, timestamp=stamp)
        except StoreError as e:
            self._store_failed(e)
            raise
        self._store_ok()
        self._to_log(cfg.id, ids)
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

    def _feed_from_log(self, peer: bytes, payload: bytes) -> None:
        # A payload the store cannot take is dropped here: the log's cursor moves only over
        # messages the store holds, so the next poll fetches it again.
        self._receive_sync(peer, payload)
        self._wake()

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

    def _log_uploaded(self, group: str, seq: int, messages: int, queued: int) -> None:
        self._emit(LogUploaded(group, seq, messages, queued))

    def _log_internal(self, where: str, error: str, traceback: str) -> None:
        self._emit(InternalError(where, error, traceback))

    def _log_refused(self, peer: bytes, reason: str, detail: str) -> None:
        self._refused += 1
        self._emit(Refused(peer, "", reason, detail))

    def _to_log(self, group_id: bytes, ids: Sequence[bytes]) -> None:
        if self._remote_log is not None and ids:
            wires = self._store.get_wires(list(ids))
            self._remote_log.enqueue(group_id, [(i, wires[i]) for i in ids if i in wires])

    async def poll_remote_logs(self) -> None:
        """Read every peer's remote log now (they are also read every ``poll_seconds``)."""
        if self._remote_log is not None:
            await self._remote_log.poll_now()

    def _wake(self) -> None:
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._inbox.send.send_nowait(None)

    def _route(self, peer: bytes) -> Transport:
        for transport in self._transports:
            if transport is self._tcp:
                if peer in self._tcp.connected_peers():
                    return transport
            elif isinstance(transport, MulticastTransport):
                if any(c is transport and peer in members for c, members in self._multicast):
                    return transport
            elif _reaches(transport, peer):
                return transport
        return self._tcp

    def _datagram_cap(self, peer: bytes, *, on_tcp: bool) -> None:
        """Cut the engine's payloads for ``peer`` to datagram size while multicast carries it."""
        carriers = [c for c, members in self._multicast if peer in members]
        if on_tcp or not carriers:
            self._engine.set_peer_max_payload(peer, None)
        else:
            self._engine.set_peer_max_payload(peer, carriers[0].max_payload - HEADER_SIZE)

    # ----------------------------------------------------------------- subscriptions

    @contextlib.asynccontextmanager
    async def messages(self) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
        """Receive every message delivered from now on, in delivery order::

            async with node.messages() as inbox:
                async for message in inbox:
                    ...

        While the block runs, a reader that falls behind slows the node rather than missing
        messages; leaving the block unsubscribes.
        """
        send, receive = trio.open_memory_channel[Message](_SUBSCRIBER_BUFFER)
        sub = _Subscriber(send, lossless=True)
        self._messages.append(sub)
        try:
            yield receive
        finally:
            # Unsubscribe before closing, with no checkpoint in between: the node never sends
            # to a channel whose reader is gone.
            self._messages.remove(sub)
            send.close()
            receive.close()

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[trio.MemoryReceiveChannel[NodeEvent]]:
        """Receive the node's events (delivered, acked, given up, expired, peers up and down,
        refused input) from now on. Events that find this subscriber's buffer full are dropped
        and counted in :meth:`status`."""
        send, receive = trio.open_memory_channel[NodeEvent](_SUBSCRIBER_BUFFER)
        sub = _Subscriber(send, lossless=False)
        self._events.append(sub)
        try:
            yield receive
        finally:
            # Unsubscribe before closing, with no checkpoint in between: the node never sends
            # to a channel whose reader is gone.
            self._events.remove(sub)
            send.close()
            receive.close()

    def _emit(self, event: NodeEvent) -> None:
        for sub in self._events:
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                sub.dropped += 1
                self._events_dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass  # a subscriber that is leaving

    async def _deliver(self, message: Message) -> None:
        for sub in list(self._messages):
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                try:
                    sub.send.send_nowait(message)  # the common case: room in the buffer
                except trio.WouldBlock:
                    await sub.send.send(message)  # a slow reader: wait for it
        self._emit(Delivered(message))

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
                connected=k in self._tcp.connected_peers(),
                pending=pending.get(k, 0),
                available_until_ms=self._available_until.get(k, 0),
            )
            for k in keys
        )
        stats = self._engine.statistics
        return NodeStatus(
            key=self.identity.public_key,
            name=self.config.name,
            listening=self._listening,
            messages_stored=self._store.message_count(),
            groups=tuple(
                GroupStatus(g.name, g.id, g.mode.value, g.members) for g in self.config.groups
            ),
            peers=peers,
            engine=dataclasses.asdict(stats),
            events_dropped=self._events_dropped,
            refused=self._refused,
            logs=tuple(self._remote_log.status.values()) if self._remote_log else (),
            carriers_down=tuple(self._down.values()),
            store_error=self._store_error,
        )

    # ----------------------------------------------------------------- the service

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled: listen, dial, sync. Reports started once listening."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.config.listen is not None:
                host, port = self.config.listen
                listeners = await nursery.start(self._tcp.serve, host, port)
                self._listening = tuple(_describe_listener(lst) for lst in listeners)
            else:
                await nursery.start(self._tcp.serve_listeners, [])
            self._dial_static_peers()
            for carrier, members in self._multicast:
                await nursery.start(self._multicast_task, carrier, members)
            multicast = {id(carrier) for carrier, _ in self._multicast}
            for transport in self._transports:
                if id(transport) not in multicast:  # those are read by their own task
                    nursery.start_soon(self._receive_task, transport)
                events = getattr(transport, "events", None)
                if events is not None:
                    nursery.start_soon(self._transport_events_task, events)
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

    async def _dial_discovered(self, discovery: Discovery) -> None:
        """Dial peers that LAN discovery finds, if the configuration knows their keys."""
        async for event in discovery.events:
            if (
                isinstance(event, PeerDiscovered)
                and self._allowed(event.key)
                and event.key not in self._tcp.connected_peers()
            ):
                self._tcp.dial(event.key, event.addresses[0], event.port)

    async def _receive_task(self, transport: Transport) -> None:
        send = self._inbox.send
        while True:
            try:
                peer, packet = await transport.receive()
            except (TransportClosed, trio.EndOfChannel, trio.ClosedResourceError):
                return
            except TransportBroken as e:
                self._carrier_failed(transport, str(e))
                return
            await send.send((transport, peer, packet))

    def _carrier_failed(self, transport: Transport, detail: str) -> None:
        self._down[id(transport)] = f"{_describe_carrier(transport)}: {detail}"
        self._emit(TransportFailed(transport, detail))

    async def _multicast_task(
        self,
        carrier: MulticastTransport,
        members: frozenset[bytes],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open a multicast carrier and read it. When it fails, or cannot open (a laptop whose
        LAN interface is gone, or not up yet when the node starts), report it once and try
        again after 1, 2, 5 ... 60 seconds until it opens, then report it restored. Reports
        started after the first attempt, whether it opened or not: the node runs without it."""
        send = self._inbox.send
        attempt = 0  # failed attempts since the carrier last worked (picks the delay)
        started = False
        while True:
            try:
                await (carrier.reopen() if attempt else carrier.open())
            except TransportClosed:
                return
            except OSError as e:
                if id(carrier) not in self._down:
                    self._carrier_failed(carrier, f"cannot open: {e}")
            else:
                if self._down.pop(id(carrier), None) is not None:
                    self._emit(TransportRestored(carrier))
                attempt = 0
                for peer in members:
                    self._datagram_cap(peer, on_tcp=False)
            if not started:
                task_status.started()
                started = True
            if id(carrier) not in self._down:
                try:
                    while True:
                        peer, packet = await carrier.receive()
                        await send.send((carrier, peer, packet))
                except (TransportClosed, trio.EndOfChannel, trio.ClosedResourceError):
                    return
                except TransportBroken as e:
                    self._carrier_failed(carrier, str(e))
            await trio.sleep(_REOPEN_DELAYS[min(attempt, len(_REOPEN_DELAYS) - 1)])
            attempt += 1

    async def _transport_events_task(
        self, events: trio.MemoryReceiveChannel[TransportEvent]
    ) -> None:
        # A bug met on one event is reported, and reading goes on with the next event.
        while True:
            try:
                await self._transport_events(events)
                return
            except Exception as e:
                self._internal_error("handling a transport event", e)

    async def _transport_events(self, events: trio.MemoryReceiveChannel[TransportEvent]) -> None:
        async for event in events:
            if isinstance(event, PeerUp):
                self._connected[event.peer] = event.address
                # TCP loses nothing while the connection lives, and a new connection re-arms
                # everything (reset_peer below): retransmitting sooner would only resend what a
                # busy peer has not acknowledged yet.
                self._engine.set_peer_latency(event.peer, RELIABLE_RETRANSMIT_SECONDS)
                self._datagram_cap(event.peer, on_tcp=True)
                try:
                    self._engine.reset_peer(event.peer, now=trio.current_time())
                    # New messages for it are stored once and sent from memory while it is up.
                    self._engine.set_peer_reliable(event.peer, True, now=trio.current_time())
                except StoreError as e:  # its records go out on their old schedule
                    self._store_failed(e)
                self._emit(PeerConnected(event.peer, event.address))
                if self._remote_log is not None:
                    self._remote_log.kick()  # we are online again: read the logs now
                self._wake()
                with contextlib.suppress(TransportError):
                    await self._tcp.send(event.peer, encode_frame(Hello()))
            elif isinstance(event, PeerDown):
                self._connected.pop(event.peer, None)
                try:
                    self._engine.set_peer_reliable(event.peer, False, now=trio.current_time())
                except StoreError as e:
                    self._store_failed(e)
                self._datagram_cap(event.peer, on_tcp=False)
                self._emit(PeerDisconnected(event.peer, event.address, event.reason))
            elif isinstance(event, InputRejected):
                self._refused += 1
                self._emit(Refused(event.peer, event.address, event.reason, event.detail))
            elif isinstance(event, TransportInternalError):
                self._emit(InternalError(event.where, event.error, event.traceback))
            elif isinstance(event, (PacketDropped, DialFailed)):
                pass  # the engine retransmits; dial failures are retried by the transport

    async def _engine_loop(self) -> None:
        engine = self._engine
        receive = self._inbox.receive
        retry_at = -math.inf  # while the store refuses writes: when to try our own work again
        while True:
            now = trio.current_time()
            if now >= retry_at:
                # A store failure here (disk full) is the store's, not a bug: the engine rolled
                # it back, the node reports it and tries again later; it never ends the node.
                try:
                    # Both clocks at each wake-up: expiry runs, and next_deadline includes the
                    # next one (a jump of the wall clock is corrected here).
                    engine.handle_timer(now=now, wall=wall_ms())
                    await self._flush(now)
                except StoreError as e:
                    self._store_failed(e)
                    retry_at = trio.current_time() + _STORE_RETRY_SECONDS
                else:
                    retry_at = -math.inf
            else:
                engine.handle_timer(now=now)
            await self._drain_events()
            deadline = engine.next_deadline()
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

    async def _wait_for_congested_peers(
        self, limit: int | None = None, peers: Collection[bytes] | None = None
    ) -> None:
        """Flow control: while a connected peer's send queue holds more than ``limit`` packets
        (default: half of it), give the connection up to one epoch to drain before producing
        more, so a fast sender does not pile payloads on a slower receiver. Other peers lose at
        most that one epoch, the pace the engine keeps anyway (one payload per peer per epoch).
        ``peers`` limits the check to those peers (default: every connected peer)."""
        tcp = self._tcp
        if limit is None:
            limit = tcp.send_queue_size // 2
        watched = self._connected if peers is None else [p for p in peers if p in self._connected]
        if not watched:
            return
        with trio.move_on_after(self._sync.epoch_seconds):
            while any(tcp.queued(p) > limit for p in watched):
                await tcp.wait_sent()

    async def _flush(self, now: float) -> None:
        await self._wait_for_congested_peers()
        now = trio.current_time()
        # In a batch: if the store fails, the engine takes its state back from the store (the
        # records stay due) before the error reaches the loop.
        with self._engine.batch():
            payloads = self._engine.payloads_to_send(now=now, max_payload_bytes=self._max_payload)
        for peer, payload in payloads:
            transport = self._route(peer)
            frame = encode_frame(SyncFrame(payload))
            if len(frame) > transport.max_payload:
                # One message too big for a datagram: it waits for a TCP connection.
                self._not_sent(peer, payload, now=now)
                continue
            if transport is self._tcp and peer in self._connected:
                # A live connection whose queue is full: the peer is busy, not gone. Hand the
                # records back to the engine, retried after 1, 2, 3 ... 8 epochs while the
                # congestion lasts, instead of a retransmission gap or a stalled loop.
                if self._tcp.offer(peer, frame):
                    self._congested.pop(peer, None)
                else:
                    n = self._congested[peer] = self._congested.get(peer, 0) + 1
                    self._not_sent(peer, payload, now=now, retry_in_epochs=min(8, n))
                await trio.lowlevel.checkpoint()
                continue
            with contextlib.suppress(TransportError):  # the engine retransmits
                await transport.send(peer, frame)

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
        while (event := engine.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                await self._deliver(
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
            elif isinstance(event, MessageAcked):
                self._emit(Acked(event.message_id, event.peer))
            elif isinstance(event, GaveUp):
                self._emit(GaveUpSending(event.message_id, event.peer, event.send_count))
            elif isinstance(event, MessageExpired):
                self._emit(Expired(event.message_id, event.group_id))
            elif isinstance(event, PayloadRejected):
                self._refused += 1
                self._emit(Refused(event.peer, "", "payload", event.reason))

    def _handle(self, item: tuple[Transport, bytes, bytes] | None) -> None:
        """One packet from a carrier. A bug met on it is reported as an ``InternalError`` and
        the loop goes on: one peer's packet never ends the node."""
        try:
            self._handle_packet(item)
        except Exception as e:
            peer = "?" if item is None else item[1].hex()[:16]
            self._internal_error(f"packet from {peer}", e)

    def _internal_error(self, where: str, error: Exception) -> None:
        text, trace = describe_failure(error)
        self._emit(InternalError(where, text, trace))

    def _handle_packet(self, item: tuple[Transport, bytes, bytes] | None) -> None:
        if item is None:
            return  # a wake-up: the loop drains output next
        transport, peer, packet = item
        try:
            if len(packet) > HEADER_SIZE and packet[3] == FrameMode.SYNC:
                # The common case, and up to megabytes: the engine reads the payload where it
                # is, without a copy into a SyncFrame.
                check_frame(packet)
                with memoryview(packet) as view:
                    self._receive_sync(peer, view[HEADER_SIZE:])
                return
            frame = decode_frame(packet)
        except FrameError as e:
            self._refused += 1
            self._emit(Refused(peer, "", f"frame:{e.reason.value}", str(e)))
            return
        if isinstance(frame, SyncFrame):
            self._receive_sync(peer, frame.payload)
        elif isinstance(frame, NoSyncFrame):
            self._receive_nosync(peer, frame)
        elif isinstance(frame, Ping):
            # The TCP transport answers pings itself, on the connection they came on.
            if self._nursery is not None and transport is not self._tcp:
                self._nursery.start_soon(_send_quietly, transport, peer, Pong(frame.nonce))
        elif isinstance(frame, Hello):
            self._available_until[peer] = frame.available_until_ms
        elif isinstance(frame, (Pong, UnknownControl)):
            pass

    def _receive_nosync(self, peer: bytes, frame: NoSyncFrame) -> None:
        group = next((g for g in self.config.groups if g.id == frame.group_id), None)
        if group is None or peer not in group.members:
            self._refused += 1
            self._emit(
                Refused(
                    peer,
                    "",
                    "nosync-not-member",
                    f"ephemeral message for a group {peer.hex()[:8]} is not in with us",
                )
            )
            return
        message = Message(group.name, group.id, b"", frame.body, peer, 0, ephemeral=True)
        # Ephemeral: never wait for a slow subscriber, a lost one is allowed.
        for sub in self._messages:
            with contextlib.suppress(
                trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
            ):
                sub.send.send_nowait(message)
        self._emit(Delivered(message))

    async def aclose(self) -> None:
        if self._remote_log is not None:
            await self._remote_log.aclose()
        for transport in self._transports:
            with contextlib.suppress(TransportError):
                await transport.aclose()
        self._inbox.send.close()


async def _send_quietly(transport: Transport, peer: bytes, frame: Ping | Pong) -> None:
    with contextlib.suppress(TransportError):
        await transport.send(peer, encode_frame(frame))


def _describe_carrier(transport: Transport) -> str:
    if isinstance(transport, MulticastTransport):
        return f"multicast {transport.group}:{transport.port} on {transport.interface}"
    return type(transport).__name__


def _static_address(peer: PeerConfig | None) -> str | None:
    if peer is None or peer.address is None:
        return None
    host, port = peer.address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reaches(transport: Transport, peer: bytes) -> bool:
    reaches: Callable[[bytes], bool] | None = getattr(transport, "reaches", None)
    return bool(reaches(peer)) if reaches is not None else False


def _describe_listener(listener: trio.SocketListener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    leaves = list(_leaves(group))
    return leaves[0] if len(leaves) == 1 else None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


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

    Args:
        config: see :func:`~mvds_node.node.load_config`.
        identity: the node's keys; default: read ``identity.key`` from the data directory.
        transports: extra carriers tried before TCP (for example a memory hub in tests).
        sync: engine settings; default from ``config``.

    Raises:
        ConfigError: bad configuration or key file.
        StoreError: the store cannot be opened (another process holds it, say).
        OSError: the listen address cannot be bound.
    """
    ident = identity if identity is not None else load_identity(config.identity_path)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    keep_freed_memory(config.keep_freed_memory_mib * 1024 * 1024)
    store = SQLiteStore(
        config.store_path, synchronous=config.store_sync, page_size=config.store_page_size
    )
    try:
        node = Node(config, ident, store, transports=transports, sync=sync)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                try:
                    yield node
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # One error (the usual case): raise it as itself, not wrapped in a group.
            single = _single(group)
            if single is not None and not isinstance(single, trio.Cancelled):
                raise single from None
            raise
        finally:
            with trio.CancelScope(shield=True):
                await node.aclose()
    finally:
        store.close()
