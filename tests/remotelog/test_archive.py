"""Log archives: a whole log carried in one file, checked completely before it is loaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog import FileBackend, LogReader, LogSettings, LogWriter, log_name
from mvds_node.remotelog._archive import ArchiveError, _write_archive, export_log, import_log
from mvds_node.remotelog._format import Page, public_key, sign_head
from mvds_node.sync import encode_message, message_id

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()
WRITER = public_key(KEY)
SETTINGS = LogSettings(page_size=8, inline=3)


def messages(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [
        (message_id(G, i + 1, b"a%d" % i), encode_message(G, i + 1, b"a%d" % i))
        for i in range(start, start + n)
    ]


async def archive(tmp_path: Path, n: int = 30, group_key: bytes | None = None) -> Path:
    source = FileBackend(tmp_path / "writer-side")
    writer = LogWriter(source, KEY, G, settings=SETTINGS, group_key=group_key)
    await writer.append(messages(n))
    path = tmp_path / "log.archive"
    result = await export_log(source, WRITER, G, path, group_key=group_key)
    assert result.seq == 1 and result.objects > 0
    return path


async def test_archive_carries_a_log_to_a_backend_with_no_network(tmp_path: Path) -> None:
    path = await archive(tmp_path)
    target = FileBackend(tmp_path / "reader-side")
    result = await import_log(target, path)
    assert result.name == log_name(WRITER, G)
    read = await LogReader(target, WRITER, G, settings=SETTINGS).poll(lambda m: False)
    assert read.messages == [w for _, w in messages(30)]


async def test_sealed_archive(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = await archive(tmp_path, group_key=key)
    target = FileBackend(tmp_path / "reader-side")
    with pytest.raises(ArchiveError, match="key we do not have"):
        await import_log(target, path)
    await import_log(target, path, group_keys=[os.urandom(32), key])
    read = await LogReader(target, WRITER, G, group_key=key).poll(lambda m: False)
    assert len(read.messages) == 30


async def test_damaged_archives_are_refused_and_change_nothing(tmp_path: Path) -> None:
    path = await archive(tmp_path)
    data = path.read_bytes()
    target = FileBackend(tmp_path / "reader-side")
    bad = tmp_path / "bad"
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "garbage": os.urandom(2000),
        "extended": data + b"x",
    }
    for at in (40, len(data) // 3, len(data) - 10):
        flipped = bytearray(data)
        flipped[at] ^= 1
        cases[f"flipped at {at}"] = bytes(flipped)
    for label, content in cases.items():
        bad.write_bytes(content)
        with pytest.raises(ArchiveError):
            await import_log(target, bad)
        assert await target.ns_fetch(log_name(WRITER, G)) is None, label


async def test_an_older_archive_does_not_roll_a_log_back(tmp_path: Path) -> None:
    old = await archive(tmp_path)
    source = FileBackend(tmp_path / "writer-side")
    writer = LogWriter(source, KEY, G, settings=SETTINGS)
    await writer.append(messages(5, start=30))
    newer = tmp_path / "newer"
    await export_log(source, WRITER, G, newer)
    target = FileBackend(tmp_path / "reader-side")
    await import_log(target, newer)
    with pytest.raises(ArchiveError, match="newer head"):
        await import_log(target, old)


def signed_archive(path: Path, name: str) -> Path:
    """An archive of an empty log under ``name``, signed by its writer (who may sign any name)."""
    record = sign_head(KEY, name, 1, Page((), b"").encode(), False)
    _write_archive(path, name, WRITER, record, [])
    return path


@pytest.mark.parametrize(
    "suffix", ["UPPER0123456789ab", "a" * 150, "0123456789abcdef/x", "../../../etc", ""]
)
async def test_an_archive_under_a_name_no_log_has_is_an_archive_error(
    tmp_path: Path, suffix: str
) -> None:
    path = signed_archive(tmp_path / "odd.archive", f"mvds/{WRITER.hex()}/{suffix}")
    target = FileBackend(tmp_path / "reader-side")
    with trio.fail_after(10):
        with pytest.raises(ArchiveError, match="not the name of a remote log"):
            await import_log(target, path)
    assert not (tmp_path / "reader-side").exists()


async def test_a_backend_that_refuses_the_import_is_an_archive_error(tmp_path: Path) -> None:
    path = await archive(tmp_path)
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where the backend's directory should be")
    with trio.fail_after(10):
        with pytest.raises(ArchiveError, match="the backend refused the log"):
            await import_log(FileBackend(blocked), path)


async def test_a_damaged_head_in_the_backend_does_not_block_an_import(tmp_path: Path) -> None:
    path = await archive(tmp_path)
    target = FileBackend(tmp_path / "reader-side")
    name = log_name(WRITER, G)
    await target.ns_update(name, b"\xff\xff not a signed head")
    with trio.fail_after(10):
        result = await import_log(target, path)
        assert result.seq == 1
        reader = LogReader(target, WRITER, G, settings=SETTINGS)
        assert len((await reader.poll(lambda _: False)).messages) == 30
