"""End to end through the CLI: a writer uploads to the HTTP helper, stops; a reader that was
offline starts later and catches up from the helper alone."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import trio

from mvds_node.node import load_config, save_config
from mvds_node.node._config import RemoteLogConfig
from tests.node.cliutil import ENV, Running, acli, cli, init, start


def configure(directory: Path, url: str, peer_log_keys: dict[str, str]) -> None:
    config = load_config(directory)
    peers = tuple(
        dataclasses.replace(p, log_key=bytes.fromhex(peer_log_keys[p.name])) for p in config.peers
    )
    save_config(
        dataclasses.replace(
            config,
            listen=None,
            peers=peers,
            remote_log=RemoteLogConfig(url=url, page_size=16, inline=4, poll_seconds=0.2),
        )
    )


def uploaded(node: Running) -> int:
    """Messages the running node reported in its log (``log-uploaded`` lines)."""
    return sum(line["messages"] for line in node.lines if line["type"] == "log-uploaded")


def pair_with_log_keys(tmp_path: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Alice and Bob, each knowing the other's key and remote-log key."""
    dirs = {n: tmp_path / n for n in ("alice", "bob")}
    keys = {n: init(d, n) for n, d in dirs.items()}
    log_keys = {n: cli("--dir", d, "key", "--log").strip() for n, d in dirs.items()}
    for me, other in (("alice", "bob"), ("bob", "alice")):
        cli("--dir", dirs[me], "peers", "add", keys[other], "--name", other, "--group", "chat",
            "--log-key", log_keys[other])  # fmt: skip
    return dirs, log_keys


async def test_reader_catches_up_from_the_http_helper(tmp_path: Path) -> None:
    dirs, log_keys = pair_with_log_keys(tmp_path)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            helper_argv = [sys.executable, "-m", "mvds_node", "helper", "serve"]
            helper_argv += [str(tmp_path / "helper"), "--listen", "127.0.0.1:0"]
            helper = await trio.lowlevel.open_process(
                helper_argv,
                stdout=subprocess.PIPE,
                env=ENV,
            )
            assert helper.stdout is not None
            line = b""
            while b"\n" not in line:
                line += await helper.stdout.receive_some(4096)
            url = line.decode().split(" on ")[1].strip()
            for name in dirs:
                configure(dirs[name], url, log_keys)
            alice = await start(nursery, dirs["alice"])
            lines = "".join(f"logged {i}\n" for i in range(40)).encode()
            await acli("--dir", dirs["alice"], "send", "chat", "-", "--lines", stdin=lines)
            await alice.wait_for(lambda r: uploaded(r) >= 40, "alice's 40 messages in her log")
            assert await alice.stop() == 0
            # Bob was never online with alice; she is gone now. He reads her log.
            bob = await start(nursery, dirs["bob"])
            await bob.wait_for(lambda r: len(r.messages()) >= 40, "bob caught up from the log")
            assert sorted(m["text"] for m in bob.messages()) == sorted(
                f"logged {i}" for i in range(40)
            )
            assert await bob.stop() == 0
            # Bob is stopped: what the log brought is in his store, and `messages` reads it.
            doc = json.loads(await acli("--dir", dirs["bob"], "--json", "messages", "chat"))
            assert sorted(m["text"] for m in doc["messages"]) == sorted(
                f"logged {i}" for i in range(40)
            )
            alice_key = (await acli("--dir", dirs["alice"], "key", "--log")).strip()  # Ed25519
            assert {m["author"] for m in doc["messages"]} == {alice_key}
            helper.terminate()
            await helper.wait()
            await helper.stdout.aclose()
            nursery.cancel_scope.cancel()


async def test_log_carried_by_hand_between_two_backends(tmp_path: Path) -> None:
    dirs, log_keys = pair_with_log_keys(tmp_path)
    # Each has its own embedded backend: they share no helper and no network.
    configure(dirs["alice"], f"file://{tmp_path / 'alice-log'}", log_keys)
    configure(dirs["bob"], f"file://{tmp_path / 'bob-log'}", log_keys)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            alice = await start(nursery, dirs["alice"])
            lines = "".join(f"carried {i}\n" for i in range(25)).encode()
            await acli("--dir", dirs["alice"], "send", "chat", "-", "--lines", stdin=lines)
            await alice.wait_for(lambda r: uploaded(r) >= 25, "alice's 25 messages in her log")
            assert await alice.stop() == 0
            out = json.loads(
                await acli("--dir", dirs["alice"], "--json", "log", "export", tmp_path / "stick")
            )
            assert out["seq"] >= 1
            damaged = tmp_path / "damaged"
            damaged.write_bytes((tmp_path / "stick").read_bytes()[:-7])
            refused = cli("--dir", dirs["bob"], "log", "import", damaged, check=False)
            assert refused.startswith("mvds-node: error: ") and "truncated" in refused
            await acli("--dir", dirs["bob"], "log", "import", tmp_path / "stick")
            bob = await start(nursery, dirs["bob"])
            await bob.wait_for(lambda r: len(r.messages()) >= 25, "bob caught up from the file")
            assert sorted(m["text"] for m in bob.messages()) == sorted(
                f"carried {i}" for i in range(25)
            )
            assert await bob.stop() == 0
            nursery.cancel_scope.cancel()
