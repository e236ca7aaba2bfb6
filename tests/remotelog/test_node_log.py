"""Nodes with a remote log: a reader catches up from a writer that is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from mvds_node.node import (
    Identity,
    InputRejected,
    InternalError,
    LogUploaded,
    NodeConfig,
    group_id_for,
    open_node,
)
from mvds_node.node import _node as node_module
from mvds_node.node._config import RemoteLogConfig
from mvds_node.remotelog import FileBackend, log_name
from mvds_node.remotelog._format import Page, Pair, open_head, parse_page, sign_head, unseal
from mvds_node.remotelog._http import serve_helper
from mvds_node.remotelog._ipfs import IpfsBackend
from mvds_node.sync import encode_message
from tests.node.helpers import config_for
from tests.remotelog.services import ipfs_node, nats_server, redis_server


def with_log(
    cfg: NodeConfig, url: str, others: dict[bytes, bytes], ipns: dict[bytes, str] | None = None
) -> NodeConfig:
    peers = tuple(
        replace(p, log_key=others.get(p.key), ipns=(ipns or {}).get(p.key, "")) for p in cfg.peers
    )
    return replace(
        cfg,
        listen=None,  # no network at all: only the log connects them
        peers=peers,
        remote_log=RemoteLogConfig(url=url, page_size=8, inline=3, poll_seconds=3600),
    )


@asynccontextmanager
async def backend_url(kind: str, tmp: Path) -> AsyncIterator[str]:
    """A running backend of each kind, on 127.0.0.1."""
    if kind == "file":
        yield f"file://{tmp / 'store'}"
    elif kind == "http":
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve_helper, str(tmp / "helper"), "127.0.0.1", 0)
            yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            nursery.cancel_scope.cancel()
    elif kind == "redis":
        async with redis_server(tmp / "redis") as url:
            yield url
    elif kind == "nats":
        async with nats_server(tmp / "nats") as url:
            yield url
    else:
        async with ipfs_node(tmp / "ipfs") as (url, _):
            yield url


@pytest.mark.parametrize("kind", ["file", "http", "redis", "nats", "ipfs"])
async def test_reader_catches_up_while_the_writer_is_offline(tmp_path: Path, kind: str) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    async with backend_url(kind, tmp_path) as url:
        ipns: dict[bytes, str] = {}
        if kind == "ipfs":  # readers are told where each writer publishes
            ipfs = IpfsBackend(url)
            for who in (alice, bob):
                ipns[who.public_key] = await ipfs.own_ipns_id(who.signing_public_key.hex())
            await ipfs.aclose_connection()
        a_cfg = with_log(config_for(tmp_path, "alice", alice, {"bob": bob}), url, keys, ipns)
        b_cfg = with_log(config_for(tmp_path, "bob", bob, {"alice": alice}), url, keys, ipns)
        await _catch_up_and_ack(a_cfg, b_cfg, alice, bob)


async def _catch_up_and_ack(
    a_cfg: NodeConfig, b_cfg: NodeConfig, alice: Identity, bob: Identity
) -> None:
    with trio.fail_after(60):
        async with open_node(a_cfg, identity=alice) as a, a.events() as events:
            await a.send_many("chat", [f"note {i}".encode() for i in range(30)])
            await a.send("chat", b"last one")
            uploaded = 0
            while uploaded < 31:  # each LogUploaded says how many went up
                event = await events.receive()
                if isinstance(event, LogUploaded):
                    assert event.group == "chat" and event.seq >= 1
                    uploaded += event.messages
            assert uploaded == 31 and not any(log.queued for log in a.status().logs)
            (mine,) = [log for log in a.status().logs if log.mine]
            assert mine.seq >= 1 and mine.error == ""
        # Alice is gone. Bob, who never met her on any network, reads her log.
        async with open_node(b_cfg, identity=bob) as b, b.messages() as inbox:
            await b.poll_remote_logs()
            got = [await inbox.receive() for _ in range(31)]
            assert sorted(m.body for m in got) == sorted(
                [f"note {i}".encode() for i in range(30)] + [b"last one"]
            )
            assert {m.via for m in got} == {alice.public_key}
            (theirs,) = [log for log in b.status().logs if not log.mine]
            assert (theirs.fetched, theirs.error) == (31, "")
            # Polling again brings nothing twice: caught up.
            await b.poll_remote_logs()
            assert b.status().messages_stored == 31
            (theirs,) = [log for log in b.status().logs if not log.mine]
            assert theirs.behind == 0
        # Alice comes back; bob is gone. His acknowledgements, published next to his log, stop
        # her retransmitting to him although they never met.
        async with open_node(a_cfg, identity=alice) as a:
            assert a.status().peers[0].pending == 31
            await a.poll_remote_logs()
            async with a.events() as events:
                while a.status().peers[0].pending:
                    with trio.move_on_after(0.05):
                        await events.receive()


async def test_a_node_with_a_small_head_publishes_heads_that_only_name_a_page(
    tmp_path: Path,
) -> None:
    """``[remote_log] head_size = 0``: what a reader downloads on every poll is one small
    record; the messages are in pages, and a reader still catches up from them."""
    alice, bob = Identity.generate(), Identity.generate()
    keys = {alice.public_key: alice.signing_public_key, bob.public_key: bob.signing_public_key}
    url = f"file://{tmp_path / 'store'}"
    cfgs = [
        with_log(config_for(tmp_path, name, who, {other_name: other}), url, keys)
        for name, who, other_name, other in (
            ("alice", alice, "bob", bob),
            ("bob", bob, "alice", alice),
        )
    ]
    a_cfg, b_cfg = (replace(c, remote_log=replace(c.remote_log, head_size=0)) for c in cfgs)
    await _catch_up_and_ack(a_cfg, b_cfg, alice, bob)
    name = log_name(alice.signing_public_key, group_id_for("chat"))
    record = await FileBackend(tmp_path / "store").ns_fetch(name)
    assert record is not None
    head = open_head(record, name, alice.signing_public_key)
    (group,) = [g for g in a_cfg.groups if g.name == "chat"]
    data = unseal(group.secret, head.log, name) if head.sealed and group.secret else head.log
    page = parse_page(data, name)
    assert page.pairs == () and page.tail
    assert len(record) < 300


async def test_a_forged_log_is_refused(tmp_path: Path) -> None:
    alice, bob, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    url = f"file://{tmp_path / 'helper'}"
    b_cfg = with_log(
        config_for(tmp_path, "bob", bob, {"alice": alice}),
        url,
        {alice.public_key: alice.signing_public_key},
    )
    # Mallory controls the helper and writes a head under alice's name, signed by herself.
    name = log_name(alice.signing_public_key, group_id_for("chat"))
    page = Page((Pair(b"x" * 32, b"", encode_message(group_id_for("chat"), 1, b"x")),), b"")
    await FileBackend(tmp_path / "helper").ns_update(
        name, sign_head(mallory.signing, name, 1, page.encode(), False)
    )
    with trio.fail_after(30):
        async with open_node(b_cfg, identity=bob) as b, b.events() as events:
            await b.poll_remote_logs()
            event = await events.receive()
            assert isinstance(event, InputRejected) and "another key" in event.detail
            assert b.status().messages_stored == 0
            (theirs,) = [log for log in b.status().logs if not log.mine]
            assert "another key" in theirs.error


@pytest.mark.internal_errors_expected
async def test_a_bug_met_reading_a_log_is_an_internal_error_and_the_node_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_internal_errors: list[InternalError]
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    b_cfg = with_log(
        config_for(tmp_path, "bob", bob, {"alice": alice}),
        f"file://{tmp_path / 'store'}",
        {alice.public_key: alice.signing_public_key},
    )
    name = log_name(alice.signing_public_key, group_id_for("chat"))

    class Buggy(FileBackend):
        async def ns_fetch(self, wanted: str) -> bytes | None:
            if wanted == name:
                raise ZeroDivisionError("a bug in a backend")
            return await super().ns_fetch(wanted)

    monkeypatch.setattr(node_module, "backend_for", lambda url, **_: Buggy(tmp_path / "store"))
    with trio.fail_after(30):
        async with open_node(b_cfg, identity=bob) as b, b.events() as events:
            await b.poll_remote_logs()
            first = await events.receive()
            assert isinstance(first, InternalError)
            assert first.where == f"remote log of {alice.public_key.hex()[:16]} in chat"
            assert first.error == "ZeroDivisionError: a bug in a backend"
            assert "ZeroDivisionError" in first.traceback
            (theirs,) = [log for log in b.status().logs if not log.mine]
            assert theirs.error == "internal error: ZeroDivisionError: a bug in a backend"
            # The node goes on: it still sends, stores and uploads to its own log.
            await b.send("chat", b"still here")
            while not isinstance(await events.receive(), LogUploaded):
                pass
            assert b.status().messages_stored == 1
    # One for the read at start, one for poll_remote_logs: each attempt reported once.
    assert [e.error for e in no_internal_errors] == [first.error] * 2
