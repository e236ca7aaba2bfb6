"""The commands' way to a node: ask the running one over its control socket, else open the
data directory's store and do the work here (so ``send``, ``status`` and bundles work offline).

:func:`control_handler` is what a running node (``mvds-node run``) answers on that socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from mvds_node.errors import MvdsError, StoreError
from mvds_node.node._bundles import ExportResult, ImportResult
from mvds_node.node._config import GroupConfig, NodeConfig
from mvds_node.node._control import (
    ControlUnavailable,
    Send,
    Stream,
    b64,
    call,
    stream,
    unb64,
)
from mvds_node.node._identity import load_identity
from mvds_node.node._inbox import (
    check_cursor_name,
    history_messages,
    signed_groups,
    unread_messages,
)
from mvds_node.node._node import Node
from mvds_node.node.cli._events import message_json
from mvds_node.node.cli._output import ProgressBar
from mvds_node.sync import SQLiteStore

__all__ = [
    "Offline",
    "bundle_op",
    "cli_cursor",
    "cursors",
    "follow_messages",
    "stored_messages",
    "control_handler",
    "ask",
    "send_one",
    "send_lines",
    "node_status",
    "node_trace",
]


class Offline:
    """A node that is not running: its store and engine, opened for one command."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.identity = load_identity(config.identity_path)
        self.store = SQLiteStore(
            config.store_path, synchronous=config.store_sync, page_size=config.store_page_size
        )

    def node(self) -> Node:
        return Node(self.config, self.identity, self.store)

    def close(self) -> None:
        self.store.close()


async def ask(config: NodeConfig, request: dict[str, Any]) -> dict[str, Any] | None:
    """Ask the running node; None if no node runs."""
    if not config.control_path.exists():
        return None
    try:
        response = await call(config.control_path, request)
    except ControlUnavailable:
        return None
    if not response.get("ok"):
        raise MvdsError(str(response.get("error", "the node refused the request")))
    return response


# --------------------------------------------------------------------------- control ops


def control_handler(
    node: Node,
) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any] | Stream]]:
    """What a running node answers on its control socket."""

    async def handle(request: dict[str, Any]) -> dict[str, Any] | Stream:
        op = request["op"]
        if op == "messages":
            return _messages_op(node, request)
        if op == "follow":
            return _follow_op(node, request)
        if op == "cursors":
            return cursors_op(node, request)
        if op == "send":
            group = request.get("group")
            if not isinstance(group, str):
                raise ValueError("send needs a group")
            mid = await node.send(
                group,
                unb64(request.get("body_b64")),
                ephemeral=bool(request.get("ephemeral", False)),
                expires_at=int(request.get("expires_at", 0)),
            )
            return {"ok": True, "id": mid.hex()}
        if op == "send_many":
            group = request.get("group")
            bodies = request.get("bodies_b64")
            if not isinstance(group, str) or not isinstance(bodies, list):
                raise ValueError("send_many needs a group and a list of bodies")
            ids = await node.send_many(group, [unb64(b) for b in bodies])
            return {"ok": True, "ids": [i.hex() for i in ids]}
        if op == "status":
            return {"ok": True, "status": node.status().to_json(), "running": True}
        if op == "trace":
            mid = resolve_id(node, request.get("id"))
            return {"ok": True, "trace": node.trace(mid).to_json()}
        if op == "export":
            path = request.get("path")
            if not isinstance(path, str):
                raise ValueError("export needs a path")
            peer, group = request.get("peer"), request.get("group")
            result = node.export_bundle(
                path,
                peer=peer if isinstance(peer, str) else None,
                group=group if isinstance(group, str) else None,
            )
            return {"ok": True, "result": export_json(result)}
        if op == "import":
            path = request.get("path")
            if not isinstance(path, str):
                raise ValueError("import needs a path")
            return {"ok": True, "result": import_json(node.import_bundle(path))}
        raise ValueError(f"unknown op {op!r}")

    return handle


_MIN_PREFIX: Final = 8
"""Hex digits of the shortest message ID prefix ``trace`` takes."""


def check_id(text: object) -> str:
    """A message ID, or a prefix of one, in hex (lower case), as ``trace`` takes it."""
    if not isinstance(text, str):
        raise ValueError("trace needs a message id (64 hex digits, or at least 8 of them)")
    text = text.strip().lower()
    if not _MIN_PREFIX <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(
            f"not a message id (64 hex digits, or at least {_MIN_PREFIX} of them): {text!r}"
        )
    return text


def resolve_id(node: Node, text: object) -> bytes:
    """The message ID ``text`` names: 64 hex digits as they are (stored or not), a prefix
    only if exactly one stored message starts with it.

    Raises:
        ValueError: not hex, or too short.
        MvdsError: no stored message, or more than one, starts with the prefix.
    """
    hex_id = check_id(text)
    if len(hex_id) == 64:
        return bytes.fromhex(hex_id)
    found = [
        mid
        for mid in node.message_ids(bytes.fromhex(hex_id[: len(hex_id) // 2 * 2]), limit=16)
        if mid.hex().startswith(hex_id)
    ]
    if not found:
        raise MvdsError(f"no stored message starts with {hex_id}: give all 64 hex digits")
    if len(found) > 1:
        raise MvdsError(f"{hex_id} starts more than one stored message: give more digits")
    return found[0]


async def node_trace(config: NodeConfig, message_id: str) -> dict[str, Any]:
    """The trace document (``Trace.to_json``) of one message with ``running``: from the
    running node over the control socket, else read from the data directory."""
    hex_id = check_id(message_id)  # checked here first: a bad ID fails the same either way
    response = await ask(config, {"op": "trace", "id": hex_id})
    if response is not None:
        trace: dict[str, Any] = response["trace"]
        trace["running"] = True
        return trace
    offline = Offline(config)
    try:
        node = offline.node()
        trace = node.trace(resolve_id(node, hex_id)).to_json()
    finally:
        offline.close()
    trace["running"] = False
    return trace


async def node_status(config: NodeConfig) -> dict[str, Any]:
    """The node's status document (``NodeStatus.to_json``) with ``running``: from the running
    node, else read from the store."""
    response = await ask(config, {"op": "status"})
    if response is not None:
        status: dict[str, Any] = response["status"]
        status["running"] = True
        return status
    offline = Offline(config)
    try:
        status = offline.node().status().to_json()
    finally:
        offline.close()
    status["running"] = False
    return status


async def send_lines(config: NodeConfig, group: str, bodies: list[bytes]) -> tuple[int, bool]:
    response = await ask(
        config, {"op": "send_many", "group": group, "bodies_b64": [b64(b) for b in bodies]}
    )
    if response is not None:
        return len(response["ids"]), True
    offline = Offline(config)
    try:
        ids = await offline.node().send_many(group, bodies)
    finally:
        offline.close()
    return len(ids), False


async def send_one(
    config: NodeConfig, group: str, body: bytes, *, ephemeral: bool, expires_at: int
) -> tuple[str, bool]:
    """Send one message; returns its hex ID ("" for an ephemeral one) and whether a running
    node took it (else it was stored here and goes out when the node next runs)."""
    response = await ask(
        config,
        {
            "op": "send",
            "group": group,
            "body_b64": b64(body),
            "ephemeral": ephemeral,
            "expires_at": expires_at,
        },
    )
    if response is not None:
        return str(response["id"]), True
    if ephemeral:
        raise MvdsError("ephemeral messages need a running node (they are never stored)")
    offline = Offline(config)
    try:
        mid = await offline.node().send(group, body, expires_at=expires_at)
    finally:
        offline.close()
    return mid.hex(), False


def export_json(r: ExportResult) -> dict[str, Any]:
    return {
        "path": str(r.path),
        "bytes": r.bytes,
        "messages": r.messages,
        "acks": r.acks,
        "requests": r.requests,
        "prerequisites": r.prerequisites,
    }


def import_json(r: ImportResult) -> dict[str, Any]:
    return {
        "sender": r.sender.hex(),
        "sender_proved": r.sender_proved,
        "messages_new": r.messages_new,
        "messages_known": r.messages_known,
        "acks": r.acks,
        "missing_prerequisites": r.missing_prerequisites,
    }


async def bundle_op(
    config: NodeConfig, request: dict[str, Any], bars: tuple[ProgressBar, ProgressBar]
) -> dict[str, Any]:
    """Export or import a bundle (``request`` as sent to the running node): by the running
    node if there is one, else here, drawing ``bars`` (the check of the file, then applying it;
    an export uses the first)."""
    response = await ask(config, request)
    if response is not None:
        result: dict[str, Any] = response["result"]
        return result
    offline = Offline(config)
    try:
        node = offline.node()
        check, apply = bars
        if request["op"] == "export":
            with check:
                return export_json(
                    node.export_bundle(
                        request["path"],
                        peer=request.get("peer"),
                        group=request.get("group"),
                        progress=check,
                    )
                )
        with check, apply:
            return import_json(
                node.import_bundle(request["path"], progress=check, apply_progress=apply)
            )
    finally:
        offline.close()


# --------------------------------------------------------------------------- messages


def cli_cursor(group: GroupConfig) -> str:
    """The cursor ``mvds-node messages --unread/--follow`` keeps for ``group``."""
    try:
        return check_cursor_name(f"cli:{group.name}")
    except MvdsError:
        return f"cli:{group.id.hex()[:16]}"


def _messages_op(node: Node, request: dict[str, Any]) -> dict[str, Any]:
    group = node.group(_text(request, "group"))
    since, limit = _integer(request, "since"), request.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError("limit must be a non-negative integer")
    if request.get("unread"):
        store = node.store
        messages, position = unread_messages(
            store,
            {g.id: g.name for g in node.config.groups},
            cli_cursor(group),
            signed=signed_groups(node.config),
            group_id=group.id,
        )
        messages = [m for m in messages if m.timestamp >= since]
        store.set_cursor(cli_cursor(group), position)
    else:
        messages = node.history(group.id, since=since, limit=limit)
    return {"ok": True, "messages": [message_json(m) for m in messages]}


def _follow_op(node: Node, request: dict[str, Any]) -> Stream:
    """What ``messages`` would show, then each new message of the group as it arrives: the
    CLI's cursor is put at the end of what was shown, with no checkpoint in between, so a
    message that arrives meanwhile is streamed, never missed or shown twice."""
    group = node.group(_text(request, "group"))
    cursor = cli_cursor(group)
    shown = _messages_op(node, {**request, "limit": request.get("limit")})["messages"]
    if not request.get("unread"):
        node.store.set_cursor(cursor, node.store.inbox_end())

    async def produce(send: Send) -> None:
        for doc in shown:
            await send(doc)
        async with node.messages(cursor, confirm="manual") as inbox:
            async for m in inbox:
                if m.group_id == group.id:
                    await send(message_json(m))
                inbox.confirm(m)  # sent to the client: the CLI's cursor moves past it

    return Stream(produce)


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{request.get('op')} needs a {key}")
    return value


def _integer(request: dict[str, Any], key: str) -> int:
    value = request.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


async def stored_messages(
    config: NodeConfig, group: str, *, since: int, limit: int | None, unread: bool
) -> tuple[list[dict[str, Any]], bool]:
    """The group's stored messages as JSON documents, and whether a running node answered.
    With no node running the store is opened read-only (``--unread`` moves the CLI's cursor,
    so it opens the store to write)."""
    request = {"op": "messages", "group": group, "since": since, "limit": limit, "unread": unread}
    response = await ask(config, request)
    if response is not None:
        return list(response["messages"]), True
    cfg = config.group(group)
    if unread:
        offline = Offline(config)
        try:
            return _messages_op(offline.node(), request)["messages"], False
        finally:
            offline.close()
    try:
        store = SQLiteStore(config.store_path, read_only=True)
    except StoreError:
        # A store of an older schema (or in some other state a read-only open cannot take):
        # no node runs, so open it as a node would, which migrates it or says what is wrong.
        store = SQLiteStore(config.store_path, synchronous=config.store_sync)
    try:
        me = load_identity(config.identity_path).public_key
        found = history_messages(
            store, cfg.name, cfg.id, me, signed=cfg.envelope == "signed", since=since, limit=limit
        )
    finally:
        store.close()
    return [message_json(m) for m in found], False


async def follow_messages(
    config: NodeConfig, group: str, *, since: int, unread: bool
) -> AsyncIterator[dict[str, Any]]:
    """The group's stored messages (as :func:`stored_messages`), then the new ones as they
    arrive, from the running node (the CLI's cursor).

    Raises:
        MvdsError: no node runs (``--follow`` needs one).
    """
    config.group(group)
    if not config.control_path.exists():
        raise MvdsError(f"no node is running in {config.data_dir}: --follow needs `mvds-node run`")
    request = {"op": "follow", "group": group, "since": since, "unread": unread}
    async for document in stream(config.control_path, request):
        if document.get("ok") is False:
            raise MvdsError(str(document.get("error", "the node refused the request")))
        yield document


def cursors_op(node: Node, request: dict[str, Any]) -> dict[str, Any]:
    if request.get("delete") is not None:
        return {"ok": True, "deleted": node.delete_cursor(_text(request, "delete"))}
    end = node.store.inbox_end()
    return {
        "ok": True,
        "cursors": [
            {"name": n, "position": p, "unread": max(0, end - p)} for n, p in node.cursors().items()
        ],
    }


async def cursors(config: NodeConfig, delete: str | None = None) -> dict[str, Any]:
    """List the durable cursors, or delete one: by the running node, else in the store (which
    opens even when a damaged cursor keeps the node from starting, so it can be deleted)."""
    request: dict[str, Any] = {"op": "cursors", "delete": delete}
    response = await ask(config, request)
    if response is not None:
        return response
    store = SQLiteStore(config.store_path)
    try:
        if delete is not None:
            return {"ok": True, "deleted": store.delete_cursor(check_cursor_name(delete))}
        end = store.inbox_end()
        return {
            "ok": True,
            "cursors": [
                {"name": n, "position": p, "unread": max(0, end - p)}
                for n, p in store.cursors().items()
            ],
        }
    finally:
        store.close()
