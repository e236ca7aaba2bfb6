"""The application's durable inbox: cursors, confirmation, a slow reader, history, retention,
expiry, damage, and ``mvds-node messages`` / ``cursors``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from mvds_node.errors import StoreError
from mvds_node.node import (
    AnyEvent,
    Identity,
    InboxSkipped,
    RetentionConfig,
    open_node,
    save_config,
)
from mvds_node.node._node import wall_ms
from mvds_node.node.cli import root
from mvds_node.sync import (
    Engine,
    MessageAcked,
    MessageDelivered,
    MessageExpired,
    Mode,
    SQLiteStore,
    SyncConfig,
)

from .cliutil import ENV, Running, acli
from .helpers import config_for, memory_nodes, next_event

G = b"G" * 32


def ok(*args: str | Path) -> str:
    result = CliRunner().invoke(root, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


async def aok(*args: str | Path) -> str:
    """:func:`ok` from async code (in a thread: click's runner has its own event loop)."""
    return await trio.to_thread.run_sync(lambda: ok(*args))


def refused(*args: str | Path) -> str:
    result = CliRunner().invoke(root, [str(a) for a in args])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    return result.stderr


async def all_acked(events: trio.MemoryReceiveChannel[AnyEvent], ids: list[bytes]) -> None:
    waiting = set(ids)
    async for event in events:
        if isinstance(event, MessageAcked):
            waiting.discard(event.message_id)
            if not waiting:
                return


def _cut_in_half(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


# ----------------------------------------------------------------- the crash window


def test_a_message_the_store_holds_is_in_the_inbox_before_any_event_is_drained(
    tmp_path: Path,
) -> None:
    """The engine writes the inbox entry in the transaction that stores the message: a
    process that dies right after the store committed (and the ACK went out) has it in the
    inbox, though nobody ever drained the delivery event."""
    alice_store, bob_store = SQLiteStore(tmp_path / "a.db"), SQLiteStore(tmp_path / "b.db")
    alice = Engine(alice_store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
    bob = Engine(bob_store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
    a_key, b_key = b"A" * 32, b"B" * 32
    for engine, other in ((alice, b_key), (bob, a_key)):
        engine.add_group(G)
        engine.add_peer(G, other, mode=Mode.BATCH)
    ids = [alice.send(G, b"m%d" % i, now=0.0, timestamp=i + 1) for i in range(3)]
    for peer, payload in alice.payloads_to_send(now=0.0):
        assert peer == b_key
        bob.receive_payloads(a_key, [payload], now=0.0)
    assert [p for p, _ in bob.payloads_to_send(now=1.0)] == [a_key]  # the ACK is out
    bob_store.close()  # the process dies here: no event of Bob's was ever drained
    reopened = SQLiteStore(tmp_path / "b.db")
    entries = reopened.inbox_after(0, 10)
    assert [e.message_id for e in entries] == ids
    assert [e.seq for e in entries] == [1, 2, 3]
    assert {e.sender for e in entries} == {a_key}
    reopened.close()
    alice_store.close()


# ----------------------------------------------------------------- cursors


async def test_named_cursors_resume_after_the_last_confirmed_message(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    a_cfg = config_for(tmp_path, "alice", alice, {"bob": bob}, listen=None)
    b_cfg = config_for(tmp_path, "bob", bob, {"alice": alice}, listen=None)
    from mvds_node.transports import MemoryHub

    hub = MemoryHub()
    a_end, b_end = hub.transport(alice.public_key), hub.transport(bob.public_key)
    with trio.fail_after(20):
        async with (
            open_node(a_cfg, identity=alice, transports=(a_end,)) as a,
            open_node(b_cfg, identity=bob, transports=(b_end,)) as b,
        ):
            ids = [await a.send("chat", b"m%d" % i) for i in range(5)]
            async with b.messages() as inbox:
                got = [await inbox.receive() for _ in ids]
                assert [m.message_id for m in got] == ids
                assert [m.seq for m in got] == [1, 2, 3, 4, 5]
                assert got[0].via == alice.public_key and got[0].body == b"m0"
            # The block ended cleanly: all five confirmed. "ui" is a cursor of its own.
            assert b.cursors() == {"default": 5}
            async with b.messages("ui", confirm="manual") as ui:
                first = [await ui.receive() for _ in range(3)]
                ui.confirm(first[1])  # a batch of two done; the third is not
            assert b.cursors() == {"default": 5, "ui": 2}
            assert b.unread("ui") == 3
        # Restarted: "ui" goes on after its last confirmed message, "default" has nothing.
        async with (
            open_node(b_cfg, identity=bob, transports=(b_end,)) as b,
            b.messages("ui") as ui,
            b.messages() as default,
        ):
            assert (await ui.receive()).message_id == ids[2]
            with pytest.raises(trio.WouldBlock):
                default.receive_nowait()
            assert b.delete_cursor("ui") and not b.delete_cursor("ui")
            assert "ui" not in b.cursors()


async def test_a_loop_body_that_fails_does_not_confirm_its_message(tmp_path: Path) -> None:
    async with memory_nodes(tmp_path) as nodes:
        alice, bob = nodes["alice"], nodes["bob"]
        mid = await alice.send("chat", b"work")

        async def application() -> None:
            async with bob.messages() as inbox:
                async for message in inbox:
                    assert message.message_id == mid
                    raise RuntimeError("the application crashed on it")

        with pytest.raises(RuntimeError), trio.fail_after(10):
            await application()
        assert bob.cursors() == {}
        with trio.fail_after(10):
            async with bob.messages() as inbox:
                assert (await inbox.receive()).message_id == mid  # again: at least once


# ----------------------------------------------------------------- a slow application


async def test_a_slow_application_loses_nothing_and_never_slows_the_node(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    total = 3000  # more than a live subscriber's buffer (1024) holds
    async with (
        memory_nodes(tmp_path) as nodes,
        nodes["bob"].messages() as inbox,
        nodes["bob"].messages(live=True) as live,
    ):
        alice, bob = nodes["alice"], nodes["bob"]
        ids = await alice.send_many("chat", [b"n%d" % i for i in range(total)])
        # The application reads one message, then dwells on it a (virtual) minute: the slow
        # application under test, not a wait for readiness. Meanwhile Bob's node stores and
        # acknowledges every message: nothing waits for the reader.
        first = await inbox.receive()
        await trio.sleep(60)
        assert alice.status().peers[0].pending == 0
        assert bob.status().messages_stored == total
        # Nothing lost: the reader gets every message, in order, once.
        rest = [await inbox.receive() for _ in range(total - 1)]
        assert [m.message_id for m in [first, *rest]] == ids
        # The live subscriber that never read missed what did not fit, and did not block.
        assert live.statistics().current_buffer_used == 1024
        assert bob._subscribers.messages_dropped == total - 1024


# ----------------------------------------------------------------- history, expiry, retention


async def test_history_reads_stored_messages_by_time_count_and_author(tmp_path: Path) -> None:
    async with memory_nodes(tmp_path) as nodes:
        alice, bob = nodes["alice"], nodes["bob"]
        with trio.fail_after(10):
            async with bob.messages() as inbox:
                for i in range(4):
                    await alice.send("chat", b"a%d" % i)
                    await inbox.receive()
            await bob.send("chat", b"from bob")
        everything = bob.history("chat")
        assert [m.body for m in everything] == [b"a0", b"a1", b"a2", b"a3", b"from bob"]
        assert [m.body for m in bob.history("chat", limit=2)] == [b"a3", b"from bob"]
        # By verified author: the Ed25519 key in each message's envelope.
        mine = bob.history("chat", author=bob.identity.signing_public_key)
        assert [m.body for m in mine] == [b"from bob"]
        theirs = bob.history("chat", author=alice.identity.signing_public_key)
        assert [m.body for m in theirs] == [b"a0", b"a1", b"a2", b"a3"]
        assert [
            m.body for m in bob.history("chat", author=alice.identity.signing_public_key, limit=1)
        ] == [b"a3"]
        assert all(m.author == alice.identity.signing_public_key for m in theirs)
        assert bob.history("chat", author=alice.identity.public_key) == []  # not a signing key
        later = bob.history("chat", since=everything[2].timestamp)
        assert later == [m for m in everything if m.timestamp >= everything[2].timestamp]


async def test_an_expired_message_vanishes_and_the_cursor_that_skips_it_is_told(
    tmp_path: Path,
) -> None:
    async with memory_nodes(tmp_path) as nodes, nodes["bob"].events() as events:
        alice, bob = nodes["alice"], nodes["bob"]
        with trio.fail_after(20):
            async with bob.messages("probe", confirm="manual") as probe:
                soon = await alice.send("chat", b"gone soon", expires_at=wall_ms() + 300)
                await probe.receive()  # stored and in the inbox; "default" has not read it
            expired = await next_event(events, MessageExpired)  # on the wall clock
            assert expired.message_id == soon and bob.history("chat") == []
            after = await alice.send("chat", b"after")
            async with bob.messages() as inbox:
                message = await inbox.receive()
            assert (message.message_id, message.skipped) == (after, (soon,))
            skipped = await next_event(events, InboxSkipped)
            assert skipped == InboxSkipped("default", (soon,))


async def test_retention_never_drops_what_a_cursor_has_not_passed(tmp_path: Path) -> None:
    retention = RetentionConfig(max_messages=2, interval=3600.0)
    async with (
        memory_nodes(tmp_path, retention=retention) as nodes,
        nodes["alice"].events() as events,
    ):
        alice, bob = nodes["alice"], nodes["bob"]
        with trio.fail_after(20):
            async with bob.messages("slow", confirm="manual") as slow:
                ids = [await alice.send("chat", b"r%d" % i) for i in range(6)]
                got = [await slow.receive() for _ in ids]
                slow.confirm(got[1])  # "slow" has passed two messages
            await all_acked(events, ids)  # no peer waits for them: retention may take them
            # Over the limit by four, but "slow" has passed only two: those two go.
            assert bob.apply_retention() == 2
            kept = [m.message_id for m in bob.history("chat")]
            assert kept == ids[2:]
            async with bob.messages("slow") as slow:
                assert [(await slow.receive()).message_id for _ in ids[2:]] == ids[2:]
            assert bob.apply_retention() == 2  # now "slow" has passed them all: down to 2
            assert [m.message_id for m in bob.history("chat")] == ids[4:]


async def test_retention_trims_our_own_sends_once_no_peer_waits_for_them(tmp_path: Path) -> None:
    retention = RetentionConfig(max_messages=2, interval=3600.0)
    async with (
        memory_nodes(tmp_path, retention=retention) as nodes,
        nodes["alice"].events() as events,
    ):
        alice, bob = nodes["alice"], nodes["bob"]
        with trio.fail_after(20):
            ids = [await alice.send("chat", b"s%d" % i) for i in range(6)]
            await all_acked(events, ids)
            # Six of ours, none awaited by a peer: the oldest four go, as received ones do.
            assert alice.apply_retention() == 4
            assert [m.message_id for m in alice.history("chat")] == ids[4:]
            assert alice.apply_retention() == 0
            # Bob's copies are his: received, in his inbox, still unread by his cursor.
            assert [m.message_id for m in bob.history("chat")] == ids


# ----------------------------------------------------------------- damage


async def test_a_damaged_cursor_or_inbox_stops_the_node_and_says_how_to_repair(
    tmp_path: Path,
) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    cfg = config_for(tmp_path, "bob", bob, {"alice": alice}, listen=None)
    cfg.data_dir.mkdir()
    save_config(cfg)
    with trio.fail_after(10):
        async with open_node(cfg, identity=bob) as node:
            node.store.set_cursor("ui", 0)
    con = sqlite3.connect(cfg.store_path)
    con.execute("PRAGMA ignore_check_constraints = ON")
    con.execute("UPDATE cursors SET position = 'garbled' WHERE name = 'ui'")
    con.commit()
    con.close()
    with pytest.raises(StoreError) as raised, trio.fail_after(10):
        async with open_node(cfg, identity=bob):
            pass
    text = str(raised.value)
    assert str(cfg.store_path) in text and "mvds-node cursors delete ui" in text
    # The repair it names works, and the node starts again (nothing was reset on its own).
    await acli("--dir", cfg.data_dir, "cursors", "delete", "ui")
    with trio.fail_after(10):
        async with open_node(cfg, identity=bob) as node:
            assert node.cursors() == {}
    # A garbled inbox row: refused too, naming the row and the repair.
    con = sqlite3.connect(cfg.store_path)
    con.execute("PRAGMA ignore_check_constraints = ON")
    con.execute("INSERT INTO inbox (message_id, group_id) VALUES (x'0102', x'03')")
    con.commit()
    con.close()
    with pytest.raises(StoreError) as raised, trio.fail_after(10):
        async with open_node(cfg, identity=bob):
            pass
    assert str(cfg.store_path) in str(raised.value) and "inbox row 1 is damaged" in str(
        raised.value
    )
    con = sqlite3.connect(cfg.store_path)
    con.execute("DELETE FROM inbox WHERE seq = 1")  # the repair the error names
    con.commit()
    con.close()
    with trio.fail_after(10):
        async with open_node(cfg, identity=bob):
            pass
    # A truncated store file: refused with the file named and what to do.
    _cut_in_half(cfg.store_path)
    with pytest.raises(StoreError) as raised, trio.fail_after(10):
        async with open_node(cfg, identity=bob):
            pass
    assert str(cfg.store_path) in str(raised.value) and "backup" in str(raised.value)


# ----------------------------------------------------------------- the command line


def _two_offline_nodes(tmp_path: Path) -> tuple[Path, Path, dict[Path, str]]:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for directory, name in ((alice, "alice"), (bob, "bob")):
        ok("--dir", directory, "init", "--name", name, "--listen", "", "--group", "notes")
    keys = {d: ok("--dir", d, "key").strip() for d in (alice, bob)}
    # A member's log key is its signing key: what names it as the author of its messages.
    log_keys = {d: ok("--dir", d, "key", "--log").strip() for d in (alice, bob)}
    for me, other, name in ((alice, bob, "bob"), (bob, alice, "alice")):
        ok("--dir", me, "peers", "add", keys[other], "--name", name, "--group", "notes",
           "--log-key", log_keys[other])  # fmt: skip
    return alice, bob, log_keys


def test_an_offline_bundle_import_is_read_back_with_messages(tmp_path: Path) -> None:
    alice, bob, keys = _two_offline_nodes(tmp_path)
    for text in ("first", "second", "third", "fourth"):
        ok("--dir", alice, "send", "notes", text)
    ok("--dir", alice, "export", tmp_path / "for-bob", "--peer", "bob")
    assert "4 new messages" in ok("--dir", bob, "import", tmp_path / "for-bob")
    # No node runs: `messages` reads the store (read-only) and shows author, time and text.
    doc = json.loads(ok("--dir", bob, "--json", "messages", "notes"))
    assert [m["text"] for m in doc["messages"]] == ["first", "second", "third", "fourth"]
    assert {m["author"] for m in doc["messages"]} == {keys[alice]}
    lines = ok("--dir", bob, "messages", "notes").splitlines()
    assert len(lines) == 4 and lines[0].endswith("[notes] alice: first")
    # --unread: once; the CLI keeps its own cursor, which `cursors` lists and deletes.
    unread = json.loads(ok("--dir", bob, "--json", "messages", "notes", "--unread"))
    assert len(unread["messages"]) == 4
    again = json.loads(ok("--dir", bob, "--json", "messages", "notes", "--unread"))
    assert again["messages"] == []
    listed = json.loads(ok("--dir", bob, "--json", "cursors", "list"))
    assert listed == {"cursors": [{"name": "cli:notes", "position": 4, "unread": 0}]}
    ok("--dir", bob, "cursors", "delete", "cli:notes")
    assert "no cursor named" in refused("--dir", bob, "cursors", "delete", "cli:notes")
    assert json.loads(ok("--dir", bob, "--json", "cursors", "list")) == {"cursors": []}
    # --since and --limit.
    doc = json.loads(ok("--dir", bob, "--json", "messages", "notes", "--limit", "1"))
    assert [m["text"] for m in doc["messages"]] == ["fourth"]
    doc = json.loads(ok("--dir", bob, "--json", "messages", "notes", "--since", "1d"))
    assert len(doc["messages"]) == 4
    doc = json.loads(ok("--dir", bob, "--json", "messages", "notes", "--since", "2100-01-01"))
    assert doc["messages"] == []


async def test_messages_follow_streams_from_the_running_node(tmp_path: Path) -> None:
    alice, bob, _keys = await trio.to_thread.run_sync(_two_offline_nodes, tmp_path)
    await aok("--dir", alice, "send", "notes", "before")
    await aok("--dir", alice, "export", tmp_path / "for-bob", "--peer", "bob")
    await aok("--dir", bob, "import", tmp_path / "for-bob")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            # `run --chat` first says what arrived while it was not running, then prints it.
            argv = [sys.executable, "-m", "mvds_node", "--dir", str(bob), "--json", "run"]
            process = await trio.lowlevel.open_process(
                [*argv, "--chat", "notes"],
                stdout=subprocess.PIPE,
                stdin=subprocess.PIPE,
                env=ENV,
            )
            node = Running(bob, process)
            nursery.start_soon(node.pump)
            await node.wait_for(lambda r: r.messages(), "the message that came while away")
            kinds = [line["type"] for line in node.lines]
            assert kinds.index("unread") < kinds.index("message")
            assert next(x for x in node.lines if x["type"] == "unread")["messages"] == 1
            assert [m["text"] for m in node.messages()] == ["before"]
            # Through the running node's control socket.
            doc = json.loads(await acli("--dir", bob, "--json", "messages", "notes"))
            assert [m["text"] for m in doc["messages"]] == ["before"]
            follow = await trio.lowlevel.open_process(
                [
                    *(sys.executable, "-m", "mvds_node", "--dir", str(bob), "--json"),
                    *("messages", "notes", "--follow"),
                ],
                stdout=-1,
                env=ENV,
            )
            assert follow.stdout is not None
            buf = b""
            while buf.count(b"\n") < 1:
                buf += await follow.stdout.receive_some(65536)
            assert json.loads(buf.splitlines()[0])["text"] == "before"
            # A new message arrives while it follows (a bundle the running node imports).
            await aok("--dir", alice, "send", "notes", "during")
            await aok("--dir", alice, "export", tmp_path / "for-bob-2", "--peer", "bob")
            await acli("--dir", bob, "import", tmp_path / "for-bob-2")
            while buf.count(b"\n") < 2:
                buf += await follow.stdout.receive_some(65536)
            texts = [json.loads(line)["text"] for line in buf.splitlines()]
            assert texts == ["before", "during"]  # what is stored, then the stream
            follow.kill()
            await follow.wait()
            assert await node.stop() == 0
            nursery.cancel_scope.cancel()


def test_retention_settings_are_in_the_config(tmp_path: Path) -> None:
    ok("--dir", tmp_path, "init", "--name", "me", "--listen", "", "--group", "chat")
    ok("--dir", tmp_path, "config", "set", "retention.max_messages", "100")
    assert ok("--dir", tmp_path, "config", "get", "retention.max_messages").strip() == "100"
    from mvds_node.node import load_config

    assert load_config(tmp_path).retention == replace(RetentionConfig(), max_messages=100)


def test_the_memory_engine_store_keeps_its_inbox_too() -> None:
    from mvds_node.sync import MemoryStore

    stores = (MemoryStore(), MemoryStore())
    engines = [Engine(s, config=SyncConfig(epoch_seconds=1.0), now=0.0) for s in stores]
    for engine, other in zip(engines, (b"B" * 32, b"A" * 32), strict=True):
        engine.add_group(G)
        engine.add_peer(G, other, mode=Mode.BATCH)
    mid = engines[0].send(G, b"x", now=0.0, timestamp=1)
    for _, payload in engines[0].payloads_to_send(now=0.0):
        engines[1].receive_payloads(b"A" * 32, [payload], now=0.0)
    assert stores[1].inbox == [(mid, G, b"A" * 32)]
    assert any(isinstance(e, MessageDelivered) for e in engines[1].events())


def test_a_read_of_the_inbox_holds_a_bounded_amount_of_bodies(tmp_path: Path) -> None:
    stores = (SQLiteStore(tmp_path / "a.db"), SQLiteStore(tmp_path / "b.db"))
    engines = [Engine(s, config=SyncConfig(epoch_seconds=1.0), now=0.0) for s in stores]
    for engine, other in zip(engines, (b"B" * 32, b"A" * 32), strict=True):
        engine.add_group(G)
        engine.add_peer(G, other, mode=Mode.BATCH)
    big = 1_000_000  # near the engine's limit on a body (1 MiB)
    ids = [engines[0].send(G, bytes([i]) * big, now=0.0, timestamp=i + 1) for i in range(6)]
    for _, payload in engines[0].payloads_to_send(now=0.0):
        engines[1].receive_payloads(b"A" * 32, [payload], now=0.0)
    inbox = stores[1]
    assert [e.message_id for e in inbox.inbox_after(0, 100)] == ids[:4]  # 4 MiB a read
    assert [e.message_id for e in inbox.inbox_after(4, 100)] == ids[4:]
    assert [e.message_id for e in inbox.inbox_after(0, 100, max_bytes=10)] == ids[:1]
    assert len(inbox.inbox_after(0, 100, max_bytes=10_000_000)) == 6
    for s in stores:
        s.close()


async def test_a_node_on_a_memory_store_has_a_memory_inbox(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from mvds_node.node import Node
    from mvds_node.transports import MemoryHub

    hub = MemoryHub()
    ids = {"alice": Identity.generate(), "bob": Identity.generate()}
    ends = {n: hub.transport(i.public_key) for n, i in ids.items()}
    nodes = {}
    for name, me in ids.items():
        others = {n: i for n, i in ids.items() if n != name}
        config = config_for(tmp_path, name, me, others, listen=None)
        nodes[name] = Node(config, me, SQLiteStore.memory(), transports=(ends[name],))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for node in nodes.values():
                await nursery.start(node.run)
            mid = await nodes["alice"].send("chat", b"in memory")
            async with nodes["bob"].messages("ui") as inbox:
                assert (await inbox.receive()).message_id == mid
            assert nodes["bob"].cursors() == {"ui": 1}
            assert not (tmp_path / "bob").exists()  # nothing on disk
            nursery.cancel_scope.cancel()


async def test_status_shows_each_cursor_and_what_live_readers_missed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        async with memory_nodes(tmp_path) as nodes:
            alice, bob = nodes["alice"], nodes["bob"]
            async with bob.messages("ui", confirm="manual") as inbox:
                for i in range(3):
                    await alice.send("chat", b"m%d" % i)
                got = [await inbox.receive() for _ in range(3)]
                inbox.confirm(got[1])  # the first two
            status = bob.status()
            assert [(c.name, c.position, c.unread) for c in status.cursors] == [("ui", 2, 1)]
            assert status.to_json()["cursors"] == [{"name": "ui", "position": 2, "unread": 1}]
            assert status.live_messages_dropped == 0
