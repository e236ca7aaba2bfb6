"""The commands that create a node, show it, send, and carry data by hand (bundles, logs).

Each command parses its options, builds what it needs from the configuration, and hands the work
to the node (running, through its control socket, or opened here: ``_local.py``), the bundle
code or the remote-log archive; what it prints goes through ``Output``.
"""

from __future__ import annotations

import functools
import signal
import sys
from pathlib import Path
from typing import Any

import click
import trio

from mvds_node._address import format_address
from mvds_node.errors import MvdsError
from mvds_node.node._config import (
    GroupConfig,
    NodeConfig,
    group_id_for,
    parse_address,
    save_config,
)
from mvds_node.node._identity import create_identity, load_identity
from mvds_node.node._node import wall_ms
from mvds_node.node.cli._app import State, common_options, error_kind, fail, pass_state, root
from mvds_node.node.cli._complete import complete_group, complete_peer
from mvds_node.node.cli._local import bundle_op, node_status, node_trace, send_lines, send_one
from mvds_node.node.cli._output import Failure, plural

__all__ = ["about_file"]


def about_file(path: Path | str, error: MvdsError) -> Failure:
    """``error`` as a failure that names ``path`` (the file it is about), once."""
    message = str(error)
    if str(path) not in message:
        message = f"{path}: {message}"
    return Failure(message, kind=error_kind(error), file=str(path))


def _refuse_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        fail(f"{path} exists; give --force to overwrite it", kind="exists", file=str(path))


# --------------------------------------------------------------------------- init, key


@root.command()
@click.option("--name", default="", help="A human name for this node.")
@click.option(
    "--listen",
    default="0.0.0.0:7700",
    show_default=True,
    help='TCP address to accept peers on; "" to only dial out.',
)
@click.option("--group", multiple=True, metavar="NAME", help="Create a group (repeatable).")
@common_options
@pass_state
def init(state: State, name: str, listen: str, group: tuple[str, ...]) -> None:
    """Create a node: its key file and config.toml."""
    directory = state.data_dir
    if (directory / "config.toml").exists():
        fail(f"{directory} already holds a node (config.toml exists)", file=str(directory))
    listen_at = parse_address(listen, where="--listen") if listen else None
    # The directory holds the key and every message: only its owner may enter it.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity = create_identity(directory / "identity.key")
    groups = tuple(GroupConfig(name=g, id=group_id_for(g)) for g in dict.fromkeys(group))
    config = NodeConfig(data_dir=directory, name=name, listen=listen_at, groups=groups)
    save_config(config)
    key = identity.public_key.hex()
    out = state.output
    if out.json:
        out.document({"dir": str(directory), "key": key, "name": name})
        return
    out.line("Created a node in ", (str(directory), "bold"))
    out.line("  key:    ", (key, "green"))
    out.line(f"  config: {config.config_path}")
    out.line(
        "Tell your peers the key, add theirs with `mvds-node peers add`, then `mvds-node run`."
    )


@root.command()
@click.option("--log", is_flag=True, help="Print the key that signs our remote log instead.")
@click.option("--ipns", is_flag=True, help="Print our IPNS id (ipfs:// remote log) instead.")
@common_options
@pass_state
def key(state: State, log: bool, ipns: bool) -> None:
    """Print this node's public key (give it to your peers)."""
    identity = load_identity(state.data_dir / "identity.key")
    public, log_key = identity.public_key.hex(), identity.signing_public_key.hex()
    document = {"key": public, "log_key": log_key}
    shown = log_key if log else public
    if ipns:
        from mvds_node.node._remotelog import backend_for, credentials_from
        from mvds_node.remotelog import IpfsBackend

        remote_log = state.config().remote_log
        if not remote_log.url.startswith(("ipfs://", "ipfs+https://")):
            fail("--ipns needs an ipfs:// remote log (mvds-node config set remote_log.url ...)")
        backend = backend_for(remote_log.url, credentials=credentials_from(remote_log))
        assert isinstance(backend, IpfsBackend)

        async def own() -> str:
            try:
                return await backend.own_ipns_id(log_key)
            finally:
                await backend.aclose_connection()

        shown = document["ipns"] = trio.run(own)
    state.output.show(document, shown)


# --------------------------------------------------------------------------- status


@root.command()
@common_options
@pass_state
def status(state: State) -> None:
    """Show identity, groups, peers, what is pending, counters."""
    config = state.config()
    doc = trio.run(node_status, config)
    out = state.output
    if out.json:
        out.document(doc)
        return
    running = ("running", "green") if doc["running"] else ("not running", "yellow")
    names = {p.key.hex(): p.name for p in config.peers if p.name}
    out.line(("node ", "bold"), (doc["name"] or "-", "bold"), " (", running, ")")
    out.line(f"  key       {doc['key']}")
    if doc["listening"]:
        out.line(f"  listening {', '.join(doc['listening'])}")
    for down in doc.get("carriers_down", []):
        out.line("  down      ", (down, "red"))
    if doc.get("store_error"):
        out.line("  store     ", (f"refuses writes: {doc['store_error']}", "red"))
    out.line(f"  messages  {doc['messages_stored']} stored")
    for c in doc.get("cursors", []):
        out.line(f"  cursor    {c['name']}: {c['unread']} unread")
    if doc.get("live_messages_dropped"):
        out.line(
            "  live      ",
            (f"{doc['live_messages_dropped']} messages missed by full live subscribers", "yellow"),
        )
    for g in doc["groups"]:
        out.line(f"  group     {g['name']} ({g['mode']}, {plural(len(g['members']), 'member')})")
        if g.get("lacking"):
            asked = ", ".join(
                f"{w['message_id'][:16]} from {_names(names, w['on'])}"
                for w in g.get("lacking_ids", [])[:3]
            )
            out.line(
                f"            {g['lacking']} known but lacking", f" ({asked})" if asked else ""
            )
        if g.get("held"):
            held = ", ".join(
                f"{w['message_id'][:16]} waits for {_short(w['on'])}"
                for w in g.get("held_ids", [])[:3]
            )
            out.line(
                (f"            {g['held']} held for a missing parent", "yellow"),
                f" ({held})" if held else "",
            )
        if g.get("log_behind") or g.get("log_queued"):
            out.line(
                f"            remote log: {g.get('log_behind', 0)} behind, "
                f"{g.get('log_queued', 0)} to upload"
            )
    now = wall_ms()
    for p in doc["peers"]:
        up = ("connected", "green") if p["connected"] else ("not connected", "dim")
        pending = f", {p['pending']} pending"
        if p.get("pending_bytes"):
            about = "" if p.get("pending_bytes_exact", True) else "about "
            pending += f" ({about}{_bytes(p['pending_bytes'])} to go)"
        if p.get("requested"):
            pending += f", {p['requested']} asked of it"
        out.line(f"  peer      {p['name'] or p['key'][:16]}: ", up, pending)
        for c in p.get("contacts", []):
            out.line(
                f"            {c['carrier']}: sent {_ago(c['sent_ms'], now)}, "
                f"heard {_ago(c['received_ms'], now)}"
            )
    for log in doc.get("logs", []):
        whose = "ours" if log["mine"] else (names.get(log["peer"]) or log["peer"][:16])
        state_text = (f"error: {log['error']}", "red") if log["error"] else ("ok", "green")
        extra = (
            f"{log['queued']} queued"
            if log["mine"]
            else f"{log['fetched']} fetched, {log['behind']} behind at the last poll"
        )
        out.line(
            f"  log       {whose} ({log['group']}): sequence {log['seq']}, {extra}, ", state_text
        )
    e = doc["engine"]
    out.line(
        f"  traffic   {e['payloads_sent']} payloads out ({e['bytes_sent']} B), "
        f"{e['payloads_received']} in ({e['bytes_received']} B), "
        f"{e['messages_delivered']} delivered"
    )


def _ago(ms: int, now: int) -> str:
    """``ms`` (Unix ms) relative to ``now``, for people: "never", "3 s ago", "in 4 s"."""
    if not ms:
        return "never"
    delta = (ms - now) / 1000
    span = abs(delta)
    text = (
        f"{span:.0f} s"
        if span < 120
        else f"{span / 60:.0f} min"
        if span < 7200
        else f"{span / 3600:.0f} h"
        if span < 172800
        else f"{span / 86400:.0f} days"
    )
    return f"in {text}" if delta > 0.5 else "now" if delta > -0.5 else f"{text} ago"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _short(keys: list[str]) -> str:
    return ", ".join(k[:16] for k in keys) or "nobody"


def _names(names: dict[str, str], keys: list[str]) -> str:
    return ", ".join(names.get(k) or k[:16] for k in keys) or "nobody"


# --------------------------------------------------------------------------- trace


@root.command()
@click.argument("message_id", metavar="ID")
@common_options
@pass_state
def trace(state: State, message_id: str) -> None:
    """Show where a message is: stored, sent, acked.

    Every fact the node holds about it: stored when, held or not, parents missing; per peer
    offered, sent or requested (how often, over which carrier, next retry, given up) or
    acknowledged (when, how); our remote log's head sequence; expiry.

    ID is the message ID in hex, or its first digits (at least 8) as `send` shows them."""
    config = state.config()
    try:
        doc = trio.run(node_trace, config, message_id)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="ID") from None
    out = state.output
    if out.json:
        out.document(doc)
        return
    names = {p.key.hex(): p.name for p in config.peers if p.name}
    now = doc["taken_ms"]
    running = ("running", "green") if doc["running"] else ("not running", "yellow")
    out.line(("message ", "bold"), (doc["message_id"], "bold"), " (node ", running, ")")
    if not doc["known"]:
        out.line(("  unknown   ", "yellow"), "this node holds nothing about it")
        return
    if doc["group"]:
        out.line(f"  group     {doc['group']}")
    if doc["stored"]:
        when = _ago(doc["stored_ms"], now) if doc["stored_ms"] else "before this was recorded"
        out.line(f"  stored    {when}")
    else:
        out.line(("  lacking   ", "yellow"), "not in the store")
    if doc["expires_ms"]:
        out.line(f"  expires   {_ago(doc['expires_ms'], now)}")
    if doc["held"]:
        out.line(("  held      ", "yellow"), "until its parents are delivered")
    for w in doc["parents_missing"]:
        out.line(
            ("  missing   ", "yellow"),
            f"parent {w['message_id'][:16]}, asked of ",
            _names(names, w["on"]),
        )
    if doc["waiting_children"]:
        out.line(f"  waited on by {plural(len(doc['waiting_children']), 'held message')}")
    if doc["log_seq"]:
        out.line(f"  log       in our remote log at head sequence {doc['log_seq']}")
    elif doc["log_queued"]:
        out.line("  log       waiting to be uploaded to our remote log")
    for p in doc["peers"]:
        who = names.get(p["peer"]) or p["peer"][:16]
        if p["state"] == "acked":
            how = f" via {p['acked_via']}" if p["acked_via"] else ""
            when = _ago(p["acked_ms"], now) if p["acked_ms"] else "(time not known)"
            out.line(f"  peer      {who}: ", ("acked", "green"), f" {when}{how}")
            continue
        what = {"offering": "offered", "sending": "sent", "requesting": "requested"}[p["state"]]
        if p["transmissions"]:
            text = f" {plural(p['transmissions'], 'time')}"
            text += f", last over {p['carrier']}" if p["carrier"] else ""
        else:
            what, text = f"to be {what}", ""
        if p["queued"]:
            text += ", first transmission queued"
        if p["given_up"]:
            retry: tuple[str, str] | str = (", given up until it reconnects", "red")
        elif p["next_retry_ms"]:
            retry = f", next retry {_ago(p['next_retry_ms'], now)}"
        else:
            retry = ""
        out.line(f"  peer      {who}: ", (what, "yellow"), text, retry)


# --------------------------------------------------------------------------- send


@root.command()
@click.argument("group", shell_complete=complete_group)
@click.argument("text")
@click.option("--ephemeral", is_flag=True, help="Never stored (needs a running node).")
@click.option(
    "--expires-in",
    type=click.FloatRange(min=0, min_open=True, max=10 * 365 * 86400.0),
    metavar="SECONDS",
    help="Delete it everywhere after this many seconds.",
)
@click.option("--lines", is_flag=True, help="Send each non-empty line as its own message.")
@common_options
@pass_state
def send(
    state: State, group: str, text: str, ephemeral: bool, expires_in: float | None, lines: bool
) -> None:
    """Send a message to GROUP (works offline too).

    TEXT is the message; "-" reads it from stdin. With no node running, the message is stored
    and goes out when the node next runs.
    """
    config = state.config()
    config.group(group)  # a typo fails before stdin is read
    body = sys.stdin.buffer.read() if text == "-" else text.encode()
    out = state.output
    if lines:
        if ephemeral or expires_in:
            fail("--lines sends durable messages; it takes no --ephemeral or --expires-in")
        bodies = [line for line in body.splitlines() if line.strip()]
        if not bodies:
            fail("nothing to send: every line is empty", kind="usage")
        count, online = trio.run(send_lines, config, group, bodies)
        later = "" if online else " (node not running: they go out when you `mvds-node run`)"
        out.show(
            {"sent": count, "queued_offline": not online}, f"sent {plural(count, 'message')}{later}"
        )
        return
    if not body.strip():
        fail("the message is empty", kind="usage")
    expires_at = wall_ms() + int(expires_in * 1000) if expires_in else 0
    mid, online = trio.run(
        functools.partial(send_one, ephemeral=ephemeral, expires_at=expires_at), config, group, body
    )
    later = "" if online else " (node not running: it goes out when you `mvds-node run`)"
    out.show(
        {"id": mid, "queued_offline": not online},
        (f"sent {mid[:16]}" if mid else "sent (ephemeral)") + later,
    )


# --------------------------------------------------------------------------- bundles


@root.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--peer", shell_complete=complete_peer, help="The peer it is for; sealed to its key.")
@click.option(
    "--group", shell_complete=complete_group, help="Or the group it is for; sealed with its secret."
)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option("--progress", is_flag=True, help="Draw progress on stderr even when not a terminal.")
@common_options
@pass_state
def export_bundle(
    state: State, file: Path, peer: str | None, group: str | None, force: bool, progress: bool
) -> None:
    """Write a bundle for a peer or group (sneakernet).

    FILE gets what the peer or group still needs, sealed for it; it is never overwritten
    unless --force is given.
    """
    config = state.config()
    if (peer is None) == (group is None):
        fail("say who the bundle is for: --peer NAME|KEY or --group NAME", kind="usage")
    path = file.resolve()
    _refuse_overwrite(path, force)
    request = {"op": "export", "path": str(path), "peer": peer, "group": group}
    out = state.output
    bars = (out.progress("export", forced=progress), out.progress("", forced=progress))
    try:
        result = trio.run(bundle_op, config, request, bars)
    except MvdsError as e:
        raise about_file(path, e) from None
    before = result["prerequisites"]
    out.show(
        result,
        f"wrote {result['path']}: {plural(result['messages'], 'message')}, "
        f"{plural(result['acks'], 'ack')}, {result['bytes']} bytes"
        + (
            f" ({plural(before, 'earlier message')} the reader must already have)" if before else ""
        ),
    )


@root.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--progress", is_flag=True, help="Draw progress on stderr even when not a terminal.")
@common_options
@pass_state
def import_bundle(state: State, file: Path, progress: bool) -> None:
    """Verify a bundle FILE and apply it."""
    config = state.config()
    path = file.resolve()
    request = {"op": "import", "path": str(path)}
    out = state.output
    bars = (out.progress("verify", forced=progress), out.progress("apply", forced=progress))
    try:
        result = trio.run(bundle_op, config, request, bars)
    except MvdsError as e:
        raise about_file(path, e) from None
    names = {p.key.hex(): p.name for p in config.peers if p.name}
    sender = names.get(result["sender"]) or result["sender"][:16]
    missing = result["missing_prerequisites"]
    out.show(
        result,
        f"imported from {sender}: {plural(result['messages_new'], 'new message')}, "
        f"{result['messages_known']} already here, {plural(result['acks'], 'ack')}"
        + (
            f"; {plural(missing, 'earlier message')} "
            + ("is still missing (it comes" if missing == 1 else "are still missing (they come")
            + " at the next sync with the sender)"
            if missing
            else ""
        ),
    )


# --------------------------------------------------------------------------- remote log by hand


@root.group("log")
@common_options
def log_group() -> None:
    """Carry a remote log by hand, as one file."""


def _backend(config: NodeConfig) -> Any:
    from mvds_node.node._remotelog import backend_for, credentials_from

    if not config.remote_log.url:
        fail(
            "no remote log configured: `mvds-node config set remote_log.url URL` "
            f"(or [remote_log] url in {config.config_path})",
            kind="config",
            file=str(config.config_path),
        )
    return backend_for(config.remote_log.url, credentials=credentials_from(config.remote_log))


@log_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--group", shell_complete=complete_group, help="The group (default: the first).")
@click.option("--writer", shell_complete=complete_peer, help="A peer whose log to export.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@common_options
@pass_state
def log_export(
    state: State, file: Path, group: str | None, writer: str | None, force: bool
) -> None:
    """Write a log (pages and content) from our backend to FILE."""
    from mvds_node.remotelog import export_log

    config = state.config()
    backend = _backend(config)
    chosen = config.group(group) if group else (config.groups[0] if config.groups else None)
    if chosen is None:
        fail("no group to export a log of")
    if writer:
        peer = config.peer(writer)
        if peer.log_key is None:
            fail(f"no log key known for {writer} (mvds-node peers add KEY --log-key ...)")
        writer_key = peer.log_key
    else:
        writer_key = load_identity(config.identity_path).signing_public_key
    _refuse_overwrite(file, force)
    try:
        result = trio.run(
            functools.partial(export_log, group_key=chosen.secret),
            backend,
            writer_key,
            chosen.id,
            file,
        )
    except MvdsError as e:
        raise about_file(file, e) from None
    state.output.show(
        {"name": result.name, "seq": result.seq, "objects": result.objects, "bytes": result.bytes},
        f"wrote {file}: log {result.name}, sequence {result.seq}, "
        f"{plural(result.objects, 'object')}, {result.bytes} bytes",
    )


@log_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--progress", is_flag=True, help="Draw progress on stderr even when not a terminal.")
@common_options
@pass_state
def log_import(state: State, file: Path, progress: bool) -> None:
    """Check a log FILE and load it into our backend."""
    from mvds_node.remotelog import import_log

    config = state.config()
    backend = _backend(config)
    keys = [g.secret for g in config.groups if g.secret is not None]
    try:
        with state.output.progress("load", forced=progress) as bar:
            result = trio.run(
                functools.partial(import_log, group_keys=keys, progress=bar), backend, file
            )
    except MvdsError as e:
        raise about_file(file, e) from None
    state.output.show(
        {"name": result.name, "seq": result.seq, "objects": result.objects, "bytes": result.bytes},
        f"loaded {file}: log {result.name}, sequence {result.seq}, "
        f"{plural(result.objects, 'object')}, {result.bytes} bytes",
    )


# --------------------------------------------------------------------------- helper


@root.group("helper")
@common_options
def helper_group() -> None:
    """Run the HTTP helper that stores remote logs."""


def _above_zero(kind: type[int] | type[float]) -> click.ParamType[Any]:
    if kind is int:
        return click.IntRange(min=1)
    return click.FloatRange(min=0, min_open=True, max=float("inf"), max_open=True)


def _helper_options(f: Any) -> Any:
    from mvds_node.remotelog import HelperLimits

    d = HelperLimits()
    options = [
        ("--rate", float, d.requests_per_second, "requests/s per client address"),
        ("--burst", int, None, "requests at once per address (default 2 x rate)"),
        ("--max-connections", int, d.max_connections, "open connections in all"),
        (
            "--max-connections-per-address",
            int,
            d.max_connections_per_address,
            "open connections per client address",
        ),
        ("--idle-timeout", float, d.idle_timeout, "seconds a connection may wait between requests"),
        ("--max-names-per-address", int, d.max_names_per_address, "names one address may create"),
        ("--max-bytes-per-address", int, d.max_bytes_per_address, "bytes one address may store"),
        (
            "--max-body-bytes-in-flight",
            int,
            d.max_body_bytes_in_flight,
            "request body bytes held at once",
        ),
        (
            "--max-body-bytes-in-flight-per-address",
            int,
            d.max_body_bytes_in_flight_per_address,
            "request body bytes held at once per address",
        ),
        ("--max-names-per-token", int, d.max_names_per_token, "names one token may create"),
        ("--max-bytes-per-token", int, d.max_bytes_per_token, "bytes one token may store"),
    ]
    for flag, kind, value, text in reversed(options):
        f = click.option(
            flag, type=_above_zero(kind), default=value, show_default=value is not None, help=text
        )(f)
    return f


_FILE = click.Path(dir_okay=False, path_type=Path)


@helper_group.command("serve")
@click.argument("store", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--listen", default="127.0.0.1:8001", show_default=True, help="host:port")
@click.option("--cert", type=_FILE, help="Serve HTTPS with this certificate chain (PEM).")
@click.option("--key", type=_FILE, help="The certificate's private key (PEM).")
@click.option(
    "--tokens",
    type=_FILE,
    help="Bearer tokens requests need: lines 'write TOKEN' or 'read TOKEN'.",
)
@click.option("--public-reads", is_flag=True, help="With --tokens: reads need no token.")
@_helper_options
@common_options
@pass_state
def helper_serve(
    state: State,
    /,
    store: Path,
    listen: str,
    cert: Path | None,
    key: Path | None,
    tokens: Path | None,
    public_reads: bool,
    **limits: Any,
) -> None:
    """Serve the Twirp CAS and NS routes over HTTP (HTTPS with --cert), storing logs in DIR.

    With --tokens, writes need a write token and reads a read or write token (or none with
    --public-reads), sent as Authorization: Bearer TOKEN. Quotas apply per client address and
    per token. See docs/remote-log.md.
    """
    from mvds_node.remotelog import (
        HelperLimits,
        HelperTokens,
        SecretError,
        helper_tls_context,
        serve_helper,
    )

    host, port = parse_address(listen, where="--listen")
    if (cert is None) != (key is None):
        fail("--cert and --key go together")
    if public_reads and tokens is None:
        fail("--public-reads goes with --tokens")
    try:
        tls = helper_tls_context(cert, key) if cert is not None and key is not None else None
        allowed = HelperTokens.from_file(tokens, public_reads=public_reads) if tokens else None
    except SecretError as e:
        fail(str(e))
    rate = limits.pop("rate")
    burst = limits.pop("burst")
    settings = HelperLimits(
        requests_per_second=rate,
        burst=burst if burst is not None else max(1, int(rate * 2)),
        **limits,
    )
    interrupted = False

    async def run() -> None:
        nonlocal interrupted
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                try:
                    listeners = await nursery.start(
                        functools.partial(
                            serve_helper,
                            str(store),
                            host,
                            port,
                            limits=settings,
                            tokens=allowed,
                            tls=tls,
                        )
                    )
                except OSError as e:
                    raise Failure(
                        f"cannot listen on {listen}: {e.strerror or e}", kind="os", address=listen
                    ) from None
                bound = listeners[0].socket.getsockname()
                scheme = "https" if tls is not None else "http"
                access = ""
                if allowed is not None:
                    access = f", {plural(len(allowed), 'token')}"
                    access += " (reads public)" if allowed.public_reads else ""
                print(
                    f"helper serving {store} on {scheme}://{format_address(bound[0], bound[1])}"
                    + access,
                    flush=True,
                )
                async for signum in signals:
                    interrupted = signum == signal.SIGINT
                    nursery.cancel_scope.cancel()
                    return

    trio.run(run)
    if interrupted:
        raise SystemExit(130)


# --------------------------------------------------------------------------- completion


@root.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL.

    For bash: `eval "$(mvds-node completion bash)"` in ~/.bashrc (zsh: ~/.zshrc; fish:
    `mvds-node completion fish > ~/.config/fish/completions/mvds-node.fish`).
    """
    from click.shell_completion import get_completion_class

    kind = get_completion_class(shell)
    assert kind is not None  # the three choices are click's own
    top = ctx.find_root().command
    click.echo(kind(top, {}, "mvds-node", "_MVDS_NODE_COMPLETE").source())
