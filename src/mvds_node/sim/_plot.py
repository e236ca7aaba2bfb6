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
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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


def _draw(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool,
    logy: bool,
    markers: bool,
    steps: bool,
    ylim: tuple[float, float] | None,
    hline: float | None = None,
) -> Path:
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

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PlotUnavailable: matplotlib is not installed.
        OSError: the file could not be written.
    """
    return _draw(
        series,
        path,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        logx=logx,
        logy=logy,
        markers=markers,
        steps=steps,
        ylim=ylim,
    )


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
    return _draw(
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
    return _draw(
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
