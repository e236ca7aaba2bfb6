"""The one schema of a node's settings: each (section, key, type, default, range, help) once.

Everything else about a setting is derived from its :class:`Setting` here: the defaults of the
dataclasses in ``node/_config.py``, how ``config.toml`` is parsed (type, range, conversion) and
written back (:func:`render_settings`), what ``mvds-node config get/set`` accepts, and the
reference table of ``docs/configuration.md`` (:func:`reference_table`, checked by a test).
Adding a setting is one entry in :data:`SETTINGS` plus the dataclass field it fills.

A setting's ``default`` is its TOML value (what the file holds); ``load`` turns a TOML value into
the Python value the dataclass keeps (an address tuple, an enum) and ``dump`` turns it back. The
peers and groups (``[[peers]]``, ``[[groups]]``) are lists of tables, not settings, and stay with
the parser.
"""

from __future__ import annotations

import ipaddress
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from mvds_node._address import format_address as _format_host_port
from mvds_node.errors import ConfigError
from mvds_node.sync import DeliveryMode, MissingParents
from mvds_node.transports import DEFAULT_MULTICAST_GROUP as DEFAULT_GROUP
from mvds_node.transports import DEFAULT_MULTICAST_PORT as DEFAULT_PORT
from mvds_node.transports import interface_problem

__all__ = [
    "GROUP_SETTINGS",
    "Kind",
    "Setting",
    "SETTINGS",
    "SECTIONS",
    "default",
    "find_setting",
    "format_address",
    "parse_address",
    "reference_table",
    "show_value",
    "toml_value",
    "value_from_text",
]

Kind = Literal["string", "boolean", "integer", "number", "list"]
"""The TOML type of a setting's value (a list is a list of strings)."""

SECTIONS: Final = ("node", "sync", "discovery", "multicast", "tcp", "remote_log", "retention")
"""The tables of ``config.toml`` that hold settings, in the order they are written."""


def show_value(value: object) -> str:
    """``value`` for an error message, bounded: a TOML file may hold an integer of thousands of
    digits (which ``str`` refuses past 4,300) or a string of megabytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (list, dict)):
        return f"a {'list' if isinstance(value, list) else 'table'} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_address(text: str, *, where: str = "address") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) to a tuple.

    Raises:
        ConfigError: not of that form, or the port is out of range.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{where}: expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{where}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} is out of range")
    return host, port


def format_address(address: tuple[str, int]) -> str:
    """The inverse of :func:`parse_address` (IPv6 hosts in brackets)."""
    return _format_host_port(*address)


def check_ip(text: object, where: str) -> str:
    """``text`` if it is an IP address (v4 or v6).

    Raises:
        ConfigError: it is not.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{where}: {show_value(text)} is not an IP address (a string)")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{where}: {show_value(text)} is not an IP address") from None
    return text


def check_interface(text: str, where: str) -> str:
    """The multicast transport's one interface: an IPv4 address that names a single interface
    (datagrams never go out on, or in from, every interface the machine has).

    Raises:
        ConfigError: it is not.
    """
    hint = 'name one interface by its IPv4 address, such as "192.168.1.20"'
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        if not text.strip():
            raise ConfigError(f"{where} is empty; {hint}") from None
        if text.strip() in ("any", "*", "all", "::"):
            raise ConfigError(f"{where} {text!r} means every interface; {hint}") from None
        raise ConfigError(f"{where}: {text!r} is not an IPv4 address; {hint}") from None
    problem = interface_problem(address)
    if problem is not None:
        raise ConfigError(f"{where} {text} {problem}; {hint}")
    return text


def _listen(value: Any, where: str) -> tuple[str, int] | None:
    return parse_address(value, where=where) if value else None


def _dump_listen(value: Any) -> str:
    return format_address(value) if value else ""


def _interfaces(value: Any, where: str) -> tuple[str, ...]:
    return tuple(check_ip(i, where) for i in (value or ["127.0.0.1"]))


def _multicast_group(value: Any, where: str) -> str:
    check_ip(value, where)
    if not ipaddress.ip_address(value).is_multicast:
        raise ConfigError(f"{where} {value} is not a multicast address")
    return str(value)


def _page_size(value: Any, where: str) -> int:
    if value & (value - 1):
        raise ConfigError(f"{where} must be a power of two")
    return int(value)


URL_SCHEMES: Final = (
    "file://",
    "http://",
    "https://",
    "redis://",
    "rediss://",
    "nats://",
    "tls://",
    "ipfs://",
    "ipfs+https://",
)


def _url(value: Any, where: str) -> str:
    if value and not str(value).startswith(URL_SCHEMES):
        raise ConfigError(
            f"{where}: use file:///path, http(s)://host:port, redis(s)://host:port, "
            "nats://host:port (tls:// for TLS) or ipfs://host:port (ipfs+https:// for TLS)"
        )
    return str(value)


def _enum(kind: type[DeliveryMode] | type[MissingParents]) -> Callable[[Any, str], Any]:
    return lambda value, where: kind(value)


def _enum_value(value: Any) -> Any:
    return value.value


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of ``config.toml``."""

    section: str
    """Its table: one of :data:`SECTIONS`."""
    key: str
    kind: Kind
    default: Any
    """The TOML value used when the file leaves the setting out (None: unset, see ``optional``)."""
    help: str
    """What it does, for the file's comments, the docs and ``config get``."""
    attr: str
    """Where :class:`~mvds_node.node.NodeConfig` keeps it: ``"name"`` or ``"tcp.frame_timeout"``."""
    low: float | None = None
    high: float | None = None
    """The inclusive range of a number."""
    choices: tuple[str, ...] = ()
    """The values a string may take (empty: any)."""
    optional: bool = False
    """Unset is a value of its own (None), written as a commented-out line."""
    load: Callable[[Any, str], Any] | None = None
    """TOML value (checked for type and range) to the dataclass's value; may raise ConfigError."""
    dump: Callable[[Any], Any] | None = None
    """The dataclass's value back to a TOML value."""

    @property
    def name(self) -> str:
        """``section.key``, as ``config get/set`` and error messages name it."""
        return f"{self.section}.{self.key}"

    def python_default(self) -> Any:
        """The default as the dataclass holds it."""
        if self.default is None:
            return None
        return self.load(self.default, self.name) if self.load else self.default

    def range_text(self) -> str:
        """The allowed values, for the docs and errors: ``1..65535``, ``"a", "b"`` or ``""``."""
        if self.choices:
            return ", ".join(f'"{c}"' for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"{_number(self.low)}..{_number(self.high)}"
        return ""

    def check(self, value: Any, where: str) -> Any:
        """A TOML value of this setting, type- and range-checked, converted for the dataclass.

        Args:
            value: as read from the file (or from ``config set``).
            where: the file (and table) for error messages.

        Raises:
            ConfigError: the wrong type, out of range, or refused by the setting's own check.
        """
        key, what = self.key, _WHAT[self.kind]
        ok = {
            "string": isinstance(value, str),
            "boolean": isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "list": isinstance(value, list),
        }[self.kind]
        if not ok:
            raise ConfigError(f"{where}: {key} must be {what}, not {show_value(value)}")
        if self.kind in ("integer", "number"):
            assert self.low is not None and self.high is not None
            # Compared before conversion: float() of a huge integer overflows. A NaN compares
            # false with everything, so it is refused here too, and so are both infinities.
            if not self.low <= value <= self.high:
                raise ConfigError(
                    f"{where}: {key} must be in {self.range_text()}, not {show_value(value)}"
                )
            value = float(value) if self.kind == "number" else value
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"{where}: {key} must be one of {', '.join(self.choices)}, not {show_value(value)}"
            )
        return self.load(value, f"{where}: {self.name}") if self.load else value

    def to_toml(self, value: Any) -> Any:
        """The dataclass's value as a TOML value."""
        return self.dump(value) if self.dump else value


_WHAT: Final[dict[Kind, str]] = {
    "string": "a string",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "list": "a list",
}


def _number(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    return f"{x:_}".replace("_", ",") if isinstance(x, int) and abs(x) >= 10_000 else str(x)


_DAYS_30: Final = 30 * 86400.0

SETTINGS: Final[tuple[Setting, ...]] = (
    # [node]
    Setting("node", "name", "string", "", "A human name for this node, shown by `status`.",
            attr="name"),
    Setting("node", "listen", "string", "0.0.0.0:7700",
            'host:port for TCP+Noise connections; "" to only dial out.',
            attr="listen", load=_listen, dump=_dump_listen),
    Setting("node", "accept_unknown", "boolean", False,
            "Accept connections from keys not listed under [[peers]].", attr="accept_unknown"),
    Setting("node", "keep_freed_memory_mib", "integer", 64,
            "MiB of freed memory kept for reuse instead of returned to the system (glibc; the "
            "whole process). 0 leaves the C allocator as it is.",
            attr="keep_freed_memory_mib", low=0, high=1024),
    # [sync]
    Setting("sync", "epoch_seconds", "number", 0.5,
            "Epoch length in seconds: at most one payload per peer per epoch.",
            attr="epoch_seconds", low=0.01, high=3600.0),
    Setting("sync", "delivery", "string", "eventual",
            '"eventual": deliver at once, fetch missing parents; "consistent": hold a message '
            "until its parents are delivered.",
            attr="delivery", choices=("eventual", "consistent"), load=_enum(DeliveryMode),
            dump=_enum_value),
    Setting("sync", "max_requests_per_peer", "integer", 10_000,
            "Messages asked of one peer at most; past it, its offers are ignored until it "
            "answers.",
            attr="max_requests_per_peer", low=1, high=1_000_000),
    Setting("sync", "request_timeout", "number", 600.0,
            "Seconds after which a request for an offered message that never came ends.",
            attr="request_timeout", low=1.0, high=_DAYS_30),
    Setting("sync", "missing_parent_timeout", "number", 600.0,
            "Seconds after which a missing parent nobody sent is given up on, and the peer that "
            "named it reported.",
            attr="missing_parent_timeout", low=1.0, high=_DAYS_30),
    Setting("sync", "missing_parents", "string", "hold",
            'Consistent delivery, once its parents are given up on: "hold" the message until '
            'they come, or "deliver" it marked parents_missing.',
            attr="missing_parents", choices=("hold", "deliver"), load=_enum(MissingParents),
            dump=_enum_value),
    Setting("sync", "store_sync", "string", "normal",
            '"normal": survives kill -9; "full": also survives power loss, slower.',
            attr="store_sync", choices=("normal", "full")),
    Setting("sync", "store_page_size", "integer", 4096,
            "SQLite page size of a new store (a power of two): 4096 for messages sent one at a "
            "time, 65536 for bulk transfer. Fixed at creation.",
            attr="store_page_size", low=512, high=65536, load=_page_size),
    # [discovery]
    Setting("discovery", "enabled", "boolean", False,
            "Announce this node and find peers with mDNS.", attr="discovery.enabled"),
    Setting("discovery", "interfaces", "list", ["127.0.0.1"],
            "Interfaces (IP addresses) mDNS runs on; never all of them.",
            attr="discovery.interfaces", load=_interfaces, dump=list),
    # [multicast]
    Setting("multicast", "enabled", "boolean", False,
            "Also sync groups that have a secret over UDP multicast.", attr="multicast.enabled"),
    Setting("multicast", "group", "string", DEFAULT_GROUP,
            "Multicast group address (administratively scoped: stays on the site).",
            attr="multicast.group", load=_multicast_group),
    Setting("multicast", "port", "integer", DEFAULT_PORT, "UDP port of the multicast group.",
            attr="multicast.port", low=1, high=65535),
    Setting("multicast", "interface", "string", "127.0.0.1",
            "The one interface (its IPv4 address) datagrams use, TTL 1; never 0.0.0.0.",
            attr="multicast.interface", load=lambda v, where: check_interface(v, where)),
    # [tcp]
    Setting("tcp", "handshake_timeout", "number", 10.0,
            "Seconds to connect and finish the Noise handshake.",
            attr="tcp.handshake_timeout", low=0.1, high=3600.0),
    Setting("tcp", "frame_timeout", "number", 30.0,
            "Seconds a packet that has begun may take to arrive whole.",
            attr="tcp.frame_timeout", low=0.1, high=3600.0),
    Setting("tcp", "keepalive_interval", "number", 15.0,
            "Seconds of silence before a peer is pinged; 0 for no pings.",
            attr="tcp.keepalive_interval", low=0.0, high=86400.0),
    Setting("tcp", "keepalive_misses", "integer", 3,
            "Unanswered pings after which the connection closes.",
            attr="tcp.keepalive_misses", low=1, high=1000),
    Setting("tcp", "max_inbound_connections", "integer", 256,
            "Inbound connections at once, handshaking or live.",
            attr="tcp.max_inbound_connections", low=1, high=100_000),
    Setting("tcp", "max_handshakes_per_address", "integer", 16,
            "Handshakes in progress from one IP address.",
            attr="tcp.max_handshakes_per_address", low=1, high=100_000),
    # [remote_log]
    Setting("remote_log", "url", "string", "",
            'Where logs live: "file:///path", "http://host:port" (`mvds-node helper serve`), '
            '"redis://host:port", "nats://host:port" or "ipfs://host:port" (an IPFS node\'s '
            'RPC API); https://, rediss://, tls:// (NATS) and ipfs+https:// for TLS; "" for none.',
            attr="remote_log.url", load=_url),
    Setting("remote_log", "page_size", "integer", 256, "Entries per page of our log.",
            attr="remote_log.page_size", low=1, high=100_000),
    Setting("remote_log", "inline", "integer", 64,
            "How many of our newest messages ride inside the pages (the rest go to the CAS).",
            attr="remote_log.inline", low=0, high=100_000_000),
    Setting("remote_log", "head_size", "integer", None,
            "Entries the head page holds; unset: page_size. 0 makes an idle poll one small "
            "record (~140 bytes); catching up from nothing then fetches a page per upload.",
            attr="remote_log.head_size", low=0, high=100_000_000, optional=True),
    Setting("remote_log", "poll_seconds", "number", 30.0,
            "Seconds between reads of the peers' logs.",
            attr="remote_log.poll_seconds", low=0.01, high=86400.0),
    Setting("remote_log", "signed", "boolean", True,
            "false: the NS holds the spec's bare RemoteLog (interop; unsigned, unsealed).",
            attr="remote_log.signed"),
    Setting("remote_log", "secret", "string", "",
            'The password (with a user in the URL) or token: "env:NAME" reads an environment '
            'variable, "file:PATH" a file; wins over a password in the URL; never shown.',
            attr="remote_log.secret"),
    Setting("remote_log", "ca_file", "string", "",
            "A CA certificate (PEM) to trust instead of the system's, for TLS URLs.",
            attr="remote_log.ca_file"),
    Setting("remote_log", "cert_file", "string", "",
            "A client certificate (PEM) for servers that ask for one (with key_file).",
            attr="remote_log.cert_file"),
    Setting("remote_log", "key_file", "string", "",
            "The client certificate's private key (PEM).",
            attr="remote_log.key_file"),
    Setting("remote_log", "creds_file", "string", "",
            "NATS: a .creds file (user JWT and NKey seed).",
            attr="remote_log.creds_file"),
    Setting("remote_log", "nkey_file", "string", "",
            "NATS: a file holding an NKey seed.",
            attr="remote_log.nkey_file"),
    # [retention]
    Setting("retention", "max_age", "number", 0.0,
            "Delete messages (received or sent) older than this many seconds (by their "
            "timestamp) once every durable cursor has passed them; 0 keeps them.",
            attr="retention.max_age", low=0.0, high=1e10),
    Setting("retention", "max_messages", "integer", 0,
            "Keep at most this many messages (received or sent), deleting the oldest once every "
            "durable cursor has passed them; 0: no limit.",
            attr="retention.max_messages", low=0, high=10**12),
    Setting("retention", "max_bytes", "integer", 0,
            "Keep at most this many bytes of messages (received or sent), deleting the oldest "
            "once every durable cursor has passed them; 0: no limit.",
            attr="retention.max_bytes", low=0, high=10**15),
    Setting("retention", "interval", "number", 60.0,
            "How often, in seconds, retention runs.",
            attr="retention.interval", low=0.01, high=86400.0),
)  # fmt: skip

GROUP_SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("groups", "envelope", "string", "signed",
            '"signed": every message carries its author\'s Ed25519 key and signature, and '
            "messages by non-members, forged or unsigned ones are refused; \"raw\": bodies as "
            "they are, no author (interop with plain MVDS applications). The same on every "
            "member.",
            attr="envelope", choices=("signed", "raw")),
)  # fmt: skip
"""Settings of each ``[[groups]]`` entry (beside its name, id, members, mode and secret, which
the parser reads itself): parsed, written and documented from here like :data:`SETTINGS`."""

_BY_NAME: Final = {s.name: s for s in SETTINGS}
_BY_ATTR: Final = {s.attr: s for s in SETTINGS}


def default(attr: str) -> Any:
    """The default of the setting kept at ``attr`` of the configuration, as the dataclass holds
    it: what the dataclasses of ``node/_config.py`` use as their field defaults."""
    return _BY_ATTR[attr].python_default()


def find_setting(name: str) -> Setting:
    """The setting called ``section.key``.

    Raises:
        ConfigError: no such setting (the message suggests the nearest names).
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        pass
    import difflib

    near = difflib.get_close_matches(name, list(_BY_NAME), n=3)
    hint = f"; did you mean {' or '.join(near)}?" if near else "; `mvds-node config get` lists them"
    raise ConfigError(f"no setting {name!r}{hint}")


def toml_value(value: Any) -> str:
    """A TOML value (string, boolean, number, list of strings) as TOML text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(toml_value(v) for v in value)}]"
    return str(value)


def value_from_text(setting: Setting, text: str) -> Any:
    """What ``config set NAME TEXT`` means: ``text`` as a TOML value of ``setting`` (not yet
    checked for range: :meth:`Setting.check` does that). ``""`` unsets an optional setting
    (returns None).

    Raises:
        ConfigError: ``text`` is not of the setting's type.
    """
    where = f"config set {setting.name}"
    if setting.optional and text.strip().lower() in ("", "none", "unset"):
        return None
    if setting.kind == "string":
        return text
    if setting.kind == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    if setting.kind == "boolean":
        words = {"true": True, "yes": True, "on": True, "1": True}
        words |= {"false": False, "no": False, "off": False, "0": False}
        if text.strip().lower() not in words:
            raise ConfigError(f"{where}: {text!r} is not true or false")
        return words[text.strip().lower()]
    try:
        number = float(text) if setting.kind == "number" else int(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not {_WHAT[setting.kind]}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{where}: {text!r} is not a finite number")
    return number


_WIDTH: Final = 88
"""Columns of a comment's text in ``config.toml`` (after the ``# ``)."""


def render_settings(values: Callable[[Setting], Any]) -> list[str]:
    """The settings' tables as TOML lines, each setting under its help and default.

    Args:
        values: the TOML value of each setting to write (None: an unset optional setting).
    """
    lines: list[str] = []
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for s in (s for s in SETTINGS if s.section == section):
            shown = "unset" if s.default is None else toml_value(s.default)
            # The default stays whole on one line: "(default:" alone at a line's end reads badly.
            text = textwrap.wrap(s.help, width=_WIDTH)
            tail = f"(default: {shown})"
            if len(text[-1]) + 1 + len(tail) <= _WIDTH:
                text[-1] += f" {tail}"
            else:
                text.append(tail)
            lines += [f"# {line}" for line in text]
            value = values(s)
            if value is None:
                lines.append(f"# {s.key} = {toml_value(s.low if s.low is not None else '')}")
            else:
                lines.append(f"{s.key} = {toml_value(value)}")
    return lines


def reference_table(settings: tuple[Setting, ...] = SETTINGS) -> str:
    """The Markdown table of every setting for ``docs/configuration.md`` (or of
    :data:`GROUP_SETTINGS`)."""
    rows = [
        "| setting | type | default | range | what it does |",
        "|---|---|---|---|---|",
    ]
    for s in settings:
        shown = "unset" if s.default is None else toml_value(s.default)
        cells = (
            f"`{s.name}`",
            s.kind,
            f"`{shown}`",
            s.range_text().replace("|", "\\|"),
            s.help.replace("|", "\\|"),
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference_table(), end="")
    print()
    print(reference_table(GROUP_SETTINGS), end="")
