"""Drive real ``mvds-node`` processes from tests: init, configure, run, read their JSON lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def cli(*args: str | Path, stdin: bytes | None = None, check: bool = True) -> str:
    """Run one CLI command to completion and return its stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "mvds_node", *map(str, args)],
        input=stdin,
        capture_output=True,
        env=ENV,
        timeout=30,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mvds-node {args} failed: {result.stderr.decode()}")
    return result.stdout.decode() + (result.stderr.decode() if not check else "")


async def acli(*args: str | Path, stdin: bytes | None = None) -> str:
    """:func:`cli` from async code, without blocking the test's other tasks (which read the
    running nodes' output: a node whose stdout pipe fills up waits for it)."""
    return await trio.to_thread.run_sync(lambda: cli(*args, stdin=stdin))


def init(directory: Path, name: str) -> str:
    """Create a node listening on a free loopback port; return its key."""
    cli("--dir", directory, "init", "--name", name, "--listen", "127.0.0.1:0", "--group", "chat")
    return cli("--dir", directory, "key").strip()


def log_key(directory: Path) -> str:
    """The node's Ed25519 key (``key --log``): what signs its messages and its remote log."""
    return cli("--dir", directory, "key", "--log").strip()


@dataclass
class Running:
    """A ``mvds-node run --json`` process and what it printed so far."""

    directory: Path
    process: trio.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    _buffer: bytes = b""
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def address(self) -> str:
        started = next(line for line in self.lines if line["type"] == "started")
        return str(started["listening"][0])

    def messages(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == "message"]

    async def pump(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            chunk = await stdout.receive_some(65536)
            if not chunk:
                self._changed.set()
                return
            self._buffer += chunk
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                self.lines.append(json.loads(line))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, predicate: Any, what: str) -> None:
        """Wait until ``predicate(self)`` holds (bounded by the caller's fail_after)."""
        while not predicate(self):
            if self.process.returncode is not None:
                raise AssertionError(f"node exited ({self.process.returncode}) before {what}")
            await self._changed.wait()

    async def printed_more_than(self, count: int) -> None:
        """Wait until the node has printed more than ``count`` lines (bounded by the caller's
        fail_after): for conditions only a command can check, re-checked at each new line."""
        while len(self.lines) <= count:
            if self.process.returncode is not None:
                raise AssertionError(f"node exited ({self.process.returncode})")
            await self._changed.wait()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()


async def start(nursery: trio.Nursery, directory: Path) -> Running:
    """Start ``mvds-node run`` and return once it reports that it listens."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "mvds_node", "--dir", str(directory), "--json", "run", "-v"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=ENV,
    )
    running = Running(directory, process)
    nursery.start_soon(running.pump)
    await running.wait_for(lambda r: any(x["type"] == "started" for x in r.lines), "start")
    return running
