"""Our sans-IO engine on one side, a Go MVDS node (a driver process) on the other.

The driver (``go/*/main.go``) runs the Go node with its own epoch loop and bridges its
``transport.Transport`` to stdin and stdout in length-prefixed frames. :class:`Bridge` feeds the
payloads it sends to :class:`mvds_node.sync.Engine` (public API only) and the engine's payloads
back, dropping a seeded share of them in each direction, and records what each side delivered
and every payload that crossed.
"""

from __future__ import annotations

import contextlib
import os
import random
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from mvds_node.sync import (
    Engine,
    ExponentialBackoff,
    MemoryStore,
    MessageAcked,
    MessageDelivered,
    Mode,
    SyncConfig,
    decode_payload,
)
from mvds_node.sync._wire import DecodedMessage, DecodedPayload  # decode_payload's types
from tests.interop import gobuild

GROUP = bytes(range(1, 33))
GO_PEER = b"\x04" + b"\x0a" * 64
"""The Go node's peer ID (Go's PeerID is 65 bytes: an uncompressed public key in Status)."""
PY_PEER = b"\x04" + b"\x0b" * 64
EPOCH = 0.02
"""Seconds per epoch on both sides."""
MAX_FRAME = 4 << 20
_MESSAGES_TAG = b"\xe2\xb8\x02"
"""Field 5004 (Payload.messages), length-delimited."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


BACKOFF = ExponentialBackoff(base_epochs=2, factor=1.5, cap_epochs=8, jitter=0.0)
"""Our retransmission schedule in these tests: 2, 3, 4, ... up to 8 epochs."""


def go_driver(name: str) -> Path:
    """The built driver, or a skip (a failure under ``MVDS_REQUIRE_SERVICES=1``) saying why."""
    try:
        return gobuild.driver(name)
    except (gobuild.GoMissing, gobuild.BuildFailed) as exc:
        message = f"Go MVDS interop: {exc}"
        if os.environ.get("MVDS_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Tally:
    """Records in the payloads one side sent."""

    payloads: int = 0
    empty: int = 0
    acks: int = 0
    offers: int = 0
    requests: int = 0
    messages: int = 0
    dropped: int = 0
    """Payloads the bridge dropped."""
    dropped_messages: int = 0
    """MESSAGE records in them."""

    def add(self, p: DecodedPayload) -> None:
        self.payloads += 1
        self.empty += not (p.acks or p.offers or p.requests or p.messages)
        self.acks += len(p.acks)
        self.offers += len(p.offers)
        self.requests += len(p.requests)
        self.messages += len(p.messages)

    @property
    def data_records(self) -> int:
        """OFFER, REQUEST and MESSAGE records: the ones that are retransmitted until acked."""
        return self.offers + self.requests + self.messages


@dataclass
class Bridge:
    engine: Engine
    process: trio.Process
    drop: float
    drop_first: bool
    rng: random.Random
    decode: Callable[[bytes], DecodedPayload]
    go_delivered: list[tuple[bytes, DecodedMessage]] = field(default_factory=list)
    """(the ID Go computed, the message) per message the Go subscription received, duplicates
    included."""
    py_delivered: list[MessageDelivered] = field(default_factory=list)
    py_acked: set[bytes] = field(default_factory=set)
    go_ids: list[bytes] = field(default_factory=list)
    go_empty_payloads: int = 0
    """Empty payloads the Go node sent, all runs long (quiet windows included)."""
    from_go: Tally = field(default_factory=Tally)
    from_py: Tally = field(default_factory=Tally)
    _appended: trio.Event = field(default_factory=trio.Event)
    _wake: trio.Event = field(default_factory=trio.Event)
    _inbox: list[bytes] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray)

    # ------------------------------------------------------------- frames

    async def _write(self, kind: bytes, data: bytes = b"") -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(struct.pack(">I", 1 + len(data)) + kind + data)

    async def _read_frame(self) -> tuple[bytes, bytes] | None:
        stdout = self.process.stdout
        assert stdout is not None
        buf = self._buffer
        while True:
            if len(buf) >= 4:
                (size,) = struct.unpack(">I", buf[:4])
                if not 1 <= size <= MAX_FRAME:
                    raise AssertionError(f"the Go driver wrote a frame of {size} bytes")
                if len(buf) >= 4 + size:
                    frame = bytes(buf[4 : 4 + size])
                    del buf[: 4 + size]
                    return frame[:1], frame[1:]
            chunk = await stdout.receive_some(65536)
            if not chunk:
                return None
            buf += chunk

    async def reader(self) -> None:
        """Dispatch the driver's frames until it exits."""
        while (frame := await self._read_frame()) is not None:
            kind, data = frame
            if kind == b"P":
                decoded = self.decode(data)
                assert not decoded.dropped, f"the Go node sent records we reject: {decoded}"
                self.from_go.add(decoded)
                self.go_empty_payloads += not (
                    decoded.acks or decoded.offers or decoded.requests or decoded.messages
                )
                if not self._lose(self.from_go, decoded):
                    self._inbox.append(data)
            elif kind == b"D":
                # Our decoder reads a payload: wrap the message as the one MESSAGE record of one.
                wrapped = self.decode(_MESSAGES_TAG + _varint(len(data) - 32) + data[32:])
                assert len(wrapped.messages) == 1 and not wrapped.dropped, wrapped
                self.go_delivered.append((data[:32], wrapped.messages[0]))
            elif kind == b"I":
                self.go_ids.append(data)
                self._appended.set()
            elif kind == b"E":
                raise AssertionError(f"the Go driver failed: {data.decode(errors='replace')}")
            elif kind != b"R":
                raise AssertionError(f"unknown frame {kind!r} from the Go driver")
            self._wake.set()

    def _lose(self, tally: Tally, payload: DecodedPayload) -> bool:
        """Whether the bridge drops this payload: the first one with messages in each direction
        if ``drop_first``, and a seeded share ``drop`` of them all."""
        if self.drop_first and payload.messages and not tally.dropped_messages:
            lost = True
        else:
            lost = bool(self.drop) and self.rng.random() < self.drop
        if lost:
            tally.dropped += 1
            tally.dropped_messages += len(payload.messages)
        return lost

    # ------------------------------------------------------------- inputs

    async def send_raw(self, payload: bytes) -> None:
        """Hand the Go node a payload made by the test, as if from our side."""
        await self._write(b"P", payload)

    async def go_append(self, body: bytes, *, ephemeral: bool = False) -> bytes:
        """Have the Go node ``AppendMessage`` (or ``AppendEphemeralMessage``) this body; return
        the ID it gave."""
        self._appended = trio.Event()
        await self._write(b"F" if ephemeral else b"A", body)
        await self._appended.wait()
        return self.go_ids[-1]

    def py_send(self, body: bytes, *, ephemeral: bool = False) -> bytes:
        now = trio.current_time()
        return self.engine.send(
            GROUP, body, now=now, timestamp=int(time.time()), ephemeral=ephemeral
        )

    def go_message(self, mid: bytes) -> DecodedMessage:
        """The message the Go node delivered under this ID (the first copy)."""
        return next(m for got, m in self.go_delivered if got == mid)

    def py_message(self, mid: bytes) -> MessageDelivered:
        return next(e for e in self.py_delivered if e.message_id == mid)

    async def run_until(self, done: Callable[[], bool]) -> None:
        """Drive our engine (its deadlines, the Go node's payloads) until ``done()``."""
        engine = self.engine
        while not done():
            now = trio.current_time()
            if self._inbox:
                payloads, self._inbox = self._inbox, []
                engine.receive_payloads(GO_PEER, payloads, now=now)
            engine.handle_timer(now=now)
            for _peer, data in engine.payloads_to_send(now=now):
                decoded = self.decode(data)
                self.from_py.add(decoded)
                if not self._lose(self.from_py, decoded):
                    await self._write(b"P", data)
            while (event := engine.next_event()) is not None:
                if isinstance(event, MessageDelivered):
                    self.py_delivered.append(event)
                elif isinstance(event, MessageAcked):
                    self.py_acked.add(event.message_id)
                else:
                    raise AssertionError(f"unexpected engine event {event!r}")
            if done():
                return
            deadline = engine.next_deadline()
            self._wake = trio.Event()
            with trio.move_on_at(deadline if deadline is not None else now + EPOCH):
                await self._wake.wait()

    async def settle(self, epochs: int = 25) -> None:
        """End the loss; return once a window of ``epochs`` passed in which the Go node sent no
        OFFER, REQUEST or MESSAGE and we sent nothing (the caller bounds the wait)."""
        while True:
            go, py = await self.quiet(epochs * EPOCH)
            if go.data_records == 0 and py.payloads == 0:
                return

    async def quiet(self, seconds: float) -> tuple[Tally, Tally]:
        """Run ``seconds`` with no loss; return what each side sent meanwhile (Go, ours)."""
        self.drop, self.drop_first = 0.0, False
        go, py = self.from_go, self.from_py
        self.from_go, self.from_py = Tally(), Tally()
        end = trio.current_time() + seconds
        try:
            await self.run_until(lambda: trio.current_time() >= end)
            return self.from_go, self.from_py
        finally:
            self.from_go, self.from_py = go, py


@asynccontextmanager
async def bridge(
    driver: Path,
    *,
    go_mode: str,
    py_mode: Mode,
    drop: float = 0.0,
    drop_first: bool = False,
    seed: int = 0,
    gap: int = 2,
    go_args: tuple[str, ...] = (),
    config: SyncConfig | None = None,
) -> AsyncIterator[Bridge]:
    """Start the Go node and our engine, joined; stop the driver when the block ends."""
    argv = [
        str(driver),
        f"-self={GO_PEER.hex()}",
        f"-peer={PY_PEER.hex()}",
        f"-group={GROUP.hex()}",
        f"-mode={go_mode}",
        f"-epoch={int(EPOCH * 1000)}ms",
        f"-gap={gap}",
        *go_args,
    ]
    if config is None:
        config = SyncConfig(epoch_seconds=EPOCH, backoff=BACKOFF)
    limits = config.limits
    engine = Engine(MemoryStore(), config=config, now=trio.current_time())
    engine.add_group(GROUP)
    engine.add_peer(GROUP, GO_PEER, mode=py_mode)
    process = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    b = Bridge(
        engine, process, drop, drop_first, random.Random(seed), lambda d: decode_payload(d, limits)
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.reader)
            yield b
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await b._write(b"Q")  # the driver may be gone already
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
