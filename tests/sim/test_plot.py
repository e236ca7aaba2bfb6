"""The PNG charts: valid files of the configured size, deterministic, and a clear error without
matplotlib, which is never imported by ``import mvds_node.sim``."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from mvds_node.errors import MvdsError
from mvds_node.sim import _plot
from mvds_node.sim._plot import DPI, FIGSIZE, PlotUnavailable, latency_cdf, lines, multiplier_vs

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
    }
