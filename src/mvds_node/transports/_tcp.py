"""The TCP transport: Noise XX on every connection, framed packets inside, many peers at once.

Theory of operation
-------------------
A node is its static X25519 key (:class:`~mvds_node.transports._noise.Keypair`), and a peer is
the static key it *proved* in the Noise XX handshake: addresses only say where to look. Every
connection, accepted or dialled, first runs the handshake (bounded by ``handshake_timeout``), then
carries frames from ``_framing`` over the encrypted :class:`NoiseStream`.

*Who may connect.* The responder checks the initiator's key as soon as it is proved (message 3):
it is accepted if ``accept_unknown`` is set, if we dial that key ourselves, or if the ``allow``
set or callable says so; otherwise the connection is closed and an ``InputRejected`` event with
reason ``unknown-key`` goes out. The dialler expects one particular key and checks it after
message 2, *before* it reveals its own identity in message 3; a different key is a dial failure.

*Tasks.* Everything runs inside :meth:`TcpTransport.serve` (or ``serve_listeners``): one
accept loop per listener, one task per inbound connection, one dial loop per dialled peer.
Each live connection has a reader and a writer task under its own cancel scope; when either
ends, both end and the connection is closed. The service runs until cancelled or until
:meth:`~TcpTransport.aclose`.

*Sending.* Each peer has one bounded queue of packets. ``send()`` never waits: it puts the
packet in the peer's queue, or, if the queue is full or we have no way to reach the peer, drops
it and reports a ``PacketDropped`` event. The sync layer retransmits, so dropping is cheap, while
waiting would let one slow or dead peer stall the node's sends to everyone else. Every live
connection to the peer runs a writer that takes from that queue, so if two connections exist
(both sides dialled at once), both drain it and a dying one costs at most the packet it was
writing.

*Receiving.* Readers feed a :class:`FrameDecoder` and put each complete, validated packet on one
bounded channel that :meth:`~TcpTransport.receive` reads, together with the peer key. A reader
waits when that channel is full, which pushes back on the peer through TCP; channel waits are
FIFO, so peers take turns. Hostile input on a live connection (bytes that fail Noise
authentication, a bad frame, a length that lies) closes that connection, reports an
``InputRejected`` event with the reason, and touches nothing else.

*Time limits on a live connection.* A packet that has begun to arrive must be complete within
``frame_timeout`` (30 s) of its first byte, whether that byte is part of a Noise message or of a
frame inside decrypted ones; otherwise the connection is closed with ``InputRejected`` reason
``frame-timeout``, so a peer that sends one byte and stops does not hold a connection (and its
buffer) forever. The reader wakes once per ``frame_timeout`` even when idle, to look at the
Noise layer, which returns only whole messages. Time the reader spends waiting for our own
application to take packets never counts against the peer.

*Keepalive.* Every connection answers a CONTROL ping with a pong at once, on that connection
(a small control queue and a lock shared with the packet writer; pongs beyond the queue are
dropped). A peer we have heard nothing from for ``keepalive_interval`` (15 s) is pinged, and
again every interval; when ``keepalive_misses`` (3) pings in a row go unanswered the connection
is closed (``PeerDown`` reason ``keepalive: ...``), 60 s after the peer last said anything.
Anything received is an answer. While its packets wait for our application the peer counts as
alive, and we ping it each interval so that it knows we are too (we are not reading its pings).
This finds a vanished peer sooner than TCP keepalive can on a connection with data in flight,
and a NAT that forgets idle mappings sees traffic.

*Strangers cannot lock peers out.* Anyone may open a connection, and until its handshake ends
it holds a slot. So a stranger holding connections open cannot take them all: at most
``max_handshakes_per_address`` (16) handshakes from one IP address run at once (more are closed
at once, ``too-many-handshakes``), and when all ``max_inbound_connections`` slots are taken, a
new connection evicts the *oldest unfinished handshake* (reported as ``too-many-connections``)
instead of being refused. Connections whose handshake completed are never evicted. A peer's
handshake takes a few round trips, so to keep one out a stranger on many addresses would have to
open connections faster than that, for as long as the peer keeps trying.

*Reconnecting.* A dial loop connects, runs the connection until it ends, and reconnects. Failed
attempts back off exponentially with jitter (:class:`ReconnectPolicy`). A connection that stayed
up for ``stable_after`` seconds resets the backoff and is redialled at once; a shorter one counts
as a failure, so a peer that accepts and then drops us is not hammered.

*Events* (:class:`~mvds_node.transports.TransportEvent`) go out on the bounded :attr:`events`
channel; if nobody reads it they are counted as dropped, never waited for.

Errors from the network are mapped once, here: ``OSError`` (trio maps it to
``BrokenResourceError`` on streams), ``trio.TooSlowError`` and Noise/framing errors become
events. *A bug ends one connection, never the service*: any other ``Exception`` met while
handling one connection (its handshake, a frame, its reader or writer) closes that connection
and is reported as an :class:`~mvds_node.transports.InternalError` event with its traceback; an
outbound one is then redialled with backoff like any failed attempt. ``Cancelled`` and other
``BaseException`` pass through. Only a broken listener raises out of the service.
"""

from __future__ import annotations

import contextlib
import errno
import math
import random
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias, final

import trio

from mvds_node._address import format_address
from mvds_node.errors import LocalProtocolError, TransportClosed, describe_failure
from mvds_node.transports._base import (
    DialFailed,
    EventQueue,
    InputRejected,
    InternalError,
    PacketDropped,
    PeerDown,
    PeerUp,
    TransportEvent,
)
from mvds_node.transports._framing import (
    DEFAULT_LIMITS,
    HEADER_SIZE,
    ControlKind,
    FrameDecoder,
    FrameError,
    FrameLimits,
    FrameMode,
    Ping,
    check_frame,
    encode_frame,
)
from mvds_node.transports._noise import KEY_SIZE, PROLOGUE, Keypair, NoiseError, PeerRefused
from mvds_node.transports._noise_stream import NoiseStream

__all__ = ["OpenStream", "ReconnectPolicy", "TcpStatistics", "TcpTransport"]

OpenStream: TypeAlias = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""How to reach ``(host, port)``: ``trio.open_tcp_stream`` by default."""

# Plaintext per read from a connection: several Noise messages at once during a bulk transfer.
_RECEIVE_SIZE: Final = 256 * 1024
# Accept errors that mean "out of resources right now" rather than "broken listener": wait and
# try again, as trio.serve_listeners does.
_ACCEPT_CAPACITY_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
)
_ACCEPT_RETRY_DELAY: Final = 0.1
# Keepalive: notice a vanished peer (no FIN, no RST: a phone that lost its network) within about
# a minute instead of the kernel default of two hours, so the dial loop can reconnect.
_KEEPALIVE: Final = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
# Control frames (pongs, keepalive pings) queued per connection; more are dropped: a peer that
# floods pings gets at most this many pongs in flight, and one that does not read gets no more.
_CONTROL_QUEUE: Final = 8
_PING_SIZE: Final = HEADER_SIZE + 9  # kind byte and u64 nonce (docs/wire.md)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ReconnectPolicy:
    """Exponential backoff between attempts to reach a dialled peer."""

    initial: float = 0.5
    """Seconds before the first retry: short, because a restarting peer is often back at once."""
    multiplier: float = 2.0
    maximum: float = 60.0
    """Longest wait: a phone that comes back is found within a minute, yet an absent peer costs
    about one connection attempt a minute."""
    jitter: float = 0.1
    """Each delay is scaled by a random factor in ``1 ± jitter`` so that peers that lost the same
    helper at once do not all come back in lockstep."""
    stable_after: float = 10.0
    """A connection that lasted this long resets the backoff."""

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.multiplier >= 1 and 0 <= self.jitter < 1):
            raise ValueError(f"inconsistent reconnect policy: {self!r}")

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 or more)."""
        exponent = min(max(failures - 1, 0), 64)  # 2.0**64 is still a float; 2.0**1100 is not
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        if self.jitter:
            base *= 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        return base


@final
@dataclass(frozen=True, slots=True)
class TcpStatistics:
    peers: int
    """Peers with at least one live connection."""
    connections: int
    """Live connections (after the handshake)."""
    handshakes: int
    """Inbound connections still in the handshake."""
    packets_sent: int
    packets_received: int
    packets_dropped: int
    """Packets ``send()`` dropped (queue full, no route) or a forgotten peer's queue held."""
    events_dropped: int
    """Events lost because nobody drained :attr:`TcpTransport.events`."""


@final
class _Connection:
    """One live, authenticated connection."""

    def __init__(self, stream: NoiseStream, address: str, *, outbound: bool) -> None:
        self.stream = stream
        self.address = address
        self.outbound = outbound
        self.cancel_scope = trio.CancelScope()
        self.reason: str | None = None
        # The packet writer and the control writer (pongs, keepalive pings) take turns.
        self.send_lock = trio.Lock()
        self.control_send, self.control_receive = trio.open_memory_channel[bytes](_CONTROL_QUEUE)
        self.heard = trio.current_time()
        """When the peer last gave a sign of life: bytes received, or its packets waiting for
        us (backpressure). The handshake that just finished counts."""
        self.signs = 0
        """Signs of life so far (a count, so that two at the same instant are two)."""
        self.delivering = False
        """The reader waits for room in the receive channel: we are slow, not the peer."""

    def alive(self) -> None:
        """Note a sign of life from the peer, now."""
        self.heard = trio.current_time()
        self.signs += 1

    def finish(self, reason: str) -> None:
        """End the connection (both tasks), remembering the first reason given."""
        if self.reason is None:
            self.reason = reason
        self.cancel_scope.cancel()


@final
class _Peer:
    """What we hold per peer key: the send queue, live connections, and where to dial it."""

    def __init__(self, key: bytes, queue_size: int) -> None:
        self.key = key
        self.queue_send, self.queue_receive = trio.open_memory_channel[bytes](queue_size)
        self.connections: list[_Connection] = []
        self.address: tuple[str, int] | None = None
        self.dial_scope: trio.CancelScope | None = None
        self.dropped = False
        self.writing = 0  # packets taken from the queue whose write has not finished


def _describe(stream: trio.abc.Stream) -> str:
    if isinstance(stream, trio.SocketStream):
        try:
            host, port, *_ = stream.socket.getpeername()
        except OSError:
            return "unknown"
        return format_address(host, port)
    return type(stream).__name__


def _host(stream: trio.abc.Stream) -> str | None:
    """The IP address a socket stream comes from; None for other streams or if unknown."""
    if isinstance(stream, trio.SocketStream):
        try:
            return str(stream.socket.getpeername()[0])
        except OSError:
            return None
    return None


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _unwrap(exc: Exception) -> Exception:
    """The exception itself, out of the group of one that a connection's nursery wraps a
    reader's or writer's exception in."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _tune(stream: trio.abc.Stream) -> None:
    if not isinstance(stream, trio.SocketStream):
        return
    try:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                stream.setsockopt(socket.IPPROTO_TCP, option, value)
    except OSError:
        pass  # best effort; the connection works without it


@final
class TcpTransport:
    """Noise-over-TCP carrier for many peers; implements :class:`~mvds_node.transports.Transport`.

    Usage::

        transport = TcpTransport(keypair, allow={friend_key})
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(transport.serve, "192.0.2.1", 7777)  # one interface
            transport.dial(friend_key, "192.0.2.7", 7777)
            peer, packet = await transport.receive()
    """

    reliable: Final = True

    def __init__(
        self,
        keypair: Keypair,
        *,
        allow: Callable[[bytes], bool] | Collection[bytes] = frozenset(),
        accept_unknown: bool = False,
        limits: FrameLimits = DEFAULT_LIMITS,
        send_queue_size: int = 64,
        receive_queue_size: int = 256,
        event_queue_size: int = 256,
        max_inbound_connections: int = 256,
        max_handshakes_per_address: int = 16,
        handshake_timeout: float = 10.0,
        frame_timeout: float = 30.0,
        keepalive_interval: float | None = 15.0,
        keepalive_misses: int = 3,
        reconnect: ReconnectPolicy | None = None,
        max_latency: float = 30.0,
        open_stream: OpenStream | None = None,
        prologue: bytes = PROLOGUE,
        rng: random.Random | None = None,
    ) -> None:
        """Create a transport; nothing runs until :meth:`serve` or :meth:`serve_listeners`.

        Args:
            keypair: this node's static identity.
            allow: keys accepted from inbound connections: a collection (consulted live, so a
                set may be changed later) or a callable.
            accept_unknown: accept every key that completes a handshake.
            limits: frame limits; ``max_payload`` is ``limits.max_frame_bytes``.
            send_queue_size: packets queued per peer before ``send`` drops.
            receive_queue_size: packets from all peers waiting for :meth:`receive`.
            event_queue_size: events waiting in :attr:`events` before they are dropped.
            max_inbound_connections: inbound connections (handshaking or live) at once; when
                all are taken, a new one evicts the oldest unfinished handshake, or is closed
                at once if every one has completed its handshake.
            max_handshakes_per_address: inbound handshakes in progress from one IP address at
                once; more are closed at once (``too-many-handshakes``).
            handshake_timeout: seconds for connecting plus the whole handshake.
            frame_timeout: seconds within which a packet that has begun to arrive must be
                complete (counting from its first byte, at the Noise layer or the frame layer),
                else the connection is closed (``frame-timeout``). Time we spend waiting for
                our own application to take packets does not count.
            keepalive_interval: seconds of silence from a peer after which we ping it, and
                then between pings; None sends no pings. Every connection answers a ping with a
                pong at once, and anything received counts as an answer.
            keepalive_misses: unanswered pings after which the connection is closed: a silent
                peer is dropped ``keepalive_interval * (keepalive_misses + 1)`` seconds after
                it last sent anything (60 s by default).
            reconnect: backoff for dialled peers.
            max_latency: what this transport advertises (seconds). Reliable: what is queued
                arrives while the connection lives, and a new connection re-arms everything, so
                the engine need only retransmit to a peer that is slow to acknowledge (one busy
                with a bulk transfer may take this long).
            open_stream: how to reach an address; default ``trio.open_tcp_stream``. Pass another
                to go through a proxy or, in tests, a memory network.
            prologue: Noise prologue; both ends must agree.
            rng: source of backoff jitter; default a fresh ``random.Random()``.
        """
        if (
            min(
                send_queue_size,
                receive_queue_size,
                event_queue_size,
                max_inbound_connections,
                max_handshakes_per_address,
            )
            < 1
        ):
            raise ValueError("queue sizes and connection limits must be at least 1")
        if not (handshake_timeout > 0 and frame_timeout > 0 and keepalive_misses >= 1):
            raise ValueError("timeouts must be positive and keepalive_misses at least 1")
        if keepalive_interval is not None and not keepalive_interval > 0:
            raise ValueError("keepalive_interval must be positive, or None")
        self._keypair = keypair
        self._allow = allow
        self._accept_unknown = accept_unknown
        self._limits = limits
        self._send_queue_size = send_queue_size
        self._max_inbound = max_inbound_connections
        self._max_handshakes_per_address = max_handshakes_per_address
        self._handshake_timeout = handshake_timeout
        self._frame_timeout = frame_timeout
        self._keepalive_interval = keepalive_interval
        self._keepalive_misses = keepalive_misses
        self._reconnect = reconnect if reconnect is not None else ReconnectPolicy()
        self.max_latency: Final = max_latency
        self._open_stream: OpenStream = (
            open_stream if open_stream is not None else trio.open_tcp_stream
        )
        self._prologue = prologue
        self._rng = rng if rng is not None else random.Random()
        self._inbound_send, self._inbound_receive = trio.open_memory_channel[tuple[bytes, bytes]](
            receive_queue_size
        )
        self._events = EventQueue[TransportEvent](event_queue_size)
        self._peers: dict[bytes, _Peer] = {}
        self._drained: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._handshakes = 0
        self._inbound_count = 0
        # Inbound handshakes in progress, oldest first (dicts keep insertion order), and how
        # many come from each IP address: the two bounds a stranger meets.
        self._pending: dict[trio.CancelScope, str] = {}
        self._pending_by_host: dict[str, int] = {}
        self._packets_sent = 0
        self._packets_received = 0
        self._packets_dropped = 0

    # --- capabilities and introspection ------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        """Our identity as peers see it."""
        return self._keypair.public

    @property
    def max_payload(self) -> int:
        return self._limits.max_frame_bytes

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        """Peer up/down, rejected input, dropped packets and failed dials; ends after aclose()."""
        return self._events.receive

    greeting: tuple[bytes, ...] = ()
    """Frames written first on every new connection, before any packet :meth:`send` queued
    (the node's ``Hello`` and its ``AUTHOR``): the peer reads them before anything else we
    send it. Set before the connection opens; each must be one frame."""

    checks_frames: Final = True
    """Every packet :meth:`receive` returns is one checked frame (the stream's decoder)."""
    answers_pings: Final = True
    """A ping is answered on the connection it came on, before :meth:`receive` returns it."""
    proves_peer: Final = True
    """The peer of each packet is the static key its Noise session proved."""

    def reaches(self, peer: bytes) -> bool:
        """True while ``peer`` has a live connection."""
        state = self._peers.get(peer)
        return state is not None and bool(state.connections)

    def connected_peers(self) -> frozenset[bytes]:
        """Keys of peers with at least one live connection."""
        return frozenset(key for key, peer in self._peers.items() if peer.connections)

    def statistics(self) -> TcpStatistics:
        return TcpStatistics(
            peers=len(self.connected_peers()),
            connections=sum(len(peer.connections) for peer in self._peers.values()),
            handshakes=self._handshakes,
            packets_sent=self._packets_sent,
            packets_received=self._packets_received,
            packets_dropped=self._packets_dropped,
            events_dropped=self._events.dropped,
        )

    def queued(self, peer: bytes) -> int:
        """Packets waiting in ``peer``'s send queue, and the one being written if any (for a
        driver's flow control)."""
        state = self._peers.get(peer)
        if state is None:
            return 0
        return state.queue_send.statistics().current_buffer_used + state.writing

    @property
    def send_queue_size(self) -> int:
        return self._send_queue_size

    async def wait_sent(self) -> None:
        """Wait until some connection has written a packet from its queue."""
        if self._drained is None:
            self._drained = trio.Event()
        await self._drained.wait()

    # --- peers -------------------------------------------------------------------------------

    def dial(self, peer: bytes, host: str, port: int) -> None:
        """Keep a connection to ``peer`` at ``host:port``, reconnecting with backoff.

        Calling it again for the same peer changes the address used from the next attempt on.
        A dialled peer is also accepted on inbound connections. Takes effect at once if the
        service is running, else when it starts.

        Raises:
            TransportClosed: the transport was closed.
            LocalProtocolError: ``peer`` is not a 32-byte key.
        """
        if self._closed:
            raise TransportClosed("transport was closed")
        if len(peer) != KEY_SIZE:
            raise LocalProtocolError(f"a peer key is {KEY_SIZE} bytes, got {len(peer)}")
        state = self._peer(peer)
        state.address = (host, port)
        if self._nursery is not None and state.dial_scope is None:
            self._start_dialing(self._nursery, state)

    def forget(self, peer: bytes) -> None:
        """Stop dialling ``peer``, close its connections and drop what is queued for it.

        It may still connect to us if ``allow`` or ``accept_unknown`` admits it.
        """
        state = self._peers.get(peer)
        if state is None:
            return
        state.address = None
        for connection in state.connections:
            connection.finish("forgotten")
        self._drop_peer(state)

    def _peer(self, key: bytes) -> _Peer:
        state = self._peers.get(key)
        if state is None:
            state = self._peers[key] = _Peer(key, self._send_queue_size)
        return state

    def _drop_peer(self, state: _Peer) -> None:
        if state.dropped:
            return
        state.dropped = True
        if self._peers.get(state.key) is state:
            del self._peers[state.key]
        if state.dial_scope is not None:
            state.dial_scope.cancel()
            state.dial_scope = None
        self._packets_dropped += state.queue_send.statistics().current_buffer_used
        state.queue_send.close()
        state.queue_receive.close()

    def _accepts(self, key: bytes) -> bool:
        if self._accept_unknown:
            return True
        state = self._peers.get(key)
        if state is not None and state.address is not None:
            return True
        if callable(self._allow):
            return bool(self._allow(key))
        return key in self._allow

    def _emit(self, event: TransportEvent) -> None:
        self._events.emit(event)

    # --- the service -------------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` and run the transport until cancelled or closed.

        Use with ``nursery.start``: it reports the listeners once they are bound (``port=0``
        picks a free port; read it from ``listeners[0].socket.getsockname()``). It returns when
        :meth:`aclose` is called.

        Raises:
            OSError: the address could not be bound.
            TransportClosed: the transport was closed before it started.
            LocalProtocolError: the service is already running.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        await self._run(listeners, lambda: task_status.started(listeners))

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the transport on the given listeners (none for a dial-only node).

        The service owns the listeners and closes them when it ends. It returns when
        :meth:`aclose` is called, and otherwise runs until cancelled.

        Raises:
            TransportClosed: the transport was closed before it started.
            LocalProtocolError: the service is already running.
        """
        await self._run(listeners, task_status.started)

    async def _run(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        started: Callable[[], None],
    ) -> None:
        if self._closed or self._nursery is not None:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            if self._closed:
                raise TransportClosed("transport was closed")
            raise LocalProtocolError("the transport's service is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, nursery, listener)
                for state in list(self._peers.values()):
                    if state.address is not None and state.dial_scope is None:
                        self._start_dialing(nursery, state)
                started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def _accept_loop(
        self, nursery: trio.Nursery, listener: trio.abc.Listener[trio.abc.Stream]
    ) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    self._emit(
                        InputRejected(None, "unknown", "too-many-connections", f"accept: {exc}")
                    )
                    await trio.sleep(_ACCEPT_RETRY_DELAY)
                    continue
                host = _host(stream)
                if (
                    host is not None
                    and self._pending_by_host.get(host, 0) >= self._max_handshakes_per_address
                ):
                    self._emit(
                        InputRejected(
                            None,
                            _describe(stream),
                            "too-many-handshakes",
                            f"already {self._max_handshakes_per_address} handshakes from {host}",
                        )
                    )
                    await trio.aclose_forcefully(stream)
                    continue
                if self._inbound_count >= self._max_inbound and not self._evict_oldest_handshake():
                    self._emit(
                        InputRejected(
                            None,
                            _describe(stream),
                            "too-many-connections",
                            f"already {self._inbound_count} inbound connections",
                        )
                    )
                    await trio.aclose_forcefully(stream)
                    continue
                # An evicted handshake frees its slot as soon as its task runs; until then the
                # count may stand one over per eviction, never more.
                self._inbound_count += 1
                scope = trio.CancelScope()
                self._pending[scope] = host or ""
                if host is not None:
                    self._pending_by_host[host] = self._pending_by_host.get(host, 0) + 1
                nursery.start_soon(self._inbound, stream, scope)

    def _evict_oldest_handshake(self) -> bool:
        """Cancel the oldest inbound handshake still running, to make room; False if none."""
        for scope in self._pending:
            if not scope.cancel_called:
                scope.cancel()
                return True
        return False

    def _handshake_ended(self, scope: trio.CancelScope) -> None:
        host = self._pending.pop(scope, None)
        if host:
            left = self._pending_by_host[host] - 1
            if left:
                self._pending_by_host[host] = left
            else:
                del self._pending_by_host[host]

    async def _inbound(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        address = _describe(stream)
        try:
            _tune(stream)
            self._handshakes += 1
            noise: NoiseStream | None = None
            try:
                with scope:
                    noise = await self._respond(stream, address)
            finally:
                self._handshakes -= 1
                self._handshake_ended(scope)
            if scope.cancelled_caught:
                self._emit(
                    InputRejected(
                        None,
                        address,
                        "too-many-connections",
                        "handshake evicted: all inbound slots taken and it was the oldest",
                    )
                )
            if noise is not None:
                await self._run_connection(noise, address, outbound=False)
        except Exception as exc:
            # A bug met on this connection's input: it ends here, reported; the others go on.
            self._internal_error(f"tcp connection from {address}", exc)
        finally:
            self._inbound_count -= 1
            await trio.aclose_forcefully(stream)

    def _internal_error(self, where: str, exc: Exception) -> None:
        error, trace = describe_failure(_unwrap(exc))
        self._emit(InternalError(where, error, trace))

    async def _respond(self, stream: trio.abc.Stream, address: str) -> NoiseStream | None:
        """The responder's handshake; failures become events (the stream is closed by then)."""
        try:
            with trio.fail_after(self._handshake_timeout):
                return await NoiseStream.handshake(
                    stream,
                    self._keypair,
                    initiator=False,
                    prologue=self._prologue,
                    accept=self._accepts,
                )
        except trio.TooSlowError:
            self._emit(
                InputRejected(
                    None,
                    address,
                    "handshake-timeout",
                    f"no handshake in {self._handshake_timeout}s",
                )
            )
        except PeerRefused as exc:
            self._emit(InputRejected(exc.remote_static, address, "unknown-key", str(exc)))
        except NoiseError as exc:
            self._emit(InputRejected(None, address, "handshake-failed", str(exc)))
        except trio.BrokenResourceError as exc:
            self._emit(InputRejected(None, address, "handshake-failed", f"connection lost: {exc}"))
        return None

    def _start_dialing(self, nursery: trio.Nursery, state: _Peer) -> None:
        scope = state.dial_scope = trio.CancelScope()
        nursery.start_soon(self._dial_task, state, scope)

    async def _dial_task(self, state: _Peer, scope: trio.CancelScope) -> None:
        with scope:
            await self._dial_loop(state)

    async def _dial_loop(self, state: _Peer) -> None:
        failures = 0
        while state.address is not None:
            host, port = state.address
            address = format_address(host, port)
            began = trio.current_time()
            try:
                outcome = await self._dial_once(state.key, host, port)
                if isinstance(outcome, NoiseStream):
                    await self._run_connection(outcome, address, outbound=True)
            except Exception as exc:
                # A bug met on this connection: it ends, reported, and is redialled after a
                # backoff like a failed attempt (so a bug that recurs is not hammered).
                self._internal_error(f"tcp connection to {address}", exc)
                failures += 1
                await trio.sleep(self._reconnect.delay(failures, self._rng))
                continue
            if isinstance(outcome, NoiseStream):
                if trio.current_time() - began >= self._reconnect.stable_after:
                    failures = 0
                    continue
                failures += 1
                await trio.sleep(self._reconnect.delay(failures, self._rng))
                continue
            failures += 1
            delay = self._reconnect.delay(failures, self._rng)
            reason, detail = outcome
            self._emit(DialFailed(state.key, address, reason, detail, delay))
            await trio.sleep(delay)

    async def _dial_once(self, key: bytes, host: str, port: int) -> NoiseStream | tuple[str, str]:
        """One attempt: a live stream, or ``(reason, detail)`` for a ``DialFailed`` event."""
        try:
            with trio.fail_after(self._handshake_timeout):
                stream = await self._open_stream(host, port)
                _tune(stream)
                return await NoiseStream.handshake(
                    stream,
                    self._keypair,
                    initiator=True,
                    prologue=self._prologue,
                    accept=lambda proved: proved == key,
                )
        except trio.TooSlowError:
            return "timeout", f"no connection and handshake in {self._handshake_timeout}s"
        except OSError as exc:
            return "unreachable", str(exc)
        except PeerRefused as exc:
            return "wrong-key", str(exc)
        except (NoiseError, trio.BrokenResourceError) as exc:
            return "handshake-failed", str(exc)

    # --- one live connection -----------------------------------------------------------------

    async def _run_connection(self, stream: NoiseStream, address: str, *, outbound: bool) -> None:
        key = stream.remote_static
        state = self._peer(key)
        connection = _Connection(stream, address, outbound=outbound)
        if not outbound:
            # A peer that reconnects to us replaces its older inbound connection, which may be
            # half-open (its network changed and no FIN reached us).
            for older in state.connections:
                if not older.outbound:
                    older.finish("replaced by a newer connection")
        state.connections.append(connection)
        if len(state.connections) == 1:
            self._emit(PeerUp(key, address, outbound))
        try:
            with connection.cancel_scope:
                for frame in self.greeting:  # before the writers start: nothing overtakes it
                    await stream.send_all(frame)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, connection, state)
                    nursery.start_soon(self._control_writer, connection)
                    if self._keepalive_interval is not None:
                        nursery.start_soon(self._keepalive, connection, self._keepalive_interval)
                    await self._reader(connection, key)
        except Exception as exc:
            connection.finish(f"internal error: {type(_unwrap(exc)).__name__}")
            raise  # reported by the connection's task, once
        finally:
            state.connections.remove(connection)
            await trio.aclose_forcefully(stream)
            if not state.connections:
                self._emit(PeerDown(key, address, connection.reason or "closed"))
                if state.address is None:
                    # Nobody dials it: keep no queue for a peer that may never come back.
                    self._drop_peer(state)

    async def _reader(self, connection: _Connection, key: bytes) -> None:
        # Drained after every read, the decoder holds at most one partial frame and one read
        # (with small frame limits, a read holds many frames: two frames' worth is not enough).
        decoder = FrameDecoder(
            limits=self._limits, max_buffer_bytes=self._limits.max_frame_bytes + _RECEIVE_SIZE
        )
        stream = connection.stream
        timeout = self._frame_timeout
        # When the partial frame in the decoder began to arrive; and when we last finished
        # handing packets over, since a packet cannot be late for the time we spent not reading.
        frame_since: float | None = None
        resumed = -math.inf
        try:
            while True:
                began = _earliest(frame_since, stream.receive_pending_since)
                # With nothing partial, still wake once per timeout: a Noise message can begin
                # to arrive inside receive_some, which returns only once it is whole.
                deadline = (
                    trio.current_time() + timeout
                    if began is None
                    else max(began, resumed) + timeout
                )
                data: bytes | None = None
                with trio.move_on_at(deadline):
                    # Only the read is bounded: cancelling it loses nothing (NoiseStream).
                    data = await stream.receive_some(_RECEIVE_SIZE)
                if data is None:
                    # The deadline passed with no whole Noise message: is something overdue?
                    began = _earliest(frame_since, stream.receive_pending_since)
                    now = trio.current_time()
                    if began is not None and now >= max(began, resumed) + timeout:
                        detail = f"a packet begun {now - began:g}s ago is still incomplete"
                        self._emit(InputRejected(key, connection.address, "frame-timeout", detail))
                        connection.finish(f"frame timeout: {detail}")
                        return
                    continue
                connection.alive()
                if data:
                    decoder.receive_data(data)
                else:
                    decoder.receive_eof()
                delivered = await self._deliver(connection, key, decoder)
                if not data:
                    connection.finish("closed by peer")
                    return
                now = trio.current_time()
                if delivered:
                    resumed = now
                if decoder.buffered == 0:
                    frame_since = None
                elif frame_since is None or delivered:
                    frame_since = now  # what is left began in this read
        except FrameError as exc:
            self._emit(
                InputRejected(key, connection.address, f"frame:{exc.reason.value}", str(exc))
            )
            connection.finish(f"rejected input: {exc}")
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, NoiseError):
                self._emit(InputRejected(key, connection.address, "bad-ciphertext", str(exc)))
            connection.finish(f"broken: {exc}")
        except trio.ClosedResourceError:
            connection.finish("closed")

    async def _deliver(self, connection: _Connection, key: bytes, decoder: FrameDecoder) -> int:
        """Hand every complete packet to :meth:`receive`, answering pings on the way; return
        how many. Waits while the receive channel is full (backpressure on the peer).

        Raises:
            FrameError: the stream broke a framing rule.
        """
        count = 0
        while (packet := decoder.next_packet()) is not None:
            count += 1
            self._packets_received += 1
            if (
                len(packet) == _PING_SIZE
                and packet[3] == FrameMode.CONTROL
                and packet[HEADER_SIZE] == ControlKind.PING
            ):
                # Answer on this connection at once, whatever the application does with it.
                pong = packet[:HEADER_SIZE] + bytes([ControlKind.PONG]) + packet[HEADER_SIZE + 1 :]
                with contextlib.suppress(trio.WouldBlock):
                    connection.control_send.send_nowait(pong)
            connection.delivering = True
            try:
                await self._inbound_send.send((key, packet))
            finally:
                connection.delivering = False
                connection.alive()
        return count

    async def _control_writer(self, connection: _Connection) -> None:
        """Write pongs and keepalive pings, between the packet writer's packets."""
        try:
            async for frame in connection.control_receive:
                async with connection.send_lock:
                    await connection.stream.send_all(frame)
        except trio.BrokenResourceError as exc:
            connection.finish(f"broken: {exc}")
        except trio.ClosedResourceError:
            connection.finish("closed")

    async def _keepalive(self, connection: _Connection, interval: float) -> None:
        """Ping a silent peer every ``interval``; close after ``keepalive_misses`` unanswered."""
        silent_since, signs = connection.heard, connection.signs
        pings = 0
        while True:
            await trio.sleep_until(silent_since + interval * (pings + 1))
            if connection.delivering:
                # Its packets wait for our application: the peer lives, and it cannot hear
                # from us while we do not read its pings, so a ping tells it that we live too.
                connection.alive()
                self._ping(connection)
            if connection.signs != signs:
                silent_since, signs, pings = connection.heard, connection.signs, 0
                continue
            if pings >= self._keepalive_misses:
                connection.finish(
                    f"keepalive: no answer to {pings} pings in "
                    f"{trio.current_time() - silent_since:g}s"
                )
                return
            pings += 1
            self._ping(connection)

    def _ping(self, connection: _Connection) -> None:
        ping = encode_frame(Ping(self._rng.getrandbits(64)))
        with contextlib.suppress(trio.WouldBlock):  # full: the peer is not reading either
            connection.control_send.send_nowait(ping)

    async def _writer(self, connection: _Connection, state: _Peer) -> None:
        try:
            async for packet in state.queue_receive:
                state.writing += 1
                try:
                    async with connection.send_lock:
                        await connection.stream.send_all(packet)
                finally:
                    state.writing -= 1
                self._packets_sent += 1
                drained = self._drained
                if drained is not None:  # someone waits for a queue to shrink
                    self._drained = None
                    drained.set()
            connection.finish("send queue closed")
        except trio.BrokenResourceError as exc:
            connection.finish(f"broken: {exc}")
        except trio.ClosedResourceError:
            connection.finish("closed")

    # --- the Transport protocol --------------------------------------------------------------

    async def send(self, peer: bytes, packet: bytes) -> None:
        """Queue ``packet`` for ``peer``, or drop it and report ``PacketDropped``; never waits.

        A peer we dial gets its packets queued even while it is unreachable (up to
        ``send_queue_size``); a peer with neither a connection nor an address gets them dropped
        (``no-route``).

        Raises:
            TransportClosed: we closed the transport.
            LocalProtocolError: ``packet`` is larger than :attr:`max_payload` or not one frame.
        """
        await trio.lowlevel.checkpoint()
        self.offer(peer, packet)

    def offer(self, peer: bytes, packet: bytes) -> bool:
        """:meth:`send` without the checkpoint: True if queued, False if dropped (and reported).

        For a driver that wants to know at once, to tell its sync engine what did not go out.

        Raises:
            TransportClosed: we closed the transport.
            LocalProtocolError: ``packet`` is larger than :attr:`max_payload` or not one frame.
        """
        if self._closed:
            raise TransportClosed("transport was closed")
        if len(packet) > self.max_payload:
            raise LocalProtocolError(f"packet of {len(packet)} bytes exceeds {self.max_payload}")
        try:
            check_frame(packet, limits=self._limits)
        except FrameError as exc:
            raise LocalProtocolError(f"not a frame: {exc}") from exc
        state = self._peers.get(peer)
        if state is None:
            self._drop(peer, "no-route")
            return False
        try:
            state.queue_send.send_nowait(bytes(packet))
        except trio.WouldBlock:
            self._drop(peer, "queue-full")
            return False
        return True

    def _drop(self, peer: bytes, reason: str) -> None:
        self._packets_dropped += 1
        self._emit(PacketDropped(peer, reason))

    async def receive(self) -> tuple[bytes, bytes]:
        """Wait for the next ``(peer key, packet)`` from any connection.

        Raises:
            TransportClosed: we closed the transport (also wakes a task blocked here).
        """
        try:
            return await self._inbound_receive.receive()
        except (trio.ClosedResourceError, trio.EndOfChannel):
            raise TransportClosed("transport was closed") from None

    async def aclose(self) -> None:
        """Stop the service, close every connection and listener, and end :attr:`events`.

        Always closes, even if cancelled; a running :meth:`serve` returns.
        """
        if not self._closed:
            self._closed = True
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()
            for state in list(self._peers.values()):
                self._drop_peer(state)
            self._inbound_send.close()
            self._inbound_receive.close()
            self._events.close()
        await trio.lowlevel.checkpoint()
