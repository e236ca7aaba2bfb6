"""``messages`` (a group's stored messages, offline or from the running node) and ``cursors``
(the inbox's durable cursors: list, delete)."""

from __future__ import annotations

import datetime
import functools
import re
from typing import Any

import click
import trio

from mvds_node.errors import MvdsError
from mvds_node.node._config import NodeConfig
from mvds_node.node._identity import load_identity
from mvds_node.node._node import wall_ms
from mvds_node.node.cli._app import State, common_options, fail, pass_state, root
from mvds_node.node.cli._complete import complete_group
from mvds_node.node.cli._local import cursors, follow_messages, stored_messages
from mvds_node.node.cli._output import Output

__all__ = ["parse_since"]

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now_ms: int) -> int:
    """``--since``: Unix milliseconds, an ISO 8601 time (``2026-12-08T09:30``, UTC unless it
    says), or an age (``90s``, ``30m``, ``2h``, ``7d``). Returns Unix ms.

    Raises:
        click.BadParameter: none of those.
    """
    if text.isdigit():
        return int(text)
    m = _RELATIVE.fullmatch(text)
    if m is not None:
        return max(0, now_ms - int(float(m.group(1)) * _UNITS[m.group(2)] * 1000))
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give Unix ms, an ISO time (2026-12-08T09:30) or an age (30m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def _line(out: Output, doc: dict[str, Any], authors: dict[str, str], peers: dict[str, str]) -> None:
    """``TIME [group] author: text``; ``(no author, via peer)`` for a message without an
    envelope (a raw group's, or one stored before envelopes)."""
    when = datetime.datetime.fromtimestamp(doc["timestamp"] / 1000, tz=datetime.UTC)
    author, via = doc.get("author"), doc.get("via") or ""
    if author:
        who: str | tuple[str, str] = (authors.get(author) or author[:12], "bold")
    else:
        who = (f"(no author, via {peers.get(via) or via[:12] or '?'})", "dim")
    text = doc["text"] if doc["text"] is not None else f"({len(doc['body_b64']) * 3 // 4} bytes)"
    out.line(
        (when.strftime("%Y-%m-%d %H:%M:%S"), "dim"),
        " ",
        (f"[{doc['group']}]", "cyan"),
        " ",
        who,
        f": {text}",
    )


def _names(config: NodeConfig) -> tuple[dict[str, str], dict[str, str]]:
    """Authors by Ed25519 key (members' ``log_key``, and this node) and peers by X25519 key,
    as hex, for :func:`_line`."""
    peers = {p.key.hex(): p.name for p in config.peers if p.name}
    authors = {p.log_key.hex(): p.name for p in config.peers if p.name and p.log_key}
    try:
        me = load_identity(config.identity_path)
    except (OSError, MvdsError):
        return authors, peers  # no key file: `messages` still shows what is stored
    authors[me.signing_public_key.hex()] = config.name or "me"
    peers[me.public_key.hex()] = config.name or "me"
    return authors, peers


@root.command()
@click.argument("group", shell_complete=complete_group)
@click.option("--follow", is_flag=True, help="Then show new messages as they arrive (needs run).")
@click.option("--since", metavar="T", help="Only messages from T: Unix ms, ISO time, or 30m/2h/7d.")
@click.option("--limit", type=click.IntRange(min=0), help="Only the last N messages.")
@click.option(
    "--unread",
    is_flag=True,
    help="Only what this command has not shown before (its own cursor, cli:GROUP).",
)
@common_options
@pass_state
def messages(
    state: State, group: str, follow: bool, since: str | None, limit: int | None, unread: bool
) -> None:
    """Show GROUP's stored messages (received and sent) with author, time and text.

    Works with no node running (the store is read, not written); with one running, asks it.
    --follow then streams new messages from the running node until Ctrl-C (one JSON object a
    line under --json).
    """
    config = state.config()
    config.group(group)
    since_ms = parse_since(since, now_ms=wall_ms()) if since else 0
    out = state.output
    authors, peers = _names(config)
    if follow and limit is not None:
        fail("--follow shows every new message; it takes no --limit", kind="usage")
    if follow:

        async def stream() -> None:
            async for doc in follow_messages(config, group, since=since_ms, unread=unread):
                if out.json:
                    out.document(doc)
                else:
                    _line(out, doc, authors, peers)

        try:
            trio.run(stream)
        except KeyboardInterrupt:
            return
        return
    shown, _online = trio.run(
        functools.partial(stored_messages, since=since_ms, limit=limit, unread=unread),
        config,
        group,
    )
    if out.json:
        out.document({"group": group, "messages": shown})
        return
    for doc in shown:
        _line(out, doc, authors, peers)
    if not shown:
        out.line(("no messages" + (" unread" if unread else ""), "dim"))


@root.group("cursors")
@common_options
def cursors_group() -> None:
    """The inbox's durable cursors: where each reader of messages() has got to."""


@cursors_group.command("list")
@common_options
@pass_state
def cursors_list(state: State) -> None:
    """List the cursors, their position and how many messages each has not confirmed."""
    config = state.config()
    doc = trio.run(cursors, config)
    rows = doc["cursors"]
    out = state.output
    if out.json:
        out.document({"cursors": rows})
    elif not rows:
        out.line(("no cursors", "dim"))
    else:
        out.table(
            ["cursor", "position", "unread"],
            [[r["name"], str(r["position"]), str(r["unread"])] for r in rows],
        )


@cursors_group.command("delete")
@click.argument("name")
@common_options
@pass_state
def cursors_delete(state: State, name: str) -> None:
    """Delete cursor NAME: its reader starts again from the oldest stored message, and
    retention is no longer held back by it. Also repairs a damaged cursor."""
    config = state.config()
    doc = trio.run(cursors, config, name)
    if not doc["deleted"]:
        fail(f"no cursor named {name!r}", kind="not-found")
    state.output.show({"deleted": name}, f"deleted cursor {name}")
