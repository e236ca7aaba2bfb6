"""UDP multicast on one LAN interface: every datagram sealed with the group's key.

Theory of operation
-------------------
A group of nodes that share a 32-byte *group key* meet on one multicast address and port, on one
interface that the configuration names (never "every interface"), with TTL 1 so nothing leaves
the link. Each packet (one frame from ``_framing``) travels as one datagram::

    offset  size  field
    0       4     magic "MVMC"
    4       1     version 0x01
    5       8     group tag     first 8 bytes of SHA-256("mvds-node multicast tag" 00 || key)
    13      32    sender        the sender's static X25519 public key (its node ID)
    45      8     session       random per transport instance: restarts never reuse a nonce
    53      8     counter       u64 big-endian, 1 for the session's first datagram, +1 per datagram
    61      32    recipient     a member's key, or 32 zero bytes (:data:`BROADCAST`) for everyone
    93      n+16  ciphertext    ChaCha20-Poly1305 of the packet

*Keys and nonces.* The AEAD key is derived per (sender, session) from the group key
(HKDF-SHA256), and the nonce is the counter, so no two datagrams under one key share a nonce; a
sender whose counter would wrap starts a new session. The whole 93-byte header is the associated
data: nothing in it can be changed without failing authentication.

*Addressing.* Multicast is one-to-many: every datagram reaches every member listening on the
interface. ``send(BROADCAST, packet)`` (or ``send(b"", packet)``) is meant for all of them;
``send(peer, packet)`` still goes to the whole group, but names ``peer`` as the recipient, and
every other member drops it unread (before decrypting, silently: it is normal traffic, not an
attack). The sync engine talks to one peer at a time, so the node uses addressed sends.

*What a receiver refuses.* It checks the cheap things first and reports each refusal as an
:class:`~mvds_node.transports.InputRejected` event with a stable reason token: ``too-short``,
``too-large``, ``bad-magic`` (stray traffic on our port), ``unknown-version``, ``foreign-group``
(a tag that is not ours: another group on the same address, told apart without any crypto),
``bad-ciphertext`` (fails authentication), ``replay`` (a counter already seen or older than the
64-counter sliding window of its sender session), ``own-sender`` (an authentic datagram in our
own name from another session: a second process with this identity, or a member impersonating
us) and ``frame:<reason>`` (authentic, but not a frame). Our own datagrams, which
``IP_MULTICAST_LOOP`` hands back to us, and datagrams addressed to another member are dropped
silently and only counted (:meth:`MulticastTransport.statistics`): they arrive with every send
and would drown the events that matter. Only an authentic datagram creates receiver state, so a
stranger cannot fill the table of sender sessions; at most :data:`MAX_SESSIONS` are remembered,
least recently heard forgotten first. A receiver that restarts forgets the windows, so it can be
served old datagrams again; the sync layer deduplicates messages by ID, so that costs bandwidth,
never correctness.

*What the key proves* is membership: any member can claim any sender key. Nodes that need to tell
members apart use TCP+Noise, where each peer proves its own key.

*Sizes.* A datagram is at most :data:`MAX_DATAGRAM` (1,400) bytes. With 8 bytes of UDP and 20 of
IPv4 header that is a 1,428-byte IP packet: below the 1,500-byte Ethernet MTU and the 1,492 of
PPPoE, so it is never IP-fragmented. A fragmented datagram is lost if any fragment is, the
receiver must hold fragments for reassembly, and firewalls often drop fragments outright; the
margin also leaves room for IP options or an encapsulation on the way. The 109 bytes of header
and AEAD tag leave :attr:`~MulticastTransport.max_payload` = 1,291 bytes per packet, frame header
included. The transport never splits a packet: the engine is told ``max_payload`` and cuts its
payloads to fit, and ``send`` of a larger packet raises
:class:`~mvds_node.errors.LocalProtocolError`.

*Sockets.* :meth:`MulticastTransport.open` returns with both sockets ready: the receiving socket
bound to ``(group, port)`` (so other groups' datagrams never reach it) with ``SO_REUSEADDR`` and
``SO_REUSEPORT`` (so several nodes on one host can listen), joined with ``IP_ADD_MEMBERSHIP`` on
the named interface only and, on Linux, ``IP_MULTICAST_ALL`` off (so it does not also hear the
group on interfaces that *other* sockets of the host joined); the sending socket bound to the
interface's address with ``IP_MULTICAST_IF`` set to it, TTL 1, and ``IP_MULTICAST_LOOP`` on so
that processes on one host hear each other. With ``IP_MULTICAST_IF`` set, no multicast route is
needed, even on ``lo``.

*Receiving* reads the socket directly: ``receive()`` takes datagrams, drops and reports what it
refuses, and returns the first good packet. The bounded queue is the kernel's socket receive
buffer, which drops new datagrams when full, exactly what a bounded channel filled with
``send_nowait`` would do, with no reader task (so no nursery to hide) and no extra copy. The
engine retransmits whatever the kernel dropped. Events go out on the bounded :attr:`events`
channel, never waited for: when it is full they are counted and dropped.

*A bug drops one datagram, never the transport*: an unexpected ``Exception`` while checking or
opening one datagram drops it, is reported as an :class:`~mvds_node.transports.InternalError`
event carrying its traceback, and :meth:`~MulticastTransport.receive` goes on with the next.

*Errors* are mapped here, once. A send the network refuses (no route, interface down, the host
firewall, no buffer space: transient on a phone that changes networks) drops the packet and
reports :class:`~mvds_node.transports.PacketDropped`; any other ``OSError`` is
:class:`~mvds_node.errors.TransportBroken`. After :meth:`~MulticastTransport.aclose`, ``send``
and ``receive`` raise :class:`~mvds_node.errors.TransportClosed`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import socket
import struct
import sys
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Final, final

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mvds_node.errors import (
    LocalProtocolError,
    TransportBroken,
    TransportClosed,
    describe_failure,
)
from mvds_node.transports._base import (
    EventQueue,
    InputRejected,
    InternalError,
    PacketDropped,
    TransportEvent,
)
from mvds_node.transports._framing import FrameError, decode_frame

__all__ = [
    "BROADCAST",
    "DEFAULT_GROUP",
    "DEFAULT_PORT",
    "HEADER_SIZE",
    "MAX_DATAGRAM",
    "MAX_SESSIONS",
    "REPLAY_WINDOW",
    "MulticastStatistics",
    "interface_problem",
    "MulticastTransport",
    "multicast_group_tag",
]

MAGIC: Final = b"MVMC"
VERSION: Final = 1
BROADCAST: Final = bytes(32)
"""The recipient that means "every member of the group" (``send`` also takes ``b""``)."""
DEFAULT_GROUP: Final = "239.255.77.77"
"""In 239.255.0.0/16, the IPv4 local scope (RFC 2365): site-local, never routed further."""
DEFAULT_PORT: Final = 7701
_HEADER: Final = struct.Struct(">4sB8s32s8sQ32s")
HEADER_SIZE: Final = _HEADER.size
"""93 bytes of header, all of it associated data."""
TAG_SIZE: Final = 16
"""The Poly1305 tag after the ciphertext."""
MAX_DATAGRAM: Final = 1400
"""1,400 + 8 (UDP) + 20 (IPv4) = 1,428 bytes on the link, below the 1,492 of PPPoE and the 1,500
of Ethernet: datagrams are never IP-fragmented (see the module docstring)."""
REPLAY_WINDOW: Final = 64
"""Counters remembered per sender session: reordering by up to 63 datagrams is tolerated."""
MAX_SESSIONS: Final = 1024
"""Sender sessions remembered (each about 200 bytes): far more than the members of a LAN group."""

_KEY_SIZE: Final = 32
_LIMITED_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")
_COUNTER_MAX: Final = 2**64 - 1
_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1
# Linux's IP_MULTICAST_ALL (include/uapi/linux/in.h); Python 3.11's socket module lacks the name.
_IP_MULTICAST_ALL: Final = getattr(socket, "IP_MULTICAST_ALL", 49)
# Send errors that mean "the network cannot take this packet now" rather than "the socket is
# broken": a changing network makes them transient, and the engine retransmits.
_NO_ROUTE: Final = frozenset(
    {
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
        errno.EPERM,  # a host firewall dropping the packet
    }
)
_NO_BUFFER: Final = frozenset({errno.ENOBUFS, errno.ENOMEM})


def multicast_group_tag(group_key: bytes) -> bytes:
    """The 8-byte tag that tells this group's datagrams from another group's, without crypto."""
    return hashlib.sha256(b"mvds-node multicast tag\x00" + group_key).digest()[:8]


def _session_key(group_key: bytes, sender: bytes, session: bytes) -> ChaCha20Poly1305:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"mvds-node multicast" + sender + session,
    ).derive(group_key)
    return ChaCha20Poly1305(key)


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


class _Window:
    """Sliding replay window over one sender session's counters.

    Bit ``i`` of ``mask`` is set once counter ``highest - i`` has been accepted.
    """

    __slots__ = ("highest", "mask")

    def __init__(self) -> None:
        self.highest = -1
        self.mask = 0

    def accept(self, counter: int) -> bool:
        """Record ``counter`` and return True, or return False for a replay or too old."""
        if counter > self.highest:
            shift = counter - self.highest
            # A jump past the window clears it; shifting by the jump itself would let a member
            # that sends counter 2**63 make us build a 2**63-bit integer.
            self.mask = 1 if shift >= REPLAY_WINDOW else ((self.mask << shift) | 1) & _WINDOW_MASK
            self.highest = counter
            return True
        offset = self.highest - counter
        if offset >= REPLAY_WINDOW or self.mask & (1 << offset):
            return False
        self.mask |= 1 << offset
        return True


class _Session:
    """What a receiver keeps per (sender, session): the AEAD and the replay window."""

    __slots__ = ("aead", "window")

    def __init__(self, aead: ChaCha20Poly1305) -> None:
        self.aead = aead
        self.window = _Window()


@final
@dataclass(frozen=True, slots=True)
class MulticastStatistics:
    datagrams_sent: int
    """Datagrams handed to the network."""
    datagrams_received: int
    """Packets :meth:`MulticastTransport.receive` returned."""
    datagrams_rejected: int
    """Datagrams refused and reported as ``InputRejected`` (or, for a bug met on one, as
    ``InternalError``)."""
    datagrams_ignored: int
    """Datagrams dropped silently: our own, looped back, and those addressed to other members."""
    packets_dropped: int
    """Packets ``send`` could not put on the network, reported as ``PacketDropped``."""
    sessions: int
    """Sender sessions whose replay windows are remembered (at most :data:`MAX_SESSIONS`)."""
    events_dropped: int
    """Events lost because nobody drained :attr:`MulticastTransport.events`."""


def interface_problem(address: ipaddress.IPv4Address) -> str | None:
    """Why ``address`` cannot name the one interface that multicast or mDNS runs on, or None.

    The one rule for every place that takes such an address (this transport, mDNS discovery,
    the configuration): each raises its own error with this reason in it.
    """
    if address.is_unspecified or address == _LIMITED_BROADCAST:
        return "means every interface"
    if address.is_multicast:
        return "is a multicast address"
    if address.is_reserved:
        return "is a reserved address, on no interface"
    return None


def _check_ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"{what} must be an IPv4 address, got {value!r}") from None


@final
class MulticastTransport:
    """A :class:`~mvds_node.transports.Transport` over UDP multicast on one interface.

    Usage::

        async with MulticastTransport(keypair.public, group_key, interface="192.168.1.20") as t:
            await t.send(BROADCAST, encode_frame(Ping(1)))    # every member
            await t.send(member_key, packet)                   # only that member reads it
            sender, packet = await t.receive()

    :meth:`open` (or ``async with``) binds and joins before it returns; ``aclose`` closes.
    """

    reliable: Final = False

    def __init__(
        self,
        node_id: bytes,
        group_key: bytes,
        *,
        group: str = DEFAULT_GROUP,
        port: int = DEFAULT_PORT,
        interface: str = "127.0.0.1",
        max_latency: float = 0.5,
        event_queue_size: int = 256,
    ) -> None:
        """Create a transport; no socket exists until :meth:`open`.

        Args:
            node_id: this node's 32-byte static public key, written as the sender of every
                datagram; datagrams addressed to it are ours to read.
            group_key: the group's shared 32-byte secret.
            group: the IPv4 multicast address the group meets on.
            port: the UDP port, the same for every member.
            interface: the IPv4 address of the one interface to send and listen on. Never
                ``0.0.0.0``: the kernel would pick, and a node must not leak onto a network
                its user did not name.
            max_latency: what this transport advertises (seconds). One LAN hop takes
                milliseconds; the margin covers a receiver that is busy.
            event_queue_size: events waiting in :attr:`events` before further ones are dropped.

        Raises:
            ValueError: an argument is out of range (a key not 32 bytes, ``group`` not a
                multicast address, ``interface`` unspecified, multicast or broadcast).
        """
        if len(node_id) != _KEY_SIZE or len(group_key) != _KEY_SIZE:
            raise ValueError("node ID and group key are 32 bytes each")
        if node_id == BROADCAST:
            raise ValueError("the all-zero node ID means 'everyone' on the wire")
        if not _check_ipv4(group, "group").is_multicast:
            raise ValueError(f"group {group} is not a multicast address")
        problem = interface_problem(_check_ipv4(interface, "interface"))
        if problem is not None:
            raise ValueError(f"interface {interface} {problem}: it must name one interface")
        if not 0 < port < 2**16:
            raise ValueError("port must be in 1..65535")
        if event_queue_size < 1:
            raise ValueError("event_queue_size must be at least 1")
        self.node_id: Final = bytes(node_id)
        self.group: Final = group
        self.port: Final = port
        self.interface: Final = interface
        self.max_latency: Final = max_latency
        self._key = bytes(group_key)
        self._tag = multicast_group_tag(self._key)
        self._session = os.urandom(8)
        self._counter = 0
        self._aead = _session_key(self._key, self.node_id, self._session)
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._recv: trio.socket.SocketType | None = None
        self._send: trio.socket.SocketType | None = None
        self._closed = False
        self._opened = False  # open() was called once: sockets missing since are a failure
        self._events = EventQueue[TransportEvent](event_queue_size)
        self._sent = 0
        self._received = 0
        self._rejected = 0
        self._ignored = 0
        self._dropped = 0

    # --- capabilities and introspection ------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The largest packet (frame, header included) one datagram carries: 1,291 bytes."""
        return MAX_DATAGRAM - HEADER_SIZE - TAG_SIZE

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        """Refused datagrams and dropped packets; ends after :meth:`aclose`."""
        return self._events.receive

    def statistics(self) -> MulticastStatistics:
        return MulticastStatistics(
            datagrams_sent=self._sent,
            datagrams_received=self._received,
            datagrams_rejected=self._rejected,
            datagrams_ignored=self._ignored,
            packets_dropped=self._dropped,
            sessions=len(self._sessions),
            events_dropped=self._events.dropped,
        )

    checks_frames: Final = True
    """Every packet :meth:`receive` returns is one checked frame."""

    @property
    def description(self) -> str:
        """``multicast <group>:<port> on <interface>``, for people reading a failure."""
        return f"multicast {self.group}:{self.port} on {self.interface}"

    def reaches(self, peer: bytes) -> bool:
        """Multicast reaches every member that listens: True while the transport is open."""
        return self._send is not None and not self._closed

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Bind, join the group on the named interface, and set up the sending socket.

        When it returns, datagrams sent to the group are already queued for :meth:`receive`.

        Raises:
            OSError: the address or interface is unusable (no such interface address, the
                port taken without ``SO_REUSEADDR``).
            LocalProtocolError: the transport is already open.
            TransportClosed: the transport was closed.
        """
        if self._closed:
            raise TransportClosed("multicast transport was closed")
        if self._recv is not None:
            raise LocalProtocolError("the transport is already open")
        self._opened = True
        recv = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        send = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            iface = socket.inet_aton(self.interface)
            recv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                recv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if sys.platform == "linux":
                # Hear the group only through our own membership (on the named interface), not
                # through another socket's join on another interface.
                recv.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            await recv.bind((self.group, self.port))  # only this group's datagrams
            membership = socket.inet_aton(self.group) + iface
            recv.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
            send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            await send.bind((self.interface, 0))
        except BaseException:
            recv.close()
            send.close()
            raise
        self._recv, self._send = recv, send

    async def reopen(self) -> None:
        """Close both sockets and :meth:`open` them again: after a :class:`TransportBroken`
        (the interface went away, say), once the network may be back. Until it succeeds,
        :meth:`send` and :meth:`receive` raise ``TransportBroken``.

        Raises:
            OSError: as :meth:`open`: the interface address is not there (yet).
            TransportClosed: the transport was closed.
        """
        if self._closed:
            raise TransportClosed("multicast transport was closed")
        self._close_sockets()
        await self.open()

    def _socket(self, sock: trio.socket.SocketType | None) -> trio.socket.SocketType:
        """``sock`` (one of ours), or the error that says why it is not there."""
        if self._closed:
            raise TransportClosed("multicast transport was closed")
        if sock is None:
            if self._opened:
                raise TransportBroken("the multicast sockets are down (reopen() them)")
            raise LocalProtocolError("open() the transport first")
        return sock

    def _close_sockets(self) -> None:
        for sock in (self._recv, self._send):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._recv = self._send = None

    async def __aenter__(self) -> MulticastTransport:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close both sockets (leaving the group) and end :attr:`events`. Always closes.

        A task blocked in :meth:`receive` wakes with :class:`~mvds_node.errors.TransportClosed`.
        """
        if not self._closed:
            self._closed = True
            self._close_sockets()
            self._events.close()
        await trio.lowlevel.checkpoint()

    # --- sealing and opening (sans-IO) ---------------------------------------------------------

    def _emit(self, event: TransportEvent) -> None:
        self._events.emit(event)

    def _reject(self, reason: str, address: str, detail: str, peer: bytes | None = None) -> None:
        self._rejected += 1
        self._emit(InputRejected(peer, address, reason, detail))

    def _check_size(self, packet: bytes) -> None:
        if len(packet) > self.max_payload:
            raise LocalProtocolError(
                f"packet of {len(packet)} bytes exceeds the multicast limit of {self.max_payload}"
                " (the caller splits larger payloads)"
            )

    def seal(self, peer: bytes, packet: bytes) -> bytes:
        """Return the datagram carrying ``packet`` for ``peer``, spending one counter.

        Sans-IO: nothing is sent, and ``packet`` is not checked to be a frame (:meth:`send`
        does), so tools and tests can seal anything.

        Args:
            peer: a member's 32-byte key, or :data:`BROADCAST` / ``b""`` for everyone.
            packet: at most :attr:`max_payload` bytes.

        Raises:
            LocalProtocolError: ``packet`` is too large or ``peer`` is not a key.
        """
        self._check_size(packet)
        recipient = BROADCAST if peer == b"" else bytes(peer)
        if len(recipient) != _KEY_SIZE:
            raise LocalProtocolError("recipient must be a 32-byte key, BROADCAST or b''")
        if self._counter == _COUNTER_MAX:
            # 2**64 datagrams will not happen, but a wrapped counter would reuse nonces.
            self._session = os.urandom(8)
            self._counter = 0
            self._aead = _session_key(self._key, self.node_id, self._session)
        self._counter += 1
        header = _HEADER.pack(
            MAGIC, VERSION, self._tag, self.node_id, self._session, self._counter, recipient
        )
        return header + self._aead.encrypt(_nonce(self._counter), bytes(packet), header)

    def open_datagram(self, datagram: bytes, address: str) -> tuple[bytes, bytes] | None:
        """Check and decrypt one datagram.

        Sans-IO and total: any bytes give either ``(sender, packet)`` or None, and a refusal
        is reported on :attr:`events` (see the module docstring for what stays silent).

        Args:
            datagram: the bytes as received.
            address: where they came from, for the event.
        """
        if len(datagram) < HEADER_SIZE + TAG_SIZE:
            self._reject("too-short", address, f"{len(datagram)} bytes")
            return None
        if len(datagram) > MAX_DATAGRAM:
            self._reject("too-large", address, f"over {MAX_DATAGRAM} bytes")
            return None
        magic, version, tag, sender, session, counter, recipient = _HEADER.unpack_from(datagram)
        if magic != MAGIC:
            self._reject("bad-magic", address, f"starts with {bytes(datagram[:4])!r}")
            return None
        if version != VERSION:
            self._reject("unknown-version", address, f"datagram version {version}")
            return None
        if tag != self._tag:
            self._reject("foreign-group", address, f"group tag {tag.hex()}")
            return None
        if recipient not in (BROADCAST, self.node_id) or (
            sender == self.node_id and session == self._session
        ):
            self._ignored += 1  # for another member, or our own looped back
            return None
        session_id = sender + session
        state = self._sessions.get(session_id)
        aead = _session_key(self._key, sender, session) if state is None else state.aead
        header = bytes(datagram[:HEADER_SIZE])
        try:
            packet = aead.decrypt(_nonce(counter), bytes(datagram[HEADER_SIZE:]), header)
        except InvalidTag:
            # No peer: a sender that fails authentication proved nothing, not even its name.
            self._reject("bad-ciphertext", address, f"claims sender {sender.hex()[:16]}")
            return None
        if sender == self.node_id:
            self._reject("own-sender", address, f"our key from session {session.hex()}", sender)
            return None
        # Only authentic datagrams may create state, so a stranger cannot fill the table.
        if state is None:
            state = self._sessions[session_id] = _Session(aead)
            if len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session_id)
        if not state.window.accept(counter):
            self._reject("replay", address, f"counter {counter} of {session.hex()}", sender)
            return None
        try:
            decode_frame(packet)
        except FrameError as exc:
            self._reject(f"frame:{exc.reason.value}", address, str(exc), sender)
            return None
        return sender, packet

    # --- the Transport protocol --------------------------------------------------------------

    async def send(self, peer: bytes, packet: bytes) -> None:
        """Multicast ``packet`` to the group, for ``peer`` or (``BROADCAST``/``b""``) for all.

        The datagram reaches every member either way; members other than ``peer`` drop it
        unread. If the network refuses it (no route, no buffer space), it is dropped and
        reported as ``PacketDropped``: the engine retransmits.

        Raises:
            TransportClosed: we closed the transport.
            TransportBroken: the socket failed in a way that is not about this one packet.
            LocalProtocolError: not open yet; ``packet`` is larger than :attr:`max_payload` (the
                caller splits payloads) or not one frame; ``peer`` is not a 32-byte key.
        """
        send_socket = self._socket(self._send)
        self._check_size(packet)
        try:
            decode_frame(packet)
        except FrameError as exc:
            raise LocalProtocolError(f"not a frame: {exc}") from exc
        datagram = self.seal(peer, packet)
        recipient = BROADCAST if peer == b"" else bytes(peer)
        try:
            await send_socket.sendto(datagram, (self.group, self.port))
        except trio.ClosedResourceError:
            raise TransportClosed("multicast transport was closed") from None
        except OSError as exc:
            if self._closed:
                raise TransportClosed("multicast transport was closed") from exc
            if exc.errno in _NO_ROUTE or exc.errno in _NO_BUFFER:
                self._dropped += 1
                reason = "no-route" if exc.errno in _NO_ROUTE else "queue-full"
                self._emit(PacketDropped(recipient, reason))
                return
            raise TransportBroken(f"multicast send failed: {exc}") from exc
        self._sent += 1

    async def receive(self) -> tuple[bytes, bytes]:
        """Wait for the next authentic packet from a member: ``(sender key, packet)``.

        Datagrams refused on the way are reported on :attr:`events`. Never returns our own
        datagrams or those addressed to another member.

        Raises:
            TransportClosed: we closed the transport (also wakes a task blocked here).
            TransportBroken: the socket failed.
            LocalProtocolError: not open yet.
            trio.BusyResourceError: another task is already receiving.
        """
        recv_socket = self._socket(self._recv)
        while True:
            try:
                # One byte over the limit, so that a datagram that is too large is seen to be.
                datagram, source = await recv_socket.recvfrom(MAX_DATAGRAM + 1)
            except trio.ClosedResourceError:
                raise TransportClosed("multicast transport was closed") from None
            except OSError as exc:
                if self._closed:
                    raise TransportClosed("multicast transport was closed") from exc
                raise TransportBroken(f"multicast receive failed: {exc}") from exc
            address = f"{source[0]}:{source[1]}"
            try:
                opened = self.open_datagram(datagram, address)
            except Exception as exc:
                # A bug met on this datagram: drop it, report it, serve the next one.
                self._rejected += 1
                error, trace = describe_failure(exc)
                self._emit(InternalError(f"multicast datagram from {address}", error, trace))
                continue
            if opened is not None:
                self._received += 1
                return opened
