"""LAN discovery with mDNS / DNS-SD (zeroconf), on interfaces named explicitly.

Theory of operation
-------------------
*What is announced.* A node registers one DNS-SD service of type ``_mvds._tcp.local.``: the
SRV record carries its TCP port, the A records the addresses of the interfaces discovery runs
on, and the TXT record these keys (RFC 6763 §6):

* ``v``: the protocol version of this announcement, ``1``;
* ``key``: the node's 32-byte X25519 static key, 64 hex digits (the key the Noise handshake
  will prove, so a dialler knows whom it is reaching before it connects);
* ``g0``, ``g1``, ...: tags of the groups the node serves, comma-separated. A tag is 8 bytes of a
  domain-separated SHA-256 of the group ID (:func:`group_tag`), in hex, so group IDs are never
  broadcast. One TXT string holds at most 255 bytes, hence at most :data:`TAGS_PER_STRING` tags
  per key and several keys; at most :data:`MAX_GROUP_TAGS` tags in all.

The instance name is a short prefix of the key; it carries no meaning (peers use ``key``), and
zeroconf renames it (``-2``) if it ever clashes.

*What is reported.* Discovery browses the same type and resolves each instance it hears of. An
announcement is reported as :class:`PeerDiscovered` only if it is well formed, is not our own
(same key), and shares at least one group tag with us; the event carries only the shared tags.
Every other verdict is reported once per instance as :class:`PeerIgnored` with a stable reason,
and logged, so operators can see why a peer on the LAN is not dialled; nothing from the network
raises. When an instance we reported says goodbye (or its PTR record expires), changes to no
shared group or becomes malformed, :class:`PeerLost` follows, unless another instance still
announces the same key.

*Threads.* zeroconf is asyncio code; under Trio there is no asyncio loop, so a
:class:`zeroconf.Zeroconf` starts its own loop in a thread. Every zeroconf call other than the
constructor and ``close()`` runs *on that loop* (``asyncio.run_coroutine_threadsafe``), and the
Trio side waits on the result without blocking a thread: cancelling the Trio wait cancels the
asyncio task, so registration (about 1.2 s of probing) and resolution (up to
``resolve_timeout``) stop at once and no worker thread is abandoned. The browser's callbacks run
on zeroconf's loop; they only hand the instance name to Trio with
``TrioToken.run_sync_soon``, which never blocks. The constructor and ``close()`` block, so they
run in ``trio.to_thread``, shielded: a Zeroconf that exists is always closed.

*Buffers.* Names waiting to be resolved are coalesced (the latest change per name wins) and
capped at ``max_names`` distinct instances, so a flood of announcements costs bounded memory;
excess names are dropped and counted. Up to :data:`RESOLVE_CONCURRENCY` names are resolved at
once, one task per name at a time, so instances that never send their records cannot hold up
the others for long. Events go out on a bounded channel; when it is full, the resolvers wait
(names keep coalescing meanwhile), so no event is lost to a slow reader.

*Shutdown.* On cancellation, within :data:`SHUTDOWN_TIMEOUT` seconds: the browser stops, the
announcement still being repeated is cancelled, and a registered service is withdrawn with
goodbye packets (TTL 0), so peers forget us within about a second. Then zeroconf is closed
(sockets and its thread) and :attr:`Discovery.events` ends. A node that dies without goodbyes is
forgotten only when its PTR record expires (zeroconf's default TTL, 75 minutes, as RFC 6762
advises); the node's dialler copes with a peer that is gone meanwhile.

*Trust.* mDNS is unauthenticated: anyone on the link can announce any key at any address. That
is harmless for identity, since the Noise handshake proves the key, but a forged announcement
can point a dialler at the wrong address until the real peer dials us or announces again.

*Interfaces.* zeroconf is given the interface addresses, IPv4 only
(``interfaces=[...]``, ``IPVersion.V4Only``): a node never announces itself on every interface it
happens to have (``InterfaceChoice.All``). ``0.0.0.0`` is refused because it means "the default
interface" to the kernel. Peer addresses are filtered: never unspecified, multicast, broadcast or
reserved, and loopback only when discovery itself runs on loopback (so a LAN peer cannot make us
dial our own host's services).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, TypeVar, final

import trio
from zeroconf import IPVersion, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from mvds_node.errors import ConfigError, LocalProtocolError, RemoteProtocolError, TransportBroken
from mvds_node.transports import interface_problem

__all__ = [
    "MAX_GROUP_TAGS",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Discovery",
    "DiscoveryEvent",
    "DiscoveryStatistics",
    "PeerDiscovered",
    "PeerIgnored",
    "PeerLost",
    "group_tag",
]

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_mvds._tcp.local."
MDNS_GROUP: Final = "224.0.0.251"
PROTOCOL_VERSION: Final = "1"
KEY_SIZE: Final = 32
TAG_SIZE: Final = 8
"""Bytes of hash per group tag: 64 bits make accidental collisions between the few groups on a
LAN negligible, while keeping a tag to 16 hex digits."""
TAGS_PER_STRING: Final = 14
"""``gN=`` plus 14 tags of 16 hex digits and 13 commas is 240 bytes: under the 255-byte limit of
one TXT string (RFC 6763 §6.1)."""
MAX_GROUP_TAGS: Final = 32
"""Tags announced at most (3 TXT strings, about 560 bytes): the whole announcement then still
fits one Ethernet frame. A node in more groups announces the first 32 tags in sorted order, and
still recognises peers announcing any of its groups."""
MAX_ADDRESSES: Final = 16
"""Addresses kept per peer; a real host has a handful."""
RESOLVE_CONCURRENCY: Final = 8
"""Instances resolved at once, so a few that never answer (each costs ``resolve_timeout``)
cannot hold up the rest."""
SHUTDOWN_TIMEOUT: Final = 3.0
"""Seconds for goodbyes at shutdown: zeroconf sends three, 125 ms apart."""

_TAG_RE: Final = re.compile(r"[0-9a-f]{16}")
_KEY_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_GROUP_KEY_RE: Final = re.compile(rb"g[0-9]")

_T = TypeVar("_T")

_LOG_LEVELS: Final = {
    "malformed": logging.WARNING,
    "no-address": logging.WARNING,
    "no-shared-group": logging.DEBUG,
}
"""Broken announcements are worth an operator's attention; strangers are normal on a LAN."""


def group_tag(group_id: bytes) -> str:
    """The public tag of a group in announcements.

    Args:
        group_id: the group's MVDS ID.

    Returns:
        16 lowercase hex digits (8 bytes of a domain-separated SHA-256 of ``group_id``). The tag
        hides the ID, but it is stable, and anyone who can guess an ID (one derived from a
        well-known group name, say) can compute its tag.
    """
    return hashlib.sha256(b"mvds-node discovery\x00" + group_id).digest()[:TAG_SIZE].hex()


# --- events -----------------------------------------------------------------------------------


class DiscoveryEvent:
    """Base of every discovery event."""

    __slots__ = ()


@final
@dataclass(frozen=True, slots=True)
class PeerDiscovered(DiscoveryEvent):
    """A peer that shares a group with us announced itself (again, if its details changed)."""

    key: bytes
    """Its 32-byte X25519 static key: the identity a Noise handshake to it must prove."""
    addresses: tuple[str, ...]
    """IPv4 addresses to dial, most recently announced first; never empty."""
    port: int
    groups: frozenset[str]
    """Tags (:func:`group_tag`) of the groups we share with it; never empty."""


@final
@dataclass(frozen=True, slots=True)
class PeerLost(DiscoveryEvent):
    """A peer we reported withdrew its announcement, or no longer shares a group with us."""

    key: bytes


@final
@dataclass(frozen=True, slots=True)
class PeerIgnored(DiscoveryEvent):
    """An announcement we will not report; sent once per instance and verdict."""

    name: str
    """The mDNS instance name."""
    key: bytes | None
    """The key it announced, if it announced a valid one."""
    reason: str
    """A stable token: ``malformed``, ``version`` (another protocol version), ``no-address``
    (no usable IPv4 address or port), ``no-shared-group`` or ``unresolved`` (its records did
    not arrive within ``resolve_timeout``)."""
    detail: str
    """Human-readable detail for logs."""


@final
@dataclass(frozen=True, slots=True)
class DiscoveryStatistics:
    name: str | None
    """Our registered instance name (after any rename), or None before registration."""
    peers: int
    """Peers currently reported (distinct keys)."""
    ignored: int
    """Instances currently ignored."""
    names_dropped: int
    """Instance names not looked at because ``max_names`` were already tracked."""
    events_dropped: int
    """Events dropped because the reader closed :attr:`Discovery.events`."""


# --- parsing ----------------------------------------------------------------------------------


class _Ignore(RemoteProtocolError):
    """Why an announcement is not reported; never leaves this module."""

    def __init__(self, reason: str, detail: str, key: bytes | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.key = key


def _text(props: Mapping[bytes, bytes | None], name: str) -> str:
    value = props.get(name.encode())
    if value is None:
        raise _Ignore("malformed", f"TXT key {name!r} missing or without a value")
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise _Ignore("malformed", f"TXT key {name!r} is not ASCII") from None


def _parse_txt(props: Mapping[bytes, bytes | None]) -> tuple[bytes, frozenset[str]]:
    """Key and group tags from the TXT record of an announcement.

    Unknown TXT keys are ignored, so later versions can add some.

    Returns:
        ``(key, tags)``.

    Raises:
        _Ignore: the record is not a valid version-1 announcement (``reason`` says why).
    """
    version = _text(props, "v")
    if version != PROTOCOL_VERSION:
        raise _Ignore("version", f"protocol version {version[:16]!r}, we speak {PROTOCOL_VERSION}")
    key_hex = _text(props, "key")
    if not _KEY_RE.fullmatch(key_hex):
        raise _Ignore("malformed", f"key is not {2 * KEY_SIZE} hex digits: {key_hex[:80]!r}")
    key = bytes.fromhex(key_hex)
    if key == bytes(KEY_SIZE):
        raise _Ignore("malformed", "key is all zeros")
    tags: set[str] = set()
    for name in sorted(props):
        if not _GROUP_KEY_RE.fullmatch(name):
            continue
        text = _text(props, name.decode())
        parts = text.split(",") if text else []
        if len(parts) > TAGS_PER_STRING:
            raise _Ignore("malformed", f"more than {TAGS_PER_STRING} tags in {name!r}", key)
        for part in parts:
            if not _TAG_RE.fullmatch(part):
                raise _Ignore("malformed", f"bad group tag {part[:40]!r}", key)
        tags.update(parts)
    if len(tags) > MAX_GROUP_TAGS:
        raise _Ignore("malformed", f"more than {MAX_GROUP_TAGS} group tags", key)
    return key, frozenset(tags)


def _usable_addresses(addresses: Sequence[str], *, allow_loopback: bool) -> tuple[str, ...]:
    usable: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            continue
        if (
            address.is_unspecified
            or address.is_multicast
            or address.is_reserved  # 240.0.0.0/4, which holds the broadcast 255.255.255.255
            or (address.is_loopback and not allow_loopback)
        ):
            continue
        if str(address) not in usable:
            usable.append(str(address))
    return tuple(usable[:MAX_ADDRESSES])


def _txt_properties(key: bytes, tags: Sequence[str]) -> dict[bytes, bytes]:
    props = {b"v": PROTOCOL_VERSION.encode(), b"key": key.hex().encode()}
    for i in range(0, len(tags), TAGS_PER_STRING):
        chunk = tags[i : i + TAGS_PER_STRING]
        props[f"g{i // TAGS_PER_STRING}".encode()] = ",".join(chunk).encode()
    return props


def _check_interface(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise LocalProtocolError(f"discovery interface {text!r} is not an IP address") from None
    if address.version != 4:
        raise LocalProtocolError(f"discovery runs on IPv4 only, got interface {text!r}")
    problem = interface_problem(address)
    if problem is not None:
        raise LocalProtocolError(
            f"discovery interface {text!r} {problem}: it must be the unicast address of one "
            "interface"
        )
    return str(address)


# --- the Trio / asyncio bridge ----------------------------------------------------------------


async def _on_loop(zc: Zeroconf, make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``make()`` on zeroconf's asyncio loop and wait for it without blocking a thread.

    Cancelling the wait cancels the asyncio task (it is not waited for).
    """
    loop = zc.loop
    if loop is None or loop.is_closed():
        raise TransportBroken("the zeroconf event loop is not running")
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    coro = make()
    try:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError as exc:  # the loop closed under us
        coro.close()
        raise TransportBroken("the zeroconf event loop is not running") from exc

    def wake(_: object) -> None:  # on zeroconf's thread
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        future.cancel()
        raise
    return future.result()


# --- the service ------------------------------------------------------------------------------


@final
class Discovery:
    """Announce this node and find peers on the LAN over mDNS.

    Usage::

        discovery = Discovery(public_key, 7700, [group_id], interfaces=["192.168.1.20"])
        async with trio.open_nursery() as nursery:
            await nursery.start(discovery.run)
            async for event in discovery.events:
                if isinstance(event, PeerDiscovered):
                    transport.dial(event.key, event.addresses[0], event.port)
    """

    def __init__(
        self,
        key: bytes,
        port: int,
        group_ids: Sequence[bytes],
        *,
        interfaces: Sequence[str],
        event_buffer: int = 64,
        max_names: int = 256,
        resolve_timeout: float = 3.0,
    ) -> None:
        """Prepare discovery; nothing is sent until :meth:`run`.

        Args:
            key: this node's 32-byte X25519 static public key.
            port: the TCP port this node accepts connections on.
            group_ids: IDs of the groups this node serves; only peers sharing one are reported.
            interfaces: IPv4 addresses of the interfaces to announce and browse on (at least
                one; ``["127.0.0.1"]`` keeps everything on this host).
            event_buffer: events waiting in :attr:`events` before discovery waits for the reader.
            max_names: mDNS instances tracked at once (resolved, reported or ignored).
            resolve_timeout: seconds to wait for the records of an instance we heard of.

        Raises:
            LocalProtocolError: a bad key, port or interface address, or no interface.
        """
        if len(key) != KEY_SIZE:
            raise LocalProtocolError(f"a node key is {KEY_SIZE} bytes, got {len(key)}")
        if not 0 < port < 65536:
            raise LocalProtocolError(f"port {port} is out of range")
        if not interfaces:
            raise LocalProtocolError("discovery needs at least one interface address")
        if event_buffer < 1 or max_names < 1 or resolve_timeout <= 0:
            raise LocalProtocolError("event_buffer, max_names and resolve_timeout must be positive")
        self.key: Final = key
        self.port: Final = port
        self.tags: Final = frozenset(group_tag(g) for g in group_ids)
        self.interfaces: Final = tuple(dict.fromkeys(_check_interface(i) for i in interfaces))
        self._announced_tags = sorted(self.tags)[:MAX_GROUP_TAGS]
        if len(self.tags) > MAX_GROUP_TAGS:
            log.warning(
                "discovery announces %d of %d groups (at most %d fit an announcement)",
                MAX_GROUP_TAGS,
                len(self.tags),
                MAX_GROUP_TAGS,
            )
        self._allow_loopback = any(ipaddress.IPv4Address(i).is_loopback for i in self.interfaces)
        self._max_names = max_names
        self._resolve_ms = int(resolve_timeout * 1000)
        self._send, self._events = trio.open_memory_channel[DiscoveryEvent](event_buffer)
        self._ran = False
        # Trio-thread state.
        self._pending: dict[str, bool] = {}  # name -> removed?
        self._wakeup = trio.Event()
        self._reported: dict[str, PeerDiscovered] = {}
        self._ignored: dict[str, tuple[str, str]] = {}
        self._names_dropped = 0
        self._events_dropped = 0
        # Loop-thread state (touched only by coroutines running on zeroconf's loop).
        self._info: ServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._announcing: asyncio.Future[Any] | None = None
        self._registered_name: str | None = None

    @property
    def events(self) -> trio.MemoryReceiveChannel[DiscoveryEvent]:
        """:class:`PeerDiscovered`, :class:`PeerLost` and :class:`PeerIgnored`; ends after
        :meth:`run` returns."""
        return self._events

    def statistics(self) -> DiscoveryStatistics:
        return DiscoveryStatistics(
            name=self._registered_name,
            peers=len({event.key for event in self._reported.values()}),
            ignored=len(self._ignored),
            names_dropped=self._names_dropped,
            events_dropped=self._events_dropped,
        )

    def service_info(self) -> ServiceInfo:
        """The announcement this node makes (a fresh zeroconf object each time)."""
        label = self.key.hex()[:16]
        return ServiceInfo(
            SERVICE_TYPE,
            f"{label}.{SERVICE_TYPE}",
            server=f"mvds-{label}.local.",
            parsed_addresses=list(self.interfaces),
            port=self.port,
            properties=_txt_properties(self.key, self._announced_tags),
        )

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Open mDNS on the interfaces, announce, browse and report until cancelled.

        ``started()`` is signalled once the sockets are open and browsing has begun; the
        announcement follows about 1.2 s later (zeroconf first probes that its name is unique).
        On cancellation, goodbyes are sent, zeroconf is closed and :attr:`events` ends.

        Raises:
            ConfigError: an interface address is not one of this host's.
            TransportBroken: mDNS could not start (the port, the multicast group) or zeroconf
                failed.
            LocalProtocolError: run twice.
        """
        if self._ran:
            raise LocalProtocolError("Discovery.run() may be called only once")
        self._ran = True
        try:
            # Shielded: if we were cancelled while the constructor ran, its result would be lost
            # and its sockets and thread leaked. It takes milliseconds.
            with trio.CancelScope(shield=True):
                zc = await trio.to_thread.run_sync(self._open_zeroconf)
            try:
                await self._serve(zc, task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await self._shutdown(zc)
        finally:
            self._send.close()

    def _open_zeroconf(self) -> Zeroconf:
        # zeroconf leaks its listening socket when it cannot join the mDNS group on an
        # interface (ENODEV: not an address of this host, or its interface is down), so make
        # the same join on a socket of our own first: it costs one IGMP join and leave on a LAN.
        for address in self.interfaces:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((address, 0))
                    membership = socket.inet_aton(MDNS_GROUP) + socket.inet_aton(address)
                    probe.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
                except OSError as exc:
                    raise ConfigError(
                        f"discovery interface {address}: cannot join the mDNS group there ({exc}); "
                        "it must be the address of an interface of this host that is up"
                    ) from exc
        try:
            return Zeroconf(interfaces=list(self.interfaces), ip_version=IPVersion.V4Only)
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.EADDRNOTAVAIL):
                raise ConfigError(
                    f"discovery interfaces {list(self.interfaces)}: not all are addresses of "
                    f"this host's interfaces ({exc})"
                ) from exc
            raise TransportBroken(f"mDNS could not start: {exc}") from exc

    async def _serve(self, zc: Zeroconf, task_status: trio.TaskStatus[None]) -> NoReturn:
        token = trio.lowlevel.current_trio_token()

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            # On zeroconf's loop: hand over and return; run_sync_soon never blocks.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._note, name, state_change is ServiceStateChange.Removed)

        async def start_browser() -> None:
            self._browser = AsyncServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])

        await _on_loop(zc, start_browser)
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._register, zc)
            await self._resolve_forever(zc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _register(self, zc: Zeroconf) -> None:
        info = self.service_info()

        async def register() -> str:
            self._info = info
            announcing = await zc.async_register_service(info, allow_name_change=True)
            self._announcing = asyncio.ensure_future(announcing)
            return info.name

        self._registered_name = await _on_loop(zc, register)
        log.debug("discovery: announced %s on %s", self._registered_name, self.interfaces)

    async def _shutdown(self, zc: Zeroconf) -> None:
        async def withdraw() -> None:
            if self._browser is not None:
                await self._browser.async_cancel()
            if self._announcing is not None:
                self._announcing.cancel()
            info = self._info
            if info is not None and zc.registry.async_get_info_name(info.name) is not None:
                goodbyes = await zc.async_unregister_service(info)
                await goodbyes

        try:
            with trio.move_on_after(SHUTDOWN_TIMEOUT):
                await _on_loop(zc, withdraw)
        except Exception:  # a failing goodbye must not keep zeroconf open
            log.exception("discovery: withdrawing the announcement failed")
        try:
            await trio.to_thread.run_sync(zc.close)
        except Exception:
            log.exception("discovery: closing zeroconf failed")

    # --- names from the browser ---------------------------------------------------------------

    def _note(self, name: str, removed: bool) -> None:
        """On the Trio thread (run_sync_soon): remember the latest change of ``name``."""
        if (
            name not in self._pending
            and name not in self._reported
            and name not in self._ignored
            and len(self._pending) + len(self._reported) + len(self._ignored) >= self._max_names
        ):
            self._names_dropped += 1
            return
        self._pending[name] = removed  # a name already waiting keeps its place
        self._wakeup.set()

    async def _resolve_forever(self, zc: Zeroconf) -> NoReturn:
        """Take names in arrival order; resolve up to RESOLVE_CONCURRENCY at once, one task per
        name at a time (a name that changes while it is resolved waits its turn)."""
        slots = trio.Semaphore(RESOLVE_CONCURRENCY)
        busy: set[str] = set()

        async def examine(name: str) -> None:
            try:
                await self._examine(zc, name)
            finally:
                busy.discard(name)
                slots.release()
                self._wakeup.set()  # its next change, if any, may go now

        async with trio.open_nursery() as nursery:
            while True:
                name = next((n for n in self._pending if n not in busy), None)
                if name is None:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                    continue
                if self._pending.pop(name):  # removed
                    self._ignored.pop(name, None)
                    await self._withdrawn(name)
                    continue
                busy.add(name)
                await slots.acquire()
                nursery.start_soon(examine, name)

    async def _examine(self, zc: Zeroconf, name: str) -> None:
        async def resolve() -> tuple[dict[bytes, bytes | None], int | None, list[str]] | str:
            try:
                info = AsyncServiceInfo(SERVICE_TYPE, name)
                if not await info.async_request(zc, self._resolve_ms):
                    return "its records did not arrive"
                return dict(info.properties), info.port, info.parsed_addresses(IPVersion.V4Only)
            except Exception as exc:  # zeroconf refusing what a peer sent; not cancellation
                return f"zeroconf could not resolve it: {exc!r}"[:200]

        resolved = await _on_loop(zc, resolve)
        try:
            if isinstance(resolved, str):
                raise _Ignore("unresolved", resolved)
            props, port, addresses = resolved
            key, tags = _parse_txt(props)
            if key == self.key:
                return  # our own announcement (or a clone of our key): never a peer
            usable = _usable_addresses(addresses, allow_loopback=self._allow_loopback)
            if not usable:
                raise _Ignore("no-address", f"no usable IPv4 address in {addresses[:4]}", key)
            if port is None or not 0 < port < 65536:
                raise _Ignore("no-address", f"port {port} is not usable", key)
            shared = tags & self.tags
            if not shared:
                raise _Ignore("no-shared-group", "announces none of our groups", key)
        except _Ignore as verdict:
            await self._withdrawn(name)
            await self._ignore(name, verdict)
            return
        self._ignored.pop(name, None)
        event = PeerDiscovered(key, usable, port, shared)
        previous = self._reported.get(name)
        if previous == event:
            return
        self._reported[name] = event
        if previous is not None and previous.key != event.key:  # same name, another key
            await self._lost_if_gone(previous.key)
        await self._emit(event)

    async def _withdrawn(self, name: str) -> None:
        """``name`` no longer names a peer we report: PeerLost if its key is now gone."""
        event = self._reported.pop(name, None)
        if event is not None:
            await self._lost_if_gone(event.key)

    async def _lost_if_gone(self, key: bytes) -> None:
        if all(other.key != key for other in self._reported.values()):
            await self._emit(PeerLost(key))

    async def _ignore(self, name: str, verdict: _Ignore) -> None:
        if self._ignored.get(name) == (verdict.reason, verdict.detail):
            return
        self._ignored[name] = (verdict.reason, verdict.detail)
        level = _LOG_LEVELS.get(verdict.reason, logging.INFO)
        log.log(level, "discovery: ignoring %r: %s (%s)", name, verdict.reason, verdict.detail)
        await self._emit(PeerIgnored(name, verdict.key, verdict.reason, verdict.detail))

    async def _emit(self, event: DiscoveryEvent) -> None:
        try:
            await self._send.send(event)
        except trio.BrokenResourceError:  # the reader closed events: nobody listens
            self._events_dropped += 1
