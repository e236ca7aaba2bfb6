"""PNG charts of simulation results: latency CDFs and multiplier curves.

Theory of operation: every function takes plain data (names mapped to numbers) and writes one PNG
file, so the charts do not depend on the simulator's classes and a test can draw them from a few
hand-made values. matplotlib is an optional dependency (the ``plot`` extra): it is imported inside
the functions, never when :mod:`mvds_node` or :mod:`mvds_node.sim` is imported, and its absence is
reported as :class:`PlotUnavailable` when a chart is asked for.

Each figure gets its own Agg canvas (``FigureCanvasAgg``) instead of going through ``pyplot``: no
display is needed, no backend is switched for the rest of the process (a notebook calling us keeps
its own), and no figure is left registered in pyplot's global list. The size and resolution are
fixed (:data:`FIGSIZE` at :data:`DPI`) and the PNG carries no "Software" text chunk, so the same
data gives the same bytes on the same matplotlib version.

:func:`plot_result` and :func:`plot_sweep` draw the JSON documents of ``mvds-node sim --json``
(schemas ``mvds-node/sim-result/1`` and ``mvds-node/sim-sweep/1``, see
:mod:`mvds_node.sim._metrics`); they are what ``mvds-node sim --plot DIR`` calls. They read only
the documented keys, so a document saved earlier (or merged from several runs) draws the same.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvds_node.errors import MvdsError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "FIGSIZE",
    "PlotUnavailable",
    "latency_cdf",
    "lines",
    "multiplier_vs",
    "plot_result",
    "plot_sweep",
]

FIGSIZE: tuple[float, float] = (8.0, 5.0)
"""Figure size in inches: wide enough for a legend beside five curves, small enough for a README."""

DPI = 100
"""Pixels per inch: with :data:`FIGSIZE` every PNG is 800 x 500 pixels."""

_UNITS: dict[str, float] = {"ms": 1e3, "s": 1.0, "min": 1 / 60, "h": 1 / 3600}
"""Latency display units: the factor that turns seconds into the unit."""


class PlotUnavailable(MvdsError, RuntimeError):
    """A chart was asked for but matplotlib is not installed (install ``mvds-node[plot]``)."""


def _figure() -> tuple[Figure, Axes]:
    """A new figure on its own Agg canvas, with one set of axes."""
    try:
        # The top-level import first: it is what fails when matplotlib is missing, even if a
        # submodule was imported before.
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable("plots need matplotlib: pip install 'mvds-node[plot]'") from exc
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def lines(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    markers: bool = True,
    steps: bool = False,
    ylim: tuple[float, float] | None = None,
    hline: float | None = None,
) -> Path:
    """Draw one line per named series of ``(x, y)`` points and write it as a PNG.

    Points are drawn in the order given. The legend lists the series in the mapping's order.

    Args:
        series: legend label -> points. A series with no points still gets a legend entry.
        path: the PNG file to write (replaced if it exists; its folder must exist). The format
            is PNG whatever the suffix.
        title: the chart's title.
        xlabel: the x-axis label (name the unit).
        ylabel: the y-axis label (name the unit).
        logx: logarithmic x-axis.
        logy: logarithmic y-axis.
        markers: mark each point (for measured points); off for dense curves.
        steps: draw a step after each point (``steps-post``), as for a CDF.
        ylim: fixed ``(bottom, top)`` of the y-axis instead of fitting the data.
        hline: draw a dashed grey horizontal line at this y (a CDF's 1).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PlotUnavailable: matplotlib is not installed.
        OSError: the file could not be written.
    """
    figure, axes = _figure()
    for name, points in series.items():
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        axes.plot(
            xs,
            ys,
            label=name,
            marker="o" if markers else "",
            markersize=4,
            drawstyle="steps-post" if steps else "default",
        )
    if hline is not None:
        axes.axhline(hline, color="0.5", linestyle="--", linewidth=0.8)
    if logx:
        axes.set_xscale("log")
    if logy:
        axes.set_yscale("log")
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    # Minor grid lines too: on a log axis the decades alone are too far apart to read values.
    axes.grid(visible=True, which="major", alpha=0.5)
    axes.grid(visible=True, which="minor", alpha=0.15)
    if series:  # an empty legend would only warn
        axes.legend(loc="best")
    out = Path(path)
    figure.savefig(out, format="png", metadata={"Software": None})
    return out


def latency_cdf(
    series: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    title: str,
    unit: str = "s",
    totals: Mapping[str, int] | None = None,
    logx: bool = False,
) -> Path:
    """Draw the cumulative distribution of delivery latencies, one step line per series.

    A curve rises by ``1 / total`` at each latency. Without ``totals`` the total is the number of
    latencies, so every curve ends at 1. With ``totals`` it is the number of messages sent, so
    the y-axis is the fraction of *all* messages delivered within a given time, and the gap
    between a curve's end and the dashed line at 1 is the fraction never delivered. The legend
    then says how many were delivered, e.g. ``interactive (170/1000 delivered)``.

    Args:
        series: name -> latencies in seconds, one per delivered message, in any order.
        path: the PNG file to write (replaced if it exists; its folder must exist).
        title: the chart's title.
        unit: the unit of the x-axis: ``"ms"``, ``"s"``, ``"min"`` or ``"h"``. Latencies are
            always given in seconds.
        totals: name -> number of messages sent, for the series it names.
        logx: logarithmic x-axis (latencies spread over decades). Zero latencies cannot be
            placed on it and are drawn at the left edge.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: an unknown ``unit``, a negative or non-finite latency, or a total smaller
            than the number of latencies of its series.
        PlotUnavailable: matplotlib is not installed.
        OSError: the file could not be written.
    """
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r} (choose from {', '.join(_UNITS)})")
    scale = _UNITS[unit]
    totals = totals or {}
    curves: dict[str, list[tuple[float, float]]] = {}
    for name, latencies in series.items():
        if any(not math.isfinite(x) or x < 0 for x in latencies):
            raise ValueError(f"series {name!r}: latencies must be finite and >= 0")
        delivered = len(latencies)
        total = totals.get(name, delivered)
        if total < delivered:
            raise ValueError(f"series {name!r}: total {total} < {delivered} latencies")
        label = f"{name} ({delivered}/{total} delivered)" if name in totals else name
        ordered = sorted(x * scale for x in latencies)
        points = [(ordered[0], 0.0)] if ordered else []
        points += [(x, (i + 1) / total) for i, x in enumerate(ordered)]
        curves[label] = points
    return lines(
        curves,
        path,
        title=title,
        xlabel=f"latency ({unit})",
        ylabel="fraction of messages delivered" if totals else "fraction of delivered messages",
        logx=logx,
        logy=False,
        markers=False,
        steps=True,
        ylim=(0.0, 1.05),
        hline=1.0,
    )


def multiplier_vs(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logy: bool = True,
    logx: bool = False,
) -> Path:
    """Draw measured points joined by lines, e.g. a bandwidth multiplier against availability.

    Meant for a few setups compared over one swept setting: the multiplier against the fraction
    of time peers are online for interactive, batch and remote-log modes, or the bytes each node
    sends against the group size. Points are sorted by x, so a sweep may be given in any order.

    Args:
        series: setup name -> ``(x, y)`` measurements.
        path: the PNG file to write (replaced if it exists; its folder must exist).
        xlabel: the x-axis label (name the unit).
        ylabel: the y-axis label (name the unit).
        title: the chart's title.
        logy: logarithmic y-axis (the default: multipliers span decades).
        logx: logarithmic x-axis (for a size swept by doubling).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PlotUnavailable: matplotlib is not installed.
        OSError: the file could not be written.
    """
    return lines(
        {name: sorted(points) for name, points in series.items()},
        path,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        logx=logx,
        logy=logy,
        markers=True,
        steps=False,
        ylim=None,
    )


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _slug(text: str) -> str:
    """``text`` as a file-name part: runs of other characters become one ``-``."""
    return _SAFE.sub("-", text).strip("-.") or "run"


def _unit_for(seconds: float) -> str:
    """The latency unit in which ``seconds`` (the largest latency) reads best."""
    if seconds < 1.0:
        return "ms"
    if seconds < 600.0:
        return "s"
    if seconds < 3 * 3600.0:
        return "min"
    return "h"


def _spans_decades(values: Sequence[float]) -> bool:
    """True if the positive ``values`` span two decades or more (a log axis reads better)."""
    positive = [v for v in values if v > 0]
    return len(positive) >= 2 and max(positive) >= 100 * min(positive)


def _check_schema(doc: Mapping[str, Any], suffix: str) -> None:
    schema = doc.get("schema")
    if not isinstance(schema, str) or not schema.endswith(suffix):
        raise ValueError(f"not a mvds-node/{suffix} document (schema {schema!r})")


def plot_result(
    doc: Mapping[str, Any], out_dir: str | os.PathLike[str], *, name: str | None = None
) -> list[Path]:
    """Draw one simulation result (``mvds-node/sim-result/1``) as a latency CDF.

    The curve is the share of all expected deliveries made within a given latency, so the gap
    to 1 is the share never delivered, and the legend says how many were. The unit (ms, s, min,
    h) follows the largest latency; the x-axis is logarithmic when the latencies span two
    decades or more.

    Args:
        doc: the result, as printed by ``mvds-node sim --json``.
        out_dir: an existing folder for the PNG.
        name: the file's stem; by default ``<scenario>-seed<seed>``.

    Returns:
        The PNG written: ``<stem>-latency.png``.

    Raises:
        ValueError: ``doc`` is not a result document.
        PlotUnavailable: matplotlib is not installed.
        OSError: the file could not be written.
    """
    _check_schema(doc, "sim-result/1")
    scenario = doc["scenario"]
    label = str(scenario["name"])
    stem = _slug(name or f"{label}-seed{scenario['seed']}")
    latencies = [float(x) for x in doc["latencies"]]
    expected = int(doc["deliveries"]["expected"])
    ratio = float(doc["deliveries"]["ratio"])
    multiplier = doc["multiplier"]["bytes"]
    times = "-" if multiplier is None else f"x{multiplier:.1f}"
    title = (
        f"{label} (seed {scenario['seed']}): {ratio * 100:.1f} % delivered, "
        f"bytes {times} the minimum"
    )
    path = latency_cdf(
        {label: latencies},
        Path(out_dir) / f"{stem}-latency.png",
        title=title,
        unit=_unit_for(max(latencies, default=0.0)),
        totals={label: max(expected, len(latencies))},
        logx=_spans_decades(latencies),
    )
    return [path]


_SWEEP_CHARTS: tuple[tuple[str, str, str], ...] = (
    ("multiplier", "bandwidth multiplier (bytes sent / minimum)", "Bandwidth multiplier"),
    ("delivered", "fraction of deliveries made", "Delivery ratio"),
    ("latency", "median latency (s)", "Median latency (p50)"),
    ("bytes", "bytes per member (sync sent + received, log up + down)", "Bandwidth per member"),
)


def _sweep_figures(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The figures each sweep chart draws, from one run's result."""
    nodes = result["nodes"]
    per_member = (
        float(nodes["bytes_sent"]["mean"])
        + float(nodes["bytes_received"]["mean"])
        + float(nodes["log_bytes"]["mean"])
    )
    return {
        "multiplier": result["multiplier"]["bytes"],
        "delivered": float(result["deliveries"]["ratio"]),
        "latency": result["latency"]["p50"],
        "bytes": per_member,
    }


def plot_sweep(
    doc: Mapping[str, Any], out_dir: str | os.PathLike[str], *, name: str | None = None
) -> list[Path]:
    """Draw a sweep (``mvds-node/sim-sweep/1``): four charts against the swept setting.

    One line per scenario, one point per value: the bandwidth multiplier (bytes), the delivery
    ratio, the median latency and the mean bytes per member. Runs of the same scenario and value
    (several seeds merged into one document) are drawn as their mean. A value at which a figure
    is undefined (no delivery: no multiplier, no latency) is left out of that chart.

    Axes: the multiplier, latency and bytes charts are logarithmic in y (they span decades); the
    delivery ratio is linear from 0 to 1. The x-axis is logarithmic when the values are
    positive numbers spanning a decade or more (availability 0.05 to 1, group sizes 2 to 1,000).
    Values that are not numbers (a sweep of ``mode``) are placed at 0, 1, 2 ... in the order of
    the document and named in the x-axis label.

    Args:
        doc: the sweep, as printed by ``mvds-node sim --sweep ... --json``.
        out_dir: an existing folder for the PNGs.
        name: the files' stem; by default ``sweep-<key>``.

    Returns:
        The PNGs written, in the order above: ``<stem>-multiplier.png``,
        ``<stem>-delivered.png``, ``<stem>-latency.png``, ``<stem>-bytes.png``.

    Raises:
        ValueError: ``doc`` is not a sweep document.
        PlotUnavailable: matplotlib is not installed.
        OSError: the files could not be written.
    """
    _check_schema(doc, "sim-sweep/1")
    key = str(doc["key"])
    stem = _slug(name or f"sweep-{key}")
    values: list[Any] = list(doc.get("values") or [])
    for entry in doc["runs"]:
        if entry["value"] not in values:
            values.append(entry["value"])
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        position = {v: float(v) for v in values}
        xlabel = key
        positive = [float(v) for v in values if v > 0]
        logx = len(positive) == len(values) and len(values) > 1
        logx = logx and max(positive) >= 10 * min(positive)
    else:
        position = {v: float(i) for i, v in enumerate(values)}
        xlabel = f"{key}: " + ", ".join(f"{i} = {v}" for i, v in enumerate(values))
        logx = False
    # scenario -> value -> chart -> the figures of each run (seed) at that point
    points: dict[str, dict[Any, dict[str, list[float]]]] = {}
    for entry in doc["runs"]:
        at = points.setdefault(str(entry["scenario"]), {}).setdefault(entry["value"], {})
        for chart, figure in _sweep_figures(entry["result"]).items():
            if figure is not None:
                at.setdefault(chart, []).append(float(figure))
    out = Path(out_dir)
    paths = []
    for chart, ylabel, title in _SWEEP_CHARTS:
        series = {
            scenario: sorted(
                (position[value], sum(figs[chart]) / len(figs[chart]))
                for value, figs in by_value.items()
                if figs.get(chart)
            )
            for scenario, by_value in points.items()
        }
        ratio = chart == "delivered"
        if not ratio:  # a log axis cannot place 0 (e.g. a latency of 0 s when all are online)
            series = {s: [(x, y) for x, y in pts if y > 0] for s, pts in series.items()}
        paths.append(
            lines(
                series,
                out / f"{stem}-{chart}.png",
                title=f"{title} against {key}",
                xlabel=xlabel,
                ylabel=ylabel,
                logx=logx,
                logy=not ratio,
                ylim=(0.0, 1.05) if ratio else None,
            )
        )
    return paths
