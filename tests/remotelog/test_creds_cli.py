"""What the command line shows of a remote log's credentials: never a password or token, in
``status`` (text and JSON), ``config get`` / ``config set``, the events of ``run``, or errors;
and no URL with credentials makes ``status`` fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from mvds_node.node.cli import root
from tests.node.cliutil import start

from .services import redis_deployment

PASSWORD = "pw-of-the-default-user-5e2b"
WRONG = "pw-that-is-wrong-91ac"


def cli(*args: str | Path) -> str:
    """One command, in process; its stdout (and stderr); fails the test if it fails."""
    result = CliRunner().invoke(root, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.stdout + result.stderr


async def acli(*args: str | Path) -> str:
    return await trio.to_thread.run_sync(lambda: cli(*args))


def init(directory: Path) -> None:
    cli("--dir", directory, "init", "--name", "n", "--listen", "127.0.0.1:0", "--group", "chat")


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, WRONG, "nats-pw-77"):
        assert secret not in text, f"a password is shown: {text!r}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:6399", "redis://:***@127.0.0.1:6399"),
        ("nats://user:nats-pw-77@127.0.0.1:4222", "nats://user:***@127.0.0.1:4222"),
        ("nats://nats-pw-77@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        (f"rediss://alice:{PASSWORD}@127.0.0.1:6380/2", "rediss://alice:***@127.0.0.1:6380/2"),
        (f"https://:{PASSWORD}@127.0.0.1:8443", "https://:***@127.0.0.1:8443"),
    ],
)
def test_status_and_config_never_show_the_password(tmp_path: Path, url: str, shown: str) -> None:
    node = tmp_path / "node"
    init(node)
    out = cli("--dir", node, "config", "set", "remote_log.url", url)
    assert shown in out
    assert_no_secret(out)
    assert cli("--dir", node, "config", "get", "remote_log.url").strip() == shown
    document = json.loads(cli("--dir", node, "--json", "config", "get", "remote_log.url"))
    assert document["value"] == shown
    text = cli("--dir", node, "status")  # fails the test if status fails
    assert "not running" in text
    assert_no_secret(text + cli("--dir", node, "--json", "status"))
    assert_no_secret(
        cli("--dir", node, "config", "get") + cli("--dir", node, "--json", "config", "get")
    )


def test_the_secret_setting_shows_only_where_it_is(tmp_path: Path) -> None:
    node = tmp_path / "node"
    init(node)
    out = cli("--dir", node, "config", "set", "remote_log.secret", PASSWORD)
    assert "***" in out
    assert cli("--dir", node, "config", "get", "remote_log.secret").strip() == "***"
    assert_no_secret(out + cli("--dir", node, "--json", "config", "get"))
    cli("--dir", node, "config", "set", "remote_log.secret", "env:REDIS_PASSWORD")
    assert cli("--dir", node, "config", "get", "remote_log.secret").strip() == "env:REDIS_PASSWORD"
    # The file itself keeps the real text, for the node to use.
    cli("--dir", node, "config", "set", "remote_log.secret", PASSWORD)
    assert PASSWORD in (node / "config.toml").read_text()


async def test_a_running_node_with_a_wrong_password_says_so_and_shows_no_password(
    tmp_path: Path,
) -> None:
    node = tmp_path / "node"
    init(node)
    with trio.fail_after(60):
        async with redis_deployment(tmp_path / "redis", requirepass=PASSWORD, users={}) as port:
            cli("--dir", node, "config", "set", "remote_log.url", f"redis://127.0.0.1:{port}")
            cli("--dir", node, "config", "set", "remote_log.secret", WRONG)
            async with trio.open_nursery() as nursery:
                running = await start(nursery, node)
                await acli("--dir", node, "send", "chat", "queued until the password is right")
                while True:  # until the first upload attempt has failed
                    document = json.loads(await acli("--dir", node, "--json", "status"))
                    (mine,) = [log for log in document["logs"] if log["mine"]]
                    if mine["error"]:
                        break
                    await trio.sleep(0.05)
                assert mine["queued"] == 1
                assert "WRONGPASS" in mine["error"] and "remote_log.secret" in mine["error"]
                text = await acli("--dir", node, "status")
                assert "authentication failed (WRONGPASS)" in text
                assert_no_secret(text + json.dumps(document) + json.dumps(running.lines))
                assert await running.stop() == 0
