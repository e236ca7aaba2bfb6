"""The segment writer: page-aligned writes, a rewritten last page, writes in the background.

Every test runs with ``O_DIRECT`` (where the file system takes it) and through the page cache,
and checks the file's bytes, not the writer's account of them. Then the failures: a file system
that refuses direct writes, a background write that fails (the store rolls the transaction back
and the next one works), and bytes read back before they reach the file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from pathlib import Path

import pytest

from mvds_node.errors import StoreError
from mvds_node.sync import StoredMessage
from mvds_node.sync.store import _segments
from mvds_node.sync.store._segments import PAGE, SegmentWriter
from mvds_node.sync.store._sqlite import SQLiteStore

STAGE = _segments._STAGE


def pattern(n: int, size: int) -> bytes:
    """``size`` bytes that differ from any other ``n``'s at every offset that matters."""
    seed = hashlib.sha256(b"%d" % n).digest()
    return (seed * (size // len(seed) + 1))[:size]


def content(path: Path, end: int) -> bytes:
    return path.read_bytes()[:end]


@pytest.fixture(params=[True, False], ids=["direct", "page-cache"])
def direct(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_bodies_of_every_size_land_where_they_were_put(tmp_path: Path, direct: bool) -> None:
    path = tmp_path / "1.seg"
    writer = SegmentWriter(str(path), direct=direct)
    expected = b""
    # Across pages, across buffers, larger than all buffers together (the oldest write is
    # waited for), and a few bytes at a time.
    for n, size in enumerate([4100, 1, PAGE, 3 * STAGE + 17, 5 * STAGE, 70_000, 9, 12_345]):
        body = pattern(n, size)
        writer.write(len(expected), body)
        expected += body
        if n % 3 == 2:
            writer.sync()
    writer.sync()
    writer.close()
    assert content(path, len(expected)) == expected


def test_the_last_page_is_rewritten_with_its_bytes_kept(tmp_path: Path, direct: bool) -> None:
    path = tmp_path / "1.seg"
    expected = b""
    for n in range(6):  # a store reopened after every small commit
        writer = SegmentWriter(str(path), end=len(expected), direct=direct)
        body = pattern(n, 1000 + n)
        writer.write(len(expected), body)
        writer.sync()
        writer.close()
        expected += body
        assert content(path, len(expected)) == expected


def test_a_rewind_overwrites_bytes_already_written_in_the_background(
    tmp_path: Path, direct: bool
) -> None:
    path = tmp_path / "1.seg"
    writer = SegmentWriter(str(path), direct=direct)
    kept = pattern(0, 5000)
    writer.write(0, kept)
    writer.sync()  # committed
    writer.write(len(kept), pattern(1, 2 * STAGE + 300))  # a transaction that rolls back
    writer.write(len(kept), pattern(2, 4000))  # the next one writes where it began
    writer.sync()
    writer.close()
    assert content(path, len(kept) + 4000) == kept + pattern(2, 4000)


def test_a_rewind_into_a_page_still_in_flight_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails inside a transaction rewinds to the end of the bodies stored before
    it in the same transaction, whose last page may be in the thread's hands, not yet in the
    file: the writer must wait for that write before it reads the page back."""
    written = threading.Event()
    go = threading.Event()  # the thread's write waits for this
    early: list[int] = []
    real_write_all, real_preadv, real_wait_all = (
        _segments._write_all,
        os.preadv,
        SegmentWriter._wait_all,
    )

    def write_all(fd: int, view: memoryview, length: int, offset: int) -> None:
        go.wait(30)
        real_write_all(fd, view, length, offset)
        written.set()

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        if not written.is_set():
            early.append(offset)  # read before the write landed
            go.set()
        return real_preadv(fd, buffers, offset)

    def wait_all(self: SegmentWriter) -> BaseException | None:
        go.set()
        return real_wait_all(self)

    monkeypatch.setattr(_segments, "_write_all", write_all)
    monkeypatch.setattr(os, "preadv", preadv)
    monkeypatch.setattr(SegmentWriter, "_wait_all", wait_all)
    path = tmp_path / "1.seg"
    writer = SegmentWriter(str(path), direct=False)
    first = pattern(0, STAGE + 10)  # fills a buffer: its write goes to the thread
    writer.write(0, first)
    writer.write(100, pattern(1, 50))  # back into the page the thread holds
    writer.sync()
    writer.close()
    assert early == []
    assert content(path, 150) == first[:100] + pattern(1, 50)


def test_bytes_not_yet_in_the_file_are_read_from_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "1.seg"
    writer = SegmentWriter(str(path))
    writer.write(0, pattern(0, STAGE + 100))
    writer.write(STAGE + 100, pattern(1, 50))
    everything = pattern(0, STAGE + 100) + pattern(1, 50)
    assert writer.staged(STAGE + 80, 70) == (STAGE + 80, everything[STAGE + 80 : STAGE + 150])
    # A body that began in the full buffer: its start is the file's to give.
    assert writer.staged(STAGE - 20, 40) == (STAGE, everything[STAGE : STAGE + 20])
    assert writer.staged(10, 20) == (30, b""), "all in the file"
    with path.open("rb") as f:  # the full buffer is in the file once the thread is done
        f.seek(STAGE + 80)
        assert f.read(20) == b""
        f.seek(STAGE - 20)
        assert f.read(20) == pattern(0, STAGE)[-20:]
    writer.close()


def test_a_file_system_that_refuses_direct_writes_gets_cached_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _segments._O_DIRECT:
        pytest.skip("no O_DIRECT here")
    real_pwrite = os.pwrite
    refused = []

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        if _flags(fd) & _segments._O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    path = tmp_path / "1.seg"
    writer = SegmentWriter(str(path), end=0)
    assert refused == [0] and not writer.direct
    body = pattern(0, 2 * STAGE + 5)
    writer.write(0, body)
    writer.sync()
    writer.close()
    assert content(path, len(body)) == body
    assert path.stat().st_size == (len(body) + PAGE - 1) // PAGE * PAGE


def _flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def big(n: int, size: int) -> StoredMessage:
    wire = pattern(n, size)
    return StoredMessage(hashlib.sha256(wire).digest(), b"G" * 32, n, wire, ())


def test_a_failed_background_write_rolls_the_batch_back_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "s.db"
    real = _segments._write_all
    failures = [1]

    def write_all(fd: int, view: memoryview, length: int, offset: int) -> None:
        if failures and length == STAGE:
            failures.pop()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, view, length, offset)

    monkeypatch.setattr(_segments, "_write_all", write_all)
    with SQLiteStore(db) as store:
        first = big(0, 10_000)
        assert store.add_message(first)
        batch = [big(n, 600_000) for n in range(1, 6)]  # three buffers' worth
        with pytest.raises(StoreError, match="No space left"):
            store.add_messages(batch)
        assert all(store.get_message(m.id) is None for m in batch)
        assert store.add_messages(batch), "the disk has room again"
    with SQLiteStore(db) as store:
        for m in [first, *batch]:
            assert store.get_message(m.id) == m


def test_a_body_read_in_its_own_transaction_comes_from_the_buffer(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        m = big(0, 3 * STAGE + 10)
        with store.transaction():
            store.add_message(m)
            store._recent.clear()  # as if the bodies kept in memory had moved on
            assert store.get_wires([m.id]) == {m.id: m.wire}
        store._recent.clear()
        assert store.get_message(m.id) == m
