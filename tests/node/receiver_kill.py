"""The receiver SIGKILL scenario, shared by ``test_receiver_kill.py`` (20 kills) and
``benchmarks/receiver_kill.py`` (100 kills).

Alice (a node in this process) streams durable messages to Bob at about ``rate`` a second and
records every ID her ``send()`` accepted. Bob is a real process, forked by ``python -m
tests.node.receiver_kill zygote DATA_DIR OUT`` (see ``_zygote``): it reads
``node.messages()`` and, for each message, appends its ID to ``OUT`` and fsyncs the file
before asking for the next one (which confirms the message). Bob is killed with SIGKILL
``kills`` times, each a random moment after he reported ready, and started again. At the end
Bob runs until his file holds every ID Alice's ``send()`` accepted (bounded by the caller's
``fail_after``): any ID missing then is lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from mvds_node.node import (
    Identity,
    create_identity,
    load_config,
    open_node,
    parse_address,
    save_config,
)
from tests.node.helpers import config_for

ROOT = Path(__file__).resolve().parents[2]


async def _receive(data_dir: Path, out: Path) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    async with open_node(load_config(data_dir)) as node, node.messages() as inbox:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async for message in inbox:
            os.write(fd, message.message_id.hex().encode() + b"\n")
            os.fsync(fd)
            sys.stdout.write("got\n")
            sys.stdout.flush()


def _zygote(data_dir: Path, out: Path) -> None:
    """Fork a receiver for each ``start`` line on stdin, after the imports: a fresh receiver
    is up in milliseconds instead of the seconds Python takes to import the node on a loaded
    machine. Each receiver is its own process, killed with SIGKILL by its PID."""
    for line in sys.stdin:
        if line.strip() != "start":
            continue
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                trio.run(_receive, data_dir, out)
            finally:
                os._exit(1)
        sys.stdout.write(f"pid {pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exited {status}\n")
        sys.stdout.flush()


class _Bob:
    """The zygote process and the receiver it forked last."""

    def __init__(self, data_dir: Path, out: Path) -> None:
        self.data_dir = data_dir
        self.out = out
        self.got = 0  # lines "got" since the start of this run
        self.ready = False
        self.pid: int | None = None
        self.exited = False
        self._changed = trio.Event()
        self.process: trio.Process | None = None

    async def open(self, nursery: trio.Nursery) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "tests.node.receiver_kill",
                "zygote",
                str(self.data_dir),
                str(self.out),
            ],
            stdin=-1,
            stdout=-1,
            env=env,
            cwd=ROOT,
        )
        nursery.start_soon(self._pump, self.process)

    async def start(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.ready, self.got, self.pid, self.exited = False, 0, None, False
        await self.process.stdin.send_all(b"start\n")
        await self.wait(lambda: self.pid is not None)

    async def _pump(self, process: trio.Process) -> None:
        assert process.stdout is not None
        buf = b""
        while chunk := await process.stdout.receive_some(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line == b"ready":
                    self.ready = True
                elif line == b"got":
                    self.got += 1
                elif line.startswith(b"pid "):
                    self.pid = int(line[4:])
                elif line.startswith(b"exited "):
                    self.exited = True
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait(self, predicate: Any) -> None:
        while not predicate():
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError("the receiver's zygote exited")
            if self.exited and not predicate():
                raise AssertionError("the receiver exited by itself (see its stderr)")
            await self._changed.wait()

    async def kill(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        await self.wait(lambda: self.exited)

    def ids(self) -> list[str]:
        if not self.out.exists():
            return []
        return [line for line in self.out.read_text().split("\n") if len(line) == 64]


async def run_kills(
    tmp: Path, kills: int, *, rate: float = 300.0, max_delay: float = 0.3, seed: int = 1
) -> dict[str, Any]:
    """Run the scenario; return ``lost``, ``duplicates``, ``kills``, ``messages``, ``seconds``."""
    rng = random.Random(seed)
    alice = Identity.generate()
    bob_dir = tmp / "bob"
    bob_dir.mkdir(parents=True)
    bob = create_identity(bob_dir / "identity.key")
    accepted: list[bytes] = []
    start = time.monotonic()
    async with (
        open_node(config_for(tmp, "alice", alice, {"bob": bob}), identity=alice) as a,
        trio.open_nursery() as nursery,
    ):
        host, port = parse_address(a.status().listening[0])
        b_cfg = config_for(tmp, "bob", bob, {"alice": alice})
        (p,) = b_cfg.peers
        b_cfg = b_cfg.with_peer(replace(p, address=(host, port)))  # its log key too
        save_config(b_cfg)
        sending = trio.CancelScope()

        async def stream() -> None:
            with sending:
                i = 0
                while True:
                    accepted.append(await a.send("chat", b"message %d" % i))
                    i += 1
                    await trio.sleep(1 / rate)

        nursery.start_soon(stream)
        receiver = _Bob(bob_dir, tmp / "bob-ids.txt")
        await receiver.open(nursery)
        for _ in range(kills):
            await receiver.start()
            await receiver.wait(lambda: receiver.ready)
            await trio.sleep(rng.uniform(0, max_delay))  # the moment of the kill, not a wait
            await receiver.kill()
        sending.cancel()
        # The last run: until every accepted message is in Bob's file.
        await receiver.start()
        want = {m.hex() for m in accepted}
        await receiver.wait(lambda: receiver.ready)
        while not want <= set(receiver.ids()):
            seen = receiver.got
            await receiver.wait(lambda seen=seen: receiver.got > seen)
        await receiver.kill()
        assert receiver.process is not None and receiver.process.stdin is not None
        await receiver.process.stdin.aclose()  # the zygote ends
        await receiver.process.wait()
        nursery.cancel_scope.cancel()
    ids = receiver.ids()
    return {
        "kills": kills,
        "messages": len(accepted),
        "lost": len({m.hex() for m in accepted} - set(ids)),
        "duplicates": len(ids) - len(set(ids)),
        "seconds": round(time.monotonic() - start, 1),
    }


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        _zygote(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        print(json.dumps(trio.run(run_kills, Path(sys.argv[1]), int(sys.argv[2]))))
