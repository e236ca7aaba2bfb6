"""The simulator against figures worked out by hand, reproducibility, scenarios and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvds_node.node.cli import main
from mvds_node.sim import PRESETS, Scenario, ScenarioError, load_scenario, preset, run, sweep
from mvds_node.sim._metrics import percentile
from mvds_node.sim._run import _Availability
from mvds_node.sim._scenario import parse_value, with_overrides
from mvds_node.sync._wire import ID_RECORD_SIZE

# ------------------------------------------------------------------ hand-computed runs


def test_batch_two_nodes_always_online_costs_one_message_and_one_ack() -> None:
    # Each message goes out at once as a MESSAGE and is acknowledged in the same instant (the
    # receiver has sent nothing to the sender in that epoch), so nothing is ever retransmitted.
    result = run(Scenario(nodes=2, mode="batch", messages=10, interval=5.0, duration=100.0))
    d = result.to_dict()
    assert d["deliveries"] == {
        "messages": 10,
        "expected": 10,
        "delivered": 10,
        "ratio": 1.0,
        "complete": 1.0,
    }
    assert {k: v for k, v in d["records"].items() if v} == {"ACK": 10, "MESSAGE": 10, "total": 20}
    # Every payload carries one record: a message payload is the minimum, an ACK is 36 bytes.
    assert d["bytes"]["sync"] == d["minimum"]["bytes"] + 10 * ID_RECORD_SIZE
    assert d["payloads"] == {"sent": 20, "lost": 0, "delivered": 20}
    assert d["latency"] == {"count": 10, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    assert d["multiplier"]["records"] == 2.0
    assert d["multiplier"]["messages"] == 1.0
    assert d["multiplier"]["bytes"] == round(d["bytes"]["sync"] / d["minimum"]["bytes"], 6)
    nothing = {"head": 0, "page": 0, "body": 0, "ack": 0}
    assert d["breakdown"] == {
        "sync": {
            "ACK": 10 * ID_RECORD_SIZE,
            "OFFER": 0,
            "REQUEST": 0,
            "MESSAGE": d["minimum"]["bytes"],
        },
        "hello": 0,
        "log_up": nothing,
        "log_down": nothing,
    }


def test_interactive_costs_offer_request_message_and_one_epoch() -> None:
    # OFFER at the send (epoch e), REQUEST back in the same instant, MESSAGE in the sender's
    # next payload to that peer, i.e. at the start of epoch e + 1, then the ACK. With a
    # two-epoch first retransmission gap nothing is sent twice. Sends are 5 s apart from a
    # random phase, so every message waits the same ceil(t) - t, within one epoch.
    scenario = Scenario(
        nodes=2, mode="interactive", messages=10, interval=5.0, duration=100.0, backoff_base=2
    )
    d = run(scenario).to_dict()
    assert {k: v for k, v in d["records"].items() if v} == {
        "ACK": 10,
        "OFFER": 10,
        "REQUEST": 10,
        "MESSAGE": 10,
        "total": 40,
    }
    assert d["deliveries"]["ratio"] == 1.0
    assert d["multiplier"]["records"] == 4.0
    assert len(set(d["latencies"])) == 1
    assert 0.0 < d["latencies"][0] <= 1.0
    assert d["latency"]["p50"] == d["latency"]["max"] == d["latencies"][0]


@pytest.mark.parametrize(
    ("backoff", "duration", "transmissions"),
    [
        # epoch + 2 * count: the record goes out at e0 + c(c+1) = e0, +2, +6, +12, +20, +30,
        # +42 (+56 is past 50 s for every start epoch e0 in 0..4).
        ("reference", 50.0, 7),
        # gaps 1, 2, 4, 8, 16: e0, +1, +3, +7, +15, +31 (+63 is past 40 s).
        ("exponential", 40.0, 6),
        # every epoch: e0 .. 19, and the send phase puts e0 in 0..4, so 20 - e0 sends; with
        # the sender's phase from seed 0 (epoch 4) that is 16.
        ("constant", 20.0, 16),
    ],
)
def test_retransmissions_to_a_peer_that_never_answers_follow_the_backoff(
    backoff: str, duration: float, transmissions: int
) -> None:
    # Nobody is ever online and the nodes do not know it: every payload is sent and lost.
    scenario = Scenario(
        nodes=2,
        messages=1,
        availability=0.0,
        offline_sends="lost",
        backoff=backoff,
        duration=duration,
    )
    d = run(scenario).to_dict()
    assert d["records"]["MESSAGE"] == transmissions
    assert d["payloads"] == {"sent": transmissions, "lost": transmissions, "delivered": 0}
    assert d["deliveries"]["delivered"] == 0
    assert d["latency"]["p50"] is None
    assert d["multiplier"] == {"bytes": None, "records": None, "messages": None}


def test_constant_backoff_phase_of_seed_zero() -> None:
    # The figure of 16 above rests on the first send falling in epoch 4: nothing is sent in
    # the first 4 s, one MESSAGE by 5 s.
    def sent_by(duration: float) -> int:
        scenario = Scenario(
            nodes=2,
            messages=1,
            availability=0.0,
            offline_sends="lost",
            backoff="constant",
            duration=duration,
        )
        return run(scenario).records["MESSAGE"]

    assert (sent_by(4.0), sent_by(5.0)) == (0, 1)


def test_offline_nodes_that_know_it_send_nothing() -> None:
    scenario = Scenario(nodes=2, messages=1, availability=0.0, duration=60.0)
    d = run(scenario).to_dict()
    assert d["payloads"]["sent"] == 0
    assert d["bytes"]["total"] == 0


def test_remote_log_delivers_when_sync_cannot_and_its_acks_stop_retransmissions() -> None:
    # Sync payloads are (all but) always lost; the receiver reads the sender's log every 30 s,
    # so each message arrives within 30 s of being sent, fetched exactly once.
    base = Scenario(nodes=2, messages=20, loss=0.999999, log=True, log_poll=30.0, duration=200.0)
    plain = run(base).to_dict()
    assert plain["deliveries"]["ratio"] == 1.0
    assert plain["records"]["LOG_PUT"] == 20
    assert plain["records"]["LOG_GET"] == 20
    assert 0.0 < plain["latency"]["max"] <= 30.0
    assert plain["bytes"]["log_up"] > 0 and plain["bytes"]["log_down"] > 0
    acked = run(with_overrides(base, {"log_acks": True})).to_dict()
    assert acked["records"]["LOG_ACK"] > 0
    assert acked["latencies"] == plain["latencies"]
    assert acked["records"]["MESSAGE"] < plain["records"]["MESSAGE"]


def test_a_small_head_costs_each_message_one_page_up_and_one_down() -> None:
    # Sync never delivers; a message every 10 s, each uploaded at once into its own page (the
    # head only names it), the reader polls every 5 s. A message is 136 bytes (the minimum of
    # a delivery is 141: a payload of that one message). Its page entry: ID (2 + 32) and data
    # (1 + 2 + 136) inside a pair (1 + 2 + 173) = 176 bytes; every page but the first also
    # names the one before it (2 + 32). The head record: writer key (2 + 32), sequence (2),
    # the page of only a tail (2 + 34) and the signature (2 + 64) = 138 bytes.
    scenario = Scenario(
        nodes=2,
        messages=3,
        interval=10.0,
        loss=0.999999,
        log=True,
        log_head_size=0,
        log_poll=5.0,
        duration=40.0,
    )
    d = run(scenario).to_dict()
    assert d["deliveries"]["ratio"] == 1.0 and d["latency"]["max"] < 5.0
    assert d["minimum"]["bytes"] == 3 * 141
    pages = 176 + 2 * (176 + 34)
    b = d["breakdown"]
    assert b["log_up"] == {"head": 3 * 138, "page": pages, "body": 0, "ack": 0}
    # Each page is downloaded once: a reader's cursor names the page it stopped in.
    assert b["log_down"]["page"] == pages and b["log_down"]["body"] == 0
    assert b["log_down"]["head"] % 138 == 0
    assert d["bytes"]["log_down"] == pages + b["log_down"]["head"]
    # The same with a head of up to 64 entries: every poll downloads all of them.
    big = run(with_overrides(scenario, {"log_head_size": 64})).to_dict()["breakdown"]
    assert big["log_down"]["page"] == 0
    assert big["log_down"]["head"] > 3 * b["log_down"]["head"]


def test_log_traffic_when_sync_already_delivered() -> None:
    # Everyone online: sync delivers first, so the reader finds nothing new in the log.
    d = run(Scenario(nodes=2, messages=10, log=True, log_poll=7.0, duration=80.0)).to_dict()
    assert d["records"]["LOG_PUT"] == 10
    assert d["records"]["LOG_GET"] == 0
    assert d["multiplier"]["messages"] == 2.0


def test_hello_rearms_records_for_a_peer_that_comes_back() -> None:
    base = with_overrides(preset("notes-batch"), {"offline_sends": "deferred", "duration": 600.0})
    base = with_overrides(base, {"send_for": 300.0, "backoff": "exponential"})
    without = run(base)
    with_hello = run(with_overrides(base, {"hello": True}))
    assert with_hello.records["HELLO"] > 0
    assert with_hello.hello_bytes == 18 * with_hello.records["HELLO"]  # the HELLO body
    # A record waiting out a long backoff goes out as soon as both ends are online together.
    assert with_hello.delivered > without.delivered


def test_cache_nodes_relay_but_are_not_recipients() -> None:
    d = run(Scenario(nodes=2, caches=1, messages=5, duration=60.0)).to_dict()
    assert d["deliveries"]["expected"] == 5
    assert d["deliveries"]["delivered"] == 5
    roles = [n["role"] for n in d["per_node"]]
    assert roles == ["member", "member", "cache"]
    assert d["per_node"][2]["delivered"] == 0
    assert d["per_node"][2]["bytes_sent"] > 0


def test_groups_and_sharing() -> None:
    d = run(
        Scenario(nodes=7, group_size=3, sharing=1, senders=0, messages=30, duration=120.0)
    ).to_dict()
    groups = [n["group"] for n in d["per_node"]]
    assert groups == [0, 0, 0, 1, 1, 1, 1]  # the leftover node joins the last group
    # Each message is for the other members of its sender's group.
    expected = sum((3 if n["group"] == 1 else 2) * n["sent"] for n in d["per_node"])
    assert d["deliveries"]["expected"] == expected
    assert d["deliveries"]["ratio"] == 1.0


# ------------------------------------------------------------------- reproducibility


def test_same_seed_same_json_and_another_seed_differs() -> None:
    scenario = with_overrides(preset("notes-best"), {"duration": 400.0, "send_for": 200.0})
    first = run(scenario).to_json()
    assert run(scenario).to_json() == first
    assert run(scenario, seed=1).to_json() != first
    assert json.loads(first)["schema"] == "mvds-node/sim-result/1"


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"scale"}))
def test_presets_run(name: str) -> None:
    scenario = with_overrides(preset(name), {"duration": 120.0, "send_for": 60.0})
    d = run(scenario).to_dict()
    assert d["deliveries"]["messages"] > 0
    assert len(d["latencies"]) == d["deliveries"]["delivered"]
    assert d["records"]["total"] == sum(v for k, v in d["records"].items() if k != "total")


def test_go_default_mirrors_the_go_simulation() -> None:
    s = preset("go-default")
    assert (s.nodes, s.sharing, s.senders, s.interval, s.loss) == (3, 2, 1, 5.0, 0.9)
    assert (s.mode, s.interactive_nodes, s.backoff, s.epoch_seconds) == (
        "mixed",
        2,
        "reference",
        1.0,
    )
    modes = [n["mode"] for n in run(s).to_dict()["per_node"]]
    assert modes == ["interactive", "interactive", "batch"]


def test_availability_models_hold_their_share_of_time_and_agree_with_themselves() -> None:
    for model in ("epoch", "sessions"):
        s = Scenario(availability=0.3, availability_model=model, duration=200_000.0)
        a = _Availability(s, 0.3, 2, "test")
        samples = [a.online(0, t + 0.5) for t in range(0, 200_000, 7)]
        assert abs(sum(samples) / len(samples) - 0.3) < 0.03
        b = _Availability(s, 0.3, 2, "test")
        t = 0.0
        for _ in range(200):
            back = b.next_online(1, t)
            assert back is not None and back >= t
            assert b.online(1, back + 1e-9)
            up = b.next_connect(1, back + 1e-9)
            assert up is not None and up > back
            assert b.online(1, up + 1e-9)
            t = up + 1e-9


def test_sweep_runs_each_scenario_per_value() -> None:
    small = with_overrides(preset("notes-batch"), {"duration": 100.0, "send_for": 50.0})
    doc = sweep([small, with_overrides(small, {"name": "other"})], "availability", [0.5, 1.0])
    assert doc["schema"] == "mvds-node/sim-sweep/1"
    assert [(r["scenario"], r["value"]) for r in doc["runs"]] == [
        ("notes-batch", 0.5),
        ("notes-batch", 1.0),
        ("other", 0.5),
        ("other", 1.0),
    ]
    assert doc["runs"][1]["result"]["scenario"]["availability"] == 1.0


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 50) == 3.0
    assert percentile([], 50) is None


# ------------------------------------------------------------------------- scenarios


def test_toml_file_with_preset_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('preset = "notes-batch"\nnodes = 4\nsharing = "all"\navailability = 1\n')
    s = load_scenario(path)
    assert (s.name, s.nodes, s.sharing, s.availability, s.mode) == ("mine", 4, 0, 1.0, "batch")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nodez = 3\n", "unknown scenario key 'nodez' (did you mean 'nodes'?)"),
        ('nodes = "three"\n', "scenario key 'nodes': expected an integer, got 'three'"),
        ("availability = 1.5\n", "scenario key 'availability': must be between 0 and 1"),
        ('mode = "fast"\n', "scenario key 'mode': must be one of 'batch', 'interactive'"),
        ("hello = 1\n", "scenario key 'hello': expected true or false, got 1"),
        ('preset = "nope"\n', "unknown preset 'nope'"),
        ("[table]\nx = 1\n", "scenario key 'table': tables are not settings"),
        ("nodes = \n", "not valid TOML"),
    ],
)
def test_toml_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_set_values_are_parsed_by_type() -> None:
    assert parse_value("nodes", "10") == 10
    assert parse_value("loss", "0.5") == 0.5
    assert parse_value("hello", "on") is True
    assert parse_value("sharing", "all") == 0
    assert parse_value("mode", "batch") == "batch"
    with pytest.raises(ScenarioError, match="'nodes': 'x' is not a int"):
        parse_value("nodes", "x")
    with pytest.raises(ScenarioError, match="unknown scenario key 'bogus'"):
        parse_value("bogus", "1")


# ------------------------------------------------------------------------------ CLI


def test_cli_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["sim", "--preset", "go-default", "--set", "duration=60", "--seed", "2", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["scenario"]["seed"] == 2
    assert doc["scenario"]["duration"] == 60.0
    expected = run(preset("go-default"), seed=2)
    assert doc["records"]["MESSAGE"] >= 0
    main(["sim", "--preset", "go-default", "--seed", "2"])
    table = capsys.readouterr().out
    assert table.startswith("scenario")
    assert f"{expected.delivered}/{expected.expected}" in table


def test_cli_sweep(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("nodes = 2\nduration = 30.0\n")
    main(["sim", str(path), "--sweep", "availability=0.5,1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert [r["value"] for r in doc["runs"]] == [0.5, 1.0]
    main(["sim", str(path), "--sweep", "availability=0.5,1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["availability", "scenario"]
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sim"], "give a scenario file or --preset NAME"),
        (["sim", "--preset", "nope"], "unknown preset 'nope'"),
        (["sim", "--preset", "go-default", "--set", "nodez=3"], "did you mean 'nodes'?"),
        (["sim", "--preset", "go-default", "--set", "nodes"], "expected KEY=VALUE"),
        (["sim", "--preset", "go-default", "--preset", "notes-batch"], "give one scenario"),
        (["sim", "--preset", "go-default", "--sweep", "loss=2"], "'loss': must be at least 0"),
    ],
)
def test_cli_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    main(["sim", "--list"])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list(PRESETS)
