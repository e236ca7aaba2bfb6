"""UDP multicast on one LAN interface: every datagram sealed with the group's key.

Theory of operation
-------------------
A group of nodes that share a 32-byte *group key* meet on one multicast address and port, on one
interface that the configuration names (never "every interface"), with TTL 1 so nothing leaves
the link. Each packet (a frame from ``_framing``) travels as one datagram::

    offset  size  field
    0       4     magic "MVMC"
    4       1     version 0x01
    5       8     group tag     first 8 bytes of SHA-256("mvds-node multicast tag" || key)
    13      32    sender        the sender's static X25519 public key (its node ID)
    45      8     session       random per transport instance: restarts never reuse a nonce
    53      8     counter       u64 big-endian, +1 per datagram in the session
    61      32    recipient     a peer's key, or 32 zero bytes for the whole group
    93      n+16  ciphertext    ChaCha20-Poly1305 of the packet

The AEAD key is derived per (sender, session) from the group key (HKDF-SHA256), and the nonce is
the counter, so no two datagrams under one key share a nonce. The 93-byte header is the
associated data: nothing in it can be changed. A receiver drops, and reports as
:class:`~mvds_node.transports.InputRejected`: other groups' traffic (tag), its own datagrams
looped back, datagrams for another recipient (silently), replays (a 64-datagram sliding window per
sender session; at most 1,024 sessions are remembered), and anything that fails to authenticate.

What the group key proves is membership: any member can claim any sender key. Nodes that need
to tell members apart use TCP+Noise, where each peer proves its own key.

Datagrams are at most :data:`MAX_DATAGRAM` bytes, below the 1,500-byte Ethernet MTU with IPv4
and UDP headers, so they are never IP-fragmented; the engine is told :attr:`max_payload` and
splits its payloads to fit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
from collections import OrderedDict
from typing import Final, final

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mvds_node.errors import LocalProtocolError, TransportBroken, TransportClosed
from mvds_node.transports._base import InputRejected, TransportEvent

__all__ = ["BROADCAST", "MAX_DATAGRAM", "MulticastTransport", "multicast_group_tag"]

MAGIC: Final = b"MVMC"
VERSION: Final = 1
BROADCAST: Final = bytes(32)
"""The recipient that means "every member of the group"."""
_HEADER: Final = struct.Struct(">4sB8s32s8sQ32s")
HEADER_SIZE: Final = _HEADER.size
TAG_SIZE: Final = 16
MAX_DATAGRAM: Final = 1400
"""1,500 (Ethernet MTU) - 20 (IPv4) - 8 (UDP) = 1,472; a margin below it for tunnels."""
REPLAY_WINDOW: Final = 64
MAX_SESSIONS: Final = 1024


def multicast_group_tag(group_key: bytes) -> bytes:
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
    """Sliding replay window over one sender session's counters."""

    __slots__ = ("highest", "mask")

    def __init__(self) -> None:
        self.highest = -1
        self.mask = 0

    def accept(self, counter: int) -> bool:
        if counter > self.highest:
            shift = counter - self.highest
            self.mask = ((self.mask << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.highest = counter
            return True
        offset = self.highest - counter
        if offset >= REPLAY_WINDOW or self.mask & (1 << offset):
            return False
        self.mask |= 1 << offset
        return True


@final
class MulticastTransport:
    """A :class:`~mvds_node.transports.Transport` over UDP multicast on one interface.

    Open it with :meth:`open` (sockets bound and the group joined when it returns), then
    ``send``/``receive``; ``send(BROADCAST, packet)`` reaches every member, ``send(peer, ...)``
    only that member (the others drop it unread).
    """

    reliable: Final = False
    max_latency: Final = 0.5

    def __init__(
        self,
        node_id: bytes,
        group_key: bytes,
        *,
        group: str = "239.255.77.77",
        port: int = 7701,
        interface: str = "127.0.0.1",
        receive_queue_size: int = 256,
        event_queue_size: int = 256,
    ) -> None:
        if len(node_id) != 32 or len(group_key) != 32:
            raise LocalProtocolError("node ID and group key are 32 bytes each")
        self.node_id = node_id
        self._key = group_key
        self._tag = multicast_group_tag(group_key)
        self.group = group
        self.port = port
        self.interface = interface
        self._session = os.urandom(8)
        self._counter = 0
        self._aead = _session_key(group_key, node_id, self._session)
        self._keys: OrderedDict[bytes, ChaCha20Poly1305] = OrderedDict()
        self._windows: OrderedDict[bytes, _Window] = OrderedDict()
        self._recv: trio.socket.SocketType | None = None
        self._send: trio.socket.SocketType | None = None
        self._closed = False
        self._events_send, self._events_receive = trio.open_memory_channel[TransportEvent](
            event_queue_size
        )
        self.events_dropped = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0

    @property
    def max_payload(self) -> int:
        """The largest packet (frame) one datagram carries."""
        return MAX_DATAGRAM - HEADER_SIZE - TAG_SIZE

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        return self._events_receive

    def reaches(self, peer: bytes) -> bool:
        """Multicast reaches every member that listens: the node routes here when TCP cannot."""
        return self._send is not None and not self._closed

    async def open(self) -> None:
        """Bind, join the group on the named interface, and set up the sending socket.

        Raises:
            OSError: the address or interface is unusable (no such interface, no route).
        """
        recv = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        send = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            recv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                recv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            await recv.bind((self.group, self.port))  # only this group's datagrams
            membership = socket.inet_aton(self.group) + socket.inet_aton(self.interface)
            recv.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            send.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.interface)
            )
            send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            await send.bind((self.interface, 0))
        except BaseException:
            recv.close()
            send.close()
            raise
        self._recv, self._send = recv, send

    def _emit(self, reason: str, address: str, detail: str, peer: bytes | None = None) -> None:
        try:
            self._events_send.send_nowait(InputRejected(peer, address, reason, detail))
        except trio.WouldBlock:
            self.events_dropped += 1
        except trio.ClosedResourceError:
            pass

    def seal(self, peer: bytes, packet: bytes) -> bytes:
        """The datagram for ``packet`` (exposed for tests and tools)."""
        if len(packet) > self.max_payload:
            raise LocalProtocolError(
                f"packet of {len(packet)} bytes exceeds the multicast limit of {self.max_payload}"
            )
        if len(peer) != 32:
            raise LocalProtocolError("recipient must be a 32-byte key or BROADCAST")
        self._counter += 1
        header = _HEADER.pack(
            MAGIC, VERSION, self._tag, self.node_id, self._session, self._counter, peer
        )
        return header + self._aead.encrypt(_nonce(self._counter), packet, header)

    async def send(self, peer: bytes, packet: bytes) -> None:
        if self._closed:
            raise TransportClosed("multicast transport was closed")
        if self._send is None:
            raise LocalProtocolError("open() the transport first")
        datagram = self.seal(peer, packet)
        try:
            await self._send.sendto(datagram, (self.group, self.port))
        except OSError as e:
            if self._closed:
                raise TransportClosed("multicast transport was closed") from e
            raise TransportBroken(f"multicast send failed: {e}") from e
        self.datagrams_sent += 1

    def open_datagram(self, datagram: bytes, address: str) -> tuple[bytes, bytes] | None:
        """Check and decrypt one datagram: ``(sender, packet)``, or None (reported) if refused."""
        if len(datagram) < HEADER_SIZE + TAG_SIZE:
            self._emit("too-short", address, f"{len(datagram)} bytes")
            return None
        if len(datagram) > MAX_DATAGRAM:
            self._emit("too-large", address, f"{len(datagram)} bytes")
            return None
        magic, version, tag, sender, session, counter, recipient = _HEADER.unpack_from(datagram)
        if magic != MAGIC:
            self._emit("not-ours", address, "no multicast magic")
            return None
        if version != VERSION:
            self._emit("version", address, f"datagram version {version}")
            return None
        if tag != self._tag:
            self._emit("foreign-group", address, "another group's key")
            return None
        if sender == self.node_id:
            return None  # our own datagram, looped back
        if recipient not in (BROADCAST, self.node_id):
            return None  # for another member
        session_id = sender + session
        aead = self._keys.get(session_id)
        if aead is None:
            aead = _session_key(self._key, sender, session)
        try:
            packet = aead.decrypt(_nonce(counter), datagram[HEADER_SIZE:], datagram[:HEADER_SIZE])
        except InvalidTag:
            self._emit("bad-ciphertext", address, "datagram failed authentication", sender)
            return None
        # Only authenticated datagrams may create state (a forger cannot fill the tables).
        self._keys[session_id] = aead
        self._keys.move_to_end(session_id)
        window = self._windows.get(session_id)
        if window is None:
            window = self._windows[session_id] = _Window()
        self._windows.move_to_end(session_id)
        while len(self._windows) > MAX_SESSIONS:
            old, _ = self._windows.popitem(last=False)
            self._keys.pop(old, None)
        if not window.accept(counter):
            self._emit("replay", address, f"counter {counter} already seen", sender)
            return None
        return sender, packet

    async def receive(self) -> tuple[bytes, bytes]:
        if self._closed:
            raise TransportClosed("multicast transport was closed")
        if self._recv is None:
            raise LocalProtocolError("open() the transport first")
        while True:
            try:
                datagram, source = await self._recv.recvfrom(MAX_DATAGRAM + 1)
            except OSError as e:
                if self._closed:
                    raise TransportClosed("multicast transport was closed") from e
                raise TransportBroken(f"multicast receive failed: {e}") from e
            except trio.ClosedResourceError as e:
                raise TransportClosed("multicast transport was closed") from e
            opened = self.open_datagram(datagram, f"{source[0]}:{source[1]}")
            if opened is not None:
                self.datagrams_received += 1
                return opened

    async def aclose(self) -> None:
        self._closed = True
        for sock in (self._recv, self._send):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._events_send.close()
        await trio.lowlevel.checkpoint()
