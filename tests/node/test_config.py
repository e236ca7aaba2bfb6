"""Configuration: strict parsing, round trips, and the documentation of every default."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvds_node.errors import ConfigError
from mvds_node.node import (
    GroupConfig,
    NodeConfig,
    PeerConfig,
    RemoteLogConfig,
    TcpConfig,
    group_id_for,
    load_config,
    render_config,
    save_config,
)
from mvds_node.node._config import parse_config, setting_value
from mvds_node.node._schema import (
    GROUP_SETTINGS,
    SETTINGS,
    Setting,
    find_setting,
    reference_table,
    value_from_text,
)
from mvds_node.sync import Mode
from mvds_node.transports._multicast import DEFAULT_GROUP, DEFAULT_PORT

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_docs_show_the_defaults_the_code_writes() -> None:
    rendered = render_config(NodeConfig(data_dir=Path(".")))
    assert rendered in DOC.read_text()


def test_docs_table_is_the_schema() -> None:
    """docs/configuration.md lists every setting as node/_schema.py declares it (regenerate the
    table with `python -m mvds_node.node._schema`)."""
    text = DOC.read_text()
    start = text.index("<!-- settings table: generated from node/_schema.py -->\n")
    end = text.index("<!-- end of settings table -->")
    table = text[start:end].split("\n", 1)[1]
    assert table == reference_table()
    assert [line.split("`")[1] for line in table.splitlines()[2:]] == [s.name for s in SETTINGS]


def test_docs_group_table_is_the_schema() -> None:
    text = DOC.read_text()
    start = text.index("<!-- group settings table: generated from node/_schema.py -->\n")
    end = text.index("<!-- end of group settings table -->")
    assert text[start:end].split("\n", 1)[1] == reference_table(GROUP_SETTINGS)


def test_the_schema_gives_the_dataclasses_their_defaults() -> None:
    config = NodeConfig(data_dir=Path("."))
    for setting in SETTINGS:
        assert setting_value(config, setting) == setting.default, setting.name
    # The multicast defaults are the transport's, written once.
    assert (config.multicast.group, config.multicast.port) == (DEFAULT_GROUP, DEFAULT_PORT)
    # A file that leaves everything out reads as the defaults.
    assert parse_config({}, data_dir=Path("."), where="empty") == config


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_checked_by_type(tmp_path: Path, setting: Setting) -> None:
    wrong = "text" if setting.kind != "string" else 7
    (tmp_path / "config.toml").write_text(f"[{setting.section}]\n{setting.key} = {wrong!r}\n")
    with pytest.raises(ConfigError, match=f"{setting.key} must be"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("remote_log.url", "file:///srv/logs", "file:///srv/logs"),
        ("multicast.port", "7702", 7702),
        ("sync.epoch_seconds", "0.25", 0.25),
        ("discovery.enabled", "on", True),
        ("discovery.interfaces", "127.0.0.1, 10.0.0.1", ["127.0.0.1", "10.0.0.1"]),
        ("remote_log.head_size", "", None),
    ],
)
def test_values_from_the_command_line(name: str, text: str, value: object) -> None:
    assert value_from_text(find_setting(name), text) == value


def test_unknown_setting_names_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"did you mean remote_log\.url"):
        find_setting("remote_log.ur")
    with pytest.raises(ConfigError, match="not an integer"):
        value_from_text(find_setting("multicast.port"), "many")


def test_round_trip(tmp_path: Path) -> None:
    bob = PeerConfig(b"\x02" * 32, "bob", ("192.0.2.7", 7700))
    config = NodeConfig(
        data_dir=tmp_path,
        name="alice",
        listen=None,
        peers=(bob, PeerConfig(b"\x03" * 32)),
        groups=(
            GroupConfig("chat", group_id_for("chat"), (bob.key,), Mode.INTERACTIVE, b"\x09" * 32),
            GroupConfig("ops", b"\x07" * 32, (b"\x03" * 32,)),
        ),
        epoch_seconds=0.25,
    )
    save_config(config)
    assert load_config(tmp_path) == config


@pytest.mark.parametrize("head_size", [None, 0, 16])
def test_remote_log_head_size_round_trips(tmp_path: Path, head_size: int | None) -> None:
    log = RemoteLogConfig(url="file:///srv/logs", head_size=head_size)
    config = NodeConfig(data_dir=tmp_path, remote_log=log)
    save_config(config)
    assert load_config(tmp_path).remote_log.head_size == head_size
    if head_size is None:  # unset stays unset: the head then holds a page, as before
        assert "\n# head_size = 0\n" in (tmp_path / "config.toml").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nlisten = 7\n", "listen must be a string"),
        ("[node]\nlisen = '1.2.3.4:5'\n", "unknown setting 'lisen'"),
        ("[sync]\nepoch_seconds = 0\n", "epoch_seconds must be in"),
        ("[sync]\ndelivery = 'sometimes'\n", "delivery must be one of"),
        ("[multicast]\ngroup = '10.0.0.1'\n", "not a multicast address"),
        ("[discovery]\ninterfaces = ['eth0']\n", "not an IP address"),
        ("[[peers]]\nkey = 'abcd'\n", "must be 32 bytes"),
        ("[[groups]]\nmode = 'batch'\n", "name is required"),
        ("[[groups]]\nname = 'x'\nmembers = ['nobody']\n", "member 'nobody'"),
        ("not toml at all [", "not valid TOML"),
        ("[remote_log]\nhead_size = -1\n", "head_size must be in"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path)
    assert str(tmp_path / "config.toml") in str(info.value)


@pytest.mark.parametrize("interface", ["0.0.0.0", "", " ", "any", "*", "::", "255.255.255.255"])
def test_multicast_must_name_its_one_interface(tmp_path: Path, interface: str) -> None:
    (tmp_path / "config.toml").write_text(f"[multicast]\ninterface = '{interface}'\n")
    with pytest.raises(ConfigError, match=r"multicast\.interface") as info:
        load_config(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "config.toml") in message and "\n" not in message
    assert "name one interface by its IPv4 address" in message


@pytest.mark.parametrize("interface", ["224.0.0.1", "240.0.0.1", "fe80::1", "eth0"])
def test_multicast_interface_is_one_ipv4_address(tmp_path: Path, interface: str) -> None:
    (tmp_path / "config.toml").write_text(f"[multicast]\ninterface = '{interface}'\n")
    with pytest.raises(ConfigError, match=r"multicast\.interface"):
        load_config(tmp_path)
    (tmp_path / "config.toml").write_text("[multicast]\ninterface = '192.168.1.20'\n")
    assert load_config(tmp_path).multicast.interface == "192.168.1.20"


def test_missing_config_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mvds-node init"):
        load_config(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[node]\nname = '\xff\xfe'\n", "not UTF-8"),
        (b"[sync]\nepoch_seconds = 1" + b"0" * 400 + b"\n", "epoch_seconds must be in"),
        (b"[sync]\nepoch_seconds = 1" + b"0" * 5000 + b"\n", "not valid TOML"),
        (b"[sync]\nepoch_seconds = inf\n", "epoch_seconds must be in"),
        (b"[sync]\nepoch_seconds = -inf\n", "epoch_seconds must be in"),
        (b"[sync]\nepoch_seconds = nan\n", "epoch_seconds must be in"),
        (b"[remote_log]\npoll_seconds = 1e400\n", "poll_seconds must be in"),
        (b"[remote_log]\npoll_seconds = nan\n", "poll_seconds must be in"),
        (b"[remote_log]\npage_size = 0x" + b"f" * 4000 + b"\n", "an integer of 16000 bits"),
        (b"[node]\nname = 0x" + b"f" * 4000 + b"\n", "an integer of 16000 bits"),
        (b"[discovery]\ninterfaces = [0x" + b"f" * 4000 + b"]\n", "not an IP address"),
        (b"[node]\nname = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deep"),
        (b"[node]\nname = " + b"{a=" * 5000 + b"1" + b"}" * 5000 + b"\n", "nested too deep"),
    ],
)
def test_every_bad_file_is_a_config_error(tmp_path: Path, raw: bytes, message: str) -> None:
    """Whatever the bytes, loading gives a ConfigError naming the file, not a Python error."""
    (tmp_path / "config.toml").write_bytes(raw)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path)
    assert str(tmp_path / "config.toml") in str(info.value)
    assert len(str(info.value)) < 500


def test_an_oversized_file_is_refused_unparsed(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b"# " + b"x" * (16 * 1024 * 1024) + b"\n")
    with pytest.raises(ConfigError, match="over 16777216 bytes"):
        load_config(tmp_path)


def test_tcp_limits_round_trip_and_are_checked(tmp_path: Path) -> None:
    tcp = TcpConfig(
        handshake_timeout=2.5,
        frame_timeout=5.0,
        keepalive_interval=0.0,
        keepalive_misses=5,
        max_inbound_connections=64,
        max_handshakes_per_address=4,
    )
    config = NodeConfig(data_dir=tmp_path, tcp=tcp)
    save_config(config)
    assert load_config(tmp_path).tcp == tcp
    (tmp_path / "config.toml").write_text("[tcp]\nmax_handshakes_per_address = 0\n")
    with pytest.raises(ConfigError, match="max_handshakes_per_address must be in"):
        load_config(tmp_path)
