"""The reader's cursor: older messages missed while a newer one came by sync, the page bound,
messages that could not be stored."""

from __future__ import annotations

import pytest

from mvds_node.remotelog._backend import MemoryBackend
from mvds_node.remotelog._format import LogError, log_name
from mvds_node.remotelog._log import Cursor, LogReader, LogSettings, LogWriter
from tests.remotelog.test_log import KEY, WRITER, G, messages


async def test_older_messages_are_fetched_after_a_newer_one_came_by_sync() -> None:
    backend = MemoryBackend()
    writer = LogWriter(backend, KEY, G, settings=LogSettings(page_size=2, inline=1))
    sent = messages(6)
    await writer.append(sent[:1])
    reader = LogReader(backend, WRITER, G, settings=LogSettings(page_size=2, inline=1))
    have = {sent[0][0]}
    assert reader.commit(await reader.poll(have.__contains__), have.__contains__)
    assert reader.cursor == Cursor(1, sent[0][0])
    for m in sent[1:]:
        await writer.append([m])  # sequences 2..6
    # Message 5 reached the reader by direct sync; 2, 3, 4 and 6 did not. A reader that stopped
    # at the first message it holds would never see 2, 3 and 4.
    have.add(sent[4][0])
    result = await reader.poll(have.__contains__)
    assert result.ids == [sent[i][0] for i in (1, 2, 3, 5)]
    assert result.messages == [sent[i][1] for i in (1, 2, 3, 5)]
    assert result.complete and result.cursor == Cursor(6, sent[5][0])
    assert reader.cursor == Cursor(1, sent[0][0])  # not before they are stored
    have.update(result.ids)
    assert reader.commit(result, have.__contains__)
    assert reader.cursor == Cursor(6, sent[5][0])
    again = await reader.poll(have.__contains__)
    assert (again.ids, again.pages, again.cas_gets) == ([], 0, 0)


async def test_a_message_that_was_not_stored_holds_the_cursor_back() -> None:
    backend = MemoryBackend()
    writer = LogWriter(backend, KEY, G)
    sent = messages(3)
    await writer.append(sent)
    reader = LogReader(backend, WRITER, G)
    result = await reader.poll(lambda m: False)
    stored = {sent[0][0], sent[2][0]}  # the engine refused message 1
    assert not reader.commit(result, stored.__contains__)
    assert reader.resume is None and not reader.cursor  # not narrowed to None (mypy)
    again = await reader.poll(stored.__contains__)
    assert again.ids == [sent[1][0]]  # fetched again, and only it
    stored.add(sent[1][0])
    assert reader.commit(again, stored.__contains__)
    assert reader.cursor == Cursor(1, sent[2][0])
    # A result of an older poll cannot move the cursor back.
    assert not reader.commit(result, stored.__contains__)
    assert reader.cursor == Cursor(1, sent[2][0])


@pytest.mark.parametrize("bound", [1, 2, 3])
async def test_the_page_bound_resumes_where_it_stopped(bound: int) -> None:
    backend = MemoryBackend()
    settings = LogSettings(page_size=2, inline=0, max_pages_per_poll=bound)
    writer = LogWriter(backend, KEY, G, settings=settings)
    sent = messages(20)
    await writer.append(sent)  # 10 pages
    reader = LogReader(backend, WRITER, G, settings=settings)
    have: set[bytes] = set()
    got: list[bytes] = []
    polls = 0
    while True:
        result = await reader.poll(have.__contains__)
        polls += 1
        assert result.pages <= bound
        got.extend(result.ids)
        have.update(result.ids)
        assert reader.commit(result, have.__contains__)
        if polls == 2:  # the writer goes on meanwhile: the walk finds these from the head
            await writer.append(messages(3, start=20))
        if result.complete:
            break
        # Until the walk ends, the cursor never claims the newest head.
        assert reader.cursor is None or reader.cursor.seq < writer.seq
    assert sorted(got) == sorted(m for m, _ in messages(23))  # every one, each once
    assert reader.cursor == Cursor(2, messages(23)[-1][0])
    # 10 pages, then from the new head down to where the first walk began: the head (message
    # 22), a page frozen from it (21, 20) and the page the old head became (19, where it stops).
    # A poll that finishes one walk goes on with the next, so no page of the bound is wasted.
    assert polls == -(-(10 + 3) // bound)
    done = await reader.poll(have.__contains__)
    assert (done.ids, done.pages) == ([], 0)


async def test_a_reader_restored_from_its_state_goes_on_and_notices_a_rollback() -> None:
    backend = MemoryBackend()
    settings = LogSettings(page_size=4, inline=0)
    writer = LogWriter(backend, KEY, G, settings=settings)
    await writer.append(messages(10))
    old_head = backend.ns[log_name(WRITER, G)]
    await writer.append(messages(2, start=10))
    first = LogReader(backend, WRITER, G, settings=settings)
    have: set[bytes] = set()
    result = await first.poll(have.__contains__)
    have.update(result.ids)
    assert first.commit(result, have.__contains__)
    await writer.append(messages(1, start=12))
    restored = LogReader(backend, WRITER, G, settings=settings, seq=first.seq, cursor=first.cursor)
    result = await restored.poll(lambda m: False)  # even with nothing known: the cursor stops it
    # The head page (message 12) and the page frozen from the old head, where the cursor's
    # message (11) now is.
    assert result.ids == [messages(13)[-1][0]] and result.pages == 2
    backend.ns[log_name(WRITER, G)] = old_head
    fresh = LogReader(backend, WRITER, G, settings=settings, seq=first.seq, cursor=first.cursor)
    with pytest.raises(LogError, match="rollback"):
        await fresh.poll(lambda m: False)


async def test_a_head_without_entries_costs_a_reader_each_page_once() -> None:
    backend = MemoryBackend()
    settings = LogSettings(page_size=16, head_size=0, inline=1_000_000)
    writer = LogWriter(backend, KEY, G, settings=settings)
    sent = messages(25)
    await writer.append(sent[:3])
    # The head names one page holding the 3 messages with their bytes; nothing else is stored.
    assert len(backend.cas) == 1
    reader = LogReader(backend, WRITER, G, settings=settings)
    have: set[bytes] = set()

    async def poll() -> tuple[list[bytes], int, int]:
        result = await reader.poll(have.__contains__)
        have.update(result.ids)
        assert reader.commit(result, have.__contains__)
        return result.ids, result.pages, result.cas_gets

    first = await poll()
    assert first == ([m for m, _ in sent[:3]], 2, 1)  # the head, then its page
    page_1 = writer.tail
    assert reader.cursor == Cursor(1, sent[2][0], page_1)
    await writer.append(sent[3:5])
    # The new page only: its tail is the cursor's page, which is not fetched again.
    assert await poll() == ([m for m, _ in sent[3:5]], 2, 1)
    assert reader.cursor == Cursor(2, sent[4][0], writer.tail)
    assert await poll() == ([], 0, 0)  # the head alone: nothing new
    await writer.append(sent[5:25])  # 20 messages: a page of 16, then one of 4 in front
    assert len(backend.cas) == 4
    assert await poll() == ([m for m, _ in sent[5:25]], 3, 2)
    # A reader restored without the page address (state saved before it existed) stops by the
    # message ID: it fetches the cursor's page once more, and nothing from it.
    await writer.append(messages(1, start=25))
    assert reader.cursor is not None
    old = LogReader(
        backend,
        WRITER,
        G,
        settings=settings,
        seq=reader.seq,
        cursor=Cursor(reader.cursor.seq, reader.cursor.newest),
    )
    result = await old.poll(lambda m: False)
    assert (result.ids, result.cas_gets) == ([messages(26)[-1][0]], 2)


def test_head_size_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="head_size"):
        LogSettings(head_size=-1)
