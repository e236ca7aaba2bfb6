"""The node's remote-log service never dies: a backend that fails, lies or raises what no rule
of ours expects ends that one attempt with a reported reason, and the task retries with backoff
(under ``autojump_clock``, so the backoff is exact and the tests instant)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mvds_node.node._remotelog import RemoteLogService
from mvds_node.remotelog import BackendError, LogSettings, LogWriter, MemoryBackend, log_name
from mvds_node.remotelog._format import public_key
from mvds_node.sync import Limits, decode_payload, encode_message, message_id

G = b"G" * 32
SETTINGS = LogSettings(page_size=4, inline=2)
POLL = 100.0  # seconds: longer than anything a test waits for, but for the backoff


def batch(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        body = f"message {i}".encode()
        out.append((message_id(G, i + 1, body), encode_message(G, i + 1, body)))
    return out


class Faulty(MemoryBackend):
    """A memory backend whose calls can be made to raise, per call and per name."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: dict[str, Callable[[Any], Any]] = {}
        """call name -> a function of the call's first argument that raises (or returns
        what the call then answers)."""

    async def cas_add(self, data: bytes) -> bytes:
        if "cas_add" in self.faults:
            await trio.lowlevel.checkpoint()
            return self.faults["cas_add"](data)  # type: ignore[no-any-return]
        return await super().cas_add(data)

    async def ns_update(self, name: str, record: bytes) -> None:
        if "ns_update" in self.faults:
            await trio.lowlevel.checkpoint()
            self.faults["ns_update"](name)
        await super().ns_update(name, record)

    async def ns_fetch(self, name: str) -> bytes | None:
        if "ns_fetch" in self.faults:
            await trio.lowlevel.checkpoint()
            self.faults["ns_fetch"](name)
        return await super().ns_fetch(name)


@dataclass
class Seen:
    """What the service told the node."""

    stored: set[bytes] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    internal: list[tuple[str, str, str]] = field(default_factory=list)
    uploaded: list[int] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def feed(self, peer: bytes, payload: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.stored.update(m.id for m in decode_payload(payload, Limits()).messages)
        self.changed.set()

    def upload(self, group: str, seq: int, messages: int, queued: int) -> None:
        self.uploaded.append(seq)
        self.changed.set()

    def report(self, where: str, error: str, traceback: str) -> None:
        self.internal.append((where, error, traceback))
        self.changed.set()

    async def wait(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.changed = trio.Event()
            await self.changed.wait()


def make_service(
    backend: MemoryBackend, tmp_path: Path, members: list[tuple[bytes, bytes]]
) -> tuple[RemoteLogService, Seen]:
    seen = Seen()
    service = RemoteLogService(
        backend=backend,
        data_dir=tmp_path,
        signing=Ed25519PrivateKey.generate(),
        our_key=b"O" * 32,
        groups=[("chat", G, None, members)],
        settings=SETTINGS,
        poll_seconds=POLL,
        has_message=seen.stored.__contains__,
        feed=seen.feed,
        refused=lambda peer, reason, detail: seen.refused.append(detail),
        uploaded=seen.upload,
        internal=seen.report,
    )
    return service, seen


@asynccontextmanager
async def running(service: RemoteLogService) -> AsyncIterator[trio.Nursery]:
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            await trio.testing.wait_all_tasks_blocked()
            yield nursery
            nursery.cancel_scope.cancel()
    finally:
        service.close()


def fail(exc: Exception, only: str = "") -> Callable[[Any], Any]:
    def raise_it(arg: Any) -> Any:
        if not only or arg == only:
            raise exc
        return None

    return raise_it


@pytest.mark.parametrize(
    "exc",
    [ValueError("no rule expects this"), KeyError("neither this"), AttributeError("nor this")],
)
async def test_a_reader_survives_a_bug_in_its_backend_and_reads_once_it_is_gone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, exc: Exception
) -> None:
    backend = Faulty()
    bad, good = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    await LogWriter(backend, bad, G, settings=SETTINGS).append(batch(3))
    await LogWriter(backend, good, G, settings=SETTINGS).append(batch(2, 3))
    bad_name = log_name(public_key(bad), G)
    backend.faults["ns_fetch"] = fail(exc, only=bad_name)
    service, seen = make_service(
        backend, tmp_path, [(b"B" * 32, public_key(bad)), (b"C" * 32, public_key(good))]
    )
    with trio.fail_after(10 * POLL):  # virtual time
        async with running(service):
            # At start every log is read: the good one fully, the bad one ends in a report.
            await seen.wait(lambda: len(seen.internal) == 1 and len(seen.stored) == 2)
            where, error, traceback = seen.internal[0]
            assert where == f"remote log of {(b'B' * 32).hex()[:16]} in chat"
            assert error.startswith(type(exc).__name__)
            assert "raise_it" in traceback
            assert service.status[bad_name].error.startswith("internal error: ")
            assert seen.stored == {m for m, _ in batch(2, 3)}
            # The reader backs off like for an unreachable backend (2 poll intervals), then
            # reads the log once the fault is gone.
            del backend.faults["ns_fetch"]
            start = trio.current_time()
            await seen.wait(lambda: len(seen.stored) == 5)
            assert trio.current_time() - start == pytest.approx(2 * POLL)
            await trio.testing.wait_all_tasks_blocked()  # the poll finishes
            assert service.status[bad_name].error == ""
    assert seen.refused == [] and len(seen.internal) == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (fail(BackendError("helper is down"), ""), "helper is down"),
        (lambda data: b"da39a3ee5e6b4b0d3255bfef95601890afd80709", "CAS answered address"),
        (lambda data: "not bytes at all", "CAS answered address a str"),
    ],
    ids=["down", "40 ASCII bytes", "a str"],
)
async def test_a_failed_upload_is_reported_and_retried_with_backoff(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, fault: Any, reason: str
) -> None:
    backend = Faulty()
    backend.faults["cas_add"] = fault
    service, seen = make_service(backend, tmp_path, [])
    (status,) = service.status.values()
    with trio.fail_after(1000):
        async with running(service):
            service.enqueue(G, batch(5))  # more than `inline`: some go to the CAS
            await trio.testing.wait_all_tasks_blocked()
            assert reason in status.error and status.queued == 5
            assert backend.ns == {}  # nothing that names a bad address was published
            await trio.sleep(1 + 2 + 4 - 0.5)  # 1 s doubling: three more attempts by now
            assert backend.statistics().cas_get == 0 and backend.ns == {}
            del backend.faults["cas_add"]
            start = trio.current_time()
            await seen.wait(lambda: seen.uploaded == [1])
            assert trio.current_time() - start == pytest.approx(0.5)  # the attempt at 7 s
    assert status.error == "" and status.queued == 0 and seen.internal == []
    assert await LogWriter(backend, Ed25519PrivateKey.generate(), G).backend.ns_fetch(status.name)


@pytest.mark.internal_errors_expected
async def test_a_bug_in_an_upload_is_an_internal_error_and_the_upload_goes_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend = Faulty()
    backend.faults["ns_update"] = fail(ValueError("the backend's own bug"))
    service, seen = make_service(backend, tmp_path, [])
    (status,) = service.status.values()
    with trio.fail_after(1000):
        async with running(service):
            service.enqueue(G, batch(3))
            await seen.wait(lambda: len(seen.internal) == 1)
            where, error, _ = seen.internal[0]
            assert where == f"remote log upload of {status.name}"
            assert error == "ValueError: the backend's own bug"
            assert status.error == "internal error: ValueError: the backend's own bug"
            del backend.faults["ns_update"]
            await seen.wait(lambda: seen.uploaded == [1])
            assert trio.current_time() == pytest.approx(1.0)  # the first retry, after 1 s
    assert status.error == "" and status.queued == 0


class Announcing(Faulty):
    """A backend with an update feed (like Redis pub/sub) that the test writes into."""

    def __init__(self) -> None:
        super().__init__()
        self.feeds: list[trio.MemorySendChannel[Any]] = []
        self.watch_fault: Exception | None = None
        self.opened = 0

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[Any]]:
        await trio.lowlevel.checkpoint()
        self.opened += 1
        if self.watch_fault is not None:
            raise self.watch_fault
        send, receive = trio.open_memory_channel[Any](100)
        self.feeds.append(send)
        async with receive:
            yield receive


async def test_the_update_feed_survives_garbage_and_bugs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend = Announcing()
    writer_key = Ed25519PrivateKey.generate()
    name = log_name(public_key(writer_key), G)
    service, seen = make_service(backend, tmp_path, [(b"B" * 32, public_key(writer_key))])
    writer = LogWriter(backend, writer_key, G, settings=SETTINGS)
    with trio.fail_after(1000):
        async with running(service):
            assert backend.opened == 1 and service.watch_error == ""
            # Names that are not ours, or not names at all, are ignored.
            for garbage in (b"bytes", 7, None, ["a list"], "mvds/unknown"):
                await backend.feeds[-1].send(garbage)
            await writer.append(batch(2))
            await backend.feeds[-1].send(name)
            await seen.wait(lambda: len(seen.stored) == 2)
            assert trio.current_time() == 0  # read at once, not at the next poll
            # A feed that breaks is opened again after backoff; polls go on meanwhile.
            backend.watch_fault = BackendError("subscription broke")
            await backend.feeds[-1].aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert service.watch_error == "the update feed ended"
            await trio.sleep(1.5)
            assert backend.opened == 2 and service.watch_error == "subscription broke"
            backend.watch_fault = None
            await trio.sleep(2)  # the next attempt, 2 s after the last
            assert backend.opened == 3 and service.watch_error == ""
            await writer.append(batch(1, 2))
            await backend.feeds[-1].send(name + "/acks")  # its acknowledgements changed
            await seen.wait(lambda: len(seen.stored) == 3)
    assert seen.internal == [] and seen.refused == []


@pytest.mark.internal_errors_expected
async def test_a_bug_in_the_update_feed_is_an_internal_error_and_the_feed_reopens(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend = Announcing()
    backend.watch_fault = TypeError("a bug in the feed")
    writer_key = Ed25519PrivateKey.generate()
    service, seen = make_service(backend, tmp_path, [(b"B" * 32, public_key(writer_key))])
    with trio.fail_after(1000):
        async with running(service):
            assert seen.internal[0][:2] == (
                "remote log update feed",
                "TypeError: a bug in the feed",
            )
            assert service.watch_error == "internal error: TypeError: a bug in the feed"
            backend.watch_fault = None
            await trio.sleep(1.5)  # the next attempt, 1 s after the first
            assert backend.opened == 2 and service.watch_error == ""
