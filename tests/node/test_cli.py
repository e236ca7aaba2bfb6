"""End to end through the CLI, with real processes on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import trio

from .cliutil import Running, acli, cli, init, log_key, start


def test_help_is_for_newcomers() -> None:
    text = cli("--help")
    for command in ("init", "run", "send", "peers", "status", "groups", "key"):
        assert command in text


def test_errors_are_one_line(tmp_path: Path) -> None:
    out = cli("--dir", tmp_path / "nowhere", "status", check=False)
    lines = out.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("mvds-node: error: ")
    assert "mvds-node init" in lines[0]
    init(tmp_path / "a", "a")
    out = cli("--dir", tmp_path / "a", "send", "no-such-group", "x", check=False)
    assert out.strip().startswith("mvds-node: error: no group 'no-such-group'")
    assert "Traceback" not in out


def test_init_protects_the_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    init(tmp_path / "a", "a")
    assert (tmp_path / "a" / "identity.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "a").stat().st_mode & 0o077 == 0
    out = cli("--dir", tmp_path / "a", "init", check=False)
    assert "already holds a node" in out


def befriend(dirs: dict[str, Path], keys: dict[str, str]) -> None:
    for me in dirs:
        for other in dirs:
            if other != me:
                cli("--dir", dirs[me], "peers", "add", keys[other], "--name", other,
                    "--group", "chat", "--log-key", log_key(dirs[other]))  # fmt: skip


async def dial(directory: Path, name: str, key: str, address: str) -> None:
    await acli("--dir", directory, "peers", "add", key, "--name", name, "--address", address)


def texts(node: Running) -> list[str]:
    return [m["text"] for m in node.messages()]


async def test_three_nodes_one_offline_catches_up(tmp_path: Path) -> None:
    names = ("alice", "bob", "carol")
    dirs = {n: tmp_path / n for n in names}
    keys = {n: init(dirs[n], n) for n in names}
    befriend(dirs, keys)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            alice = await start(nursery, dirs["alice"])
            await dial(dirs["bob"], "alice", keys["alice"], alice.address)
            bob = await start(nursery, dirs["bob"])
            await acli("--dir", dirs["alice"], "send", "chat", "hi bob, carol is away")
            await acli("--dir", dirs["bob"], "send", "chat", "she will catch up")
            await bob.wait_for(lambda r: "hi bob, carol is away" in texts(r), "bob got alice's")
            await alice.wait_for(lambda r: "she will catch up" in texts(r), "alice got bob's")
            # Carol was offline all along; she comes up and dials alice only.
            await dial(dirs["carol"], "alice", keys["alice"], alice.address)
            carol = await start(nursery, dirs["carol"])
            await carol.wait_for(lambda r: len(r.messages()) >= 2, "carol caught up")
            assert sorted(texts(carol)) == ["hi bob, carol is away", "she will catch up"]
            # ... and what carol says reaches bob, through alice.
            await acli("--dir", dirs["carol"], "send", "chat", "back!")
            await bob.wait_for(lambda r: "back!" in texts(r), "bob got carol's via alice")
            for node in (alice, bob, carol):
                assert len(texts(node)) == len(set(texts(node))), "delivered exactly once"
            status = json.loads(await acli("--dir", dirs["alice"], "--json", "status"))
            assert status["running"] and status["messages_stored"] == 3
            # Bob dialled alice: she shows the address configured for him (none), not the
            # ephemeral port his connection came from.
            peers = json.loads(await acli("--dir", dirs["alice"], "peers", "--json"))
            seen = {p["name"]: p for p in peers}["bob"]
            assert seen["connected"] and seen["address"] is None
            assert seen["connected_from"].startswith("127.0.0.1:")
            table = (await acli("--dir", dirs["alice"], "peers")).splitlines()
            assert table[0].split() == ["NAME", "KEY", "STATE", "PENDING", "ADDRESS"]
            assert {line.split()[0]: line.split()[-1] for line in table[1:]}["bob"] == "-"
            for node in (alice, bob, carol):
                assert await node.stop() == 0
            nursery.cancel_scope.cancel()


async def test_sigkill_mid_sync_loses_nothing(tmp_path: Path) -> None:
    dirs = {n: tmp_path / n for n in ("alice", "bob")}
    keys = {n: init(d, n) for n, d in dirs.items()}
    befriend(dirs, keys)
    total = 400
    lines = "".join(f"message {i:04d}\n" for i in range(total)).encode()
    out = cli("--dir", dirs["alice"], "send", "chat", "-", "--lines", stdin=lines)
    assert f"sent {total} messages" in out
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            bob = await start(nursery, dirs["bob"])
            await dial(dirs["alice"], "bob", keys["bob"], bob.address)
            alice = await start(nursery, dirs["alice"])
            # Kill both while the messages are flowing, then bring them back.
            await bob.wait_for(lambda r: len(r.messages()) >= 1, "first deliveries")
            bob.kill()
            alice.kill()
            await bob.process.wait()
            await alice.process.wait()
            printed = [m["text"] for m in bob.messages()]
            before = set(printed)
            bob = await start(nursery, dirs["bob"])
            await dial(dirs["alice"], "bob", keys["bob"], bob.address)
            alice = await start(nursery, dirs["alice"])

            async def stored(directory: Path) -> tuple[int, int]:
                status = json.loads(await acli("--dir", directory, "--json", "status"))
                return status["messages_stored"], sum(p["pending"] for p in status["peers"])

            # Delivery is durable before it is printed, so a kill can cost a printed line but
            # never a message: the store is the judge. Alice's last ACK ends the transfer (Bob
            # stores before he acknowledges), and she prints every ACK: check at each line.
            for _ in range(10 * total):
                seen = len(alice.lines)
                if (await stored(dirs["alice"]))[1] == 0:
                    break
                await alice.printed_more_than(seen)
            assert await stored(dirs["bob"]) == (total, 0)
            # Nothing delivered twice within a run; across the restart, at most the last line
            # printed before the kill is printed again (its cursor moves once the line is
            # written: at least once), and every message that was not printed is printed now.
            after = [m["text"] for m in bob.messages()]
            assert len(after) == len(set(after)) and before & set(after) <= {printed[-1]}
            assert before | set(after) == {f"message {i:04d}" for i in range(total)}
            assert before | set(after) <= {f"message {i:04d}" for i in range(total)}
            for node in (alice, bob):
                assert await node.stop() == 0
            nursery.cancel_scope.cancel()


def test_bundle_carried_between_nodes_that_never_met(tmp_path: Path) -> None:
    dirs = {n: tmp_path / n for n in ("alice", "bob")}
    keys = {n: init(d, n) for n, d in dirs.items()}
    befriend(dirs, keys)
    lines = "".join(f"by hand {i}\n" for i in range(120)).encode()
    cli("--dir", dirs["alice"], "send", "chat", "-", "--lines", stdin=lines)
    stick = tmp_path / "usb-stick"
    stick.mkdir()
    out = json.loads(
        cli("--dir", dirs["alice"], "--json", "export", stick / "for-bob", "--peer", "bob")
    )
    assert out["messages"] == 120
    out = json.loads(cli("--dir", dirs["bob"], "--json", "import", stick / "for-bob"))
    assert (out["messages_new"], out["sender_proved"]) == (120, True)
    assert json.loads(cli("--dir", dirs["bob"], "--json", "status"))["messages_stored"] == 120
    # Bob's acknowledgements travel back the same way.
    cli("--dir", dirs["bob"], "export", stick / "for-alice", "--peer", "alice")
    out = cli("--dir", dirs["alice"], "import", stick / "for-alice", "--progress", check=False)
    # Progress covers both passes: the check of the file, then applying it.
    for label in ("verify", "apply"):
        assert re.search(label + r" [^\r\n]* 100% ", out), out
    assert "imported from bob" in out
    status = json.loads(cli("--dir", dirs["alice"], "--json", "status"))
    assert [p["pending"] for p in status["peers"]] == [0]
    # A damaged copy is refused with one clear line, and changes nothing.
    data = (stick / "for-bob").read_bytes()
    (stick / "damaged").write_bytes(data[: len(data) // 2])
    out = cli("--dir", dirs["bob"], "import", stick / "damaged", check=False)
    assert out.startswith("mvds-node: error: ") and "truncated" in out
    assert json.loads(cli("--dir", dirs["bob"], "--json", "status"))["messages_stored"] == 120


async def test_ctrl_c_exits_130_and_a_busy_address_is_named(tmp_path: Path) -> None:
    dirs = {n: tmp_path / n for n in ("alice", "bob")}
    for name, directory in dirs.items():
        init(directory, name)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            alice = await start(nursery, dirs["alice"])
            taken = alice.address

            def run_bob(*extra: str) -> str:
                return cli("--dir", dirs["bob"], *extra, "run", "--listen", taken, check=False)

            out = await trio.to_thread.run_sync(run_bob)
            assert out.startswith(f"mvds-node: error: cannot listen on {taken}: ")
            error = json.loads(await trio.to_thread.run_sync(run_bob, "--json"))
            assert (error["kind"], error["address"]) == ("os", taken)
            alice.process.send_signal(signal.SIGINT)
            assert await alice.process.wait() == 130
            nursery.cancel_scope.cancel()
