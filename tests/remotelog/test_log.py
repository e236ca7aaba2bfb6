"""The remote log: writer, reader, modes, sealing, restarts, and a hostile helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.remotelog._backend import BackendError, FileBackend, MemoryBackend
from mvds_node.remotelog._format import LogError, log_name, public_key, sign_head
from mvds_node.remotelog._log import LogReader, LogSettings, LogWriter
from mvds_node.sync import encode_message, message_id

G = b"G" * 32
KEY = Ed25519PrivateKey.generate()
WRITER = public_key(KEY)


def messages(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        body = f"message {i}".encode()
        out.append((message_id(G, i + 1, body), encode_message(G, i + 1, body)))
    return out


MODES = {
    "fully replicated": LogSettings(page_size=16, inline=1_000_000),
    "pages with CAS mapping": LogSettings(page_size=16, inline=0),
    "mixed": LogSettings(page_size=16, inline=5),
    "linked list": LogSettings(page_size=1, inline=0),
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_reader_catches_up_in_every_mode(mode: str) -> None:
    backend = MemoryBackend()
    settings = MODES[mode]
    writer = LogWriter(backend, KEY, G, settings=settings)
    sent = messages(100)
    for i in range(0, 100, 10):
        await writer.append(sent[i : i + 10])
    reader = LogReader(backend, WRITER, G, settings=settings)
    result = await reader.poll(lambda mid: False)
    assert result.messages == [wire for _, wire in sent]  # oldest first, every one
    pages = -(-100 // settings.page_size)
    if mode == "fully replicated":
        assert result.cas_gets == pages - 1  # one round trip per page, none per message
    if mode == "pages with CAS mapping":
        assert result.cas_gets == pages - 1 + 100
    # Once they are stored, the cursor moves to the head: a second poll fetches nothing.
    assert reader.commit(result, lambda mid: True)
    again = await reader.poll(lambda mid: True)
    assert again.messages == [] and again.cas_gets == 0


async def test_incremental_poll_stops_at_what_we_have() -> None:
    backend = MemoryBackend()
    writer = LogWriter(backend, KEY, G, settings=LogSettings(page_size=8, inline=0))
    first, second = messages(30), messages(5, start=30)
    await writer.append(first)
    reader = LogReader(backend, WRITER, G, settings=LogSettings(page_size=8, inline=0))
    have = {m for m, _ in first}
    assert reader.commit(await reader.poll(have.__contains__), have.__contains__)
    await writer.append(second)
    result = await reader.poll(have.__contains__)
    assert result.messages == [w for _, w in second]
    assert result.pages == 2 and result.cas_gets == 1 + 5  # the head and one older page


async def test_writer_resumes_after_restart(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path / "log")
    settings = LogSettings(page_size=4, inline=2)
    await LogWriter(backend, KEY, G, settings=settings).append(messages(10))
    restarted = LogWriter(FileBackend(tmp_path / "log"), KEY, G, settings=settings)
    await restarted.append(messages(3, start=10))
    assert restarted.seq == 2
    result = await LogReader(backend, WRITER, G, settings=settings).poll(lambda m: False)
    assert result.messages == [w for _, w in messages(13)]


async def test_backend_down_mid_write_loses_and_duplicates_nothing() -> None:
    backend = MemoryBackend()
    writer = LogWriter(backend, KEY, G, settings=LogSettings(page_size=4, inline=0))
    await writer.append(messages(6))
    backend.down = True
    with pytest.raises(BackendError):
        await writer.append(messages(6, start=6))
    backend.down = False
    await writer.append(messages(6, start=6))  # the caller retries the same batch
    await writer.append(messages(6, start=6))  # even twice
    result = await LogReader(backend, WRITER, G).poll(lambda m: False)
    assert result.messages == [w for _, w in messages(12)]


async def test_sealed_log_stores_only_ciphertext() -> None:
    backend = MemoryBackend()
    group_key = os.urandom(32)
    writer = LogWriter(
        backend, KEY, G, settings=LogSettings(page_size=4, inline=2), group_key=group_key
    )
    await writer.append(messages(10))
    stored = b"".join([*backend.cas.values(), *backend.ns.values()])
    assert b"message " not in stored
    ok = await LogReader(backend, WRITER, G, group_key=group_key).poll(lambda m: False)
    assert len(ok.messages) == 10
    with pytest.raises(LogError, match="sealed"):
        await LogReader(backend, WRITER, G).poll(lambda m: False)
    with pytest.raises(LogError, match="fails authentication"):
        await LogReader(backend, WRITER, G, group_key=os.urandom(32)).poll(lambda m: False)


async def written(settings: LogSettings) -> MemoryBackend:
    backend = MemoryBackend()
    await LogWriter(backend, KEY, G, settings=settings).append(messages(20))
    return backend


async def test_tampered_or_swapped_content_is_refused() -> None:
    backend = await written(LogSettings(page_size=4, inline=0))
    address = next(iter(backend.cas))
    backend.cas[address] = backend.cas[address] + b"x"
    with pytest.raises(LogError, match="does not match its address"):
        await LogReader(backend, WRITER, G).poll(lambda m: False)
    backend = await written(LogSettings(page_size=4, inline=0))
    a, b = list(backend.cas)[:2]
    backend.cas[a], backend.cas[b] = backend.cas[b], backend.cas[a]
    with pytest.raises(LogError, match="does not match its address"):
        await LogReader(backend, WRITER, G).poll(lambda m: False)


async def test_content_that_is_not_the_named_message_is_refused() -> None:
    backend = MemoryBackend()
    mallory_stored = encode_message(G, 99, b"forged")
    # A page that names message 1 but carries other bytes inline, correctly signed by the
    # writer (say, a buggy writer): the reader checks IDs, not just signatures.
    from mvds_node.remotelog._format import Page, Pair

    page = Page((Pair(messages(1)[0][0], b"", mallory_stored),), b"").encode()
    name = log_name(WRITER, G)
    backend.ns[name] = sign_head(KEY, name, 1, page, False)
    with pytest.raises(LogError, match="does not match its ID"):
        await LogReader(backend, WRITER, G).poll(lambda m: False)


async def test_forged_and_rolled_back_heads_are_refused() -> None:
    backend = await written(LogSettings(page_size=4, inline=4))
    name = log_name(WRITER, G)
    old = backend.ns[name]
    reader = LogReader(backend, WRITER, G)
    await reader.poll(lambda m: False)
    # Forged: signed by another key, or altered after signing.
    backend.ns[name] = sign_head(Ed25519PrivateKey.generate(), name, 99, b"", False)
    with pytest.raises(LogError, match="another key"):
        await reader.poll(lambda m: False)
    altered = bytearray(old)
    altered[-70] ^= 1
    backend.ns[name] = bytes(altered)
    with pytest.raises(LogError):
        await reader.poll(lambda m: False)
    # Rolled back: a newer head was seen, then the helper serves an older one.
    backend.ns[name] = old
    writer = LogWriter(backend, KEY, G, settings=LogSettings(page_size=4, inline=4))
    await writer.append(messages(1, start=20))
    await reader.poll(lambda m: False)
    backend.ns[name] = old
    with pytest.raises(LogError, match="rollback"):
        await reader.poll(lambda m: False)


async def test_oversized_and_garbage_records_are_refused() -> None:
    backend = MemoryBackend()
    name = log_name(WRITER, G)
    backend.ns[name] = b"\xff" * 100
    with pytest.raises(LogError, match="not a signed head"):
        await LogReader(backend, WRITER, G).poll(lambda m: False)
    backend.ns[name] = b"\x00" * (9 * 1024 * 1024)
    with pytest.raises(LogError, match="over the limit"):
        await LogReader(backend, WRITER, G).poll(lambda m: False)
    backend.ns[name] = sign_head(KEY, name, 1, b"\xff\xff\xff", False)
    with pytest.raises(LogError, match="not a remote log page"):
        await LogReader(backend, WRITER, G).poll(lambda m: False)


class WrongAddresses(MemoryBackend):
    """A CAS that stores what it is given but answers another address, as the spec's
    proof-of-concept server does (40 ASCII bytes), until ``honest`` is set."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer
        self.honest = False

    async def cas_add(self, data: bytes) -> bytes:
        address = await super().cas_add(data)
        return address if self.honest else self.answer


@pytest.mark.parametrize(
    "answer",
    [b"da39a3ee5e6b4b0d3255bfef95601890afd80709", b"\x00" * 32, b""],
    ids=["40 ASCII bytes", "32 wrong bytes", "empty"],
)
@pytest.mark.parametrize("settings", [LogSettings(page_size=2, inline=0), LogSettings(page_size=2)])
async def test_a_cas_that_answers_a_wrong_address_gets_nothing_published(
    answer: bytes, settings: LogSettings
) -> None:
    backend = WrongAddresses(answer)
    writer = LogWriter(backend, KEY, G, settings=settings)
    with trio.fail_after(10):
        with pytest.raises(BackendError, match=r"CAS answered address .* nothing was published"):
            await writer.append(messages(5))
        assert backend.ns == {} and writer.seq == 0
        backend.honest = True  # the retry, once the CAS answers right, publishes a good log
        await writer.append(messages(5))
        reader = LogReader(backend, WRITER, G, settings=settings)
        result = await reader.poll(lambda _: False)
    assert result.ids == [m for m, _ in messages(5)]
