"""``mvds-node run``: keep the node online, print what it receives and what happens.

Output goes through an async stream: a reader that is slow to take our stdout (a full pipe) then
slows only the printing tasks, never the node itself. Under ``--json`` each line is one JSON
object (``encode_event``, ``message_json``: their shapes are documented in ``docs/node.md``).
SIGTERM stops the node with exit status 0; Ctrl-C (SIGINT) stops it with 130. On a terminal
(or with ``--progress``) stderr tells how connected peers catch up (:class:`CatchUp`).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import click
import trio

from mvds_node.errors import NodeFailed
from mvds_node.node._config import NodeConfig, parse_address
from mvds_node.node._control import serve_control
from mvds_node.node._events import LogUploaded
from mvds_node.node._node import Node, open_node
from mvds_node.node._remotelog import LogStatus
from mvds_node.node._schema import format_address
from mvds_node.node._status import PeerStatus
from mvds_node.node.cli._app import State, common_options, pass_state, root
from mvds_node.node.cli._complete import complete_group
from mvds_node.node.cli._events import encode_event, event_line, message_json, message_line
from mvds_node.node.cli._local import control_handler
from mvds_node.node.cli._output import Failure, Output, plural, styled
from mvds_node.sync import MessageAcked

__all__ = ["CatchUp"]

_BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


@root.command()
@click.option(
    "--chat",
    metavar="GROUP",
    shell_complete=complete_group,
    help="Also send each line of stdin to GROUP.",
)
@click.option("--listen", metavar="HOST:PORT", help="Override node.listen for this run.")
@click.option("--verbose", "-v", is_flag=True, help="Show acks and log uploads too.")
@click.option(
    "--progress",
    is_flag=True,
    help="Report catch-up (records a connected peer still lacks) on stderr even when not a "
    "terminal.",
)
@common_options
@pass_state
def run(state: State, chat: str | None, listen: str | None, verbose: bool, progress: bool) -> None:
    """Run the node: sync, print messages and events.

    Ctrl-C stops it (exit status 130); so does SIGTERM (exit status 0).
    """
    config = state.config()
    if listen:
        config = dataclasses.replace(config, listen=parse_address(listen, where="--listen"))
    if chat is not None:
        config.group(chat)  # fail early on a typo
    stopped_by: list[int] = []
    try:
        report = progress or sys.stderr.isatty()
        trio.run(_run, config, state.output, chat, verbose, report, stopped_by)
    except (OSError, NodeFailed, BaseExceptionGroup) as e:
        bind = [x for x in _leaves(e) if isinstance(x, OSError) and x.errno in _BIND_ERRORS]
        if bind and config.listen is not None:
            address = format_address(config.listen)
            raise Failure(
                f"cannot listen on {address}: {bind[0].strerror or bind[0]}"
                " (another node there? choose another with --listen or node.listen)",
                kind="os",
                address=address,
            ) from None
        raise
    if stopped_by == [signal.SIGINT]:
        raise SystemExit(130)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, NodeFailed) and exc.__cause__ is not None:
        return _leaves(exc.__cause__)  # what the node's tasks raised
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


CATCH_UP_RECORDS: Final = 100
"""A connected peer that lacks at least this many records is catching up: say how it goes."""
CATCH_UP_SECONDS: Final = 1.0
"""How often the catch-up is looked at (and reported, when it moved)."""


@dataclass
class CatchUp:
    """Catch-up of connected peers, from successive status snapshots, as lines for people.

    A peer is catching up from the moment it is connected and lacks :data:`CATCH_UP_RECORDS`
    records or more (what we still have to send it, or have it acknowledge) until it lacks
    none; each look that found it moved gives one line.
    """

    started: dict[bytes, int] = field(default_factory=dict)
    """Peer -> the most records it lacked while catching up."""
    last: dict[bytes, int] = field(default_factory=dict)
    fetched: dict[str, int] = field(default_factory=dict)
    """Remote log name -> messages taken from it at the last look."""

    def look(self, peers: Sequence[PeerStatus], who: Callable[[bytes], str]) -> list[str]:
        lines = []
        for p in peers:
            if p.key not in self.started:
                if p.connected and p.pending >= CATCH_UP_RECORDS:
                    self.started[p.key] = self.last[p.key] = p.pending
                    lines.append(f"catching up {who(p.key)}: {p.pending:,} records to go")
                continue
            if p.pending == self.last[p.key]:
                continue
            most = self.started[p.key] = max(self.started[p.key], p.pending)
            self.last[p.key] = p.pending
            if p.pending == 0:
                del self.started[p.key], self.last[p.key]
                lines.append(f"{who(p.key)} caught up ({most:,} records)")
            else:
                done = most - p.pending
                lines.append(
                    f"catching up {who(p.key)}: {done:,} of {most:,} records "
                    f"({done * 100 // most} %)"
                )
        return lines

    def look_logs(self, logs: Sequence[LogStatus], who: Callable[[bytes], str]) -> list[str]:
        """Lines for the members' remote logs that gave :data:`CATCH_UP_RECORDS` messages or
        more since the last look: what was caught up from a log while its writer may be away."""
        lines = []
        for log in logs:
            if log.mine:
                continue
            before = self.fetched.get(log.name)
            self.fetched[log.name] = log.fetched
            if before is None:
                before = 0  # the first look: what the node took before it was looked at
            taken = log.fetched - before
            if taken >= CATCH_UP_RECORDS:
                lines.append(
                    f"caught up {taken:,} messages from {who(log.peer)}'s log [{log.group}]"
                    f" ({log.fetched:,} in all)"
                )
        return lines


async def _run(
    config: NodeConfig,
    output: Output,
    chat: str | None,
    verbose: bool,
    report: bool,
    stopped_by: list[int],
) -> None:
    sys.stdout.flush()
    out = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
    out_lock = trio.Lock()
    console = output.console()

    async def show(document: dict[str, Any], human: list[str | tuple[str, str]]) -> None:
        if output.json:
            line = json.dumps(document) + "\n"
        else:
            with console.capture() as captured:
                console.print(styled(*human))
            line = captured.get()
        async with out_lock:
            await out.send_all(line.encode())

    names = {p.key: p.name for p in config.peers if p.name}

    def who(key: bytes | None) -> str:
        return "?" if key is None else names.get(key) or key.hex()[:12]

    # Authors are Ed25519 keys: a peer's log_key under [[peers]], or our own.
    authors: dict[bytes, tuple[str, bytes | None]] = {
        p.log_key: (p.name or p.log_key.hex()[:12], p.key) for p in config.peers if p.log_key
    }

    running: list[Node] = []  # the node, once open: its configuration has learned keys too

    def author(key: bytes) -> tuple[str, bytes | None]:
        known = authors.get(key)
        if known is None and running:
            # A key learned from a member's AUTHOR frame while the node runs.
            peer = next((p for p in running[0].config.peers if p.log_key == key), None)
            if peer is not None:
                known = authors[key] = (peer.name or key.hex()[:12], peer.key)
        return known or (key.hex()[:12], None)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # Subscribed as the node opens, before any checkpoint: what it delivers while the
        # control socket and the printers start waits in these channels instead of being missed.
        async with (
            out,
            open_node(config) as node,
            node.messages() as inbox,
            node.events() as events,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(serve_control, config.control_path, control_handler(node))
            me = node.identity
            authors[me.signing_public_key] = (config.name or "me", me.public_key)
            running.append(node)

            async def stop_on_signal() -> None:
                async for signum in signals:
                    stopped_by.append(signum)
                    nursery.cancel_scope.cancel()
                    return

            async def print_messages() -> None:
                async for m in inbox:
                    await show(message_json(m), message_line(m, who, author))

            async def print_events() -> None:
                async for event in events:
                    doc = encode_event(event)
                    if doc is None:
                        continue
                    if isinstance(event, (MessageAcked, LogUploaded)) and not verbose:
                        continue
                    await show(doc, event_line(event, doc, who))

            async def send_stdin(group: str) -> None:
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

            async def report_catch_up() -> None:
                # On stderr, a line at a time (not a redrawn bar): stdout's lines go to the same
                # terminal from another task, and must not land inside a bar.
                catch_up = CatchUp()
                err = output.console(stderr=True)
                while True:
                    status = node.status()
                    lines = catch_up.look(status.peers, who) + catch_up.look_logs(status.logs, who)
                    for line in lines:
                        err.print(styled((f"* {line}", "dim")))
                    await trio.sleep(CATCH_UP_SECONDS)

            nursery.start_soon(stop_on_signal)
            away = node.unread()
            if chat is not None and away:
                # The inbox's cursor starts where the last run stopped: what came meanwhile
                # (over the network, a bundle, a remote log) is printed first.
                await show(
                    {"type": "unread", "messages": away},
                    [(f"* {plural(away, 'message')} arrived while you were away:", "dim")],
                )
            nursery.start_soon(print_messages)
            nursery.start_soon(print_events)
            if report:
                nursery.start_soon(report_catch_up)
            if chat is not None:
                nursery.start_soon(send_stdin, chat)
            status = node.status()
            listening = ", ".join(status.listening) or "(nothing: dial-only)"
            await show(
                {"type": "started", "key": status.key.hex(), "listening": list(status.listening)},
                [
                    ("node ", "bold"),
                    (config.name or "-", "bold"),
                    f" {status.key.hex()[:16]} listening on {listening}; Ctrl-C stops",
                ],
            )
