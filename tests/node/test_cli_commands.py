"""The command line in process, with click's CliRunner: options, output and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mvds_node.node import load_config
from mvds_node.node.cli import root
from mvds_node.node.cli._output import plural

ALICE = "a1" * 32
BOB = "b0" * 32


def mvds(*args: str | Path, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(root, [str(a) for a in args], input=stdin, env=env)


def ok(*args: str | Path, stdin: str | None = None) -> str:
    result = mvds(*args, stdin=stdin)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A node with one group, "chat", and no peers."""
    ok("--dir", tmp_path, "init", "--name", "me", "--listen", "127.0.0.1:0", "--group", "chat")
    return tmp_path


def test_version() -> None:
    assert ok("--version").strip() == "mvds-node 0.1.0"
    assert ok("-V") == ok("--version")


def test_json_before_or_after_the_command(home: Path) -> None:
    before = json.loads(ok("--json", "--dir", home, "status"))
    after = json.loads(ok("status", "--json", "--dir", home))
    assert before == after and before["name"] == "me" and before["running"] is False
    assert json.loads(ok("--dir", home, "groups", "--json"))[0]["name"] == "chat"


def test_peers_add_on_a_known_key_changes_only_what_is_given(home: Path) -> None:
    ok("--dir", home, "peers", "add", ALICE, "--name", "alice", "--address", "192.0.2.1:7700")
    assert "updated peer alice" in ok("--dir", home, "peers", "add", ALICE, "--log-key", BOB)
    (peer,) = load_config(home).peers
    assert (peer.name, peer.address, peer.log_key) == (
        "alice",
        ("192.0.2.1", 7700),
        bytes.fromhex(BOB),
    )
    # An empty value clears a setting on purpose.
    ok("--dir", home, "peers", "add", ALICE, "--address", "")
    assert load_config(home).peers[0].address is None
    assert load_config(home).peers[0].name == "alice"


def test_a_peer_added_to_an_unknown_group_is_refused(home: Path) -> None:
    result = mvds("--dir", home, "peers", "add", ALICE, "--group", "caht")
    assert result.exit_code == 1
    assert "no group 'caht'" in result.stderr and "--create-group" in result.stderr
    assert load_config(home).peers == ()  # nothing written
    ok("--dir", home, "peers", "add", ALICE, "--group", "ops", "--create-group")
    assert [g.name for g in load_config(home).groups] == ["chat", "ops"]


def test_lists_have_headers_and_the_configured_address(home: Path) -> None:
    ok("--dir", home, "peers", "add", ALICE, "--name", "alice", "--address", "192.0.2.1:7700")
    ok("--dir", home, "peers", "add", BOB, "--group", "chat")
    lines = ok("--dir", home, "peers", "list").splitlines()
    assert lines[0].split() == ["NAME", "KEY", "STATE", "PENDING", "ADDRESS"]
    assert lines[1].split() == ["alice", ALICE[:16], "-", "0", "192.0.2.1:7700"]
    assert lines[2].split() == ["-", BOB[:16], "-", "0", "-"]
    assert ok("--dir", home, "peers") == "\n".join(lines) + "\n"
    peers = json.loads(ok("--dir", home, "--json", "peers", "list"))
    assert [(p["name"], p["address"]) for p in peers] == [("alice", "192.0.2.1:7700"), ("", None)]
    groups = ok("--dir", home, "groups", "list").splitlines()
    assert groups[0].split() == ["NAME", "MODE", "MEMBERS", "SECRET", "ID"]
    assert "1 member " in groups[1]
    assert "group chat: 2 members" in ok(
        "--dir", home, "groups", "add", "chat", "--member", "alice"
    )


def test_plural() -> None:
    assert [plural(n, "member") for n in (0, 1, 2)] == ["0 members", "1 member", "2 members"]


def test_config_get_and_set(home: Path) -> None:
    assert ok("--dir", home, "config", "get", "remote_log.url") == "\n"
    out = ok("--dir", home, "config", "set", "remote_log.url", f"file://{home / 'logs'}")
    assert out.startswith("remote_log.url = ")
    assert load_config(home).remote_log.url == f"file://{home / 'logs'}"
    assert ok("--dir", home, "config", "get", "remote_log.url").strip() == f"file://{home / 'logs'}"
    ok("--dir", home, "config", "set", "multicast.port", "7702")
    got = json.loads(ok("--dir", home, "--json", "config", "get", "multicast.port"))
    assert got == {"setting": "multicast.port", "value": 7702, "default": 7701}
    everything = json.loads(ok("--dir", home, "config", "get", "--json"))
    assert everything["multicast.port"] == 7702 and everything["node.name"] == "me"
    # Refused values leave the file as it was.
    before = (home / "config.toml").read_text()
    for name, value, message in [
        ("multicast.port", "0", "port must be in 1..65,535"),
        ("multicast.group", "10.0.0.1", "not a multicast address"),
        ("remote_log.url", "ftp://x", "use file:///path"),
        ("multicast.port", "many", "not an integer"),
        ("remote_log.ur", "x", "did you mean remote_log.url"),
    ]:
        result = mvds("--dir", home, "config", "set", name, value)
        assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert (home / "config.toml").read_text() == before
    # Peers and groups survive a change of a setting.
    ok("--dir", home, "peers", "add", ALICE, "--name", "alice", "--group", "chat")
    ok("--dir", home, "config", "set", "sync.epoch_seconds", "0.25")
    config = load_config(home)
    assert config.epoch_seconds == 0.25 and config.groups[0].members == (bytes.fromhex(ALICE),)


def test_export_refuses_to_overwrite_without_force(home: Path, tmp_path: Path) -> None:
    ok("--dir", home, "peers", "add", ALICE, "--name", "alice", "--group", "chat")
    ok("--dir", home, "send", "chat", "hello")
    target = tmp_path / "bundle"
    target.write_bytes(b"precious")
    result = mvds("--dir", home, "export", target, "--peer", "alice")
    assert result.exit_code == 1 and f"{target} exists; give --force" in result.stderr
    assert target.read_bytes() == b"precious"
    done = json.loads(ok("--dir", home, "--json", "export", target, "--peer", "alice", "--force"))
    assert done["messages"] == 1 and target.read_bytes() != b"precious"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["send", "chat", ""], "the message is empty"),
        (["send", "chat", "  "], "the message is empty"),
        (["send", "chat", "hi", "--expires-in", "-5"], "--expires-in"),
        (["send", "chat", "hi", "--expires-in", "0"], "--expires-in"),
        (["send", "chat", "-", "--lines"], "every line is empty"),
    ],
)
def test_empty_messages_and_negative_expiry_are_refused(
    home: Path, args: list[str], message: str
) -> None:
    result = mvds("--dir", home, *args, stdin="\n \n")
    assert result.exit_code in (1, 2) and message in result.stderr
    assert json.loads(ok("--dir", home, "--json", "status"))["messages_stored"] == 0


def test_errors_under_json_are_one_object_on_stderr(home: Path, tmp_path: Path) -> None:
    result = mvds("--json", "--dir", tmp_path / "nowhere", "status")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)
    assert error["kind"] == "config" and "mvds-node init" in error["error"]
    assert error["file"] == str(tmp_path / "nowhere" / "config.toml")
    result = mvds("--dir", home, "status", "--json", "--bogus")
    assert result.exit_code == 2 and json.loads(result.stderr)["kind"] == "usage"
    damaged = tmp_path / "damaged"
    damaged.write_bytes(b"MVDSB")
    result = mvds("--dir", home, "import", damaged, "--json")
    error = json.loads(result.stderr)
    assert error["file"] == str(damaged) and error["error"].startswith(f"{damaged}: ")
    # Without --json the same error is one line naming the file.
    result = mvds("--dir", home, "import", damaged)
    assert result.stderr.startswith(f"mvds-node: error: {damaged}: ")
    assert result.stderr.count("\n") == 1


def test_ctrl_c_exits_130(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def interrupted(*args: object) -> dict[str, object]:
        raise KeyboardInterrupt

    monkeypatch.setattr("mvds_node.node.cli._commands.node_status", interrupted)
    result = mvds("--dir", home, "status")
    assert result.exit_code == 130
    assert json.loads(mvds("--dir", home, "--json", "status").stderr)["kind"] == "interrupted"


def test_no_colour_unless_a_terminal_and_never_with_no_color(home: Path) -> None:
    assert "\x1b[" not in ok("--dir", home, "status")
    forced = mvds("--dir", home, "status", env={"FORCE_COLOR": "1"}).stdout
    assert "\x1b[33m" in forced  # "not running", in yellow
    plain = mvds("--dir", home, "status", env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert "\x1b[33m" not in plain
    assert (
        "\x1b[33m"
        not in mvds("--dir", home, "status", "--no-color", env={"FORCE_COLOR": "1"}).stdout
    )


def test_shell_completion(home: Path) -> None:
    assert "_MVDS_NODE_COMPLETE" in ok("completion", "bash")
    ok("--dir", home, "groups", "add", "ops")
    env = {
        "_MVDS_NODE_COMPLETE": "bash_complete",
        "COMP_WORDS": f"mvds-node --dir {home} send ",
        "COMP_CWORD": "4",
        "MVDS_NODE_HOME": str(home / "not-this-one"),  # --dir is the one read
    }
    result = CliRunner().invoke(
        root, [], env=env, prog_name="mvds-node", complete_var="_MVDS_NODE_COMPLETE"
    )
    assert result.stdout.split() == ["plain,chat", "plain,ops"]
    env |= {"COMP_WORDS": "mvds-node config set remote_log.u", "COMP_CWORD": "3"}
    result = CliRunner().invoke(
        root, [], env=env, prog_name="mvds-node", complete_var="_MVDS_NODE_COMPLETE"
    )
    assert result.stdout.split() == ["plain,remote_log.url"]


def test_sim_progress_goes_to_stderr_only() -> None:
    result = mvds("sim", "--preset", "go-default", "--set", "duration=30", "--progress", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["scenario"]["duration"] == 30.0
    assert "100%" in result.stderr
    # --json before the command reaches sim too.
    assert json.loads(ok("--json", "sim", "--preset", "go-default", "--set", "duration=30"))


def test_log_commands_say_how_to_set_the_remote_log(home: Path, tmp_path: Path) -> None:
    result = mvds("--dir", home, "log", "export", tmp_path / "log")
    assert result.exit_code == 1
    assert "mvds-node config set remote_log.url" in result.stderr
    ok("--dir", home, "config", "set", "remote_log.url", f"file://{tmp_path / 'logs'}")
    (tmp_path / "log").write_bytes(b"kept")
    result = mvds("--dir", home, "log", "export", tmp_path / "log")
    assert result.exit_code == 1 and "exists; give --force" in result.stderr
    assert (tmp_path / "log").read_bytes() == b"kept"
    # With --force it gets as far as the log itself, which nobody wrote yet: the error names
    # the file it was to go to.
    result = mvds("--dir", home, "--json", "log", "export", tmp_path / "log", "--force")
    assert result.exit_code == 1 and json.loads(result.stderr)["file"] == str(tmp_path / "log")


def test_catch_up_is_told_from_status_snapshots() -> None:
    from mvds_node.node import PeerStatus
    from mvds_node.node.cli._run import CatchUp

    bob, carol = b"\x0b" * 32, b"\x0c" * 32

    def snapshot(bob_pending: int, carol_pending: int, connected: bool = True) -> list[PeerStatus]:
        return [
            PeerStatus(bob, "bob", None, connected, bob_pending),
            PeerStatus(carol, "carol", None, True, carol_pending),
        ]

    catch_up = CatchUp()
    names = {bob: "bob", carol: "carol"}.__getitem__
    assert catch_up.look(snapshot(400, 99, connected=False), names) == []  # bob is away
    assert catch_up.look(snapshot(400, 99), names) == ["catching up bob: 400 records to go"]
    assert catch_up.look(snapshot(400, 3), names) == []  # nothing moved; carol lacks few
    assert catch_up.look(snapshot(100, 3), names) == ["catching up bob: 300 of 400 records (75 %)"]
    assert catch_up.look(snapshot(0, 3), names) == ["bob caught up (400 records)"]
    assert catch_up.look(snapshot(0, 0), names) == []


def test_catch_up_from_a_remote_log_is_told_from_status_snapshots() -> None:
    from mvds_node.node import LogStatus
    from mvds_node.node.cli._run import CatchUp

    bob = b"\x0b" * 32

    def logs(bob_fetched: int, ours_queued: int = 0) -> list[LogStatus]:
        return [
            LogStatus("bob-log", bob, "notes", mine=False, fetched=bob_fetched),
            LogStatus("our-log", b"\x0a" * 32, "notes", mine=True, queued=ours_queued),
        ]

    catch_up = CatchUp()
    names = {bob: "bob"}.__getitem__
    assert catch_up.look_logs(logs(0, ours_queued=500), names) == []  # our own log: never
    assert catch_up.look_logs(logs(2_000), names) == [
        "caught up 2,000 messages from bob's log [notes] (2,000 in all)"
    ]
    assert catch_up.look_logs(logs(2_050), names) == []  # a few more: not worth a line
    assert catch_up.look_logs(logs(2_150), names) == [
        "caught up 100 messages from bob's log [notes] (2,150 in all)"
    ]


def test_bundles_both_ways_count_in_words(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for directory, name in ((alice, "alice"), (bob, "bob")):
        ok("--dir", directory, "init", "--name", name, "--listen", "", "--group", "notes")
    keys = {d: ok("--dir", d, "key").strip() for d in (alice, bob)}
    logs = {d: ok("--dir", d, "key", "--log").strip() for d in (alice, bob)}
    ok("--dir", alice, "peers", "add", keys[bob], "--name", "bob", "--group", "notes",
       "--log-key", logs[bob])  # fmt: skip
    ok("--dir", bob, "peers", "add", keys[alice], "--name", "alice", "--group", "notes",
       "--log-key", logs[alice])  # fmt: skip
    ok("--dir", alice, "send", "notes", "meeting moved to thursday")
    out = ok("--dir", alice, "export", tmp_path / "for-bob", "--peer", "bob")
    assert out.startswith(f"wrote {tmp_path / 'for-bob'}: 1 message, 0 acks, ")
    out = ok("--dir", bob, "import", tmp_path / "for-bob")
    assert out == "imported from alice: 1 new message, 0 already here, 0 acks\n"
    ok("--dir", bob, "send", "notes", "ok, thursday")
    out = ok("--dir", bob, "export", tmp_path / "for-alice", "--peer", "alice")
    assert out.endswith(" bytes (1 earlier message the reader must already have)\n")
    out = ok("--dir", alice, "import", tmp_path / "for-alice")
    assert out == "imported from bob: 1 new message, 0 already here, 1 ack\n"
