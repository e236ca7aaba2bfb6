"""The JSON lines of ``run --json`` and the lines ``run`` prints for people.

:func:`encode_event` is the one function through which every node event becomes JSON (the
``status`` document comes from ``NodeStatus.to_json``); the line shapes are a documented interface
(``docs/node.md``) and stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mvds_node.node._control import b64
from mvds_node.node._node import (
    Acked,
    Delivered,
    Expired,
    GaveUpSending,
    InternalError,
    LogUploaded,
    Message,
    NodeEvent,
    PeerConnected,
    PeerDisconnected,
    Refused,
    StoreFailed,
    StoreRecovered,
    TransportFailed,
    TransportRestored,
)

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
        "sender": m.sender.hex(),
        "timestamp": m.timestamp,
        "ephemeral": m.ephemeral,
        "text": text,
        "body_b64": b64(m.body),
    }


def event_json(event: NodeEvent) -> dict[str, Any] | None:
    if isinstance(event, Acked):
        return {"type": "acked", "id": event.message_id.hex(), "peer": event.peer.hex()}
    if isinstance(event, GaveUpSending):
        return {"type": "gave-up", "id": event.message_id.hex(), "peer": event.peer.hex()}
    if isinstance(event, Expired):
        return {"type": "expired", "id": event.message_id.hex()}
    if isinstance(event, PeerConnected):
        return {"type": "peer-up", "peer": event.peer.hex(), "address": event.address}
    if isinstance(event, PeerDisconnected):
        return {"type": "peer-down", "peer": event.peer.hex(), "reason": event.reason}
    if isinstance(event, Refused):
        return {
            "type": "refused",
            "peer": event.peer.hex() if event.peer else None,
            "address": event.address,
            "reason": event.reason,
            "detail": event.detail,
        }
    if isinstance(event, LogUploaded):
        return {
            "type": "log-uploaded",
            "group": event.group,
            "seq": event.seq,
            "messages": event.messages,
            "queued": event.queued,
        }
    if isinstance(event, TransportFailed):
        return {
            "type": "transport-failed",
            "transport": type(event.transport).__name__,
            "detail": event.detail,
        }
    if isinstance(event, InternalError):
        return {
            "type": "internal-error",
            "where": event.where,
            "error": event.error,
            "traceback": event.traceback,
        }
    if isinstance(event, TransportRestored):
        return {"type": "transport-restored", "transport": type(event.transport).__name__}
    if isinstance(event, StoreFailed):
        return {"type": "store-failed", "path": event.path, "reason": event.reason}
    if isinstance(event, StoreRecovered):
        return {"type": "store-recovered", "path": event.path}
    return None


def encode_event(event: NodeEvent) -> dict[str, Any] | None:
    """The JSON object of ``event`` for ``run --json``; None for an event that has no line
    (``Delivered``: the message itself is printed)."""
    if isinstance(event, Delivered):
        return None
    return event_json(event)


def message_line(m: Message, who: Callable[[bytes | None], str]) -> list[str | tuple[str, str]]:
    """A received message for people: ``[group] sender: text``."""
    text = m.body.decode(errors="replace")
    parts: list[str | tuple[str, str]] = [
        (f"[{m.group}]", "cyan"),
        " ",
        (who(m.sender), "bold"),
        f": {text}",
    ]
    if m.ephemeral:
        parts.append((" (ephemeral)", "dim"))
    return parts


_ALARMS = (Refused, TransportFailed, StoreFailed, InternalError, GaveUpSending)
"""Events shown in red/yellow on a terminal: something the user may need to act on."""


def event_line(
    event: NodeEvent, document: dict[str, Any], who: Callable[[bytes | None], str]
) -> list[str | tuple[str, str]]:
    """An event for people: ``* type peer`` and what it needs said."""
    human = f"* {document['type']} {who(getattr(event, 'peer', None))}"
    if isinstance(event, Refused):
        human += f": {event.reason} ({event.detail})"
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
