"""``mvds-node``: the command line.

Every command works on one data directory (``--dir``, else ``$MVDS_NODE_HOME``, else the
platform's data directory). ``run`` keeps a node online; the other commands talk to that node
through its control socket when it runs, and otherwise open the store themselves, so ``send``
works offline too (the message goes out when the node next runs). Output is for people by
default; ``--json`` prints one JSON document (or, for ``run``, one per line) for scripts. Errors
are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from mvds_node.errors import ConfigError, MvdsError
from mvds_node.node._bundles import ExportResult, ImportResult
from mvds_node.node._config import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    default_data_dir,
    group_id_for,
    load_config,
    parse_address,
    save_config,
)
from mvds_node.node._control import ControlUnavailable, b64, call, serve_control, unb64
from mvds_node.node._events import (
    LogUploaded,
    StoreFailed,
    StoreRecovered,
    TransportFailed,
    TransportRestored,
    event_to_json,
)
from mvds_node.node._identity import create_identity, load_identity
from mvds_node.node._node import Node, open_node, wall_ms
from mvds_node.node._subscribers import Message
from mvds_node.sim._cli import add_parser as add_sim_parser
from mvds_node.sync import MessageAcked, MessageDelivered, Mode, SQLiteStore
from mvds_node.transports import InputRejected

__all__ = ["main"]

PROG = "mvds-node"


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _short(key: bytes) -> str:
    return key.hex()[:12]


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or forced)."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        percent = done * 100 // total
        if percent == self._last and done != total:
            return
        self._last = percent
        filled = percent * 30 // 100
        bar = "#" * filled + "." * (30 - filled)
        end = "\n" if done >= total else ""
        print(f"\r{self.label} [{bar}] {percent:3d}% {done}/{total}", end=end, file=sys.stderr)
        sys.stderr.flush()


# --------------------------------------------------------------------------- helpers


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else default_data_dir()


def _emit(args: argparse.Namespace, document: dict[str, Any], human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(document))
    else:
        human()


def _message_json(m: Message) -> dict[str, Any]:
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


class _Offline:
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


async def _request(config: NodeConfig, request: dict[str, Any]) -> dict[str, Any] | None:
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


def control_handler(node: Node) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """What a running node answers on its control socket."""

    async def handle(request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
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
            return {"ok": True, "result": _export_json(result)}
        if op == "import":
            path = request.get("path")
            if not isinstance(path, str):
                raise ValueError("import needs a path")
            return {"ok": True, "result": _import_json(node.import_bundle(path))}
        raise ValueError(f"unknown op {op!r}")

    return handle


# --------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> None:
    directory = _data_dir(args)
    if (directory / "config.toml").exists():
        _fail(f"{directory} already holds a node (config.toml exists)")
    # The directory holds the key and every message: only its owner may enter it.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity = create_identity(directory / "identity.key")
    listen = parse_address(args.listen, where="--listen") if args.listen else None
    groups = tuple(GroupConfig(name=g, id=group_id_for(g)) for g in args.group)
    config = NodeConfig(data_dir=directory, name=args.name, listen=listen, groups=groups)
    save_config(config)
    _emit(
        args,
        {"dir": str(directory), "key": identity.public_key.hex(), "name": args.name},
        lambda: print(
            f"Created a node in {directory}\n"
            f"  key:    {identity.public_key.hex()}\n"
            f"  config: {config.config_path}\n"
            "Tell your peers the key, add theirs with `mvds-node peers add`, then "
            "`mvds-node run`."
        ),
    )


def cmd_key(args: argparse.Namespace) -> None:
    directory = _data_dir(args)
    identity = load_identity(directory / "identity.key")
    key, log_key = identity.public_key.hex(), identity.signing_public_key.hex()
    document = {"key": key, "log_key": log_key}
    shown = log_key if args.log else key
    if args.ipns:
        from mvds_node.remotelog._ipfs import IpfsBackend

        url = load_config(directory).remote_log.url
        if not url.startswith("ipfs://"):
            _fail("--ipns needs an ipfs:// remote log in config.toml")

        async def own() -> str:
            backend = IpfsBackend(url)
            try:
                return await backend.own_ipns_id(log_key)
            finally:
                await backend.aclose_connection()

        shown = document["ipns"] = trio.run(own)
    _emit(args, document, lambda: print(shown))


def cmd_peers(args: argparse.Namespace) -> None:
    config = load_config(_data_dir(args))
    if args.peers_command == "add":
        key = _parse_key(args.key)
        address = parse_address(args.address, where="--address") if args.address else None
        log_key = _parse_key(args.log_key) if args.log_key else None
        config = config.with_peer(
            PeerConfig(key=key, name=args.name, address=address, log_key=log_key, ipns=args.ipns)
        )
        for name in args.group:
            group = _group_or_new(config, name)
            config = config.with_group(
                GroupConfig(
                    group.name,
                    group.id,
                    tuple(dict.fromkeys((*group.members, key))),
                    group.mode,
                    group.secret,
                )
            )
        save_config(config)
        print(f"added peer {args.name or _short(key)}" if not args.json else json.dumps({}))
        return
    if args.peers_command == "remove":
        peer = config.peer(args.key)
        config = dataclasses.replace(
            config,
            peers=tuple(p for p in config.peers if p.key != peer.key),
            groups=tuple(
                dataclasses.replace(g, members=tuple(m for m in g.members if m != peer.key))
                for g in config.groups
            ),
        )
        save_config(config)
        print(f"removed peer {peer.name or _short(peer.key)}" if not args.json else "{}")
        return
    status = trio.run(_status, config)
    peers = status["peers"]
    if args.json:
        print(json.dumps(peers))
        return
    if not peers:
        print("no peers (add one with `mvds-node peers add KEY --address HOST:PORT`)")
    for p in peers:
        state = "connected" if p["connected"] else ("offline" if status["running"] else "-")
        print(
            f"{p['name'] or '-':12} {p['key'][:16]}  {state:9}  pending {p['pending']:5}"
            f"  {p['address'] or ''}"
        )


def _parse_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        _fail(f"{text!r} is not a hex key")
    if len(key) != 32:
        _fail(f"a key is 64 hex digits, got {len(text)}")
    return key


def _group_or_new(config: NodeConfig, name: str) -> GroupConfig:
    try:
        return config.group(name)
    except ConfigError:
        return GroupConfig(name=name, id=group_id_for(name))


def cmd_groups(args: argparse.Namespace) -> None:
    config = load_config(_data_dir(args))
    if args.groups_command == "add":
        group = _group_or_new(config, args.name)
        secret = group.secret
        if args.secret == "new":
            secret = secrets.token_bytes(32)
        elif args.secret:
            secret = _parse_key(args.secret)
        members = list(group.members)
        for m in args.member:
            members.append(config.peer(m).key)
        group = GroupConfig(
            group.name,
            group.id,
            tuple(dict.fromkeys(members)),
            Mode(args.mode) if args.mode else group.mode,
            secret,
        )
        save_config(config.with_group(group))
        print(f"group {group.name}: {len(group.members)} members" if not args.json else "{}")
        return
    document = [
        {
            "name": g.name,
            "id": g.id.hex(),
            "mode": g.mode.value,
            "members": [m.hex() for m in g.members],
            "secret": g.secret is not None,
        }
        for g in config.groups
    ]
    if args.json:
        print(json.dumps(document))
        return
    for g in config.groups:
        print(f"{g.name:12} {g.mode.value:11} {len(g.members)} members  id {g.id.hex()[:16]}")


async def _status(config: NodeConfig) -> dict[str, Any]:
    response = await _request(config, {"op": "status"})
    if response is not None:
        status: dict[str, Any] = response["status"]
        status["running"] = True
        return status
    offline = _Offline(config)
    try:
        status = offline.node().status().to_json()
    finally:
        offline.close()
    status["running"] = False
    return status


def cmd_status(args: argparse.Namespace) -> None:
    config = load_config(_data_dir(args))
    status = trio.run(_status, config)
    if args.json:
        print(json.dumps(status))
        return
    state = "running" if status["running"] else "not running"
    names = {p.key.hex(): p.name for p in config.peers if p.name}
    print(f"node {status['name'] or '-'} ({state})")
    print(f"  key       {status['key']}")
    if status["listening"]:
        print(f"  listening {', '.join(status['listening'])}")
    for down in status.get("carriers_down", []):
        print(f"  down      {down}")
    if status.get("store_error"):
        print(f"  store     refuses writes: {status['store_error']}")
    print(f"  messages  {status['messages_stored']} stored")
    for g in status["groups"]:
        print(f"  group     {g['name']} ({g['mode']}, {len(g['members'])} members)")
    for p in status["peers"]:
        up = "connected" if p["connected"] else "not connected"
        print(f"  peer      {p['name'] or p['key'][:16]}: {up}, {p['pending']} pending")
    for log in status.get("logs", []):
        whose = "ours" if log["mine"] else (names.get(log["peer"]) or log["peer"][:16])
        state = f"error: {log['error']}" if log["error"] else "ok"
        extra = (
            f"{log['queued']} queued"
            if log["mine"]
            else f"{log['fetched']} fetched, {log['behind']} behind at the last poll"
        )
        print(f"  log       {whose} ({log['group']}): sequence {log['seq']}, {extra}, {state}")
    e = status["engine"]
    print(
        f"  traffic   {e['payloads_sent']} payloads out ({e['bytes_sent']} B), "
        f"{e['payloads_received']} in ({e['bytes_received']} B), "
        f"{e['messages_delivered']} delivered"
    )


def _body(args: argparse.Namespace) -> bytes:
    if args.text == "-":
        return sys.stdin.buffer.read()
    return str(args.text).encode()


async def _send_lines(config: NodeConfig, group: str, bodies: list[bytes]) -> tuple[int, bool]:
    response = await _request(
        config, {"op": "send_many", "group": group, "bodies_b64": [b64(b) for b in bodies]}
    )
    if response is not None:
        return len(response["ids"]), True
    offline = _Offline(config)
    try:
        ids = await offline.node().send_many(group, bodies)
    finally:
        offline.close()
    return len(ids), False


async def _send(config: NodeConfig, args: argparse.Namespace, body: bytes) -> tuple[str, bool]:
    expires_at = wall_ms() + int(args.expires_in * 1000) if args.expires_in else 0
    response = await _request(
        config,
        {
            "op": "send",
            "group": args.group,
            "body_b64": b64(body),
            "ephemeral": args.ephemeral,
            "expires_at": expires_at,
        },
    )
    if response is not None:
        return str(response["id"]), True
    if args.ephemeral:
        raise MvdsError("ephemeral messages need a running node (they are never stored)")
    offline = _Offline(config)
    try:
        mid = await offline.node().send(args.group, body, expires_at=expires_at)
    finally:
        offline.close()
    return mid.hex(), False


def cmd_send(args: argparse.Namespace) -> None:
    config = load_config(_data_dir(args))
    body = _body(args)
    if args.lines:
        if args.ephemeral or args.expires_in:
            _fail("--lines sends durable messages; it takes no --ephemeral or --expires-in")
        bodies = [line for line in body.splitlines() if line.strip()]
        count, online = trio.run(_send_lines, config, args.group, bodies)
        _emit(
            args,
            {"sent": count, "queued_offline": not online},
            lambda: print(
                f"sent {count} messages"
                + ("" if online else " (node not running: they go out when you `mvds-node run`)")
            ),
        )
        return
    mid, online = trio.run(_send, config, args, body)
    _emit(
        args,
        {"id": mid, "queued_offline": not online},
        lambda: print(
            (f"sent {mid[:16]}" if mid else "sent (ephemeral)")
            + ("" if online else " (node not running: it goes out when you `mvds-node run`)")
        ),
    )


def _export_json(r: ExportResult) -> dict[str, Any]:
    return {
        "path": str(r.path),
        "bytes": r.bytes,
        "messages": r.messages,
        "acks": r.acks,
        "requests": r.requests,
        "prerequisites": r.prerequisites,
    }


def _import_json(r: ImportResult) -> dict[str, Any]:
    return {
        "sender": r.sender.hex(),
        "sender_proved": r.sender_proved,
        "messages_new": r.messages_new,
        "messages_known": r.messages_known,
        "acks": r.acks,
        "missing_prerequisites": r.missing_prerequisites,
    }


async def _bundle_op(config: NodeConfig, request: dict[str, Any], show: bool) -> dict[str, Any]:
    response = await _request(config, request)
    if response is not None:
        result: dict[str, Any] = response["result"]
        return result
    offline = _Offline(config)
    try:
        node = offline.node()
        bar = Progress("export" if request["op"] == "export" else "verify", enabled=show)
        if request["op"] == "export":
            return _export_json(
                node.export_bundle(
                    request["path"],
                    peer=request.get("peer"),
                    group=request.get("group"),
                    progress=bar,
                )
            )
        return _import_json(
            node.import_bundle(
                request["path"], progress=bar, apply_progress=Progress("apply", enabled=show)
            )
        )
    finally:
        offline.close()


def cmd_export(args: argparse.Namespace) -> None:
    config = load_config(_data_dir(args))
    if (args.peer is None) == (args.group is None):
        _fail("say who the bundle is for: --peer NAME|KEY or --group NAME")
    request = {
        "op": "export",
        "path": str(Path(args.file).resolve()),
        "peer": args.peer,
        "group": args.group,
    }
    result = trio.run(_bundle_op, config, request, sys.stderr.isatty() or args.progress)
    _emit(
        args,
        result,
        lambda: print(
            f"wrote {result['path']}: {result['messages']} messages, {result['acks']} acks, "
            f"{result['bytes']} bytes"
            + (
                f" ({result['prerequisites']} earlier messages the reader must already have)"
                if result["prerequisites"]
                else ""
            )
        ),
    )


def cmd_import(args: argparse.Namespace) -> None:
    config = load_config(_data_dir(args))
    request = {"op": "import", "path": str(Path(args.file).resolve())}
    result = trio.run(_bundle_op, config, request, sys.stderr.isatty() or args.progress)
    names = {p.key.hex(): p.name for p in config.peers if p.name}
    sender = names.get(result["sender"]) or result["sender"][:16]
    _emit(
        args,
        result,
        lambda: print(
            f"imported from {sender}: {result['messages_new']} new messages, "
            f"{result['messages_known']} already here, {result['acks']} acks"
            + (
                f"; {result['missing_prerequisites']} earlier messages are still missing "
                "(they come at the next sync with the sender)"
                if result["missing_prerequisites"]
                else ""
            )
        ),
    )


async def _run(config: NodeConfig, args: argparse.Namespace) -> None:
    # Output goes through an async stream: a reader that is slow to take our stdout (a full
    # pipe) then slows only the printing tasks, never the node itself.
    sys.stdout.flush()
    out = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    out_lock = trio.Lock()

    async def show(document: dict[str, Any], human: str) -> None:
        line = (json.dumps(document) if args.json else human) + "\n"
        async with out_lock:
            await out.send_all(line.encode())

    names = {p.key: p.name for p in config.peers if p.name}

    def who(key: bytes | None) -> str:
        return "?" if key is None else names.get(key) or _short(key)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with out, open_node(config) as node, trio.open_nursery() as nursery:
            await nursery.start(serve_control, config.control_path, control_handler(node))

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            async def print_messages() -> None:
                async with node.messages() as inbox:
                    async for m in inbox:
                        text = m.body.decode(errors="replace")
                        tag = " (ephemeral)" if m.ephemeral else ""
                        await show(_message_json(m), f"[{m.group}] {who(m.sender)}: {text}{tag}")

            async def print_events() -> None:
                async with node.events() as events:
                    async for event in events:
                        if isinstance(event, MessageDelivered):
                            continue
                        doc = event_to_json(event)
                        if isinstance(event, (MessageAcked, LogUploaded)) and not args.verbose:
                            continue
                        peer = getattr(event, "peer", None)
                        human = f"* {doc['type']} {who(peer)}"
                        if isinstance(event, InputRejected):
                            human += f": {event.reason} ({event.detail})"
                        elif isinstance(event, StoreFailed):
                            human = f"* store-failed: {event.reason}"
                        elif isinstance(event, StoreRecovered):
                            human = f"* store-recovered {event.path}"
                        elif isinstance(event, (TransportFailed, TransportRestored)):
                            human = f"* {doc['type']} {doc['transport']}"
                            if isinstance(event, TransportFailed):
                                human += f": {event.detail}"
                        elif isinstance(event, LogUploaded):
                            human = (
                                f"* log-uploaded [{event.group}] {event.messages} messages "
                                f"(head {event.seq}, {event.queued} queued)"
                            )
                        await show(doc, human)

            async def chat(group: str) -> None:
                stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
                buf = b""
                async with stream:
                    while True:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buf += chunk
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            if line.strip():
                                await node.send(group, line)

            nursery.start_soon(stop_on_signal)
            nursery.start_soon(print_messages)
            nursery.start_soon(print_events)
            if args.chat:
                node.group(args.chat)  # fail early on a typo
                nursery.start_soon(chat, args.chat)
            status = node.status()
            await show(
                {
                    "type": "started",
                    "key": status.key.hex(),
                    "listening": list(status.listening),
                },
                f"node {config.name or '-'} {status.key.hex()[:16]} listening on "
                f"{', '.join(status.listening) or '(nothing: dial-only)'}; Ctrl-C stops",
            )


def cmd_run(args: argparse.Namespace) -> None:
    config = load_config(_data_dir(args))
    if args.listen:
        config = dataclasses.replace(config, listen=parse_address(args.listen, where="--listen"))
    trio.run(_run, config, args)


def cmd_log(args: argparse.Namespace) -> None:
    from mvds_node.node._remotelog import backend_for
    from mvds_node.remotelog._archive import export_log, import_log

    config = load_config(_data_dir(args))
    if not config.remote_log.url:
        _fail("no remote log configured: set [remote_log] url in config.toml")
    backend = backend_for(config.remote_log.url)
    if args.log_command == "export":
        group = config.group(args.group) if args.group else (config.groups or [None])[0]
        if group is None:
            _fail("no group to export a log of")
        if args.writer:
            peer = config.peer(args.writer)
            if peer.log_key is None:
                _fail(f"no log key known for {args.writer} (peers add --log-key)")
            writer = peer.log_key
        else:
            writer = load_identity(config.identity_path).signing_public_key
        result = trio.run(
            functools.partial(export_log, group_key=group.secret),
            backend,
            writer,
            group.id,
            Path(args.file),
        )
        what = f"wrote {args.file}: log {result.name}, sequence {result.seq}"
    else:
        keys = [g.secret for g in config.groups if g.secret is not None]
        result = trio.run(functools.partial(import_log, group_keys=keys), backend, Path(args.file))
        what = f"loaded {args.file}: log {result.name}, sequence {result.seq}"
    _emit(
        args,
        {"name": result.name, "seq": result.seq, "objects": result.objects, "bytes": result.bytes},
        lambda: print(f"{what}, {result.objects} objects, {result.bytes} bytes"),
    )


def cmd_helper(args: argparse.Namespace) -> None:
    from mvds_node.remotelog._helper import HelperLimits, serve_helper

    host, port = parse_address(args.listen, where="--listen")
    limits = HelperLimits(
        requests_per_second=args.rate,
        burst=args.burst if args.burst is not None else max(1, int(args.rate * 2)),
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        idle_timeout=args.idle_timeout,
        max_names_per_address=args.max_names_per_address,
        max_bytes_per_address=args.max_bytes_per_address,
        max_body_bytes_in_flight=args.max_body_bytes_in_flight,
        max_body_bytes_in_flight_per_address=args.max_body_bytes_in_flight_per_address,
    )

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    functools.partial(serve_helper, args.dir_store, host, port, limits=limits)
                )
                bound = listeners[0].socket.getsockname()
                print(
                    f"helper serving {args.dir_store} on http://{bound[0]}:{bound[1]}", flush=True
                )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    trio.run(run)


# --------------------------------------------------------------------------- parser


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` above zero."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be above zero: {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from mvds_node.remotelog._helper import HelperLimits as HelperDefaults

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Reliable sync of messages between devices that are offline most of the time. "
            "Start with `mvds-node init`, exchange keys with `mvds-node key`, add peers and "
            "groups, then `mvds-node run`."
        ),
        epilog=(
            "Data directory: --dir, else $MVDS_NODE_HOME, else the platform's data directory. "
            "Run `mvds-node COMMAND --help` for a command's options."
        ),
    )
    parser.add_argument("--dir", help="the node's data directory")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create a node: key file and config.toml")
    p.add_argument("--name", default="", help="a human name for this node")
    p.add_argument(
        "--listen", default="0.0.0.0:7700", help='TCP address (default 0.0.0.0:7700; "" = none)'
    )
    p.add_argument("--group", action="append", default=[], help="create a group (repeatable)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("key", help="print this node's public key (give it to your peers)")
    p.add_argument(
        "--log", action="store_true", help="print the key that signs our remote log instead"
    )
    p.add_argument(
        "--ipns", action="store_true", help="print our IPNS id (ipfs:// remote log) instead"
    )
    p.set_defaults(func=cmd_key)

    p = sub.add_parser("run", help="run the node: sync, print messages and events")
    p.add_argument("--chat", metavar="GROUP", help="also send each line of stdin to GROUP")
    p.add_argument("--listen", help="override node.listen for this run (host:port)")
    p.add_argument("--verbose", "-v", action="store_true", help="show acks too")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("send", help="send a message to a group (works offline too)")
    p.add_argument("group", help="group name")
    p.add_argument("text", help='the message; "-" reads it from stdin')
    p.add_argument("--ephemeral", action="store_true", help="never stored (needs a running node)")
    p.add_argument("--expires-in", type=float, metavar="SECONDS", help="delete everywhere after")
    p.add_argument(
        "--lines", action="store_true", help="send each non-empty line as its own message"
    )
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("peers", help="list, add or remove peers")
    psub = p.add_subparsers(dest="peers_command", metavar="ACTION")
    a = psub.add_parser("add", help="add a peer by key")
    a.add_argument("key", help="the peer's key (64 hex digits, from `mvds-node key`)")
    a.add_argument("--name", default="", help="a human name")
    a.add_argument("--address", help="host:port to dial it at")
    a.add_argument("--log-key", help="its remote-log key (`mvds-node key --log` on its side)")
    a.add_argument("--ipns", default="", help="its IPNS id (`mvds-node key --ipns` on its side)")
    a.add_argument("--group", action="append", default=[], help="add it to GROUP (repeatable)")
    r = psub.add_parser("remove", help="forget a peer")
    r.add_argument("key", help="its key, key prefix or name")
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser("groups", help="list or add groups")
    gsub = p.add_subparsers(dest="groups_command", metavar="ACTION")
    a = gsub.add_parser("add", help="create or change a group")
    a.add_argument("name")
    a.add_argument("--member", action="append", default=[], help="peer name or key (repeatable)")
    a.add_argument("--mode", choices=["batch", "interactive"])
    a.add_argument("--secret", help='64 hex digits, or "new" to generate one')
    p.set_defaults(func=cmd_groups)

    p = sub.add_parser("status", help="show identity, groups, peers and counters")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "export", help="write a bundle file with what a peer or group still needs (sneakernet)"
    )
    p.add_argument("file", help="the bundle file to write")
    p.add_argument("--peer", help="the peer it is for (name or key); sealed to its key")
    p.add_argument("--group", help="or the group it is for; sealed with the group's secret")
    p.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("log", help="carry a remote log by hand: export or import it as one file")
    lsub = p.add_subparsers(dest="log_command", metavar="ACTION", required=True)
    e = lsub.add_parser("export", help="write a log (pages and content) from our backend")
    e.add_argument("file")
    e.add_argument("--group", help="the group (default: the first)")
    e.add_argument("--writer", help="a peer whose log to export (default: ours)")
    i = lsub.add_parser("import", help="check a log file and load it into our backend")
    i.add_argument("file")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("helper", help="run the HTTP helper that stores remote logs")
    hsub = p.add_subparsers(dest="helper_command", metavar="ACTION", required=True)
    h = hsub.add_parser("serve", help="serve the Twirp CAS and NS routes over HTTP")
    h.add_argument("dir_store", metavar="DIR", help="where to store logs")
    h.add_argument("--listen", default="127.0.0.1:8001", help="host:port (default 127.0.0.1:8001)")
    d = HelperDefaults()
    h.add_argument(
        "--rate",
        type=_positive(float),
        default=d.requests_per_second,
        help=f"requests/s per client address (default {d.requests_per_second:g})",
    )
    h.add_argument(
        "--burst", type=_positive(int), help="requests at once per address (default 2 x rate)"
    )
    h.add_argument(
        "--max-connections",
        type=_positive(int),
        default=d.max_connections,
        help=f"open connections in all (default {d.max_connections})",
    )
    h.add_argument(
        "--max-connections-per-address",
        type=_positive(int),
        default=d.max_connections_per_address,
        help=f"open connections per client address (default {d.max_connections_per_address})",
    )
    h.add_argument(
        "--idle-timeout",
        type=_positive(float),
        default=d.idle_timeout,
        help=f"seconds a connection may wait between requests (default {d.idle_timeout:g})",
    )
    h.add_argument(
        "--max-names-per-address",
        type=_positive(int),
        default=d.max_names_per_address,
        help=f"names one address may create per run (default {d.max_names_per_address})",
    )
    h.add_argument(
        "--max-bytes-per-address",
        type=_positive(int),
        default=d.max_bytes_per_address,
        help=f"bytes one address may store per run (default {d.max_bytes_per_address})",
    )
    h.add_argument(
        "--max-body-bytes-in-flight",
        type=_positive(int),
        default=d.max_body_bytes_in_flight,
        help=f"request body bytes held at once (default {d.max_body_bytes_in_flight})",
    )
    h.add_argument(
        "--max-body-bytes-in-flight-per-address",
        type=_positive(int),
        default=d.max_body_bytes_in_flight_per_address,
        help="request body bytes held at once per address "
        f"(default {d.max_body_bytes_in_flight_per_address})",
    )
    h.set_defaults(func=cmd_helper)

    p = sub.add_parser("import", help="verify a bundle file and apply it")
    p.add_argument("file", help="the bundle file to read")
    p.add_argument("--progress", action="store_true", help="progress bar even when not a tty")
    p.set_defaults(func=cmd_import)

    add_sim_parser(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "peers" and args.peers_command is None:
        args.peers_command = "list"
    if args.command == "groups" and args.groups_command is None:
        args.groups_command = "list"
    try:
        args.func(args)
    except MvdsError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except OSError as e:
        _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}")
    except BaseExceptionGroup as group:
        leaves = [e for e in _leaves(group)]
        first = leaves[0] if leaves else group
        if isinstance(first, (MvdsError, OSError)):
            _fail(str(first))
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


if __name__ == "__main__":
    main()
