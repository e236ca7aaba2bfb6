"""The node's events, and the one JSON encoding of events and status snapshots.

Theory of operation
-------------------
A subscriber of :meth:`Node.events` sees one vocabulary. Where the engine or a carrier already
states a fact, the node passes its event on unchanged (:class:`~mvds_node.sync.MessageDelivered`,
:class:`~mvds_node.sync.MessageAcked`, :class:`~mvds_node.sync.GaveUp`,
:class:`~mvds_node.sync.MessageExpired`, :class:`~mvds_node.sync.PayloadRejected`,
:class:`~mvds_node.transports.InputRejected`); facts only the node knows (a peer connected, a
carrier failed, the store refused a write, a remote-log upload) are the events below, each
``@final``, frozen and slotted under :class:`NodeEvent`. The node's own refusals of input (an
ephemeral message from a non-member, a remote log's bad record) are ``InputRejected`` too.

:func:`event_to_json` turns any of them into one JSON object generated from the dataclass
fields (bytes as hex, tuples as lists, enums as their values, a carrier as its class name),
with a ``type`` token; :func:`to_json` encodes any other snapshot (:class:`NodeStatus`) the
same way. The CLI's ``run --json`` lines and ``status --json`` both come from here, so a new
event or field needs no change to either.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, final

from mvds_node.sync import (
    Event,
    GaveUp,
    MessageAcked,
    MessageDelivered,
    MessageExpired,
    PayloadRejected,
)
from mvds_node.transports import InputRejected, Transport, TransportEvent

__all__ = [
    "AnyEvent",
    "AuthorLearned",
    "AuthorMismatch",
    "EnvelopeMismatch",
    "InboxSkipped",
    "InternalError",
    "LogUploaded",
    "NodeEvent",
    "PeerConnected",
    "PeerDisconnected",
    "StoreFailed",
    "StoreRecovered",
    "TransportFailed",
    "TransportRestored",
    "event_to_json",
    "event_type",
    "to_json",
]


class NodeEvent:
    """Base of the events only the node states; each subclass is one fact."""

    __slots__ = ()


AnyEvent: TypeAlias = NodeEvent | Event | TransportEvent
"""What :meth:`Node.events` yields: the node's own events, the engine's, and the carriers'
``InputRejected``."""


@final
@dataclass(frozen=True, slots=True)
class EnvelopeMismatch(NodeEvent):
    """A member's message shows that its envelope setting for a group is not ours: a signed
    group got a message without an envelope (refused, ``unsigned``), or a raw group got a
    signed envelope (delivered as the bytes it is). Members must agree on ``envelope``; said
    once per group and peer while the node runs."""

    group: str
    peer: bytes
    ours: str
    theirs: str


@final
@dataclass(frozen=True, slots=True)
class AuthorLearned(NodeEvent):
    """A member listed without ``log_key`` proved its Ed25519 signing key over a session that
    proved its Noise key (an ``AUTHOR`` frame): the node adopted it, so the messages it signs
    are accepted from now on, relayed ones too. ``saved``: written to ``config.toml``
    (``False`` for a configuration that has no file, or one that could not be written,
    ``detail`` says why)."""

    peer: bytes
    key: bytes
    saved: bool
    detail: str = ""


@final
@dataclass(frozen=True, slots=True)
class AuthorMismatch(NodeEvent):
    """A peer's ``AUTHOR`` frame offers a signing key the node did not adopt. ``reason``:
    ``configured``, its ``[[peers]]`` entry names another ``log_key`` (``configured``; the
    configured one stays); ``in-use``, the key is already another member's, or ours
    (``owner``: that member's Noise key). Said once per peer and key while the node runs."""

    peer: bytes
    offered: bytes
    reason: str
    configured: bytes | None = None
    owner: bytes | None = None


@final
@dataclass(frozen=True, slots=True)
class PeerConnected(NodeEvent):
    """A peer proved its key on a live carrier (its first TCP connection)."""

    peer: bytes
    address: str


@final
@dataclass(frozen=True, slots=True)
class InboxSkipped(NodeEvent):
    """Messages expired before the reader of a durable cursor reached them: they are gone."""

    cursor: str
    message_ids: tuple[bytes, ...]


@final
@dataclass(frozen=True, slots=True)
class PeerDisconnected(NodeEvent):
    """A peer's last live connection ended."""

    peer: bytes
    address: str
    reason: str


@final
@dataclass(frozen=True, slots=True)
class LogUploaded(NodeEvent):
    """A batch of our messages of ``group`` is in our remote log: readers can fetch them even
    when we are gone. ``queued`` of the group's messages still wait for upload."""

    group: str
    seq: int
    messages: int
    queued: int


@final
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
class TransportRestored(NodeEvent):
    """A multicast carrier that had failed is open again."""

    transport: Transport


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


# --------------------------------------------------------------------------- JSON

_TYPES: Final[dict[type, str]] = {
    MessageDelivered: "delivered",
    MessageAcked: "acked",
    GaveUp: "gave-up",
    MessageExpired: "expired",
    PayloadRejected: "payload-rejected",
    InputRejected: "refused",
    PeerConnected: "peer-up",
    PeerDisconnected: "peer-down",
}
"""``type`` tokens that differ from the class name in kebab case (kept from earlier releases)."""


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def event_type(event: object) -> str:
    """The ``type`` token of an event in JSON: ``acked``, ``peer-up``, ``store-failed`` ..."""
    cls = type(event)
    return _TYPES.get(cls) or _kebab(cls.__name__)


def to_json(value: object) -> Any:
    """``value`` as JSON data: a dataclass as an object of its fields, bytes as hex, tuples and
    lists as lists, enums as their values, a carrier as its class name."""
    if isinstance(value, enum.Enum):
        # A StrEnum (a reason) keeps its text; an IntEnum (a record type) shows its name.
        return value.value if isinstance(value, str) else value.name.lower()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list, set, frozenset)):
        return [to_json(v) for v in value]
    return type(value).__name__  # a carrier, or anything else with no data to show


def event_to_json(event: AnyEvent) -> dict[str, Any]:
    """One event as a JSON object: ``{"type": <token>, <field>: <value>, ...}``.

    Args:
        event: anything :meth:`Node.events` yields.

    Returns:
        The object; every field of the event is there, encoded by :func:`to_json`.
    """
    fields: dict[str, Any] = to_json(event)
    return {"type": event_type(event), **fields}
