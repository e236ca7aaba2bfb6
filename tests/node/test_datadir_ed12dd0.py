"""Data directories written by the code at commit ed12dd0 (the store's schema 2, before the
inbox) open with today's code: the store migrates to schema 4 (through 3, the inbox), keeps
every message, and puts the messages it had delivered in the inbox, where ``messages()``,
``history()`` and ``mvds-node messages`` find them.

The fixture (``tests/fixtures/datadir-ed12dd0/``, made by ``tests/fixtures/make_datadir.py
ed12dd0`` run on ed12dd0) is the scenario of the 55a02fa fixture: alice and bob synced seven
messages, then alice sent three more, pending to bob and to carol. Each test works on a copy.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner

from mvds_node.node import load_config, open_node
from mvds_node.node.cli import root as cli_root
from mvds_node.sync import SQLiteStore
from mvds_node.sync.store._sqlite import SCHEMA_VERSION
from mvds_node.transports import MemoryHub

from .test_datadir_55a02fa import HubCarrier, key, without_remote_log

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datadir-ed12dd0"


def copy_fixture(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "fixture"
    shutil.copytree(FIXTURE, root)
    for secret in root.glob("*/*.key"):
        secret.chmod(0o600)
    for config in root.glob("*/config.toml"):
        config.write_text(config.read_text().replace("@FIXTURE@", str(root)))
    return root, json.loads((root / "manifest.json").read_text())


def test_the_store_migrates_keeps_every_message_and_fills_the_inbox(tmp_path: Path) -> None:
    root, manifest = copy_fixture(tmp_path)
    for name in ("alice", "bob"):
        path = root / name / "store.sqlite"
        with SQLiteStore(path) as store:
            assert store.message_count() == len(manifest["stored"][name])
            entries = store.inbox_after(0, 100)
            # Every stored message was delivered (sent or received): all in the inbox, in the
            # order stored, with no sender (schema 2 did not keep it).
            assert {e.message_id.hex() for e in entries} == set(manifest["stored"][name])
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
            assert {e.sender for e in entries} == {None}
            for e in entries:
                assert e.message is not None
        with SQLiteStore(path) as again:  # opened again: migrated once, nothing added
            assert len(again.inbox_after(0, 100)) == len(manifest["stored"][name])
        con = sqlite3.connect(path)
        # Through the inbox (3) and the trace facts (4).
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        con.close()


def test_the_migrated_messages_show_in_history_messages_and_the_cli(tmp_path: Path) -> None:
    root, manifest = copy_fixture(tmp_path)
    argv = ["--dir", str(root / "bob"), "--json", "messages", "chat"]
    result = CliRunner().invoke(cli_root, argv)  # no node runs: the store is migrated here
    assert result.exit_code == 0, (result.stdout, result.stderr)
    texts = [m["text"] for m in json.loads(result.stdout)["messages"]]
    assert sorted(texts) == sorted(manifest["stored"]["bob"].values())


async def test_the_inbox_yields_the_old_messages_then_the_pending_ones(tmp_path: Path) -> None:
    root, manifest = copy_fixture(tmp_path)
    alice_key, bob_key = key(manifest, "alice"), key(manifest, "bob")
    pending = {bytes.fromhex(m) for m in manifest["pending_from_alice"]}
    hub = MemoryHub()
    both = frozenset({alice_key, bob_key})
    with trio.fail_after(60):
        async with (
            open_node(
                without_remote_log(load_config(root / "alice")),
                transports=(HubCarrier(hub, alice_key, both),),
            ),
            open_node(
                without_remote_log(load_config(root / "bob")),
                transports=(HubCarrier(hub, bob_key, both),),
            ) as b,
            b.messages() as inbox,
        ):
            before = [await inbox.receive() for _ in manifest["stored"]["bob"]]
            assert {m.message_id.hex() for m in before} == set(manifest["stored"]["bob"])
            assert {m.body.decode() for m in before} == set(manifest["stored"]["bob"].values())
            got = {(await inbox.receive()).message_id for _ in pending}
            assert got == pending
            history = {m.message_id.hex() for m in b.history("chat")}
            assert history == set(manifest["stored"]["alice"])  # bob now holds all of alice's
