"""Durability: a message accepted by ``send`` survives ``kill -9``, and so does its retransmission.

A child process sends messages in a loop, printing each ID once ``send`` has returned, and is
killed with SIGKILL after a random number of them, many times over, on the same SQLite file. Then
we check that every reported message is stored, the file is intact, and that an engine reopened on
it delivers every one of them to the peer.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mvds_node.sim import Net
from mvds_node.sync import Engine, MemoryStore, MessageDelivered, SyncConfig

sqlite_mod = pytest.importorskip("mvds_node.sync.store._sqlite")

WRITER = Path(__file__).with_name("crash_writer.py")
GROUP = bytes(range(1, 33))
PEER = b"P" * 32
WRITER_ID = b"W" * 32
KILLS = 25


def run_and_kill(db: Path, run: int, after: int) -> list[bytes]:
    """Start the writer, read ``after`` accepted IDs, SIGKILL it, and return what it accepted."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(run)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    accepted: list[bytes] = []
    try:
        for line in proc.stdout:
            accepted.append(bytes.fromhex(line.decode().strip()))
            if len(accepted) >= after:
                break
        proc.send_signal(signal.SIGKILL)
        # Lines already written before the kill count too: the send had returned.
        rest = proc.stdout.read()
        accepted.extend(bytes.fromhex(x) for x in rest.decode().split())
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the writer must die by SIGKILL, not on its own"
    return accepted


@pytest.mark.slow
def test_kill_minus_nine_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    rng = random.Random(20261124)
    accepted: list[bytes] = []
    for run in range(KILLS):
        accepted += run_and_kill(db, run, rng.randint(1, 400))
    assert len(accepted) >= KILLS

    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()

    store = sqlite_mod.SQLiteStore(db)
    try:
        for mid in accepted:
            assert store.has_message(mid), f"accepted message {mid.hex()} lost"
        # Retransmission resumes: the peer gets every accepted message once the writer restarts.
        net = Net()
        writer = net.add(WRITER_ID, Engine(store, config=SyncConfig(epoch_seconds=1.0), now=0.0))
        assert store.get_epoch() > 0, "the epoch counter survived the crashes"
        peer = net.add(PEER, Engine(MemoryStore(), config=SyncConfig(epoch_seconds=1.0), now=0.0))
        peer.add_group(GROUP)
        peer.add_peer(GROUP, WRITER_ID)
        # The writer knew its peer as PEER; it comes back online now.
        writer.reset_peer(PEER, now=0.0)
        want = set(accepted)
        got: set[bytes] = set()

        def all_delivered() -> bool:
            got.update(e.message_id for e in net.events[PEER] if isinstance(e, MessageDelivered))
            net.events[PEER].clear()
            return want <= got

        net.run_until(all_delivered, max_rounds=50)
        net.run_until(net.quiet, max_rounds=50)
        assert store.record_count() == 0
    finally:
        store.close()
