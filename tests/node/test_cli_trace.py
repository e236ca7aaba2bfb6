"""``mvds-node trace`` and the sync part of ``mvds-node status``, with click's CliRunner: offline
on the data directory, and through a running node's control socket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result

from mvds_node.node import load_config, open_node
from mvds_node.node._control import serve_control
from mvds_node.node.cli import root
from mvds_node.node.cli._local import control_handler

BOB = "b0" * 32


def mvds(*args: str | Path) -> Result:
    return CliRunner().invoke(root, [str(a) for a in args])


def ok(*args: str | Path) -> str:
    result = mvds(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A node in group "chat" with bob, who is never online."""
    ok("--dir", tmp_path, "init", "--name", "me", "--listen", "127.0.0.1:0", "--group", "chat")
    ok("--dir", tmp_path, "peers", "add", BOB, "--name", "bob", "--group", "chat")
    return tmp_path


def send(home: Path, text: str) -> str:
    doc = json.loads(ok("--dir", home, "--json", "send", "chat", text))
    mid: str = doc["id"]
    return mid


def test_trace_offline_human_and_json(home: Path) -> None:
    mid = send(home, "hello bob")
    doc = json.loads(ok("--dir", home, "trace", mid, "--json"))
    assert doc["running"] is False
    assert (doc["message_id"], doc["known"], doc["stored"], doc["group"]) == (
        mid,
        True,
        True,
        "chat",
    )
    assert doc["stored_ms"] > 0
    (peer,) = doc["peers"]
    assert (peer["peer"], peer["state"], peer["transmissions"]) == (BOB, "sending", 0)
    assert peer["given_up"] is False and peer["next_retry_ms"] > 0

    text = ok("--dir", home, "trace", mid)
    assert f"message {mid} (node not running)" in text
    assert "group     chat" in text
    assert "peer      bob: to be sent, next retry" in text


def test_trace_of_an_unknown_or_malformed_id(home: Path) -> None:
    text = ok("--dir", home, "trace", "ab" * 32)
    assert "unknown" in text
    assert json.loads(ok("--dir", home, "--json", "trace", "ab" * 32))["known"] is False
    bad = mvds("--dir", home, "trace", "not-hex")
    assert bad.exit_code == 2
    assert "64 hex digits" in bad.stderr


def test_status_shows_what_is_pending_to_a_peer_that_is_down(home: Path) -> None:
    bodies = ["one", "two" * 10, "three" * 100]
    for body in bodies:
        send(home, body)
    doc = json.loads(ok("--dir", home, "--json", "status"))
    (bob,) = [p for p in doc["peers"] if p["key"] == BOB]
    assert bob["pending"] == 3 and not bob["connected"]
    # Each message on the wire: its body and a fixed envelope; the bytes grow with the bodies.
    assert bob["pending_bytes"] > sum(len(b) for b in bodies)
    (chat,) = doc["groups"]
    assert (chat["lacking"], chat["held"], chat["log_behind"]) == (0, 0, 0)
    text = ok("--dir", home, "status")
    from mvds_node.node.cli._commands import _bytes

    shown = _bytes(bob["pending_bytes"])
    assert f"peer      bob: not connected, 3 pending ({shown} to go)" in text


async def test_trace_through_the_running_node(home: Path) -> None:
    config = load_config(home)
    with trio.fail_after(60):
        async with open_node(config) as node, trio.open_nursery() as nursery:
            await nursery.start(serve_control, config.control_path, control_handler(node))
            mid = (await node.send("chat", b"while running")).hex()
            result = await trio.to_thread.run_sync(
                lambda: mvds("--dir", home, "--json", "trace", mid)
            )
            assert result.exit_code == 0, (result.stdout, result.stderr)
            doc = json.loads(result.stdout)
            assert doc["running"] is True and doc["stored"] is True
            (peer,) = doc["peers"]
            assert peer["state"] == "sending"
            result = await trio.to_thread.run_sync(lambda: mvds("--dir", home, "status"))
            assert "(running)" in result.stdout and "1 pending" in result.stdout
            nursery.cancel_scope.cancel()


def test_trace_takes_the_short_id_send_shows(home: Path) -> None:
    out = ok("--dir", home, "send", "chat", "short")
    short = out.split()[1]  # "sent 3f0c1a2b4d5e6f70 (node not running: ...)"
    assert len(short) == 16
    doc = json.loads(ok("--dir", home, "--json", "trace", short))
    assert doc["message_id"].startswith(short) and doc["stored"]
    missing = mvds("--dir", home, "trace", "ffffffff" if not short.startswith("ff") else "00000000")
    assert missing.exit_code == 1 and "no stored message starts with" in missing.stderr
    assert mvds("--dir", home, "trace", short[:6]).exit_code == 2  # too short to be an ID
