"""The examples run and do what their docstrings say."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]


def run_example(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout


def test_engine_example() -> None:
    out = run_example(str(ROOT / "examples" / "engine_bring_your_own_transport.py"))
    assert "bob got ['hello 0', 'hello 1', 'hello 2']" in out


def test_embedded_echo_bot() -> None:
    out = run_example(str(ROOT / "examples" / "embedded_echo_bot.py"))
    assert "bot: 'echo: are you there?'" in out


def _stderr(tmp_path: Path) -> str:
    """What the two nodes wrote on stderr (shown when the test fails)."""
    return "; ".join(
        f"{name}: {(tmp_path / f'{name}.err').read_text(errors='replace')!r}"
        for name in ("alice", "bob")
        if (tmp_path / f"{name}.err").exists()
    )


async def test_lan_chat_between_two_terminals(tmp_path: Path) -> None:
    base = random.randint(20000, 60000)
    out = run_example(
        str(ROOT / "examples" / "lan_chat.py"),
        str(tmp_path / "chat"),
        "--nodes",
        "2",
        "--base-port",
        str(base),
    )
    assert "run --chat chat" in out
    procs: list[trio.Process] = []
    logs = contextlib.ExitStack()
    try:
        with trio.fail_after(60):
            for name in ("alice", "bob"):
                procs.append(
                    await trio.lowlevel.open_process(
                        [
                            *(sys.executable, "-m", "mvds_node"),
                            *("--dir", str(tmp_path / "chat" / name)),
                            *("--json", "run", "--chat", "chat"),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=logs.enter_context((tmp_path / f"{name}.err").open("wb")),
                    )
                )
            alice, bob = procs
            assert alice.stdin is not None and bob.stdout is not None
            await alice.stdin.send_all(b"typed in alice's terminal\n")
            buf = b""
            while b"typed in alice's terminal" not in buf:
                chunk = await bob.stdout.receive_some(65536)
                assert chunk, f"bob's node exited: {_stderr(tmp_path)}"
                buf += chunk
            message = next(
                json.loads(line) for line in buf.splitlines() if b"typed in alice" in line
            )
            assert message["type"] == "message" and message["group"] == "chat"
            for p in procs:
                p.terminate()
                assert await p.wait() == 0
    finally:
        logs.close()
        print(_stderr(tmp_path))  # pytest shows it if the test failed
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    await stream.aclose()
