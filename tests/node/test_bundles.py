"""Sneakernet: bundle files between engines that never share a network."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mvds_node.node._bundles import FILE_LATENCY, export_bundle, import_bundle
from mvds_node.sync import (
    Engine,
    MemoryStore,
    MessageDelivered,
    Mode,
    SQLiteStore,
    SyncConfig,
    encode_payload,
)
from mvds_node.transports import Keypair, open_bundle
from mvds_node.transports._file import BundleError

G = b"G" * 32
ALICE, BOB, MALLORY = Keypair.generate(), Keypair.generate(), Keypair.generate()
GROUP_KEY = os.urandom(32)


def node(me: Keypair, *others: Keypair, store: SQLiteStore | None = None) -> Engine:
    engine = Engine(store or MemoryStore(), config=SyncConfig(epoch_seconds=1.0), now=0.0)
    engine.add_group(G)
    for other in others:
        engine.add_peer(G, other.public, mode=Mode.INTERACTIVE)
    return engine


def bodies(engine: Engine) -> list[bytes]:
    return [e.body for e in engine.events() if isinstance(e, MessageDelivered)]


def test_round_trip_and_acks_back(tmp_path: Path) -> None:
    alice = node(ALICE, BOB, store=SQLiteStore(tmp_path / "alice.db"))
    bob = node(BOB, ALICE, store=SQLiteStore(tmp_path / "bob.db"))
    for i in range(50):
        alice.send(G, f"m{i}".encode(), now=0.0, timestamp=i + 1)
    out = export_bundle(
        alice, tmp_path / "b1", sender=ALICE, now=0.0, created_ms=1, peer=BOB.public
    )
    assert out.messages == 50 and out.bytes == (tmp_path / "b1").stat().st_size
    # Counted as sent, with the file's latency: no retransmission for days.
    deadline = alice.next_deadline()
    assert deadline is not None and deadline >= 2 * FILE_LATENCY
    result = import_bundle(bob, tmp_path / "b1", keypair=BOB, now=0.0)
    assert (result.sender, result.sender_proved, result.messages_new) == (ALICE.public, True, 50)
    assert sorted(bodies(bob)) == sorted(f"m{i}".encode() for i in range(50))
    # A second import changes nothing and delivers nothing twice.
    again = import_bundle(bob, tmp_path / "b1", keypair=BOB, now=1.0)
    assert (again.messages_new, again.messages_known) == (0, 50)
    assert bodies(bob) == []
    # Bob's answer carries his acknowledgements: Alice stops retransmitting.
    export_bundle(bob, tmp_path / "b2", sender=BOB, now=1.0, created_ms=2, peer=ALICE.public)
    assert len(alice.store_view.records_for_peer(BOB.public)) == 50
    import_bundle(alice, tmp_path / "b2", keypair=ALICE, now=1.0)
    assert alice.store_view.records_for_peer(BOB.public) == []


def test_group_bundle(tmp_path: Path) -> None:
    alice, bob = node(ALICE, BOB), node(BOB, ALICE)
    alice.send(G, b"to the group", now=0.0, timestamp=1)
    export_bundle(
        alice, tmp_path / "g", sender=ALICE, now=0.0, created_ms=1, group_id=G, group_key=GROUP_KEY
    )
    result = import_bundle(bob, tmp_path / "g", keypair=BOB, now=0.0, group_keys={G: GROUP_KEY})
    assert (result.messages_new, result.sender_proved) == (1, False)
    with pytest.raises(BundleError, match="key we do not have"):
        import_bundle(bob, tmp_path / "g", keypair=BOB, now=0.0, group_keys={G: os.urandom(32)})


@pytest.fixture
def bundle(tmp_path: Path) -> bytes:
    alice = node(ALICE, BOB)
    for i in range(300):
        alice.send(G, os.urandom(200), now=0.0, timestamp=i + 1)
    path = tmp_path / "good"
    export_bundle(alice, path, sender=ALICE, now=0.0, created_ms=1, peer=BOB.public)
    return path.read_bytes()


def refused(tmp_path: Path, data: bytes, match: str) -> None:
    bob = node(BOB, ALICE)
    path = tmp_path / "bad"
    path.write_bytes(data)
    with pytest.raises(BundleError, match=match):
        import_bundle(bob, path, keypair=BOB, now=0.0)
    assert bob.store_view.message_count() == 0 and bodies(bob) == []


def test_truncated_bundles_are_refused(tmp_path: Path, bundle: bytes) -> None:
    for cut in (0, 5, 30, 200, len(bundle) // 2, len(bundle) - 1):
        refused(tmp_path, bundle[:cut], "truncated|not an mvds-node bundle|not addressed")


def test_altered_bundles_are_refused(tmp_path: Path, bundle: bytes) -> None:
    for at in (40, 300, len(bundle) // 2, len(bundle) - 5):
        flipped = bytearray(bundle)
        flipped[at] ^= 0x01
        refused(tmp_path, bytes(flipped), "altered|not addressed|claims")
    refused(tmp_path, bundle + b"x", "after its last chunk|truncated")


def test_foreign_and_garbage_files_are_refused(tmp_path: Path, bundle: bytes) -> None:
    refused(tmp_path, b"", "not an mvds-node bundle")
    refused(tmp_path, os.urandom(5000), "not an mvds-node bundle")
    mallory = node(MALLORY, ALICE)
    path = tmp_path / "for-mallory"
    (tmp_path / "good").write_bytes(bundle)
    with pytest.raises(BundleError, match="not addressed to this node"):
        import_bundle(mallory, tmp_path / "good", keypair=MALLORY, now=0.0)
    # A bundle from a key that shares no group with us.
    stranger = node(MALLORY, BOB)
    stranger.send(G, b"hi", now=0.0, timestamp=1)
    export_bundle(stranger, path, sender=MALLORY, now=0.0, created_ms=1, peer=BOB.public)
    bob = node(BOB, ALICE)
    with pytest.raises(BundleError, match="shares no group"):
        import_bundle(bob, path, keypair=BOB, now=0.0)


def test_failed_write_marks_nothing_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = node(ALICE, BOB)
    alice.send(G, b"not yet", now=0.0, timestamp=1)
    before = [(r.send_count, r.send_epoch) for r in alice.store_view.records_for_peer(BOB.public)]

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BundleError, match="cannot write"):
        export_bundle(alice, tmp_path / "x", sender=ALICE, now=0.0, created_ms=1, peer=BOB.public)
    monkeypatch.undo()
    after = [(r.send_count, r.send_epoch) for r in alice.store_view.records_for_peer(BOB.public)]
    assert after == before
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file left behind
    with pytest.raises(BundleError, match="cannot write"):
        export_bundle(alice, tmp_path / "no" / "dir", sender=ALICE, now=0.0, created_ms=1,
                      peer=BOB.public)  # fmt: skip


def test_export_makes_each_payload_only_when_the_file_asks_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mvds_node.node._bundles.CHUNK_BYTES", 2048)
    seen: list[str] = []

    def encode(*args: Any) -> bytes:
        seen.append("made")
        return encode_payload(*args)

    monkeypatch.setattr("mvds_node.node._bundles.encode_payload", encode)
    alice = node(ALICE, BOB)
    for i in range(40):
        alice.send(G, os.urandom(200), now=0.0, timestamp=i + 1)
    out = export_bundle(
        alice,
        tmp_path / "b",
        sender=ALICE,
        now=0.0,
        created_ms=1,
        peer=BOB.public,
        progress=lambda done, total: seen.append("written"),
    )
    chunks = open_bundle(tmp_path / "b", keypair=BOB).header.chunks
    assert chunks > 3 and seen == ["made", "written"] * chunks
    bob = node(BOB, ALICE)
    assert import_bundle(bob, tmp_path / "b", keypair=BOB, now=0.0).messages_new == out.messages


def test_a_bundle_gone_before_it_is_applied_changes_nothing(tmp_path: Path, bundle: bytes) -> None:
    path = tmp_path / "stick" / "b"
    path.parent.mkdir()
    path.write_bytes(bundle)
    bob = node(BOB, ALICE, store=SQLiteStore(tmp_path / "bob.db"))

    def unplugged(done: int, total: int) -> None:
        if done == total:
            path.unlink()

    with pytest.raises(BundleError, match=f"^{path}: cannot read: No such file") as info:
        import_bundle(bob, path, keypair=BOB, now=0.0, progress=unplugged)
    assert "\n" not in str(info.value)
    assert bob.store_view.message_count() == 0 and bob.events() == []
    assert bob.payloads_to_send(now=0.0) == []


def test_apply_progress_follows_the_second_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mvds_node.node._bundles.CHUNK_BYTES", 4096)
    alice = node(ALICE, BOB)
    for i in range(100):
        alice.send(G, os.urandom(200), now=0.0, timestamp=i + 1)
    path = tmp_path / "b"
    export_bundle(alice, path, sender=ALICE, now=0.0, created_ms=1, peer=BOB.public)
    bob = node(BOB, ALICE)
    calls: list[tuple[str, int, int, int]] = []

    def track(phase: str) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            calls.append((phase, done, total, bob.statistics().messages_received))

        return progress

    result = import_bundle(
        bob, path, keypair=BOB, now=0.0, progress=track("verify"), apply_progress=track("apply")
    )
    total = open_bundle(path, keypair=BOB).header.chunks
    assert total > 3 and result.messages_new == 100
    assert [c[:3] for c in calls] == [
        *(("verify", i, total) for i in range(1, total + 1)),
        *(("apply", i, total) for i in range(1, total + 1)),
    ]
    # Each chunk is reported once the engine has taken it.
    received = [c[3] for c in calls if c[0] == "apply"]
    assert received == sorted(set(received)) and received[-1] == 100
