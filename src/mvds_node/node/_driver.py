"""The node's one loop: every input from outside in, the engine's output out.

Theory of operation
-------------------
One task (:meth:`Driver.run`) owns the cycle::

    feed timers -> drain payloads to the carriers -> drain events to subscribers
        -> wait for the next input, or the engine's next deadline, whichever comes first

Inputs reach it through one bounded channel (the *inputs*): packets, carrier events (a peer up or
down), a carrier failing or reopening (``_carriers``), and the remote log's payloads. So a flood
from the network waits in the carriers (TCP pushes back on the peer) instead of in our memory,
and each input enters the engine once. Payloads go to the carrier :class:`~._routing.Router`
picks; what the engine knows about a peer (reached reliably, its retransmission gap, its payload
size) follows from that carrier whenever a peer or a carrier comes or goes.

A store failure here (a full disk) is reported once per episode (``StoreFailed``) and never ends
the loop; a bug met on one input is reported as an ``InternalError`` and the loop goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, cast, final

import trio

from mvds_node.errors import StoreError, TransportError, describe_failure
from mvds_node.node._carriers import (
    CarrierEvent,
    CarrierFailed,
    CarrierOpened,
    carrier_name,
    describe,
)
from mvds_node.node._config import GroupConfig
from mvds_node.node._envelope import Authors, unwrap
from mvds_node.node._events import (
    AnyEvent,
    InternalError,
    PeerConnected,
    PeerDisconnected,
    StoreFailed,
    StoreRecovered,
    TransportFailed,
    TransportRestored,
)
from mvds_node.node._routing import PeerCapabilities, Queued, Reaches, Router
from mvds_node.node._subscribers import Message, Subscribers
from mvds_node.sync import Engine, MessageDelivered, PayloadRejected, RejectReason
from mvds_node.transports import (
    HEADER_SIZE,
    Author,
    Frame,
    FrameError,
    FrameMode,
    Hello,
    InputRejected,
    NoSyncFrame,
    PeerDown,
    PeerUp,
    Ping,
    Pong,
    SyncFrame,
    Transport,
    check_frame,
    decode_checked,
    encode_frame,
)
from mvds_node.transports import InternalError as TransportInternalError

__all__ = ["Driver", "wall_ms"]

INPUTS_SIZE: Final = 256
"""Inputs waiting for the loop. Enough for a burst from every peer; beyond it the carriers
wait, which pushes back on the senders instead of growing our memory."""
_INPUTS_BATCH: Final = 256
"""Inputs the loop takes in one go before draining output, so acks go out promptly under load."""
_STORE_RETRY_SECONDS: Final = 1.0
"""While the store refuses writes (disk full), the loop retries its own work (timers,
retransmissions) at most this often instead of at once: no busy loop against a full disk."""


LOG_VIA: Final = "remote-log"
"""How payloads read from a remote log (messages, and ACKs from acknowledgement records) are
named as they enter the engine (``via``)."""


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


Input = tuple[Transport, bytes, bytes] | CarrierEvent | CarrierOpened | CarrierFailed | _LogFeed
"""What the loop's input channel carries (``None`` is a wake-up)."""


@final
class Driver:
    """The loop of one node and the state it keeps about peers and carriers.

    Args:
        engine: the node's engine; only this loop and the application's calls enter it.
        router: the carriers, by capability.
        subscribers: where delivered messages and events go.
        store_path: the store's file, named in ``StoreFailed``.
        me: our key (never a peer of ours).
        groups: the configured groups now (names, and who may send ephemeral messages).
        epoch_seconds: the engine's epoch (the longest a paced sender waits).
        max_payload: the node's own payload limit, header excluded.
        on_peer_up: called when a carrier reports a peer up.
        authors: the envelopes' check (signed groups), also the engine's validator; None: every
            group is raw.
        author: our ``AUTHOR`` frame (our Ed25519 key bound to our X25519 key), sent beside
            the ``HELLO`` on every carrier that proves the peer; None: never sent.
        on_author: called with (peer, frame) for an ``AUTHOR`` frame that came over a carrier
            that proves the peer; one from any other carrier is refused (``author-unproved``).
    """

    def __init__(
        self,
        engine: Engine,
        router: Router,
        subscribers: Subscribers,
        *,
        store_path: str,
        me: bytes,
        groups: Callable[[], Sequence[GroupConfig]],
        epoch_seconds: float,
        max_payload: int,
        on_peer_up: Callable[[], None] = lambda: None,
        authors: Authors | None = None,
        author: Author | None = None,
        on_author: Callable[[bytes, Author], None] = lambda peer, frame: None,
    ) -> None:
        self._engine = engine
        self._author = author
        self._on_author = on_author
        # (id(carrier), peer) our AUTHOR went to since the peer came up there.
        self._introduced: set[tuple[int, bytes]] = set()
        self._members: Collection[bytes] = ()
        self._authors = authors
        self._router = router
        self._subscribers = subscribers
        self._store_path = store_path
        self._me = me
        self._groups = groups
        self._epoch_seconds = epoch_seconds
        self._max_payload = max_payload
        self._on_peer_up = on_peer_up
        self.on_delivered: Callable[[], None] = lambda: None
        """Called after each drain of the engine's events (wakes the inbox's readers)."""
        self._queued = [c for c in router.carriers if isinstance(c, Queued)]
        self._inputs_send, self._inputs = trio.open_memory_channel[Input | None](INPUTS_SIZE)
        self._caps: dict[bytes, PeerCapabilities] = {}  # what the engine was told, per peer
        self._congested: dict[bytes, int] = {}
        self._names: dict[int, str] = {}  # id(carrier) -> its short name
        self._nursery: trio.Nursery | None = None
        self.names: dict[bytes, str] = {}
        """Group names by ID, for delivered messages."""
        self.connected: dict[bytes, str] = {}
        """Peers a carrier reported up, and their address."""
        self.available_until: dict[bytes, int] = {}
        """Peers' availability hints (HELLO), Unix ms."""
        self.refused = 0
        """Inputs refused since the node started."""
        self.down: dict[int, str] = {}
        """id(carrier): what failed, while it is down."""
        self.store_error: str | None = None
        """Why the store refuses writes, while it does (``StoreFailed``)."""

    @property
    def inputs(self) -> trio.MemorySendChannel[Input | None]:
        """Where carriers' supervisors put what they read."""
        return self._inputs_send

    def close(self) -> None:
        self._inputs_send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the loop until cancelled (see the module doc)."""
        async with trio.open_nursery() as nursery:  # pings, hellos, authors: sent on the side
            self._nursery = nursery
            self._introduce(self._members)
            task_status.started()
            await self._loop()

    async def _loop(self) -> None:
        engine = self._engine
        receive = self._inputs
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
                    await self._flush()
                except StoreError as e:
                    self.store_failed(e)
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
                self.handle(item)
                for _ in range(_INPUTS_BATCH - 1):
                    try:
                        item = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self.handle(item)

    def wake(self) -> None:
        with contextlib.suppress(
            trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError
        ):
            self._inputs_send.send_nowait(None)

    # ----------------------------------------------------------------- output

    async def wait_for_congested_peers(
        self, limit: int | None = None, peers: Collection[bytes] | None = None
    ) -> None:
        """Flow control: while a reached peer's send queue holds more than ``limit`` packets
        (default: half of it), give its carrier up to one epoch to drain before producing
        more, so a fast sender does not pile payloads on a slower receiver. Other peers lose at
        most that one epoch, the pace the engine keeps anyway (one payload per peer per epoch).
        ``peers`` limits the check to those peers (default: every connected peer)."""
        watched = self.connected if peers is None else [p for p in peers if p in self.connected]
        if not watched or not self._queued:
            return
        with trio.move_on_after(self._epoch_seconds):
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
        await self.wait_for_congested_peers()
        now = trio.current_time()
        router = self._router
        # In a batch: if the store fails, the engine takes its state back from the store (the
        # records stay due) before the error reaches the loop.
        with self._engine.batch():
            payloads = self._engine.payloads_to_send(
                now=now, max_payload_bytes=self._max_payload, carrier_of=self.carrier_of
            )
        engine = self._engine
        for peer, payload in payloads:
            carrier = router.route(peer)
            frame = encode_frame(SyncFrame(payload))
            if len(frame) > carrier.max_payload:
                # One message too big for this carrier: it waits for a larger one.
                self._not_sent(peer, payload, now=now)
                continue
            if isinstance(carrier, Queued) and peer in self.connected:
                # A live connection whose queue is full: the peer is busy, not gone. Hand the
                # records back to the engine, retried after 1, 2, 3 ... 8 epochs while the
                # congestion lasts, instead of a retransmission gap or a stalled loop.
                if carrier.offer(peer, frame):
                    self._congested.pop(peer, None)
                    engine.payload_sent(peer, self.name_of(carrier), now=now)
                else:
                    n = self._congested[peer] = self._congested.get(peer, 0) + 1
                    self._not_sent(peer, payload, now=now, retry_in_epochs=min(8, n))
                await trio.lowlevel.checkpoint()
                continue
            with contextlib.suppress(TransportError):  # the engine retransmits
                await carrier.send(peer, frame)
                engine.payload_sent(peer, self.name_of(carrier), now=now)

    def carrier_of(self, peer: bytes) -> str:
        """The short name of the carrier that takes ``peer``'s next payload."""
        return self.name_of(self._router.route(peer))

    def name_of(self, carrier: Transport) -> str:
        """The carrier's short name (``carrier_name``), looked up once."""
        name = self._names.get(id(carrier))
        if name is None:
            name = self._names[id(carrier)] = carrier_name(carrier)
        return name

    def _not_sent(
        self, peer: bytes, payload: bytes, *, now: float, retry_in_epochs: int = 1
    ) -> None:
        """Hand an unsent payload back to the engine. If the store cannot take that, its records
        stay as transmitted and go out again after their retransmission gap."""
        try:
            self._engine.payload_not_sent(peer, payload, now=now, retry_in_epochs=retry_in_epochs)
        except StoreError as e:
            self.store_failed(e)

    async def _drain_events(self) -> None:
        engine = self._engine
        subscribers = self._subscribers
        authors = self._authors
        while (event := engine.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                # A signed group's message was checked before it was stored: its envelope
                # names the author. A raw group's body is the application's, as it is.
                author, body = None, event.body
                if authors is not None and authors.is_signed(event.group_id):
                    author, body = unwrap(event.body)
                    if subscribers.watching:
                        # Subscribers of events see what the author sent, as those of
                        # messages do (built directly: dataclasses.replace costs 10 times more).
                        e = event
                        event = MessageDelivered(
                            e.message_id,
                            e.group_id,
                            e.timestamp,
                            body,
                            e.parents,
                            e.ephemeral,
                            e.sender,
                            e.expires_at,
                            e.parents_missing,
                        )
                # Never waits: the message is in the inbox already (the engine put it there in
                # the transaction that stored it); live subscribers get it if they have room.
                subscribers.deliver_nowait(
                    Message(
                        group=self.names.get(event.group_id, event.group_id.hex()),
                        group_id=event.group_id,
                        message_id=event.message_id,
                        body=body,
                        via=event.sender,
                        timestamp=event.timestamp,
                        ephemeral=event.ephemeral,
                        parents=event.parents,
                        parents_missing=event.parents_missing,
                        author=author,
                    )
                )
            elif isinstance(event, PayloadRejected):
                self.refused += 1
            subscribers.emit(event)
        self.on_delivered()

    def emit(self, event: AnyEvent) -> None:
        self._subscribers.emit(event)

    # ----------------------------------------------------------------- input

    def handle(self, item: Input | None) -> None:
        """One input from the input channel. A bug met on it is reported as an ``InternalError`` and
        the loop goes on: one peer's packet never ends the node."""
        try:
            if isinstance(item, tuple):
                self._handle_packet(*item)
            elif isinstance(item, CarrierEvent):
                self._carrier_event(item.carrier, item.event)
            elif isinstance(item, _LogFeed):
                try:
                    self._receive_sync(item.peer, item.payload, LOG_VIA)
                finally:
                    item.done.set()
            elif isinstance(item, CarrierOpened):
                if self.down.pop(id(item.carrier), None) is not None:
                    self.emit(TransportRestored(item.carrier))
                self.update_peers(self._router.peers_of(item.carrier))
            elif isinstance(item, CarrierFailed):
                self.down[id(item.carrier)] = f"{describe(item.carrier)}: {item.detail}"
                self.emit(TransportFailed(item.carrier, item.detail))
                self.update_peers(self._router.peers_of(item.carrier))
        except Exception as e:
            self.internal_error(_describe_input(item), e)

    def internal_error(self, where: str, error: Exception) -> None:
        text, trace = describe_failure(error)
        self.emit(InternalError(where, text, trace))

    def _handle_packet(self, transport: Transport, peer: bytes, packet: bytes) -> None:
        # A carrier that proves its peer (Noise) lets the envelope check trust what that peer
        # wrote itself; what it relays, and whatever other carriers bring, is verified.
        direct = getattr(transport, "proves_peer", False) is True
        try:
            # A carrier that checked the frame on receipt (TCP's stream decoder, multicast)
            # is taken at its word: the header is checked once on the way in.
            if not getattr(transport, "checks_frames", False):
                check_frame(packet)
            if packet[3] == FrameMode.SYNC:
                # The common case, and up to megabytes: the engine reads the payload where it
                # is, without a copy into a SyncFrame.
                with memoryview(packet) as view:
                    self._receive_sync(
                        peer, view[HEADER_SIZE:], self.name_of(transport), direct=direct
                    )
                return
            frame = decode_checked(packet)
        except FrameError as e:
            self.refuse(peer, f"frame:{e.reason.value}", str(e))
            return
        if isinstance(frame, NoSyncFrame):
            self._receive_nosync(peer, frame, direct=direct)
        elif isinstance(frame, Ping):
            if self._nursery is not None and not getattr(transport, "answers_pings", False):
                self._nursery.start_soon(_send_quietly, transport, peer, Pong(frame.nonce))
        elif isinstance(frame, Hello):
            self.available_until[peer] = frame.available_until_ms
        elif isinstance(frame, Author):
            # Only a carrier that proved the peer's X25519 key can bind a signing key to it:
            # a multicast datagram or a file only claims who sent it.
            if direct:
                self._on_author(peer, frame)
                # A carrier without peer events (memory) tells us it is up this way: answer
                # with ours, once, so a peer that came after our introduction learns it too.
                self._send_author(transport, peer)
            else:
                self.refuse(
                    peer,
                    "author-unproved",
                    f"AUTHOR frame over {self.name_of(transport)}, which does not prove the peer",
                )
        # Pong, UnknownControl: nothing to do.

    def _receive_sync(
        self, peer: bytes, payload: bytes | memoryview, via: str, *, direct: bool = False
    ) -> None:
        """Hand one sync payload to the engine as one input: if the store fails, the engine
        rolls it back whole (nothing of it is delivered or acknowledged, so the peer sends it
        again later) and the node carries on."""
        engine = self._engine
        received = engine.statistics().messages_received
        try:
            # receive_payloads hands each item to receive_payload, which reads a memoryview
            # where it is: no copy of a payload of up to megabytes.
            engine.receive_payloads(
                peer, (cast(bytes, payload),), now=trio.current_time(), direct=direct, via=via
            )
        except StoreError as e:
            self.store_failed(e)
            return
        if engine.statistics().messages_received != received:
            self.store_ok()  # a message was stored: the store takes writes again

    def _receive_nosync(self, peer: bytes, frame: NoSyncFrame, *, direct: bool) -> None:
        group = next((g for g in self._groups() if g.id == frame.group_id), None)
        if group is None or peer not in group.members:
            self.refuse(
                peer,
                RejectReason.NOSYNC_NOT_MEMBER,
                f"ephemeral message for a group {peer.hex()[:8]} is not in with us",
            )
            return
        author, body = None, frame.body
        authors = self._authors
        if authors is not None and authors.is_signed(group.id):
            # Ephemeral messages carry the envelope too (timestamp 0: NOSYNC has none).
            reason = authors(group.id, peer, 0, frame.body, direct, ephemeral=True)
            if reason is not None:
                self.refuse(peer, reason, f"ephemeral message in [{group.name}] refused")
                return
            author, body = unwrap(frame.body)
        # Ephemeral: never wait for a slow subscriber, a lost one is allowed.
        self._subscribers.deliver_nowait(
            Message(group.name, group.id, b"", body, peer, 0, ephemeral=True, author=author)
        )
        self.emit(MessageDelivered(b"", group.id, 0, body, (), True, peer))

    def _carrier_event(self, carrier: Transport, event: object) -> None:
        now = trio.current_time()
        if isinstance(event, PeerUp):
            self.connected[event.peer] = event.address
            try:
                # Back after an absence: what it missed goes out at once, not after a backoff.
                self._engine.reset_peer(event.peer, now=now)
            except StoreError as e:  # its records go out on their old schedule
                self.store_failed(e)
            self.update_peer(event.peer)
            self.emit(PeerConnected(event.peer, event.address))
            self._on_peer_up()  # we are online again: read the remote logs now, say
            self._introduced.discard((id(carrier), event.peer))
            if self._nursery is not None:
                proves = self._author is not None and getattr(carrier, "proves_peer", False)
                if proves is True:
                    self._introduced.add((id(carrier), event.peer))
                if not getattr(carrier, "greeting", ()):
                    # A carrier that writes no greeting of its own (see TcpTransport.greeting)
                    # gets the Hello, and our signing key bound to our Noise key, from here.
                    frames: list[Frame] = [Hello()]
                    if proves is True and self._author is not None:
                        frames.append(self._author)
                    self._nursery.start_soon(_send_quietly, carrier, event.peer, *frames)
        elif isinstance(event, PeerDown):
            self._introduced.discard((id(carrier), event.peer))
            self.connected.pop(event.peer, None)
            self.update_peer(event.peer)
            self.emit(PeerDisconnected(event.peer, event.address, event.reason))
        elif isinstance(event, InputRejected):
            self.refused += 1
            self.emit(event)
        elif isinstance(event, TransportInternalError):
            self.emit(InternalError(event.where, event.error, event.traceback))
        # PacketDropped, DialFailed: the engine retransmits; the carrier dials again.

    def update_peers(self, peers: Collection[bytes]) -> None:
        for peer in peers:
            if peer != self._me:
                self.update_peer(peer)

    def set_members(self, members: Collection[bytes]) -> None:
        """The configured members changed: tell the engine their carriers, and introduce us
        (our ``AUTHOR``) to those a carrier without peer events reaches."""
        self._members = members
        self.update_peers(members)
        self._introduce(members)

    def _introduce(self, peers: Collection[bytes]) -> None:
        """Send our ``AUTHOR`` to each of ``peers`` on the carrier the router takes for it, if
        that carrier proves the peer but reports no peer events (memory): there is no "peer
        up" to send it on. TCP sends it on PeerUp."""
        if self._author is None or self._nursery is None:
            return
        for peer in peers:
            if peer == self._me:
                continue
            carrier = self._router.route(peer)
            if (
                getattr(carrier, "proves_peer", False) is True
                and getattr(carrier, "events", None) is None
                and isinstance(carrier, Reaches)
                and carrier.reaches(peer)
            ):
                self._send_author(carrier, peer)

    def _send_author(self, carrier: Transport, peer: bytes) -> None:
        """Our ``AUTHOR`` to ``peer`` on ``carrier``, unless it went there already."""
        if self._author is None or self._nursery is None:
            return
        if (id(carrier), peer) in self._introduced:
            return
        self._introduced.add((id(carrier), peer))
        self._nursery.start_soon(_send_quietly, carrier, peer, self._author)

    def update_peer(self, peer: bytes) -> None:
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
            engine.set_peer_reliable(
                peer,
                caps.reliable,
                now=trio.current_time(),
                carrier=self.carrier_of(peer) if caps.reliable else "",
            )
        except StoreError as e:
            self.store_failed(e)

    def refuse(self, peer: bytes | None, reason: str, detail: str) -> None:
        """Input the node itself refused (a frame, an ephemeral message, a remote log's
        record): counted and reported as ``InputRejected``."""
        self.refused += 1
        self.emit(InputRejected(peer, "", reason, detail))

    def store_failed(self, error: StoreError) -> None:
        """The store refused a write: report it once per episode (see StoreFailed)."""
        if self.store_error is None:
            self.emit(StoreFailed(self._store_path, str(error)))
        self.store_error = str(error)

    def store_ok(self) -> None:
        """A write that stores data succeeded: end the episode, if there was one."""
        if self.store_error is not None:
            self.store_error = None
            self.emit(StoreRecovered(self._store_path))

    async def feed_from_log(self, peer: bytes, payload: bytes) -> None:
        """A payload the remote log read: handed to the loop, and back once the engine took
        it. A payload the store cannot take is dropped there: the log's cursor moves only over
        messages the store holds, so the next poll fetches it again."""
        feed = _LogFeed(peer, payload)
        await self._inputs_send.send(feed)
        await feed.done.wait()


async def _send_quietly(transport: Transport, peer: bytes, *frames: Frame) -> None:
    with contextlib.suppress(TransportError):
        for frame in frames:
            await transport.send(peer, encode_frame(frame))


def _describe_input(item: Input | None) -> str:
    if isinstance(item, tuple):
        return f"packet from {item[1].hex()[:16]}"
    if isinstance(item, _LogFeed):
        return f"remote log payload of {item.peer.hex()[:16]}"
    return "handling a transport event"
