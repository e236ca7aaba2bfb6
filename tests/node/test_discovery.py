"""LAN discovery: TXT parsing without a network, then real mDNS on 127.0.0.1 only.

The network tests need multicast on the loopback interface. zeroconf joins 224.0.0.251 on
127.0.0.1 and sends with ``IP_MULTICAST_IF`` set to it; on Linux that works on ``lo`` without the
MULTICAST flag and without a ``224.0.0.0/4`` route, but not when ``lo`` is down (the join fails
with ENODEV, as in a fresh ``unshare -n``). The ``loopback_multicast`` fixture tries exactly those
socket calls first and skips with the reason if they fail.

Other test runs on this host may announce on 127.0.0.1 at the same time, so every test uses
fresh random group IDs and keys and looks only at events about its own peers.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from mvds_node.errors import ConfigError, LocalProtocolError
from mvds_node.node._discovery import (
    MAX_GROUP_TAGS,
    SERVICE_TYPE,
    TAGS_PER_STRING,
    Discovery,
    DiscoveryEvent,
    PeerDiscovered,
    PeerIgnored,
    PeerLost,
    _Ignore,
    _parse_txt,
    group_tag,
)
from mvds_node.transports import Keypair

LO = ["127.0.0.1"]
MDNS_GROUP = "224.0.0.251"


def _key() -> bytes:
    return Keypair.generate().public


def _group() -> bytes:
    return os.urandom(32)


# --- no network -------------------------------------------------------------------------------


def test_group_tag_is_a_short_stable_hash() -> None:
    group = b"\x01" * 32
    tag = group_tag(group)
    assert tag == group_tag(group)
    assert len(tag) == 16 and int(tag, 16) >= 0
    assert group.hex()[:16] not in tag
    assert group_tag(b"\x02" * 32) != tag


def _props(**fields: str | bytes | None) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for name, value in fields.items():
        out[name.encode()] = value.encode() if isinstance(value, str) else value
    return out


KEY = bytes(range(1, 33))
TAG_A, TAG_B = group_tag(b"a"), group_tag(b"b")


def test_parse_txt_accepts_a_valid_record_and_ignores_unknown_keys() -> None:
    props = _props(v="1", key=KEY.hex(), g0=f"{TAG_A},{TAG_B}", g1=TAG_A, future="x", g="y")
    assert _parse_txt(props) == (KEY, frozenset({TAG_A, TAG_B}))
    assert _parse_txt(_props(v="1", key=KEY.hex().upper())) == (KEY, frozenset())
    assert _parse_txt(_props(v="1", key=KEY.hex(), g0="")) == (KEY, frozenset())


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        (_props(key=KEY.hex(), g0=TAG_A), "malformed"),  # no version
        (_props(v=None, key=KEY.hex()), "malformed"),  # version as a boolean attribute
        (_props(v="2", key=KEY.hex()), "version"),
        (_props(v="1"), "malformed"),  # no key
        (_props(v="1", key=None), "malformed"),
        (_props(v="1", key="zz" * 32), "malformed"),
        (_props(v="1", key=KEY.hex()[:-2]), "malformed"),  # 31 bytes
        (_props(v="1", key=KEY.hex() + "00"), "malformed"),  # 33 bytes
        (_props(v="1", key="00" * 32), "malformed"),
        (_props(v="1", key=b"\xff" * 64), "malformed"),  # not ASCII
        (_props(v="1", key=KEY.hex(), g0=TAG_A.upper()), "malformed"),
        (_props(v="1", key=KEY.hex(), g0=TAG_A[:-1]), "malformed"),
        (_props(v="1", key=KEY.hex(), g0=f"{TAG_A},,{TAG_B}"), "malformed"),
        (_props(v="1", key=KEY.hex(), g0=",".join([TAG_A] * (TAGS_PER_STRING + 1))), "malformed"),
        (
            _props(
                v="1",
                key=KEY.hex(),
                **{f"g{i}": ",".join(group_tag(bytes([i, j])) for j in range(5)) for i in range(7)},
            ),
            "malformed",  # 35 tags
        ),
    ],
)
def test_parse_txt_rejects_malformed_records(props: dict[bytes, bytes | None], reason: str) -> None:
    with pytest.raises(_Ignore) as caught:
        _parse_txt(props)
    assert caught.value.reason == reason


def test_the_announcement_fits_txt_limits_even_with_many_groups() -> None:
    groups = [bytes([i]) * 32 for i in range(40)]
    discovery = Discovery(KEY, 7000, groups, interfaces=LO)
    info = discovery.service_info()
    text, strings = info.text, []
    while text:
        strings.append(text[1 : 1 + text[0]])
        text = text[1 + text[0] :]
    assert all(len(s) <= 255 for s in strings)
    key, tags = _parse_txt(info.properties)
    assert key == KEY
    assert len(tags) == MAX_GROUP_TAGS and tags <= discovery.tags
    assert info.port == 7000 and info.parsed_addresses() == LO


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": b"short"}, "32 bytes"),
        ({"port": 0}, "out of range"),
        ({"interfaces": []}, "at least one"),
        ({"interfaces": ["eth0"]}, "not an IP address"),
        ({"interfaces": ["::1"]}, "IPv4 only"),
        ({"interfaces": ["0.0.0.0"]}, "unicast address"),
        ({"interfaces": [MDNS_GROUP]}, "unicast address"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"key": KEY, "port": 7000, "group_ids": [b"g"], "interfaces": LO}
    args.update(kwargs)
    with pytest.raises(LocalProtocolError, match=message):
        Discovery(**args)  # type: ignore[arg-type]


# --- real mDNS on 127.0.0.1 -------------------------------------------------------------------


def _lo_flags() -> str:
    # SIOCGIFFLAGS, not /sys/class/net: sysfs shows the namespace it was mounted in.
    request = struct.pack("16sH14x", b"lo", 0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            reply = fcntl.ioctl(s.fileno(), 0x8913, request)
    except OSError as exc:
        return f"lo flags unknown: {exc}"
    flags = struct.unpack("16sH14x", reply)[1]
    up, multicast = bool(flags & 0x1), bool(flags & 0x1000)
    return f"lo flags {flags:#x}: UP={up}, MULTICAST={multicast}"


def _loopback_multicast_problem() -> str | None:
    """Why multicast on 127.0.0.1 does not work here, or None; the socket calls zeroconf makes."""
    nonce = os.urandom(16)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rx.bind(("", 0))
        port = rx.getsockname()[1]
        try:
            membership = socket.inet_aton(MDNS_GROUP) + socket.inet_aton("127.0.0.1")
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        except OSError as exc:
            hint = "" if "UP=True" in (flags := _lo_flags()) else "; `ip link set lo up` fixes it"
            return f"joining {MDNS_GROUP} on 127.0.0.1 failed: {exc} ({flags}{hint})"
        try:
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            tx.sendto(nonce, (MDNS_GROUP, port))
            rx.settimeout(2.0)
            while rx.recv(64) != nonce:
                pass
        except OSError as exc:  # includes the timeout
            return (
                f"a datagram to {MDNS_GROUP} via 127.0.0.1 did not arrive: {exc!r} ({_lo_flags()})"
            )
    return None


@pytest.fixture(scope="module")
def loopback_multicast() -> None:
    problem = _loopback_multicast_problem()
    if problem is not None:
        pytest.skip(f"mDNS cannot run on 127.0.0.1 here: {problem}")


class Watch:
    """Read a discovery's events, keeping all of them, until one matches (seen or new)."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery
        self.seen: list[DiscoveryEvent] = []

    async def until(self, match: Callable[[DiscoveryEvent], bool]) -> DiscoveryEvent:
        for event in self.seen:
            if match(event):
                return event
        async for event in self.discovery.events:
            self.seen.append(event)
            if match(event):
                return event
        raise AssertionError(f"events ended; seen {self.seen}")

    def about(self, key: bytes) -> list[DiscoveryEvent]:
        return [e for e in self.seen if getattr(e, "key", None) == key]


def found(key: bytes) -> Callable[[DiscoveryEvent], bool]:
    return lambda e: isinstance(e, PeerDiscovered) and e.key == key


def lost(key: bytes) -> Callable[[DiscoveryEvent], bool]:
    return lambda e: isinstance(e, PeerLost) and e.key == key


def ignored(name: str) -> Callable[[DiscoveryEvent], bool]:
    return lambda e: isinstance(e, PeerIgnored) and e.name == name


def ignored_key(key: bytes) -> Callable[[DiscoveryEvent], bool]:
    return lambda e: isinstance(e, PeerIgnored) and e.key == key


async def start(nursery: trio.Nursery, discovery: Discovery) -> trio.CancelScope:
    """Start ``discovery.run`` under its own cancel scope, so one peer can leave."""
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await discovery.run(task_status=task_status)

    await nursery.start(run)
    return scope


@pytest.mark.usefixtures("loopback_multicast")
async def test_peers_that_share_a_group_find_each_other_and_strangers_are_not_reported() -> None:
    g1, g2, g3 = _group(), _group(), _group()
    a_key, b_key, c_key = _key(), _key(), _key()
    a = Discovery(a_key, 7001, [g1, g2], interfaces=LO)
    b = Discovery(b_key, 7002, [g2], interfaces=LO)
    c = Discovery(c_key, 7003, [g3], interfaces=LO)  # shares no group with a or b
    wa, wb, wc = Watch(a), Watch(b), Watch(c)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await start(nursery, a)
            await start(nursery, c)
            b_scope = await start(nursery, b)

            assert await wa.until(found(b_key)) == PeerDiscovered(
                b_key, ("127.0.0.1",), 7002, frozenset({group_tag(g2)})
            )
            # Only the tags we share, so b learns nothing of a's other group.
            assert await wb.until(found(a_key)) == PeerDiscovered(
                a_key, ("127.0.0.1",), 7001, frozenset({group_tag(g2)})
            )
            # c was looked at and ignored, never reported, by a and by b; c ignores both.
            for watch in (wa, wb):
                stranger = await watch.until(ignored_key(c_key))
                assert isinstance(stranger, PeerIgnored) and stranger.reason == "no-shared-group"
                assert watch.about(c_key) == [stranger]
            await wc.until(ignored_key(a_key))
            await wc.until(ignored_key(b_key))
            assert not any(isinstance(e, PeerDiscovered) for e in wc.seen)
            assert a.statistics().peers == 1 and a.statistics().name is not None

            # b leaves: shutdown is bounded, b's events end, and its goodbye reaches a.
            b_scope.cancel()
            with trio.fail_after(5):
                async for event in b.events:
                    wb.seen.append(event)
            assert await wa.until(lost(b_key)) == PeerLost(b_key)
            assert a.statistics().peers == 0
            nursery.cancel_scope.cancel()
    # Nothing about b or a ever reached c but "ignored".
    assert not any(isinstance(e, (PeerDiscovered, PeerLost)) for e in wc.seen)


def _raw_info(name: str, port: int, props: dict[bytes, bytes | None]) -> ServiceInfo:
    return ServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        server=f"{name}.local.",
        parsed_addresses=["127.0.0.1"],
        port=port,
        properties=props,
    )


@pytest.fixture
async def raw_zeroconf() -> AsyncIterator[Zeroconf]:
    """A bare Zeroconf on 127.0.0.1 that announces whatever a test gives it; closed after."""
    zc = await trio.to_thread.run_sync(lambda: Zeroconf(interfaces=LO, ip_version=IPVersion.V4Only))
    try:
        yield zc
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(zc.close)  # sends goodbyes for what is registered


async def _register(zc: Zeroconf, info: ServiceInfo) -> None:
    # Unique random names: skip the probing, announce at once.
    await trio.to_thread.run_sync(lambda: zc.register_service(info, cooperating_responders=True))


@pytest.mark.usefixtures("loopback_multicast")
async def test_malformed_announcements_are_ignored_with_a_reason(raw_zeroconf: Zeroconf) -> None:
    group = _group()
    tag = group_tag(group)
    me = Discovery(_key(), 7010, [group], interfaces=LO)
    watch = Watch(me)
    run_id = os.urandom(4).hex()
    good_key = _key()
    bad = {
        f"badhex-{run_id}": (_props(v="1", key="zz" * 32, g0=tag), "malformed"),
        f"short-{run_id}": (_props(v="1", key=good_key.hex()[:62], g0=tag), "malformed"),
        f"nokey-{run_id}": (_props(v="1", g0=tag), "malformed"),
        f"badtag-{run_id}": (_props(v="1", key=_key().hex(), g0=tag + ",nothex"), "malformed"),
        f"v2-{run_id}": (_props(v="2", key=_key().hex(), g0=tag), "version"),
    }
    with trio.fail_after(20):
        infos = [_raw_info(name, 7011, props) for name, (props, _) in bad.items()]
        infos.append(_raw_info(f"good-{run_id}", 7012, _props(v="1", key=good_key.hex(), g0=tag)))
        async with trio.open_nursery() as nursery:
            for info in infos:
                nursery.start_soon(_register, raw_zeroconf, info)
        async with trio.open_nursery() as nursery:
            await start(nursery, me)
            assert await watch.until(found(good_key)) == PeerDiscovered(
                good_key, ("127.0.0.1",), 7012, frozenset({tag})
            )
            for name, (_, reason) in bad.items():
                verdict = await watch.until(ignored(f"{name}.{SERVICE_TYPE}"))
                assert isinstance(verdict, PeerIgnored) and verdict.reason == reason, verdict
            mine = [
                e
                for e in watch.seen
                if isinstance(e, PeerDiscovered | PeerLost)
                or (isinstance(e, PeerIgnored) and run_id in e.name)
            ]
            assert len(mine) == 1 + len(bad)  # each once, nothing reported but the good one
            nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("loopback_multicast")
async def test_a_peer_that_stops_sharing_a_group_is_lost(raw_zeroconf: Zeroconf) -> None:
    group = _group()
    me = Discovery(_key(), 7020, [group], interfaces=LO)
    watch = Watch(me)
    peer_key, name = _key(), f"changes-{os.urandom(4).hex()}"
    info = _raw_info(name, 7021, _props(v="1", key=peer_key.hex(), g0=group_tag(group)))
    with trio.fail_after(20):
        await _register(raw_zeroconf, info)
        async with trio.open_nursery() as nursery:
            await start(nursery, me)
            await watch.until(found(peer_key))
            # Same instance, new TXT: it now serves another group only.
            changed = _raw_info(name, 7021, _props(v="1", key=peer_key.hex(), g0=group_tag(b"x")))
            await trio.to_thread.run_sync(lambda: raw_zeroconf.update_service(changed))
            assert await watch.until(lost(peer_key)) == PeerLost(peer_key)
            verdict = await watch.until(ignored_key(peer_key))
            assert isinstance(verdict, PeerIgnored) and verdict.reason == "no-shared-group"
            nursery.cancel_scope.cancel()


@pytest.mark.usefixtures("loopback_multicast")
async def test_cancelling_at_once_is_prompt_and_clean() -> None:
    discovery = Discovery(_key(), 7030, [_group()], interfaces=LO)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(discovery.run)
            started = trio.current_time()
            nursery.cancel_scope.cancel()
        # Registration (about 1.2 s of probing) was still running: nothing to withdraw.
        assert trio.current_time() - started < 1.0
        with pytest.raises(trio.EndOfChannel):
            await discovery.events.receive()
        with pytest.raises(LocalProtocolError):
            await discovery.run()


async def test_an_interface_that_is_not_ours_is_a_config_error() -> None:
    discovery = Discovery(_key(), 7040, [_group()], interfaces=["203.0.113.77"])
    with trio.fail_after(10), pytest.raises(ConfigError, match=r"203\.0\.113\.77"):
        await discovery.run()
    with pytest.raises(trio.EndOfChannel):
        await discovery.events.receive()


def test_names_beyond_max_names_are_dropped_and_counted() -> None:
    discovery = Discovery(KEY, 7050, [b"g"], interfaces=LO, max_names=2)
    for name in ("a", "b", "c", "a", "b"):
        discovery._note(f"{name}.{SERVICE_TYPE}", False)
    discovery._note(f"b.{SERVICE_TYPE}", True)  # a change to a tracked name is kept
    assert discovery._pending == {f"a.{SERVICE_TYPE}": False, f"b.{SERVICE_TYPE}": True}
    assert discovery.statistics().names_dropped == 1


def test_the_docs_name_only_thread_calls_discovery_makes() -> None:
    """docs/node.md and docs/discovery.md say how zeroconf's thread is reached: every
    ``trio.*``/``asyncio.*`` call they name for it is one the code makes."""
    root = Path(__file__).parents[2]
    code = (root / "src" / "mvds_node" / "node" / "_discovery.py").read_text()
    node_md = (root / "docs" / "node.md").read_text()
    section = node_md[node_md.index("## Discovery") :]
    section = section[: section.index("\n## ", 1)]
    discovery_md = (root / "docs" / "discovery.md").read_text()
    names = set(re.findall(r"`((?:trio|asyncio)\.[a-z_.]+)", section + discovery_md))
    assert "asyncio.run_coroutine_threadsafe" in names
    for name in names:
        assert name.split(".", 1)[1] in code, name
