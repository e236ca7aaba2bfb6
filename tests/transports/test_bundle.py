"""The bundle file format (``write_bundle``/``open_bundle``, laid out in docs/wire.md section 5):
every cut, flipped byte, reordering, splice and lying length is refused with a one-line
``BundleError``; writing is atomic. The engine-level round trips are in tests/node/test_bundles.py.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from mvds_node.errors import MvdsError
from mvds_node.node._bundles import export_bundle, import_bundle
from mvds_node.sync import Engine, MessageDelivered, SQLiteStore, SyncConfig
from mvds_node.transports import BundleError, BundleHeader, Keypair, open_bundle, write_bundle
from mvds_node.transports._file import MAX_CHUNK_BYTES, MAX_HEADER_BYTES

ALICE, BOB, MALLORY = Keypair.generate(), Keypair.generate(), Keypair.generate()
G = b"G" * 32
GROUP_KEY = bytes(range(32))
PAYLOADS = [b"first payload", b"", b"x" * 300]
PREFIX = 30  # magic 8, version 1, kind 1, file id 16, header length 4


def header(chunks: int = len(PAYLOADS), *, group: bool = False) -> BundleHeader:
    return BundleHeader(
        sender=ALICE.public,
        recipient=None if group else BOB.public,
        group_id=G if group else None,
        created_ms=1_700_000_000_000,
        chunks=chunks,
        messages=7,
        acks=2,
        requests=1,
        prerequisites=(b"P" * 32,),
        prerequisites_total=1,
    )


def write(path: Path, payloads: list[bytes] = PAYLOADS, *, group: bool = False) -> bytes:
    write_bundle(
        path,
        payloads,
        header(len(payloads), group=group),
        sender=ALICE,
        group_key=GROUP_KEY if group else None,
    )
    return path.read_bytes()


def chunk_offsets(data: bytes) -> list[int]:
    """Where each chunk's length field starts, and the end of the file."""
    (header_len,) = struct.unpack(">I", data[26:30])
    at, out = PREFIX + header_len, []
    while at < len(data):
        out.append(at)
        (n,) = struct.unpack(">I", data[at : at + 4])
        at += 4 + n
    return [*out, at]


def refused(
    path: Path,
    data: bytes,
    match: str | None = None,
    *,
    group_keys: Mapping[bytes, bytes] | None = None,
) -> BundleError:
    path.write_bytes(data)
    with pytest.raises(BundleError, match=match) as info:
        open_bundle(path, keypair=BOB, group_keys=group_keys)
    assert "\n" not in str(info.value)
    return info.value


# --------------------------------------------------------------------------- round trips


def test_peer_bundle_round_trip_with_progress(tmp_path: Path) -> None:
    path = tmp_path / "b"
    written: list[tuple[int, int]] = []
    size = write_bundle(
        path, iter(PAYLOADS), header(), sender=ALICE, progress=lambda *p: written.append(p)
    )
    read: list[tuple[int, int]] = []
    bundle = open_bundle(path, keypair=BOB, progress=lambda *p: read.append(p))
    assert written == read == [(1, 3), (2, 3), (3, 3)]
    assert size == bundle.size == path.stat().st_size
    assert bundle.header == header() and bundle.sender_proved
    assert list(bundle.payloads()) == PAYLOADS
    assert path.read_bytes()[:10] == b"MVDSBNDL\x01\x01"


def test_group_bundle_round_trip(tmp_path: Path) -> None:
    data = write(tmp_path / "g", group=True)
    assert data[9] == 2
    bundle = open_bundle(tmp_path / "g", keypair=MALLORY, group_keys={G: GROUP_KEY})
    assert list(bundle.payloads()) == PAYLOADS
    assert bundle.header.sender == ALICE.public and not bundle.sender_proved


def test_payloads_are_streamed_not_collected(tmp_path: Path) -> None:
    seen: list[str] = []

    def payloads() -> Iterator[bytes]:
        for p in PAYLOADS:
            seen.append("made")
            yield p

    def progress(done: int, total: int) -> None:
        seen.append("written")

    write_bundle(tmp_path / "b", payloads(), header(), sender=ALICE, progress=progress)
    assert seen == ["made", "written"] * 3


# --------------------------------------------------------------------------- refusals


def test_every_cut_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "good")
    offsets = chunk_offsets(data)
    for cut in range(len(data)):
        refused(tmp_path / "bad", data[:cut])
    # A cut between chunks names the chunk that is missing.
    for index, at in enumerate(offsets[1:-1], 1):
        refused(tmp_path / "bad", data[:at], f"truncated \\(in chunk {index}\\)")


def test_every_flipped_byte_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "good")
    for at in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[at] ^= bit
            refused(tmp_path / "bad", bytes(bad))


def test_every_flipped_byte_of_a_group_bundle_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "good", group=True)
    for at in range(len(data)):
        bad = bytearray(data)
        bad[at] ^= 0x04
        refused(tmp_path / "bad", bytes(bad), group_keys={G: GROUP_KEY})


def test_reordered_duplicated_and_spliced_chunks_are_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "good", [b"a" * 10, b"b" * 10, b"c" * 10])
    o = chunk_offsets(data)
    chunks = [data[o[i] : o[i + 1]] for i in range(3)]
    head = data[: o[0]]
    refused(tmp_path / "bad", head + chunks[1] + chunks[0] + chunks[2], "chunk 0 was altered")
    refused(tmp_path / "bad", head + chunks[0] + chunks[0] + chunks[2], "chunk 1 was altered")
    # The last chunk moved up: bound to its index and to being last.
    refused(tmp_path / "bad", head + chunks[0] + chunks[2], "chunk 1 was altered")
    refused(tmp_path / "bad", data + chunks[2], "after its last chunk")
    # Same sender, same recipient, same sizes: another file's chunk does not fit.
    other = write(tmp_path / "other", [b"a" * 10, b"b" * 10, b"c" * 10])
    p = chunk_offsets(other)
    refused(tmp_path / "bad", head + chunks[0] + other[p[1] : p[2]] + chunks[2], "chunk 1")
    # Nor does its header (another content key and file id).
    refused(tmp_path / "bad", other[: p[0]] + data[o[0] :], "chunk 0")


def test_lying_lengths_are_bounded(tmp_path: Path) -> None:
    data = write(tmp_path / "good")
    o = chunk_offsets(data)
    big = struct.pack(">I", MAX_HEADER_BYTES + 1)
    refused(tmp_path / "bad", data[:26] + big + data[30:], "header claims")
    refused(tmp_path / "bad", data[:26] + b"\0\0\0\0" + data[30:], "header claims 0")
    huge = struct.pack(">I", 0xFFFFFFFF)
    refused(tmp_path / "bad", data[: o[0]] + huge + data[o[0] + 4 :], "chunk 0 claims")
    over = struct.pack(">I", MAX_CHUNK_BYTES + 1)
    refused(tmp_path / "bad", data[: o[1]] + over + data[o[1] + 4 :], "chunk 1 claims")
    refused(tmp_path / "bad", data[: o[1]] + b"\0\0\0\x0f" + data[o[1] + 4 :], "claims 15")


def test_not_bundles_and_not_ours(tmp_path: Path) -> None:
    data = write(tmp_path / "good")
    refused(tmp_path / "bad", b"", "not an mvds-node bundle")
    refused(tmp_path / "bad", os.urandom(4096), "not an mvds-node bundle")
    refused(tmp_path / "bad", b"MVDSBNDL", "not an mvds-node bundle")
    refused(tmp_path / "bad", data[:8] + b"\x02" + data[9:], "version 2 is not supported")
    refused(tmp_path / "bad", data[:9] + b"\x07" + data[10:], "unknown bundle kind 7")
    with pytest.raises(BundleError, match="not addressed to this node"):
        open_bundle(tmp_path / "good", keypair=MALLORY)
    with pytest.raises(BundleError, match="cannot read"):
        open_bundle(tmp_path / "missing", keypair=BOB)
    with pytest.raises(BundleError, match="cannot read"):
        open_bundle(tmp_path, keypair=BOB)
    assert issubclass(BundleError, MvdsError)


def test_group_bundles_need_the_right_key(tmp_path: Path) -> None:
    write(tmp_path / "g", group=True)
    with pytest.raises(BundleError, match="key we do not have"):
        open_bundle(tmp_path / "g", keypair=BOB)
    with pytest.raises(BundleError, match="key we do not have"):
        open_bundle(tmp_path / "g", keypair=BOB, group_keys={G: bytes(32)})
    # Our key, filed under another group: the header's group must be the key's.
    with pytest.raises(BundleError, match="does not belong"):
        open_bundle(tmp_path / "g", keypair=BOB, group_keys={b"H" * 32: GROUP_KEY})


def test_read_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "b"
    data = write(path)

    class Failing(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            if self.tell() >= PREFIX:
                raise OSError(5, "Input/output error")
            return super().read(n)

    monkeypatch.setattr("mvds_node.transports._file.open", lambda *a: Failing(data), raising=False)
    with pytest.raises(BundleError, match=f"^{path}: cannot read: Input/output error$"):
        open_bundle(path, keypair=BOB)
    monkeypatch.undo()
    bundle = open_bundle(path, keypair=BOB)
    path.unlink()
    with pytest.raises(BundleError, match=f"^{path}: cannot read: No such file or directory$"):
        list(bundle.payloads())
    path.mkdir()
    with pytest.raises(BundleError, match=f"^{path}: cannot read: Is a directory$"):
        open_bundle(path, keypair=BOB)


# --------------------------------------------------------------------------- writing


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = write(tmp_path / "b")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BundleError, match="cannot write bundle: No space left on device"):
        write(tmp_path / "b", [b"new"])
    monkeypatch.undo()
    assert (tmp_path / "b").read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_write_refuses_what_it_cannot_seal_or_count(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write"):
        write(tmp_path / "no" / "such" / "dir")
    with pytest.raises(BundleError, match="recipient key or a 32-byte group key"):
        write_bundle(tmp_path / "b", PAYLOADS, header(group=True), sender=ALICE)
    with pytest.raises(BundleError, match="header says 4 chunks, wrote 3"):
        write_bundle(tmp_path / "b", PAYLOADS, header(4), sender=ALICE)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- with the engine


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """Alice and Bob, each on a SQLite store, sharing a group but never a network."""
    stores, out = [], []
    for me, other in ((ALICE, BOB), (BOB, ALICE)):
        store = SQLiteStore(tmp_path / f"{me.public.hex()[:8]}.db")
        e = Engine(store, config=SyncConfig(epoch_seconds=1.0), now=0.0)
        e.add_group(G)
        e.add_peer(G, other.public)
        stores.append(store)
        out.append(e)
    yield out[0], out[1]
    for store in stores:
        store.close()


def test_a_refused_import_changes_nothing_at_any_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: tuple[Engine, Engine]
) -> None:
    monkeypatch.setattr("mvds_node.node._bundles.CHUNK_BYTES", 2048)
    alice, bob = engines
    for i in range(60):
        alice.send(G, os.urandom(100), now=0.0, timestamp=i + 1)
    export_bundle(alice, tmp_path / "good", sender=ALICE, now=0.0, created_ms=1, peer=BOB.public)
    data = (tmp_path / "good").read_bytes()
    offsets = chunk_offsets(data)
    assert len(offsets) > 4
    cuts = sorted(c for at in offsets for c in (at - 1, at, at + 5) if c < len(data))
    for cut in cuts:
        (tmp_path / "bad").write_bytes(data[:cut])
        with pytest.raises(BundleError):
            import_bundle(bob, tmp_path / "bad", keypair=BOB, now=0.0)
    assert bob.store_view.message_count() == 0 and bob.events() == []
    assert bob.payloads_to_send(now=0.0) == []
    result = import_bundle(bob, tmp_path / "good", keypair=BOB, now=0.0)
    assert result.messages_new == 60
    assert sum(isinstance(e, MessageDelivered) for e in bob.events()) == 60


def test_a_bundle_that_changes_between_verify_and_apply_changes_nothing(
    tmp_path: Path, engines: tuple[Engine, Engine]
) -> None:
    alice, bob = engines
    for i in range(3000):
        alice.send(G, os.urandom(600), now=0.0, timestamp=i + 1)
    export_bundle(alice, tmp_path / "b", sender=ALICE, now=0.0, created_ms=1, peer=BOB.public)
    data = (tmp_path / "b").read_bytes()

    def swap_after_verify(done: int, total: int) -> None:
        if done == total:  # the stick is rewritten (or read back differently) now
            (tmp_path / "b").write_bytes(data[:-20] + bytes([data[-20] ^ 1]) + data[-19:])

    with pytest.raises(BundleError):
        import_bundle(bob, tmp_path / "b", keypair=BOB, now=0.0, progress=swap_after_verify)
    assert bob.store_view.message_count() == 0
    # No deliveries of rolled-back messages, and no ACKs for them to Alice, who would then drop
    # messages Bob does not hold.
    assert bob.events() == [] and bob.payloads_to_send(now=0.0) == []


@pytest.mark.parametrize(
    "plain",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"sender": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"sender": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    ],
    ids=["array", "in a field", "objects"],
)
def test_a_deeply_nested_header_is_a_bundle_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plain: bytes
) -> None:
    """Anyone with our public key can seal a header to us: nesting is bounded before parsing."""
    monkeypatch.setattr(BundleHeader, "to_json", lambda self, key: plain)
    write(tmp_path / "deep")
    monkeypatch.undo()
    with pytest.raises(BundleError, match="nested over 8 deep") as info:
        open_bundle(tmp_path / "deep", keypair=BOB)
    assert "\n" not in str(info.value)


def test_brackets_inside_header_strings_are_not_nesting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header field (one a later version may add) with brackets and escapes inside a string
    is read: only real nesting counts."""
    original = BundleHeader.to_json

    def with_note(self: BundleHeader, key: bytes) -> bytes:
        doc = original(self, key)
        return doc[:-1] + b', "note": "' + b'[{\\"\\\\' * 100 + b'"}'

    monkeypatch.setattr(BundleHeader, "to_json", with_note)
    write(tmp_path / "noted")
    monkeypatch.undo()
    bundle = open_bundle(tmp_path / "noted", keypair=BOB)
    assert bundle.header == header()
