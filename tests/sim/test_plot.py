"""The PNG charts: valid files of the configured size, deterministic, and a clear error without
matplotlib, which is never imported by ``import mvds_node.sim``; results and sweeps drawn from
their JSON documents, and ``mvds-node sim --plot``."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from mvds_node.errors import MvdsError
from mvds_node.node.cli import main
from mvds_node.sim import Scenario, _plot, run, sweep
from mvds_node.sim._plot import (
    DPI,
    FIGSIZE,
    PlotUnavailable,
    latency_cdf,
    lines,
    multiplier_vs,
    plot_result,
    plot_sweep,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI)

LATENCIES = {
    "interactive": [0.5, 1.0, 2.0, 4.0, 30.0, 300.0],
    "batch": [1.0, 1.0, 3.0, 60.0],
    "remote log": [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8],
}
TOTALS = {"interactive": 10, "batch": 10, "remote log": 7}
MULTIPLIERS = {
    "interactive": [(0.1, 900.0), (0.5, 40.0), (0.9, 3.0)],
    "batch": [(0.9, 2.0), (0.1, 110.0), (0.5, 20.0)],  # any order: sorted by x
    "remote log": [(0.1, 8.0), (0.5, 3.0), (0.9, 1.5)],
}


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, body) chunks of a PNG, each checked against its CRC."""
    assert data[:8] == PNG_SIGNATURE
    chunks = []
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        at += 12 + length
    return chunks


def check_png(path: Path) -> bytes:
    """Assert ``path`` is a whole PNG of the configured size; return its bytes."""
    data = path.read_bytes()
    chunks = png_chunks(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert (width, height) == (WIDTH, HEIGHT) == (800, 500)
    # Nothing that changes from run to run or names the tool that drew it.
    assert {kind for kind, _ in chunks}.isdisjoint({b"tIME", b"tEXt", b"iTXt", b"zTXt"})
    return data


def test_latency_cdf_writes_a_png(tmp_path: Path) -> None:
    out = latency_cdf(LATENCIES, tmp_path / "cdf.png", title="Latency", totals=TOTALS)
    assert out == tmp_path / "cdf.png"
    check_png(out)


@pytest.mark.parametrize("unit", ["ms", "s", "min", "h"])
def test_latency_cdf_units_and_log_axis(tmp_path: Path, unit: str) -> None:
    out = latency_cdf(LATENCIES, str(tmp_path / "cdf.png"), title="t", unit=unit, logx=True)
    check_png(out)


def test_multiplier_vs_writes_a_png(tmp_path: Path) -> None:
    out = multiplier_vs(
        MULTIPLIERS,
        tmp_path / "mult.png",
        xlabel="fraction of time online",
        ylabel="bandwidth multiplier",
        title="Multiplier against availability",
    )
    check_png(out)
    bandwidth = {"interactive": [(2.0, 10.0), (4.0, 30.0), (8.0, 100.0), (16.0, 400.0)]}
    out = multiplier_vs(
        bandwidth,
        tmp_path / "bw.png",
        xlabel="group size",
        ylabel="bytes per node",
        title="Bandwidth",
        logx=True,
        logy=False,
    )
    check_png(out)


def test_lines_options(tmp_path: Path) -> None:
    out = lines(
        {"a": [(0.0, 0.0), (1.0, 0.5), (2.0, 1.0)], "b": []},
        tmp_path / "lines.png",
        title="t",
        xlabel="x",
        ylabel="y",
        markers=False,
        steps=True,
        ylim=(0.0, 1.0),
    )
    check_png(out)


def test_same_data_same_bytes(tmp_path: Path) -> None:
    first = check_png(latency_cdf(LATENCIES, tmp_path / "1.png", title="t", totals=TOTALS))
    second = check_png(latency_cdf(LATENCIES, tmp_path / "2.png", title="t", totals=TOTALS))
    assert first == second


def test_data_changes_the_picture(tmp_path: Path) -> None:
    empty = check_png(latency_cdf({"a": []}, tmp_path / "empty.png", title="t"))
    full = check_png(latency_cdf({"a": [1.0, 2.0]}, tmp_path / "full.png", title="t"))
    assert empty != full
    # Totals move the curve: half the messages delivered is not all of them.
    half = check_png(latency_cdf({"a": [1.0, 2.0]}, tmp_path / "h.png", title="t", totals={"a": 4}))
    assert half != full
    no_series = check_png(
        multiplier_vs({}, tmp_path / "none.png", xlabel="x", ylabel="y", title="t")
    )
    some = check_png(
        multiplier_vs(MULTIPLIERS, tmp_path / "m.png", xlabel="x", ylabel="y", title="t")
    )
    assert no_series != some


@pytest.mark.parametrize(
    ("series", "totals", "unit", "message"),
    [
        ({"a": [1.0]}, None, "days", "unknown unit"),
        ({"a": [-1.0]}, None, "s", "finite and >= 0"),
        ({"a": [float("nan")]}, None, "s", "finite and >= 0"),
        ({"a": [1.0, 2.0]}, {"a": 1}, "s", "total 1 < 2"),
    ],
)
def test_latency_cdf_rejects_bad_input(
    tmp_path: Path,
    series: dict[str, list[float]],
    totals: dict[str, int] | None,
    unit: str,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        latency_cdf(series, tmp_path / "x.png", title="t", unit=unit, totals=totals)
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes `import matplotlib` raise ImportError, as when it is absent.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailable, match=r"pip install 'mvds-node\[plot\]'") as info:
        latency_cdf(LATENCIES, tmp_path / "cdf.png", title="t")
    assert isinstance(info.value, MvdsError) and isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, ImportError)
    with pytest.raises(PlotUnavailable):
        multiplier_vs(MULTIPLIERS, tmp_path / "m.png", xlabel="x", ylabel="y", title="t")
    assert not list(tmp_path.iterdir())


def test_importing_the_package_does_not_import_matplotlib() -> None:
    code = (
        "import sys, mvds_node, mvds_node.sim, mvds_node.sim._plot\n"
        "assert 'matplotlib' not in sys.modules, sorted(m for m in sys.modules if 'matpl' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_names() -> None:
    assert set(_plot.__all__) == {
        "DPI",
        "FIGSIZE",
        "PlotUnavailable",
        "latency_cdf",
        "lines",
        "multiplier_vs",
        "plot_result",
        "plot_sweep",
    }


# ----------------------------------------------------------- results and sweeps

TINY = Scenario(name="tiny", nodes=2, messages=4, availability=0.5, duration=60.0)
SWEEP_CHARTS = ("multiplier", "delivered", "latency", "bytes")


def result_doc(latencies: list[float], expected: int, *, seed: int = 0) -> dict[str, object]:
    """The keys of a result document that the charts read, with hand-made values."""
    delivered = len(latencies)
    return {
        "schema": "mvds-node/sim-result/1",
        "scenario": {"name": "hand made/1", "seed": seed},
        "deliveries": {"expected": expected, "ratio": delivered / expected if expected else 1.0},
        "latency": {"p50": sorted(latencies)[(delivered - 1) // 2] if latencies else None},
        "latencies": sorted(latencies),
        "multiplier": {"bytes": 3.0 if latencies else None},
        "nodes": {
            "bytes_sent": {"mean": 100.0 * delivered},
            "bytes_received": {"mean": 50.0},
            "log_bytes": {"mean": 0.0},
        },
    }


def test_plot_result_draws_the_latency_cdf(tmp_path: Path) -> None:
    doc = result_doc([0.0, 2.0, 5.0, 1200.0], 10, seed=3)
    paths = plot_result(doc, tmp_path)
    # The name is made safe for a file name.
    assert paths == [tmp_path / "hand-made-1-seed3-latency.png"]
    check_png(paths[0])
    # The same picture as latency_cdf draws from the same data: 1,200 s reads in minutes, on a
    # log axis (the latencies span more than two decades).
    direct = latency_cdf(
        {"hand made/1": [0.0, 2.0, 5.0, 1200.0]},
        tmp_path / "direct.png",
        title="hand made/1 (seed 3): 40.0 % delivered, bytes x3.0 the minimum",
        unit="min",
        totals={"hand made/1": 10},
        logx=True,
    )
    assert paths[0].read_bytes() == direct.read_bytes()
    assert plot_result(doc, tmp_path, name="other") == [tmp_path / "other-latency.png"]


def test_plot_result_of_a_run_with_no_delivery(tmp_path: Path) -> None:
    (path,) = plot_result(result_doc([], 4), tmp_path)
    check_png(path)


def test_plot_result_of_a_real_run_is_deterministic(tmp_path: Path) -> None:
    doc = run(TINY).to_dict()
    (tmp_path / "a").mkdir()
    (first,) = plot_result(doc, tmp_path / "a")
    (second,) = plot_result(run(TINY).to_dict(), tmp_path)
    assert first.name == second.name == "tiny-seed0-latency.png"
    assert check_png(first) == check_png(second)


def test_plot_sweep_draws_four_charts(tmp_path: Path) -> None:
    doc = sweep(
        [TINY, Scenario(name="batch", nodes=2, messages=4, duration=60.0)], "loss", [0.0, 0.5]
    )
    paths = plot_sweep(doc, tmp_path)
    assert paths == [tmp_path / f"sweep-loss-{chart}.png" for chart in SWEEP_CHARTS]
    for path in paths:
        check_png(path)
    named = plot_sweep(doc, tmp_path, name="losses")
    assert [p.name for p in named] == [f"losses-{chart}.png" for chart in SWEEP_CHARTS]


def sweep_doc(key: str, runs: list[tuple[str, object, dict[str, object]]]) -> dict[str, object]:
    values: list[object] = []
    for _, value, _ in runs:
        if value not in values:
            values.append(value)
    return {
        "schema": "mvds-node/sim-sweep/1",
        "key": key,
        "values": values,
        "runs": [{"scenario": s, "value": v, "result": r} for s, v, r in runs],
    }


def test_plot_sweep_draws_the_mean_of_runs_at_one_point(tmp_path: Path) -> None:
    # Two seeds at availability 0.1 (multipliers 3 and 3, bytes per member 150 and 350) draw
    # the same picture as one run with their means.
    a, b = result_doc([1.0], 2), result_doc([1.0, 2.0, 4.0], 4)
    mean = result_doc([1.0, 2.0], 3)
    mean["nodes"] = {
        "bytes_sent": {"mean": 200.0},
        "bytes_received": {"mean": 50.0},
        "log_bytes": {"mean": 0.0},
    }
    mean["deliveries"] = {"expected": 0, "ratio": (0.5 + 0.75) / 2}
    mean["latency"] = {"p50": (1.0 + 2.0) / 2}
    high = result_doc([0.5], 1)
    (tmp_path / "merged").mkdir()
    (tmp_path / "mean").mkdir()
    merged = plot_sweep(
        sweep_doc("availability", [("s", 0.1, a), ("s", 0.1, b), ("s", 1.0, high)]),
        tmp_path / "merged",
    )
    single = plot_sweep(
        sweep_doc("availability", [("s", 0.1, mean), ("s", 1.0, high)]), tmp_path / "mean"
    )
    for one, other in zip(merged, single, strict=True):
        assert check_png(one) == check_png(other)


def test_plot_sweep_skips_undefined_points_and_places_words_in_order(tmp_path: Path) -> None:
    # No delivery at "interactive": no multiplier or latency there, the other charts still draw.
    doc = sweep_doc(
        "mode",
        [("s", "batch", result_doc([0.0, 1.0], 2)), ("s", "interactive", result_doc([], 2))],
    )
    for path in plot_sweep(doc, tmp_path):
        check_png(path)


def test_plot_refuses_the_wrong_document(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a mvds-node/sim-sweep/1 document"):
        plot_sweep(result_doc([1.0], 1), tmp_path)
    with pytest.raises(ValueError, match="not a mvds-node/sim-result/1 document"):
        plot_result(sweep_doc("loss", []), tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_plot_writes_the_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "tiny.toml"
    scenario.write_text("nodes = 2\nmessages = 4\navailability = 0.5\nduration = 60.0\n")
    out = tmp_path / "figures" / "new"  # created, parents too
    main(["sim", str(scenario), "--seed", "1", "--plot", str(out)])
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"wrote {out / 'tiny-seed1-latency.png'}"
    check_png(out / "tiny-seed1-latency.png")
    main(["sim", str(scenario), "--sweep", "availability=0.5,1", "--json", "--plot", str(out)])
    doc = json.loads(capsys.readouterr().out)  # --json prints only the document
    assert doc["schema"] == "mvds-node/sim-sweep/1"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["tiny-seed1-latency.png"] + [f"sweep-availability-{c}.png" for c in SWEEP_CHARTS]
    )
    for chart in SWEEP_CHARTS:
        check_png(out / f"sweep-availability-{chart}.png")


def test_cli_plot_without_matplotlib_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    scenario = tmp_path / "tiny.toml"
    scenario.write_text("nodes = 2\nmessages = 1\nduration = 10.0\n")
    with pytest.raises(SystemExit) as info:
        main(["sim", str(scenario), "--plot", str(tmp_path / "out")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "pip install 'mvds-node[plot]'" in err
    assert err.count("\n") == 1
