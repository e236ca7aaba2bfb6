"""The JSON lines of ``run --json`` and the lines ``run`` prints for people.

:func:`encode_event` is the one function through which every node event becomes JSON (the
``status`` document comes from ``NodeStatus.to_json``); the line shapes are a documented interface
(``docs/node.md``) and stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mvds_node.node._control import b64
from mvds_node.node._events import (
    AnyEvent,
    AuthorLearned,
    AuthorMismatch,
    EnvelopeMismatch,
    InternalError,
    LogUploaded,
    PeerConnected,
    StoreFailed,
    StoreRecovered,
    TransportFailed,
    TransportRestored,
    event_to_json,
)
from mvds_node.node._subscribers import Message
from mvds_node.sync import GaveUp, MessageDelivered, PayloadRejected
from mvds_node.transports import InputRejected

__all__ = ["encode_event", "event_json", "event_line", "message_json", "message_line"]


def message_json(m: Message) -> dict[str, Any]:
    try:
        text: str | None = m.body.decode()
    except UnicodeDecodeError:
        text = None
    return {
        "type": "message",
        "group": m.group,
        "id": m.message_id.hex(),
        "author": m.author.hex() if m.author is not None else None,
        "via": m.via.hex(),
        "sender": m.via.hex(),
        "timestamp": m.timestamp,
        "seq": m.seq,
        "ephemeral": m.ephemeral,
        "text": text,
        "body_b64": b64(m.body),
    }


def event_json(event: AnyEvent) -> dict[str, Any]:
    """The JSON object of any node event (``node._events.event_to_json``)."""
    return event_to_json(event)


def encode_event(event: AnyEvent) -> dict[str, Any] | None:
    """The JSON object of ``event`` for ``run --json``; None for an event that has no line
    (``MessageDelivered``: the message itself is printed)."""
    if isinstance(event, MessageDelivered):
        return None
    return event_to_json(event)


def message_line(
    m: Message,
    who: Callable[[bytes | None], str],
    author: Callable[[bytes], tuple[str, bytes | None]] | None = None,
) -> list[str | tuple[str, str]]:
    """A received message for people: ``[group] author: text``, with ``(via peer)`` when a
    member relayed it, or ``[group] (no author, via peer): text`` for a message without an
    envelope (a raw group's, or one stored before envelopes).

    ``who`` names a peer by its X25519 key; ``author`` names an author by its Ed25519 key and
    gives that author's X25519 key if it is a known peer (default: the key, shortened)."""
    text = m.body.decode(errors="replace")
    parts: list[str | tuple[str, str]] = [(f"[{m.group}]", "cyan"), " "]
    if m.author is None:
        parts += [("(no author", "dim"), f", via {who(m.via)}", (")", "dim")]
    else:
        name, peer = author(m.author) if author is not None else (m.author.hex()[:12], None)
        parts.append((name, "bold"))
        if peer != m.via:
            parts.append((f" (via {who(m.via)})", "dim"))
    parts.append(f": {text}")
    if m.ephemeral:
        parts.append((" (ephemeral)", "dim"))
    return parts


_ALARMS = (
    AuthorMismatch,
    EnvelopeMismatch,
    InputRejected,
    PayloadRejected,
    TransportFailed,
    StoreFailed,
    InternalError,
    GaveUp,
)
"""Events shown in red/yellow on a terminal: something the user may need to act on."""


def event_line(
    event: AnyEvent, document: dict[str, Any], who: Callable[[bytes | None], str]
) -> list[str | tuple[str, str]]:
    """An event for people: ``* type peer`` and what it needs said."""
    human = f"* {document['type']} {who(getattr(event, 'peer', None))}"
    if isinstance(event, InputRejected):
        human += f": {event.reason} ({event.detail})"
    elif isinstance(event, PayloadRejected):
        human += (
            f": {event.reason} ({event.dropped} dropped{', whole payload' if event.whole else ''})"
        )
    elif isinstance(event, AuthorLearned):
        human += f": signs with {event.key.hex()[:12]}" + (
            " (saved in config.toml)" if event.saved else f" (not saved: {event.detail})"
        )
    elif isinstance(event, AuthorMismatch):
        if event.reason == "configured":
            human += (
                f": offers the signing key {event.offered.hex()[:12]}, config.toml says "
                f"{(event.configured or b'').hex()[:12]} (kept; check its `mvds-node key --log`)"
            )
        else:
            human += (
                f": offers the signing key {event.offered.hex()[:12]}, already "
                f"{who(event.owner)}'s (refused)"
            )
    elif isinstance(event, EnvelopeMismatch):
        human += (
            f": [{event.group}] is {event.ours} here and {event.theirs} there "
            "(set the group's envelope alike on every member)"
        )
    elif isinstance(event, StoreFailed):
        human = f"* store-failed: {event.reason}"
    elif isinstance(event, StoreRecovered):
        human = f"* store-recovered {event.path}"
    elif isinstance(event, (TransportFailed, TransportRestored)):
        human = f"* {document['type']} {document['transport']}"
        if isinstance(event, TransportFailed):
            human += f": {event.detail}"
    elif isinstance(event, LogUploaded):
        human = (
            f"* log-uploaded [{event.group}] {event.messages} messages "
            f"(head {event.seq}, {event.queued} queued)"
        )
    elif isinstance(event, InternalError):
        human = f"* internal-error in {event.where}: {event.error}"
    style = "red" if isinstance(event, _ALARMS) else "dim"
    if isinstance(event, (PeerConnected, TransportRestored, StoreRecovered)):
        style = "green"
    return [(human, style)]
