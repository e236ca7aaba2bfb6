"""Node configuration: a TOML file, every setting documented with its default.

A node lives in one *data directory* holding ``config.toml``, ``identity.key`` (mode 0600), the
SQLite store and, while it runs, a control socket. The directory is, in order: the one given on
the command line or to :func:`load_config`, ``$MVDS_NODE_HOME``, or the platform's data directory
(``$XDG_DATA_HOME/mvds-node``, i.e. ``~/.local/share/mvds-node`` on Linux;
``~/Library/Application Support/mvds-node`` on macOS; ``%APPDATA%\\mvds-node`` on Windows).

Every setting (its table, key, type, default, range and help) is declared once, in
``node/_schema.py``: the dataclasses here take their defaults from it, and parsing and writing
walk it. Parsing is strict: an unknown key is an error (a typo must not silently fall back to a
default), and every error names the file and the setting. :func:`render_config` writes a
configuration back as TOML with a comment on every setting, which is also how ``mvds-node init``
documents them.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from mvds_node.errors import ConfigError
from mvds_node.node._schema import (
    GROUP_SETTINGS,
    SECTIONS,
    SETTINGS,
    Setting,
    default,
    format_address,
    parse_address,
    render_settings,
    show_value,
    toml_value,
)
from mvds_node.sync import DeliveryMode, MissingParents, Mode

__all__ = [
    "DiscoveryConfig",
    "GroupConfig",
    "MulticastConfig",
    "TcpConfig",
    "NodeConfig",
    "PeerConfig",
    "RemoteLogConfig",
    "RetentionConfig",
    "default_data_dir",
    "group_id_for",
    "load_config",
    "parse_address",
    "render_config",
]

CONFIG_NAME = "config.toml"
IDENTITY_NAME = "identity.key"
STORE_NAME = "store.sqlite"
CONTROL_NAME = "control.sock"


def default_data_dir() -> Path:
    """Where a node keeps its files when no directory is given."""
    home = os.environ.get("MVDS_NODE_HOME")
    if home:
        return Path(home)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "mvds-node"
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", Path.home())) / "mvds-node"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "mvds-node"


def group_id_for(name: str) -> bytes:
    """The 32-byte MVDS group ID of a group known by ``name`` (when the config gives no ``id``)."""
    return hashlib.sha256(b"mvds-node group\x00" + name.encode()).digest()


_format_address = format_address


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """A peer this node knows: its key, and optionally where to dial it."""

    key: bytes
    """The peer's 32-byte X25519 public key (its identity)."""
    name: str = ""
    """A human name, shown in ``peers`` and ``status``."""
    address: tuple[str, int] | None = None
    """A static ``host:port`` to dial over TCP+Noise; without one the peer is dialled once LAN
    discovery finds it, or waits for the peer to dial us."""
    log_key: bytes | None = None
    """The peer's Ed25519 public key (``mvds-node key`` prints it): with a remote log
    configured, we read the peer's log, whose head it signs with this key."""
    ipns: str = ""
    """With an ``ipfs://`` remote log: the IPNS id the peer publishes its log directory under
    (``mvds-node key --ipns`` on its side)."""


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """A group: the peers that sync its messages with us, and how."""

    name: str
    id: bytes
    """The MVDS group ID (32 bytes); by default derived from the name (:func:`group_id_for`)."""
    members: tuple[bytes, ...] = ()
    """Peer keys that sync this group with us (each should also be under ``[[peers]]``)."""
    mode: Mode = Mode.BATCH
    """``batch``: send whole messages at once (best under loss); ``interactive``: offer IDs
    first and send a message only when asked (saves bandwidth when peers often have it)."""
    secret: bytes | None = None
    """Optional 32-byte group key (hex): encrypts the group's multicast datagrams and the bundle
    files exported for the whole group. Every member must have the same one."""
    envelope: Literal["signed", "raw"] = "signed"
    """``signed``: each message carries its author's Ed25519 key and signature (see
    ``node/_envelope.py``), and the members' keys are their ``log_key`` under ``[[peers]]``;
    ``raw``: bodies as they are, with no author, for plain MVDS applications. Every member must
    have the same setting."""


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    enabled: bool = default("discovery.enabled")
    """Announce this node and find peers with mDNS (zeroconf)."""
    interfaces: tuple[str, ...] = default("discovery.interfaces")
    """IP addresses of the interfaces mDNS runs on. Always explicit: a node never announces
    itself on every interface it happens to have."""


@dataclass(frozen=True, slots=True)
class MulticastConfig:
    enabled: bool = default("multicast.enabled")
    """Sync groups that have a ``secret`` over UDP multicast on the LAN as well."""
    group: str = default("multicast.group")
    """Multicast group address (administratively scoped range: stays on the site)."""
    port: int = default("multicast.port")
    interface: str = default("multicast.interface")
    """IP address of the one interface datagrams go out on and are received from (TTL 1)."""


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """How TCP+Noise connections are bounded (``[tcp]``); see ``docs/security.md``."""

    handshake_timeout: float = default("tcp.handshake_timeout")
    """Seconds to connect and complete the whole handshake."""
    frame_timeout: float = default("tcp.frame_timeout")
    """Seconds a packet that has begun (a Noise message or a frame) may take to arrive whole."""
    keepalive_interval: float = default("tcp.keepalive_interval")
    """Seconds of silence after which a live peer is pinged; 0 turns pings off."""
    keepalive_misses: int = default("tcp.keepalive_misses")
    """Unanswered pings after which the connection is closed."""
    max_inbound_connections: int = default("tcp.max_inbound_connections")
    """Inbound connections at once, handshaking or live."""
    max_handshakes_per_address: int = default("tcp.max_handshakes_per_address")
    """Handshakes in progress from one IP address."""


@dataclass(frozen=True, slots=True)
class RemoteLogConfig:
    url: str = default("remote_log.url")
    """Where logs live: ``file:///path`` (the embedded backend), ``http://host:port`` (a
    ``mvds-node helper serve``), ``redis://host:port``, ``nats://host:port`` (JetStream) or
    ``ipfs://host:port`` (an IPFS node's RPC API); empty to use none."""
    page_size: int = default("remote_log.page_size")
    """Entries per page of our log."""
    inline: int = default("remote_log.inline")
    """How many of our newest messages ride inside the pages (the rest go to the CAS)."""
    head_size: int | None = default("remote_log.head_size")
    """Entries the head page (in the NS) holds at most; None: ``page_size``. Every poll of a
    reader downloads the head, so a small head makes polls cheap: with 0 an idle poll costs one
    signed record of about 140 bytes instead of up to a whole page with inline bodies. The price
    is paid when catching up from nothing: each upload then makes its own page, and pages are
    fetched one after another."""
    poll_seconds: float = default("remote_log.poll_seconds")
    """How often peers' logs are read."""
    signed: bool = default("remote_log.signed")
    """False writes and reads the spec's bare RemoteLog in the NS (interop): no proof of the
    writer and no rollback detection, and no sealing."""
    secret: str = default("remote_log.secret")
    """The backend's password or token, as written: ``env:NAME``, ``file:PATH`` or the text
    (see :func:`~mvds_node.remotelog.resolve_secret`); empty: only what the URL holds."""
    ca_file: str = default("remote_log.ca_file")
    """A CA (PEM) to trust instead of the system's; empty: the system's."""
    cert_file: str = default("remote_log.cert_file")
    """A client certificate (PEM); empty: none."""
    key_file: str = default("remote_log.key_file")
    """The client certificate's key (PEM)."""
    creds_file: str = default("remote_log.creds_file")
    """NATS: a ``.creds`` file."""
    nkey_file: str = default("remote_log.nkey_file")
    """NATS: an NKey seed file."""


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """How long received messages stay in the store once every durable cursor has passed them
    (a message a peer still waits for, or on the causal frontier, always stays)."""

    max_age: float = default("retention.max_age")
    """Seconds, by the message's timestamp; 0 keeps them."""
    max_messages: int = default("retention.max_messages")
    """Received messages kept at most; 0: no limit."""
    max_bytes: int = default("retention.max_bytes")
    """Bytes of received messages kept at most; 0: no limit."""
    interval: float = default("retention.interval")
    """Seconds between two runs."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything a node needs to run; :func:`load_config` reads it from ``config.toml``."""

    data_dir: Path
    name: str = default("name")
    """A human name for this node, shown in ``status``."""
    listen: tuple[str, int] | None = default("listen")
    """Where to accept TCP+Noise connections; ``None`` (``listen = ""``) to only dial out."""
    accept_unknown: bool = default("accept_unknown")
    """Accept connections from keys that are not under ``[[peers]]``. Off by default: a peer is
    the static key it proves, and unknown keys are refused."""
    keep_freed_memory_mib: int = default("keep_freed_memory_mib")
    """Freed memory, in MiB, the C allocator keeps for reuse instead of returning it to the
    system, so that the buffers of large messages do not each cost fresh pages (glibc only;
    process-wide; see ``node/_memory.py``). 0 leaves the allocator as it is."""
    peers: tuple[PeerConfig, ...] = ()
    groups: tuple[GroupConfig, ...] = ()
    epoch_seconds: float = default("epoch_seconds")
    """Length of the sync engine's epoch: at most one payload per peer per epoch."""
    delivery: DeliveryMode = default("delivery")
    """``eventual``: deliver a message at once and fetch missing parents; ``consistent``: hold a
    message until its parents are delivered."""
    max_requests_per_peer: int = default("max_requests_per_peer")
    """Messages we ask one peer for at most (REQUESTs from its offers and for parents its
    messages name); past it, its offers are ignored until it answers, and the node says so."""
    request_timeout: float = default("request_timeout")
    """Seconds after which a REQUEST for an offered message that was never sent ends."""
    missing_parent_timeout: float = default("missing_parent_timeout")
    """Seconds after which we give up on a missing parent nobody sent, and report the peer that
    named it."""
    missing_parents: MissingParents = default("missing_parents")
    """Consistent delivery, once we gave up on a message's parents: ``hold`` it until they come
    by another route, or ``deliver`` it marked (``Message.parents_missing``)."""
    store_sync: Literal["normal", "full"] = default("store_sync")
    """SQLite durability: ``normal`` survives a crash of the process (kill -9); ``full`` also
    survives power loss, at the cost of a disk flush per write."""
    store_page_size: int = default("store_page_size")
    """SQLite page size of a new store: 4096 for many small messages sent one at a time,
    65536 for bulk (large bodies, bursts). Fixed when the store is created."""
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    multicast: MulticastConfig = field(default_factory=MulticastConfig)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    remote_log: RemoteLogConfig = field(default_factory=RemoteLogConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def identity_path(self) -> Path:
        return self.data_dir / IDENTITY_NAME

    @property
    def store_path(self) -> Path:
        return self.data_dir / STORE_NAME

    @property
    def control_path(self) -> Path:
        return self.data_dir / CONTROL_NAME

    def group(self, name_or_id: str | bytes) -> GroupConfig:
        """The group with this name, hex ID or raw ID.

        Raises:
            ConfigError: no such group.
        """
        for g in self.groups:
            if name_or_id in (g.name, g.id, g.id.hex()):
                return g
        shown = name_or_id.hex() if isinstance(name_or_id, bytes) else name_or_id
        raise ConfigError(f"no group {shown!r} in {self.config_path}")

    def peer(self, name_or_key: str | bytes) -> PeerConfig:
        """The peer with this name, hex key (or a unique prefix of it) or raw key.

        Raises:
            ConfigError: no such peer, or the prefix is ambiguous.
        """
        found = [
            p
            for p in self.peers
            if name_or_key in (p.key, p.name, p.key.hex())
            or (
                isinstance(name_or_key, str)
                and len(name_or_key) >= 8
                and p.key.hex().startswith(name_or_key.lower())
            )
        ]
        if len(found) == 1:
            return found[0]
        shown = name_or_key.hex() if isinstance(name_or_key, bytes) else name_or_key
        if not found:
            raise ConfigError(f"no peer {shown!r} in {self.config_path}")
        raise ConfigError(f"{shown!r} matches {len(found)} peers; give more of the key")

    def with_peer(self, peer: PeerConfig) -> NodeConfig:
        """A copy with ``peer`` added (or replacing the peer with the same key)."""
        others = tuple(p for p in self.peers if p.key != peer.key)
        return replace(self, peers=(*others, peer))

    def with_group(self, group: GroupConfig) -> NodeConfig:
        """A copy with ``group`` added (or replacing the group with the same ID)."""
        others = tuple(g for g in self.groups if g.id != group.id)
        return replace(self, groups=(*others, group))


# --------------------------------------------------------------------------- parsing


_show = show_value


class _Reader:
    """Typed access to one TOML table that remembers which keys were read."""

    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        self.table = table
        self.where = where
        self.seen: set[str] = set()

    def _get(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        self.seen.add(key)
        value = self.table[key]
        if isinstance(value, bool) and kind is not bool:
            raise ConfigError(f"{self.where}: {key} must be {what}, not {_show(value)}")
        if not isinstance(value, kind):
            raise ConfigError(f"{self.where}: {key} must be {what}, not {_show(value)}")
        return value

    def get_str(self, key: str, default: str) -> str:
        if key not in self.table:
            return default
        value: str = self._get(key, str, "a string")
        return value

    def get_choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get_str(key, default)
        if value not in choices:
            raise ConfigError(
                f"{self.where}: {key} must be one of {', '.join(choices)}, not {_show(value)}"
            )
        return value

    def get_setting(self, setting: Setting) -> Any:
        """The setting's value as the dataclass holds it (its default when left out)."""
        if setting.key not in self.table:
            return setting.python_default()
        self.seen.add(setting.key)
        return setting.check(self.table[setting.key], self.where)

    def get_key(self, key: str, *, required: bool) -> bytes | None:
        if key not in self.table:
            if required:
                raise ConfigError(f"{self.where}: {key} is required")
            return None
        return _hex32(self.get_str(key, ""), f"{self.where}: {key}")

    def get_list(self, key: str) -> list[Any]:
        return list(self._get(key, list, "a list")) if key in self.table else []

    def get_table(self, key: str) -> _Reader:
        value = self._get(key, dict, "a table") if key in self.table else {}
        return _Reader(value, f"{self.where} [{key}]")

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            raise ConfigError(f"{self.where}: unknown setting {', '.join(map(repr, unknown))}")


def _hex32(text: str, where: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{where}: not hex") from None
    if len(raw) != 32:
        raise ConfigError(f"{where}: must be 32 bytes (64 hex digits), not {len(raw)}")
    return raw


_SECTION_TYPES: dict[str, type[Any]] = {
    "discovery": DiscoveryConfig,
    "multicast": MulticastConfig,
    "tcp": TcpConfig,
    "remote_log": RemoteLogConfig,
    "retention": RetentionConfig,
}
"""The dataclass of each settings table that has one (``node`` and ``sync`` fill NodeConfig)."""


def parse_config(doc: Mapping[str, Any], *, data_dir: Path, where: str) -> NodeConfig:
    """Build a :class:`NodeConfig` from a parsed TOML document.

    Raises:
        ConfigError: a setting is unknown, of the wrong type or out of range.
    """
    top = _Reader(doc, where)
    flat: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_TYPES}
    for section in SECTIONS:
        table = top.get_table(section)
        for setting in (s for s in SETTINGS if s.section == section):
            value = table.get_setting(setting)
            owner, _, attr = setting.attr.rpartition(".")
            (nested[owner] if owner else flat)[attr] = value
        table.done()
    sections = {name: kind(**nested[name]) for name, kind in _SECTION_TYPES.items()}

    peers: list[PeerConfig] = []
    for i, entry in enumerate(top.get_list("peers")):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: peers[{i}] must be a table")
        p = _Reader(entry, f"{where}: peers[{i}]")
        key = p.get_key("key", required=True)
        assert key is not None
        address_text = p.get_str("address", "")
        peers.append(
            PeerConfig(
                key=key,
                name=p.get_str("name", ""),
                address=parse_address(address_text, where=f"{p.where}: address")
                if address_text
                else None,
                log_key=p.get_key("log_key", required=False),
                ipns=p.get_str("ipns", ""),
            )
        )
        p.done()
    if len({p.key for p in peers}) != len(peers):
        raise ConfigError(f"{where}: a peer key is listed twice under [[peers]]")

    groups: list[GroupConfig] = []
    for i, entry in enumerate(top.get_list("groups")):
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: groups[{i}] must be a table")
        g = _Reader(entry, f"{where}: groups[{i}]")
        gname = g.get_str("name", "")
        if not gname:
            raise ConfigError(f"{g.where}: name is required")
        gid = g.get_key("id", required=False) or group_id_for(gname)
        members = []
        for m in g.get_list("members"):
            if not isinstance(m, str):
                raise ConfigError(f"{g.where}: members must be hex keys or peer names")
            known = [p.key for p in peers if m in (p.name, p.key.hex())]
            members.append(known[0] if known else _hex32(m, f"{g.where}: member {m!r}"))
        extra = {s.attr: g.get_setting(s) for s in GROUP_SETTINGS}
        groups.append(
            GroupConfig(
                name=gname,
                id=gid,
                members=tuple(dict.fromkeys(members)),
                mode=Mode(g.get_choice("mode", "batch", ("batch", "interactive"))),
                secret=g.get_key("secret", required=False),
                **extra,
            )
        )
        g.done()
    if len({g.id for g in groups}) != len(groups):
        raise ConfigError(f"{where}: two groups have the same name or id")
    top.seen.add("data_dir")
    top.done()
    return NodeConfig(
        data_dir=data_dir, peers=tuple(peers), groups=tuple(groups), **flat, **sections
    )


MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""A configuration file larger than this is refused unread (thousands of peers fit in 1 MiB)."""


def load_config(data_dir: str | os.PathLike[str] | None = None) -> NodeConfig:
    """Read ``config.toml`` from ``data_dir`` (default: :func:`default_data_dir`).

    Raises:
        ConfigError: the file is missing, unreadable, over :data:`MAX_CONFIG_BYTES`, not UTF-8,
            not TOML, nested too deep for the parser, or a setting is invalid (wrong
            type, out of range, NaN or infinite); the message names the file.
    """
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    path = directory / CONFIG_NAME
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no configuration (run `mvds-node init` first)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES} bytes; not a configuration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start} is not)") from None
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        # tomllib recurses once per level of nested arrays and inline tables: a file nested
        # about a thousand deep exhausts the stack, which unwinds cleanly to here.
        raise ConfigError(f"{path}: arrays or tables nested too deep") from None
    except ValueError as e:
        # TOMLDecodeError, and the ValueError of an integer over 4,300 digits.
        raise ConfigError(f"{path}: not valid TOML: {str(e)[:200]}") from None
    return parse_config(doc, data_dir=directory, where=str(path))


# --------------------------------------------------------------------------- writing


_q = toml_value


def setting_value(config: NodeConfig, setting: Setting) -> Any:
    """The TOML value of ``setting`` in ``config`` (None: an optional setting left unset)."""
    value: Any = config
    for part in setting.attr.split("."):
        value = getattr(value, part)
    return None if value is None and setting.optional else setting.to_toml(value)


def render_config(config: NodeConfig) -> str:
    """The configuration as TOML, with a comment on every setting and its default."""
    lines = [
        "# mvds-node configuration. Every setting is optional unless marked; the value shown",
        "# after 'default' is used when a setting is left out.",
    ]
    lines += render_settings(lambda setting: setting_value(config, setting))
    lines += [
        "",
        "# Peers: key (required, 64 hex digits), name, address (host:port to dial; optional),",
        "# log_key (its Ed25519 key from `mvds-node key --log`, to read its remote log), ipns",
        "# (its IPNS id from `mvds-node key --ipns`, for an ipfs:// remote log); optional.",
    ]
    for p in config.peers:
        lines += ["[[peers]]", f"key = {_q(p.key.hex())}"]
        if p.name:
            lines.append(f"name = {_q(p.name)}")
        if p.address:
            lines.append(f"address = {_q(_format_address(p.address))}")
        if p.log_key:
            lines.append(f"log_key = {_q(p.log_key.hex())}")
        if p.ipns:
            lines.append(f"ipns = {_q(p.ipns)}")
    lines += [
        "",
        "# Groups: name (required), id (default: derived from the name), members (peer names",
        '# or keys), mode ("batch" or "interactive"; default "batch"), secret (64 hex digits;',
        "# needed for multicast and for group bundles; the same on every member), envelope",
        '# ("signed" or "raw"; default "signed"; the same on every member).',
    ]
    names = {p.key: p.name for p in config.peers if p.name}
    for g in config.groups:
        lines += ["[[groups]]", f"name = {_q(g.name)}"]
        if g.id != group_id_for(g.name):
            lines.append(f"id = {_q(g.id.hex())}")
        members = ", ".join(_q(names.get(m) or m.hex()) for m in g.members)
        lines += [f"members = [{members}]", f"mode = {_q(g.mode.value)}"]
        if g.secret:
            lines.append(f"secret = {_q(g.secret.hex())}")
        for setting in GROUP_SETTINGS:
            value = getattr(g, setting.attr)
            if value != setting.python_default():
                lines.append(f"{setting.key} = {_q(setting.to_toml(value))}")
    return "\n".join(lines) + "\n"


def save_config(config: NodeConfig) -> None:
    """Write ``config.toml`` atomically (temporary file, fsync, rename).

    Raises:
        ConfigError: the file cannot be written.
    """
    path = config.config_path
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(render_config(config))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write: {e.strerror}") from None
