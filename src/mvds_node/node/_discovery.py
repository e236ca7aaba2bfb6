"""LAN discovery with mDNS (zeroconf), on interfaces named explicitly.

A node announces ``<key prefix>._mvds._tcp.local.`` with its TCP port and TXT records: ``v``
(protocol version), ``key`` (its 32-byte X25519 key, hex) and ``g`` (tags of the groups it
serves: 8 bytes of a hash of each group ID, hex, comma-separated, so group IDs themselves are not
broadcast). It browses for the same service type and reports peers that share a group tag with
it as :class:`PeerDiscovered`; the node dials those it knows.

zeroconf runs its own asyncio loop in a thread. Its blocking calls (register, resolve,
unregister, close) run through ``trio.to_thread``; its browser's callbacks, on its thread, hand
names to Trio through ``trio.from_thread.run_sync`` with the captured token, into a bounded
channel. Only the interfaces given are used (``interfaces=[...]``, IPv4 only): a node never
announces itself on every interface it happens to have. Malformed announcements are ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

__all__ = ["SERVICE_TYPE", "Discovery", "PeerDiscovered", "PeerLost", "group_tag"]

SERVICE_TYPE: Final = "_mvds._tcp.local."
PROTOCOL_VERSION: Final = "1"
MAX_GROUP_TAGS: Final = 32
"""TXT records are small (a few hundred bytes in practice): at most this many groups announced."""


def group_tag(group_id: bytes) -> str:
    """The public tag of a group in announcements (hex of 8 bytes of a hash of its ID)."""
    return hashlib.sha256(b"mvds-node discovery\x00" + group_id).digest()[:8].hex()


@dataclass(frozen=True, slots=True)
class PeerDiscovered:
    key: bytes
    addresses: tuple[str, ...]
    port: int
    groups: frozenset[str]
    """Tags of the groups we share with it."""


@dataclass(frozen=True, slots=True)
class PeerLost:
    key: bytes


def parse_info(info: ServiceInfo) -> tuple[bytes, tuple[str, ...], int, frozenset[str]] | None:
    """Key, IPv4 addresses, port and group tags from an announcement, or None if malformed."""
    props: dict[bytes, bytes | None] = info.properties or {}
    try:
        if props.get(b"v") != PROTOCOL_VERSION.encode():
            return None
        raw_key = props.get(b"key") or b""
        if len(raw_key) != 64:
            return None
        key = bytes.fromhex(raw_key.decode("ascii"))
        tags_text = (props.get(b"g") or b"").decode("ascii")
        tags = frozenset(t for t in tags_text.split(",") if t)
        if len(tags) > MAX_GROUP_TAGS or any(
            len(t) != 16 or any(c not in "0123456789abcdef" for c in t) for t in tags
        ):
            return None
        addresses = tuple(str(ipaddress.IPv4Address(a)) for a in info.addresses if len(a) == 4)
    except (ValueError, UnicodeDecodeError):
        return None
    if not addresses or not 0 < (info.port or 0) < 65536:
        return None
    return key, addresses, int(info.port or 0), tags


class Discovery:
    """Announce this node and find peers on the LAN; run it with ``nursery.start(d.run)``."""

    def __init__(
        self,
        key: bytes,
        port: int,
        group_ids: Sequence[bytes],
        *,
        interfaces: Sequence[str],
        event_buffer: int = 64,
    ) -> None:
        if not interfaces:
            raise ValueError("discovery needs at least one interface address")
        self.key = key
        self.port = port
        self.tags = frozenset(group_tag(g) for g in group_ids)
        self.interfaces = [str(ipaddress.IPv4Address(i)) for i in interfaces]
        self._send, self.events = trio.open_memory_channel[PeerDiscovered | PeerLost](event_buffer)
        self._names: dict[str, bytes] = {}
        self.ignored = 0

    def _info(self) -> ServiceInfo:
        name = f"{self.key.hex()[:16]}.{SERVICE_TYPE}"
        return ServiceInfo(
            SERVICE_TYPE,
            name,
            addresses=[socket.inet_aton(i) for i in self.interfaces],
            port=self.port,
            properties={
                "v": PROTOCOL_VERSION,
                "key": self.key.hex(),
                "g": ",".join(sorted(self.tags)[:MAX_GROUP_TAGS]),
            },
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, browse and report until cancelled; then unregister and close."""
        zc: Zeroconf = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        )
        token = trio.lowlevel.current_trio_token()
        names_send, names_receive = trio.open_memory_channel[tuple[str, str]](256)
        info = self._info()
        browser: ServiceBrowser | None = None

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            # zeroconf's thread: hand the name to Trio, never block here.
            with contextlib.suppress(
                trio.WouldBlock, trio.RunFinishedError, trio.ClosedResourceError
            ):
                trio.from_thread.run_sync(
                    names_send.send_nowait, (name, state_change.name), trio_token=token
                )

        try:
            await trio.to_thread.run_sync(lambda: zc.register_service(info))
            browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
            task_status.started()
            async for name, change in names_receive:
                await self._handle(zc, name, change)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                if browser is not None:
                    await trio.to_thread.run_sync(browser.cancel)
                await trio.to_thread.run_sync(lambda: zc.unregister_service(info))
                await trio.to_thread.run_sync(zc.close)
            self._send.close()

    async def _handle(self, zc: Zeroconf, name: str, change: str) -> None:
        if change == "Removed":
            key = self._names.pop(name, None)
            if key is not None:
                self._emit(PeerLost(key))
            return
        info: Any = await trio.to_thread.run_sync(
            lambda: zc.get_service_info(SERVICE_TYPE, name, 3000)
        )
        parsed = parse_info(info) if info is not None else None
        if parsed is None:
            self.ignored += 1
            return
        key, addresses, port, tags = parsed
        if key == self.key:
            return  # ourselves
        shared = tags & self.tags
        if not shared:
            return  # no group in common
        self._names[name] = key
        self._emit(PeerDiscovered(key, addresses, port, frozenset(shared)))

    def _emit(self, event: PeerDiscovered | PeerLost) -> None:
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._send.send_nowait(event)
